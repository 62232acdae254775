"""Per-language perplexity with the reference's sliding window, on any causal LM.

Window ``k`` covers stream tokens ``[k * stride, k * stride + context]`` (``context + 1`` tokens;
the model reads the first ``context``) and scores only its last ``last_n`` targets; with the
paper's ``context = 512``, ``last_n = stride = 128`` every scored token has at least 384 tokens of
context, and targets ``1 .. context - last_n`` of the stream are never scored. The evaluation
stream does not wrap: where it ends inside the next window, that final partial window is scored
on its real targets (those of its last ``last_n`` slots that exist), as the reference scores its
zero-padded last window with the padding masked.

Metrics: ``ppl = exp(total NLL / scored tokens)`` (the paper's token-level perplexity); with a
``decode`` function, ``normalised_ppl = exp(total NLL / characters)`` where the characters are
counted per window over the decoded ``last_n`` targets (Unicode code points; the reference calls
it a byte count); top-1 and top-10 accuracy.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

from xlt.errors import ConfigError, DataError


def window_starts(n_tokens: int, context: int, stride: int) -> list[int]:
    """Start positions of the full windows (``context + 1`` tokens each) of an ``n_tokens`` stream."""
    if context < 1 or stride < 1:
        raise ConfigError(f"context and stride must be >= 1, got {context} and {stride}")
    if n_tokens < context + 1:
        return []
    return list(range(0, n_tokens - context, stride))


def partial_window_start(n_tokens: int, context: int, last_n: int, stride: int) -> int | None:
    """Start of the final partial window: the one after the last full window, if the stream ends
    inside it after the first of its ``last_n`` scored slots (else ``None``)."""
    starts = window_starts(n_tokens, context, stride)
    if not starts:
        return None
    start = starts[-1] + stride
    return start if start + context - last_n + 1 <= n_tokens - 1 else None


def scored_targets(n_tokens: int, context: int, last_n: int, stride: int | None = None) -> list[range]:
    """Stream positions of the targets each window scores (``range`` per window).

    ``window_starts(...)[k] + context - last_n + 1 .. + context``; e.g. context 512, last_n 128:
    windows 0, 1, 2 score positions 385..512, 513..640, 641..768. A final partial window scores
    its slots up to the last position of the stream, ``n_tokens - 1``.
    """
    check_geometry(context, last_n, stride)
    stride = stride or last_n
    out = [range(s + context - last_n + 1, s + context + 1) for s in window_starts(n_tokens, context, stride)]
    tail = partial_window_start(n_tokens, context, last_n, stride)
    if tail is not None:
        out.append(range(tail + context - last_n + 1, n_tokens))
    return out


def check_geometry(context: int, last_n: int, stride: int | None) -> None:
    if context < 1:
        raise ConfigError(f"context must be >= 1, got {context}")
    if not 1 <= last_n <= context:
        raise ConfigError(f"last_n must lie in [1, context={context}], got {last_n}")
    if stride is not None and not 1 <= stride:
        raise ConfigError(f"stride must be >= 1, got {stride}")


def perplexity_from_nll(total_nll: float, n_tokens: int, n_chars: int | None = None) -> dict:
    """``ppl`` and, given characters, ``normalised_ppl`` and ``bits_per_char``."""
    out = {"nll": total_nll, "n_tokens": n_tokens,
           "loss": total_nll / n_tokens if n_tokens else float("nan"),
           "ppl": math.exp(total_nll / n_tokens) if n_tokens else float("nan")}
    if n_chars:
        out.update(n_chars=n_chars, normalised_loss=total_nll / n_chars,
                   normalised_ppl=math.exp(total_nll / n_chars),
                   bits_per_char=total_nll / n_chars / math.log(2))
    return out


def sliding_window_perplexity(model, ids, *, context: int = 512, last_n: int = 128,
                              stride: int | None = None, batch_size: int = 8,
                              ignore_ids: Iterable[int] = (),
                              decode: Callable[[list[int]], str] | None = None,
                              progress: Callable[[int], None] | None = None) -> dict:
    """Perplexity of a causal LM on one token stream with the sliding-window protocol.

    ``ids``: ``(n_tokens,)`` model-vocabulary ids. ``stride`` defaults to ``last_n``. Targets in
    ``ignore_ids`` (the reference masks pad 0) are neither scored nor counted. ``decode`` maps
    scored target ids of one window to text for the per-character figures. Returns a dict with
    ``nll``, ``n_tokens``, ``ppl``, ``top1``, ``top10``, ``n_windows`` (the final partial window
    included; and character figures).
    """
    import torch

    check_geometry(context, last_n, stride)
    stride = stride or last_n
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    starts = window_starts(len(ids), context, stride)
    if not starts:
        raise DataError(f"the evaluation stream has {len(ids)} tokens, fewer than one window of "
                        f"context + 1 = {context + 1}; lower --context or give more text")
    limit = _position_limit(model)
    if limit is not None and context > limit:
        raise ConfigError(f"context {context} exceeds the model's {limit} positions")
    device = next(model.parameters()).device
    ignore = torch.tensor(sorted(set(int(i) for i in ignore_ids)), dtype=torch.long)
    total_nll = 0.0
    n_scored = top1 = top10 = n_chars = 0
    # full windows in batches, then the final partial window alone: (starts, width, scored slots)
    groups = [(starts[b:b + batch_size], context, last_n) for b in range(0, len(starts), batch_size)]
    tail = partial_window_start(len(ids), context, last_n, stride)
    if tail is not None:  # causal attention: its real positions see what a padded window would
        groups.append(([tail], len(ids) - 1 - tail, len(ids) - (tail + context - last_n + 1)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch_starts, width, n_slots in groups:
                rows = torch.stack([ids[s:s + width + 1] for s in batch_starts])
                x = rows[:, :-1].to(device)
                y = rows[:, -n_slots:]
                logits = model(input_ids=x).logits[:, -n_slots:].float().cpu()
                logp = torch.log_softmax(logits, dim=-1)
                nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
                keep = ~torch.isin(y, ignore) if len(ignore) else torch.ones_like(y, dtype=torch.bool)
                total_nll += float(nll[keep].double().sum())
                n_scored += int(keep.sum())
                top = logits.topk(min(10, logits.shape[-1]), dim=-1).indices
                top1 += int(((top[..., 0] == y) & keep).sum())
                top10 += int(((top == y.unsqueeze(-1)).any(-1) & keep).sum())
                if decode is not None:
                    for row_targets, row_keep in zip(y, keep):
                        n_chars += len(decode(row_targets[row_keep].tolist()))
                if progress is not None:
                    progress(len(batch_starts))
    finally:
        model.train(was_training)
    out = perplexity_from_nll(total_nll, n_scored, n_chars if decode is not None else None)
    out.update(n_windows=len(starts) + (tail is not None), top1=top1 / n_scored if n_scored else float("nan"),
               top10=top10 / n_scored if n_scored else float("nan"), context=context,
               last_n=last_n, stride=stride)
    return out


def _position_limit(model) -> int | None:
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            # Rotary models extrapolate; only absolute-position models have a hard limit.
            if name == "n_positions" or getattr(config, "model_type", "") in ("gpt2", "opt", "xglm", "bloom"):
                return value
    return None


def token_stream(texts: Sequence[str], tokenizer, *, separator_id: int | None = None,
                 max_tokens: int | None = None):
    """Concatenate the documents' ids with ``separator_id`` (default EOS) after each one.

    The same stream layout as pre-training's token store. Returns a ``(n,)`` int64 tensor.
    """
    import torch

    if separator_id is None:
        separator_id = tokenizer.eos_token_id
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    flat: list[int] = []
    for ids in encoded:
        flat.extend(ids)
        if separator_id is not None:
            flat.append(separator_id)
        if max_tokens is not None and len(flat) >= max_tokens:
            break
    if max_tokens is not None:
        flat = flat[:max_tokens]
    return torch.tensor(flat, dtype=torch.long)
