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

Bits per byte (``token_bytes``, from :func:`token_stream` with ``with_bytes=True``):
``sum over scored targets of -log2 p(target) / UTF-8 bytes those targets stand for``. Every
token of the stream stands for a contiguous piece of its document's text (see
:func:`token_byte_counts`), the pieces of one document add up to its bytes plus one for the
newline that ends its line (carried by the separator), so a stream scored in full would be
measured against the bytes of the text file itself, whatever the tokenizer. The sliding window
leaves the first ``context - last_n + 1`` tokens unscored (position 0 has no left context; no BOS
is inserted), so their bytes are left out of the denominator too.
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
                              token_bytes=None,
                              progress: Callable[[int], None] | None = None) -> dict:
    """Perplexity of a causal LM on one token stream with the sliding-window protocol.

    ``ids``: ``(n_tokens,)`` model-vocabulary ids. ``stride`` defaults to ``last_n``. Targets in
    ``ignore_ids`` (the reference masks pad 0) are neither scored nor counted. ``decode`` maps
    scored target ids of one window to text for the per-character figures. ``token_bytes``:
    ``(n_tokens,)`` UTF-8 bytes each stream token stands for (:func:`token_stream` with
    ``with_bytes``); the bytes of the scored, not ignored targets are summed into ``n_bytes`` and
    ``bits_per_byte = nll / ln 2 / n_bytes``. Returns a dict with ``nll``, ``n_tokens``, ``ppl``,
    ``top1``, ``top10``, ``n_windows`` (the final partial window included; and character and byte
    figures).
    """
    import torch

    check_geometry(context, last_n, stride)
    stride = stride or last_n
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if token_bytes is not None:
        token_bytes = torch.as_tensor(token_bytes, dtype=torch.long).reshape(-1)
        if len(token_bytes) != len(ids):
            raise ConfigError(f"token_bytes has {len(token_bytes)} counts for {len(ids)} tokens")
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
    n_scored = top1 = top10 = n_chars = n_bytes = 0
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
                if token_bytes is not None:  # the bytes of the same target positions
                    n_bytes_rows = torch.stack([token_bytes[s + width + 1 - n_slots:s + width + 1]
                                                for s in batch_starts])
                logits = model(input_ids=x).logits[:, -n_slots:].float().cpu()
                logp = torch.log_softmax(logits, dim=-1)
                nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
                keep = ~torch.isin(y, ignore) if len(ignore) else torch.ones_like(y, dtype=torch.bool)
                total_nll += float(nll[keep].double().sum())
                n_scored += int(keep.sum())
                if token_bytes is not None:
                    n_bytes += int(n_bytes_rows[keep].sum())
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
    if token_bytes is not None:
        out.update(n_bytes=n_bytes, bits_per_byte=total_nll / math.log(2) / n_bytes if n_bytes else float("nan"))
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


def token_byte_counts(text: str, offsets: Sequence[tuple[int, int]], *, separated: bool = True) -> list[int]:
    """UTF-8 bytes of ``text`` each token stands for, given its character ``offsets``.

    ``offsets``: ``(n_tokens,)`` pairs ``(start, end)`` into ``text`` (a fast tokenizer's
    ``offset_mapping``). Token ``i`` stands for the text from where token ``i - 1`` stopped up to
    where it completes: ``min(end_i, start_{i+1})``, never moving backwards. So whitespace a
    tokenizer drops goes to the token after it; the pieces of a character split over several
    byte-level tokens (all with that character's span) count when its last piece is read; a
    zero-width special token stands for nothing. The last token takes the text up to the end of
    ``text``; with ``separated``, one more count is returned, for the separator after the
    document: the newline that ends its line (1 byte). The counts sum to
    ``len(text.encode()) + separated``.
    """
    counts: list[int] = []
    done = 0
    for i, (start, end) in enumerate(offsets):
        if i + 1 < len(offsets):
            upto = max(done, min(end, offsets[i + 1][0]))
        else:
            upto = len(text)
        counts.append(len(text[done:upto].encode("utf-8")))
        done = upto
    if separated:
        counts.append(len(text[done:].encode("utf-8")) + 1)
    return counts


def token_stream(texts: Sequence[str], tokenizer, *, separator_id: int | None = None,
                 max_tokens: int | None = None, with_bytes: bool = False):
    """Concatenate the documents' ids with ``separator_id`` (default EOS) after each one.

    The same stream layout as pre-training's token store (no BOS). Returns a ``(n,)`` int64
    tensor; with ``with_bytes``, also the ``(n,)`` int64 UTF-8 byte counts of
    :func:`token_byte_counts` (the separator stands for the line's newline; without a separator
    the last token of a document takes the rest of its line). Byte counts need character offsets,
    so a slow (Python) tokenizer is a :class:`ConfigError`.
    """
    import torch

    if separator_id is None:
        separator_id = tokenizer.eos_token_id
    texts = list(texts)
    if with_bytes and not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"bits per byte needs a fast tokenizer (character offsets); "
                          f"{type(tokenizer).__name__} has none")
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=with_bytes) if texts else {}
    flat: list[int] = []
    byte_counts: list[int] = []
    for k, ids in enumerate(encoded.get("input_ids", [])):
        flat.extend(ids)
        if separator_id is not None:
            flat.append(separator_id)
        if with_bytes:
            byte_counts.extend(token_byte_counts(texts[k], encoded["offset_mapping"][k],
                                                 separated=separator_id is not None))
        if max_tokens is not None and len(flat) >= max_tokens:
            break
    if max_tokens is not None:
        flat, byte_counts = flat[:max_tokens], byte_counts[:max_tokens]
    if with_bytes:
        return torch.tensor(flat, dtype=torch.long), torch.tensor(byte_counts, dtype=torch.long)
    return torch.tensor(flat, dtype=torch.long)
