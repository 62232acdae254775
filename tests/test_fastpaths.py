"""The fast paths that have no refusal branch are taken on every fixture architecture they apply
to: batched LSLo routing (no per-example or per-language loop) and factor-space LoRA merges (no
dense update is ever formed). Shared-prefix scoring and early exit, which can be refused, are
proven in test_eval_icl.py and test_align_layers.py."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from xlt.testing import ARCHS


class _Calls(TorchFunctionMode):
    """Records every torch function called, with the shapes of tensor results."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.names.append(getattr(func, "__name__", str(func)))
        if isinstance(out, torch.Tensor):
            self.shapes.append(tuple(out.shape))
        return out


LSLO_ARCHS = [a for a in ARCHS if a not in ("gpt2", "bloom")]  # Conv1D / fused QKV: no LSLo targets


@pytest.mark.parametrize("arch", LSLO_ARCHS)
def test_lslo_routes_a_mixed_batch_with_two_batched_matmuls_per_layer(arch, bpe_tokenizer, nllb_tokenizer):
    from xlt.lslo import LSLoConfig, apply_lslo
    from xlt.lslo.layer import LSLoLinear
    from xlt.testing import tiny_model

    tokenizer = nllb_tokenizer if arch == "m2m100" else bpe_tokenizer
    model = tiny_model(arch, tokenizer, seed=1).eval()
    languages = ["aa", "bb", "cc"]

    def base_bmm(batch):  # batched matmuls of the architecture itself (eager attention may use some)
        ids = torch.randint(5, 60, (batch, 6), generator=torch.Generator().manual_seed(batch))
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids))
        if arch == "m2m100":
            kwargs["decoder_input_ids"] = ids[:, :4]
        calls = _Calls()
        with torch.no_grad(), calls:
            model(**kwargs)
        return calls.names.count("bmm")

    own = {batch: base_bmm(batch) for batch in (2, 7)}
    lslo = apply_lslo(model, LSLoConfig(languages=languages, ranks={"aa": 2, "bb": 4, "cc": 8}))
    layers = [m for m in lslo.modules() if isinstance(m, LSLoLinear)]
    assert layers
    with torch.no_grad():
        for layer in layers:  # non-zero B so every subspace changes the output
            layer.lora_b.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))

    def forward(batch):
        ids = torch.randint(5, 60, (batch, 6), generator=torch.Generator().manual_seed(batch))
        src = [languages[i % 3] for i in range(batch)]
        tgt = [languages[(i + 1) % 3] for i in range(batch)]
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), src_lang_ids=src, tgt_lang_ids=tgt)
        if arch == "m2m100":
            kwargs["decoder_input_ids"] = ids[:, :4]
        calls = _Calls()
        with torch.no_grad(), calls:
            logits = lslo(**kwargs).logits
        return calls.names.count("bmm") - own[batch], logits, kwargs

    small, _, _ = forward(2)
    large, logits, kwargs = forward(7)
    # the same number of batched matmuls whatever the batch's size and language mix
    assert small == large == 2 * len(layers)
    # and each example gets its own languages' subspaces: equal to running it alone
    for row in (0, 4):
        alone = {k: (v[row:row + 1] if torch.is_tensor(v) else v[row:row + 1]) for k, v in kwargs.items()}
        with torch.no_grad():
            single = lslo(**alone).logits
        assert torch.allclose(single[0], logits[row], atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "adamergex"])
def test_lora_merges_never_form_a_dense_update(mode):
    from _merge_helpers import TARGETS, canonical_modules, lora_config, lora_factors, lora_state_dict

    from xlt.merge.adamergex import adamergex
    from xlt.merge.adapters import AdapterState
    from xlt.merge.methods import linear

    states = [AdapterState(config=lora_config(targets=TARGETS), tensors=lora_state_dict(lora_factors(seed)),
                           source=f"adapter{seed}") for seed in (1, 2, 3)]
    dense = {(fan_out, fan_in) for _, fan_in, fan_out in canonical_modules()}
    dense |= {(b, a) for a, b in dense}
    calls = _Calls()
    with calls:
        if mode == "linear":
            result = linear(states)
        else:
            result = adamergex(*states, 0.5, mode="delta")
    assert calls.names, "no torch function ran"
    formed = sorted({s for s in calls.shapes if s in dense})
    assert not formed, f"dense (out, in) tensors formed: {formed}"
    merged = result.adapter.tensors
    a = merged["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a.shape == (3 * 8, 64)  # the three updates' factors, concatenated
