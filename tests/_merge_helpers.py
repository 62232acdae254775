"""Fixtures of the merge tests: the seeded tiny Llama and adapters of the AdaMergeX conformance
cases, built independently of xlt.merge (PEFT's own layers are the reference)."""

from __future__ import annotations

import torch

R, ALPHA = 8, 16
S = ALPHA / R
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
INPUT_IDS = [[1, 17, 42, 99, 3, 64, 27, 8, 115, 50, 33, 2]]
PREFIX = "base_model.model."


def base_model():
    """The conformance base: tiny Llama, every parameter overwritten from one seeded generator."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager").float().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def canonical_modules():
    """[(module key, in, out)] in the canonical order of the conformance cases."""
    out = []
    for layer in range(2):
        for mod in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]:
            fan_in, fan_out = {"mlp.gate_proj": (64, 128), "mlp.up_proj": (64, 128),
                               "mlp.down_proj": (128, 64)}.get(mod, (64, 64))
            out.append((f"model.layers.{layer}.{mod}", fan_in, fan_out))
    return out


def lora_factors(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (A (8, in), B (out, 8)), drawn A then B per module from one generator."""
    g = torch.Generator().manual_seed(seed)
    factors = {}
    for key, fan_in, fan_out in canonical_modules():
        A = torch.randn(R, fan_in, generator=g) * 0.1
        B = torch.randn(fan_out, R, generator=g) * 0.1
        factors[key] = (A, B)
    return factors


def ia3_vectors(seed: int) -> dict[str, torch.Tensor]:
    """module -> l: k/v (out,), down_proj (in,), l = 1 + 0.1 randn."""
    g = torch.Generator().manual_seed(seed)
    vectors = {}
    for key, fan_in, fan_out in canonical_modules():
        if key.endswith(("k_proj", "v_proj")):
            vectors[key] = 1 + 0.1 * torch.randn(fan_out, generator=g)
        elif key.endswith("down_proj"):
            vectors[key] = 1 + 0.1 * torch.randn(fan_in, generator=g)
    return vectors


def lora_config(r: int = R, alpha: int = ALPHA, base: str | None = None, targets=None) -> dict:
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
            "target_modules": list(targets or TARGETS), "lora_dropout": 0.0, "bias": "none",
            "base_model_name_or_path": base, "fan_in_fan_out": False, "inference_mode": True,
            "rank_pattern": {}, "alpha_pattern": {}, "use_rslora": False, "use_dora": False,
            "init_lora_weights": True, "modules_to_save": None}


def ia3_config(base: str | None = None) -> dict:
    return {"peft_type": "IA3", "task_type": "CAUSAL_LM", "target_modules": ["k_proj", "v_proj", "down_proj"],
            "feedforward_modules": ["down_proj"], "base_model_name_or_path": base,
            "inference_mode": True, "fan_in_fan_out": False, "init_ia3_weights": True,
            "modules_to_save": None}


def lora_state_dict(factors) -> dict[str, torch.Tensor]:
    sd = {}
    for key, (A, B) in factors.items():
        sd[f"{PREFIX}{key}.lora_A.weight"] = A.clone()
        sd[f"{PREFIX}{key}.lora_B.weight"] = B.clone()
    return sd


def ia3_state_dict(vectors) -> dict[str, torch.Tensor]:
    sd = {}
    for key, l in vectors.items():
        shape = (1, -1) if key.endswith("down_proj") else (-1, 1)
        sd[f"{PREFIX}{key}.ia3_l"] = l.reshape(shape).clone()
    return sd


def write_adapter_dir(path, config: dict, state_dict: dict) -> str:
    """An adapter directory as PEFT writes it (config + safetensors), independent of xlt."""
    import json
    import os

    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f)
    save_file({k: v.contiguous() for k, v in state_dict.items()},
              os.path.join(path, "adapter_model.safetensors"), metadata={"format": "pt"})
    return str(path)


def delta_stats(deltas: dict[str, torch.Tensor]) -> dict[str, float]:
    """The spec's dW statistics (float64)."""
    total_sum = sum(float(d.sum()) for d in deltas.values())
    total_fro = sum(float((d ** 2).sum()) for d in deltas.values()) ** 0.5
    q, down = deltas["model.layers.0.self_attn.q_proj"], deltas["model.layers.1.mlp.down_proj"]
    return {"total_sum": total_sum, "total_fro": total_fro, "q_sum": float(q.sum()),
            "q_fro": float(torch.linalg.norm(q)), "down_sum": float(down.sum()),
            "down_fro": float(torch.linalg.norm(down))}


def peft_lora_deltas(model, adapter: str) -> dict[str, torch.Tensor]:
    """module -> dW read from PEFT's own LoraLayer.get_delta_weight (float64)."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            out[name[len(PREFIX):] if name.startswith(PREFIX) else name] = \
                module.get_delta_weight(adapter).to(torch.float64)
    return out


def logits_stats(model) -> dict:
    with torch.no_grad():
        logits = model(torch.tensor(INPUT_IDS)).logits.to(torch.float64)
    last = logits[0, -1]
    return {"sum": float(logits.sum()), "l2": float(torch.linalg.norm(logits)),
            "first4": [float(x) for x in last[:4]], "argmax": int(last.argmax())}
