"""layer_states: exact raw block outputs, early stop, PEFT, gradient checkpointing, errors."""

from __future__ import annotations

import pytest
import torch

from xlt.align import layer_states
from xlt.errors import ConfigError
from xlt.models import decoder_blocks

ARCHS = ["llama", "qwen2", "mistral", "gemma", "gpt2", "xglm", "bloom"]


@pytest.fixture(scope="module")
def models(bpe_tokenizer):
    from xlt.testing import tiny_model

    return {arch: tiny_model(arch, bpe_tokenizer, seed=3, num_layers=4) for arch in ARCHS}


def _batch(tokenizer):
    enc = tokenizer(["The cat sat on the mat.", "Hello world", "Good night."], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _reference_states(model, ids, mask):
    """Block outputs recorded by plain forward hooks on a full forward pass (independent path)."""
    blocks = decoder_blocks(model)
    got = {}
    handles = [blocks[0].register_forward_pre_hook(
        lambda m, a, k: got.__setitem__(0, k.get("hidden_states", a[0] if a else None)), with_kwargs=True)]
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_hook(
            lambda m, a, out, i=i: got.__setitem__(i + 1, out[0] if isinstance(out, tuple) else out)))
    try:
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    return got, hs


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_states_equal_raw_block_outputs(arch, models, bpe_tokenizer):
    model = models[arch]
    ids, mask = _batch(bpe_tokenizer)
    n = len(decoder_blocks(model))
    with torch.no_grad():
        ref, hs = _reference_states(model, ids, mask)
        for k in range(n + 1):
            got = layer_states(model, ids, mask, k)
            assert torch.equal(got, ref[k]), (arch, k)
            if k < n:  # hidden_states[k] is the raw block output except for the last entry
                assert torch.allclose(got, hs[k], atol=1e-6), (arch, k)


def test_later_blocks_and_head_do_not_run(models, bpe_tokenizer):
    model = models["llama"]
    ids, mask = _batch(bpe_tokenizer)
    calls = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, b in enumerate(model.model.layers)]
    handles.append(model.lm_head.register_forward_hook(lambda m, a, o: calls.append("head")))
    handles.append(model.model.norm.register_forward_hook(lambda m, a, o: calls.append("norm")))
    try:
        with torch.no_grad():
            layer_states(model, ids, mask, 2)
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]
    # the hooks are gone: a normal forward still runs the whole model
    assert model(input_ids=ids, attention_mask=mask).logits.shape[:2] == ids.shape


def test_layer_out_of_range_names_valid_range(models, bpe_tokenizer):
    ids, mask = _batch(bpe_tokenizer)
    for bad in (5, -1, 2.0):
        with pytest.raises(ConfigError, match=r"0\.\.4"):
            layer_states(models["llama"], ids, mask, bad)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_and_peft_give_the_same_gradients(reentrant, bpe_tokenizer):
    from peft import LoraConfig, get_peft_model

    from xlt.testing import tiny_model

    ids, mask = _batch(bpe_tokenizer)
    grads = []
    for checkpointing in (False, True):
        base = tiny_model("llama", bpe_tokenizer, seed=5, num_layers=4)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
            model.enable_input_require_grads()
        hidden = layer_states(model, ids, mask, 2)
        (hidden ** 2).mean().backward()
        named = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
        grads.append(named)
        assert any("layers.1." in n for n in named) and not any("layers.2." in n or "layers.3." in n for n in named)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
