"""Model loading, safe loading and architecture facts on every fixture architecture."""

from __future__ import annotations

import pickle

import pytest
import torch

from xlt.errors import ModelError
from xlt.models import (check_target_modules, decoder_blocks, default_target_modules, encoder_blocks,
                        load_adapter, load_model, load_tokenizer, num_layers, parse_dtype, resolve_device,
                        unwrap_model)
from xlt.testing import ARCHS, CAUSAL_ARCHS


def _batch(tokenizer, arch):
    texts = ["the cat sat on the mat", "hello world"]
    if arch == "m2m100":
        return tokenizer(texts, text_target=["die Katze", "hallo"], return_tensors="pt", padding=True)
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc


@pytest.mark.parametrize("arch", ARCHS)
def test_fixture_loads_runs_saves_and_reloads(arch, tiny_model_dir, tmp_path):
    path = tiny_model_dir(arch)
    model = load_model(path)
    tokenizer = load_tokenizer(path)
    assert (model.config.is_encoder_decoder) == (arch == "m2m100")
    batch = _batch(tokenizer, arch)
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    # a random model over a vocabulary of V predicts close to uniform: loss near log V
    assert abs(out.loss.item() - torch.log(torch.tensor(float(len(tokenizer)))).item()) < 1.0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[:3])
    model.eval()
    model.save_pretrained(tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch).logits)
    assert num_layers(model) in (2, 4)


@pytest.mark.parametrize("arch", CAUSAL_ARCHS)
def test_target_modules_exist_and_peft_accepts_them(arch, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model = load_model(tiny_model_dir(arch))
    targets = default_target_modules(model)
    check_target_modules(model, targets)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets, task_type="CAUSAL_LM"))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # facts see through the PEFT wrapper
    assert unwrap_model(peft_model) is model
    assert decoder_blocks(peft_model) is decoder_blocks(model)


def test_seq2seq_blocks(tiny_model_dir):
    model = load_model(tiny_model_dir("m2m100"))
    assert len(encoder_blocks(model)) == 2 and len(decoder_blocks(model)) == 2
    assert default_target_modules(model) == ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    causal = load_model(tiny_model_dir("llama"))
    with pytest.raises(ModelError, match="has no encoder"):
        encoder_blocks(causal)


def test_unknown_target_module_is_named(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    with pytest.raises(ModelError, match="target module\\(s\\) qkv_proj not found in LlamaForCausalLM"):
        check_target_modules(model, ["q_proj", "qkv_proj"])


def test_dtype_and_device_options(tiny_llama_dir):
    model = load_model(tiny_llama_dir, dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert parse_dtype("float32") is torch.float32
    with pytest.raises(ModelError, match="unknown dtype 'float8'"):
        parse_dtype("float8")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")


class _Payload:
    """Unpickling this object would create the marker file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_weights_are_refused_and_never_executed(tmp_path, tiny_llama_dir):
    import shutil

    model_dir = tmp_path / "pickled"
    shutil.copytree(tiny_llama_dir, model_dir)
    (model_dir / "model.safetensors").unlink()
    marker = tmp_path / "executed"
    with open(model_dir / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"x": _Payload(str(marker))}, handle)
    with pytest.raises(ModelError, match="pickle format \\(pytorch_model.bin\\).*--allow-pickle"):
        load_model(model_dir)
    assert not marker.exists()


def test_pickle_adapter_is_refused(tmp_path, tiny_llama_dir):
    from peft import LoraConfig, get_peft_model

    model = load_model(tiny_llama_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()
    marker = tmp_path / "executed"
    with open(tmp_path / "adapter" / "adapter_model.bin", "wb") as handle:
        pickle.dump(_Payload(str(marker)), handle)
    with pytest.raises(ModelError, match="adapter_model.bin.*--allow-pickle"):
        load_adapter(load_model(tiny_llama_dir), tmp_path / "adapter")
    assert not marker.exists()


def test_adapter_roundtrip_changes_outputs_only_after_training(tmp_path, tiny_llama_dir, bpe_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = load_model(tiny_llama_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    batch = bpe_tokenizer(["hello world"], return_tensors="pt")
    loaded = load_model(tiny_llama_dir, adapter=tmp_path / "adapter")
    base = load_model(tiny_llama_dir)
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, peft_model(**batch).logits, atol=1e-6)
        assert not torch.allclose(loaded(**batch).logits, base(**batch).logits, atol=1e-4)


def test_missing_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ModelError, match="no such model directory"):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="expected a model directory, got a file"):
        load_model(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelError, match="no such adapter directory"):
        load_adapter(None, tmp_path / "nope")


def test_remote_code_needs_the_flag(tmp_path, tiny_llama_dir):
    import json
    import shutil

    model_dir = tmp_path / "custom"
    shutil.copytree(tiny_llama_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    config["model_type"] = "evil"
    (model_dir / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "executed"
    (model_dir / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    with pytest.raises(ModelError):
        load_model(model_dir)
    assert not marker.exists()


def test_tokenizer_gets_a_pad_token(tmp_path, bpe_tokenizer):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=bpe_tokenizer.backend_tokenizer, eos_token="</s>")
    tok.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok", padding_side="left")
    assert loaded.pad_token == "</s>" and loaded.padding_side == "left"
