"""The output of decoder block ``k``, computed by running blocks ``1..k`` only.

Transformers has no public "stop at layer k" API, and ``output_hidden_states=True`` runs the whole
model (and replaces its last entry by the *final-normed* state). :func:`layer_states` registers a
forward hook on block ``k`` that records the block's output and raises a private exception, which
stops the forward pass: blocks ``k+1..N``, the final norm and the LM head never run, and the model
is not modified. The recorded tensor is the exact raw block output (bit-identical to
``hidden_states[k]`` for ``k < N``; for ``k == N`` it is the pre-norm output the reference
implementation uses). Gradients flow normally, with or without gradient checkpointing (the hook
sits outside the checkpointed ``forward`` in transformers 5), through PEFT wrappers and DDP.

Early exit is refused where the wrapper must see every forward end: a DeepSpeed engine (its
ZeRO hooks and gradient bookkeeping run at the end of the engine's forward and over every
parameter). There the whole model runs (:func:`layer_states` with ``early_exit=False``, or
automatically), the hook records the block output without stopping, and the returned tensor
is ``hidden + 0 * logits.sum()``: the same values, and every parameter after block ``k`` joins
the graph with a zero gradient, so an engine that expects a gradient for each parameter gets
one. The refusal is announced once (:mod:`xlt.fastpath`).
"""

from __future__ import annotations

from typing import Any

import torch

from xlt import fastpath
from xlt.errors import ConfigError, ModelError
from xlt.models import decoder_blocks


class _StopForward(Exception):
    """Raised by the hook once the requested block has run."""


def _check_layer(layer: Any, n_layers: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= n_layers:
        raise ConfigError(
            f"alignment layer {layer!r} is outside the model: it has {n_layers} decoder blocks, so the "
            f"layer must be in 0..{n_layers} (0 = the input to the first block, {n_layers} = the last "
            "block's output before the final norm)")
    return layer


def early_exit_refusal(model) -> str | None:
    """Why ``model``'s wrapper cannot take an early exit from its forward; None when it can."""
    for cls in type(model).__mro__:
        if cls.__module__.split(".")[0] == "deepspeed":
            return (f"a DeepSpeed engine ({cls.__name__}) must run its whole forward for ZeRO's "
                    "hooks and gradient bookkeeping")
    return None


def layer_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, layer: int,
                 *, early_exit: bool | None = None, **forward_kwargs: Any) -> torch.Tensor:
    """Hidden states after decoder block ``layer`` (1-based), running blocks ``1..layer`` only.

    Args:
        model: a causal LM (``*ForCausalLM``), possibly wrapped by PEFT, DDP or DeepSpeed.
        input_ids: ``(batch, seq)`` token ids.
        attention_mask: ``(batch, seq)``, 1 on real tokens, 0 on padding (or ``None``).
        layer: ``0`` = the input to the first block (embeddings, scaled / with positions where the
            architecture does so), ``k`` = the raw output of block ``k``; ``num_layers`` = the last
            block's output *before* the final norm.
        early_exit: stop the forward after block ``layer`` (``None``: yes, unless the model is
            wrapped by an engine that must see the whole forward, see the module docstring).
        forward_kwargs: passed on to the model's forward (e.g. ``position_ids``).

    Returns:
        ``(batch, seq, hidden)`` tensor, carrying gradient when grad mode is on.

    Raises:
        ConfigError: ``layer`` is outside ``0..num_layers`` (the message names the valid range).
    """
    blocks = decoder_blocks(model)
    _check_layer(layer, len(blocks))
    if early_exit is None:
        refusal = early_exit_refusal(model)
        early_exit = refusal is None
        if refusal:
            fastpath.refuse(fastpath.EARLY_EXIT, refusal)
    captured: dict[str, torch.Tensor] = {}

    def stop():
        # record first, then stop the forward (early exit) or let it run on (whole forward)
        if early_exit:
            raise _StopForward

    if layer == 0:
        def hook(module, args, kwargs):
            if "hidden" not in captured:
                captured["hidden"] = kwargs.get("hidden_states", args[0] if args else None)
            stop()

        handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    else:
        def hook(module, args, output):
            if "hidden" not in captured:
                captured["hidden"] = output[0] if isinstance(output, (tuple, list)) else output
            stop()

        handle = blocks[layer - 1].register_forward_hook(hook)
    forward_kwargs.setdefault("use_cache", False)
    outputs = None
    try:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, **forward_kwargs)
    except _StopForward:
        fastpath.taken(fastpath.EARLY_EXIT)
    finally:
        handle.remove()
    hidden = captured.get("hidden")
    if not isinstance(hidden, torch.Tensor):
        raise ModelError(f"decoder block {layer} of {type(model).__name__} did not run (is LayerDrop on?)")
    if outputs is not None:
        logits = getattr(outputs, "logits", None)
        if isinstance(logits, torch.Tensor) and logits.requires_grad and hidden.requires_grad:
            # same values; the later blocks, final norm and head get a (zero) gradient
            hidden = hidden + 0 * logits.sum()
        return hidden
    post_forward = getattr(model, "_post_forward", None)
    if post_forward is not None and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        # The exception skipped DDP's own post-forward step, which prepares gradient reduction
        # (and finds the blocks this pass did not use); run it on what we return instead.
        hidden = post_forward(hidden)
    return hidden
