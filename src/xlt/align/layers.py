"""The output of decoder block ``k``, computed by running blocks ``1..k`` only.

Transformers has no public "stop at layer k" API, and ``output_hidden_states=True`` runs the whole
model (and replaces its last entry by the *final-normed* state). :func:`layer_states` registers a
forward hook on block ``k`` that records the block's output and raises a private exception, which
stops the forward pass: blocks ``k+1..N``, the final norm and the LM head never run, and the model
is not modified. The recorded tensor is the exact raw block output (bit-identical to
``hidden_states[k]`` for ``k < N``; for ``k == N`` it is the pre-norm output the reference
implementation uses). Gradients flow normally, with or without gradient checkpointing (the hook
sits outside the checkpointed ``forward`` in transformers 5), through PEFT wrappers and DDP.
"""

from __future__ import annotations

from typing import Any

import torch

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


def layer_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, layer: int,
                 **forward_kwargs: Any) -> torch.Tensor:
    """Hidden states after decoder block ``layer`` (1-based), running blocks ``1..layer`` only.

    Args:
        model: a causal LM (``*ForCausalLM``), possibly wrapped by PEFT, DDP or DeepSpeed.
        input_ids: ``(batch, seq)`` token ids.
        attention_mask: ``(batch, seq)``, 1 on real tokens, 0 on padding (or ``None``).
        layer: ``0`` = the input to the first block (embeddings, scaled / with positions where the
            architecture does so), ``k`` = the raw output of block ``k``; ``num_layers`` = the last
            block's output *before* the final norm.
        forward_kwargs: passed on to the model's forward (e.g. ``position_ids``).

    Returns:
        ``(batch, seq, hidden)`` tensor, carrying gradient when grad mode is on.

    Raises:
        ConfigError: ``layer`` is outside ``0..num_layers`` (the message names the valid range).
    """
    blocks = decoder_blocks(model)
    _check_layer(layer, len(blocks))
    captured: dict[str, torch.Tensor] = {}

    if layer == 0:
        def hook(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            captured["hidden"] = hidden
            raise _StopForward

        handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    else:
        def hook(module, args, output):
            captured["hidden"] = output[0] if isinstance(output, (tuple, list)) else output
            raise _StopForward

        handle = blocks[layer - 1].register_forward_hook(hook)
    forward_kwargs.setdefault("use_cache", False)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, **forward_kwargs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    hidden = captured.get("hidden")
    if not isinstance(hidden, torch.Tensor):
        raise ModelError(f"decoder block {layer} of {type(model).__name__} did not run (is LayerDrop on?)")
    post_forward = getattr(model, "_post_forward", None)
    if post_forward is not None and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        # The exception skipped DDP's own post-forward step, which prepares gradient reduction
        # (and finds the blocks this pass did not use); run it on what we return instead.
        hidden = post_forward(hidden)
    return hidden
