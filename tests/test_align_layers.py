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


@pytest.mark.parametrize("arch", ARCHS)
def test_later_blocks_and_head_do_not_run(arch, models, bpe_tokenizer):
    """Early exit is taken on every decoder fixture: blocks after ``k`` and the head never run."""
    from xlt import fastpath

    model = models[arch]
    ids, mask = _batch(bpe_tokenizer)
    calls = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
               for i, b in enumerate(decoder_blocks(model))]
    handles.append(model.get_output_embeddings().register_forward_hook(lambda m, a, o: calls.append("head")))
    fastpath.reset()
    try:
        with torch.no_grad():
            layer_states(model, ids, mask, 2)
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]
    assert fastpath.counts() == {"taken": {fastpath.EARLY_EXIT: 1}, "refused": {}}
    # the hooks are gone: a normal forward still runs the whole model
    assert model(input_ids=ids, attention_mask=mask).logits.shape[:2] == ids.shape


def test_whole_forward_gives_the_same_states_and_a_gradient_to_every_parameter(models, bpe_tokenizer):
    """``early_exit=False`` (what an engine that must see the whole forward gets): the same
    block output, and every parameter after block k receives a zero gradient."""
    model = models["llama"]
    ids, mask = _batch(bpe_tokenizer)
    early = layer_states(model, ids, mask, 2)
    model.zero_grad(set_to_none=True)
    whole = layer_states(model, ids, mask, 2, early_exit=False)
    assert torch.equal(whole, early)
    whole.pow(2).sum().backward()
    late = [p for n, p in model.named_parameters() if ".layers.2." in n or ".layers.3." in n or "lm_head" in n]
    assert late and all(p.grad is not None and not p.grad.any() for p in late)
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    early.pow(2).sum().backward()
    assert all(p.grad is None for p in late)  # early exit: they never joined the graph


def test_a_deepspeed_engine_is_refused_early_exit_once(models, bpe_tokenizer, caplog):
    """A wrapper from the deepspeed package runs the whole forward, and says so once."""
    import logging

    from xlt import fastpath

    class Engine(torch.nn.Module):  # stands in for deepspeed.runtime.engine.DeepSpeedEngine
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, **kwargs):
            return self.module(**kwargs)

    Engine.__module__ = "deepspeed.runtime.engine"
    Engine.__name__ = Engine.__qualname__ = "DeepSpeedEngine"
    inner = models["llama"]
    engine = Engine(inner)
    ids, mask = _batch(bpe_tokenizer)
    ran = []
    handle = inner.lm_head.register_forward_hook(lambda m, a, o: ran.append("head"))
    fastpath.reset()
    try:
        with caplog.at_level(logging.WARNING, logger="xlt"):
            with torch.no_grad():
                first = layer_states(engine, ids, mask, 1)
                layer_states(engine, ids, mask, 1)
    finally:
        handle.remove()
    assert ran == ["head", "head"]
    assert torch.equal(first, layer_states(inner, ids, mask, 1))
    said = [r.getMessage() for r in caplog.records if "early exit is off" in r.getMessage()]
    assert len(said) == 1 and "DeepSpeedEngine" in said[0]
    assert fastpath.counts()["refused"] == {fastpath.EARLY_EXIT: 2}


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
