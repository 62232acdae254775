"""Log-likelihood scoring of (context, continuation) requests, batched.

Two rules decide which tokens are scored:

``afp`` (the AFP reference)
    The text ``context + continuation`` is tokenised with the tokenizer's special tokens and
    **every** token after the first is scored: demonstrations, shared context, the choice and
    any text after it. The score is reported in bits (sum of log2 p), as the reference does;
    the argmax is the same in any base.

``lm-eval`` (lm-evaluation-harness, ``loglikelihood``)
    Trailing whitespace of the context moves to the front of the continuation; the context
    and the joined text are tokenised (with the tokenizer's special tokens unless the text
    already starts with the prefix token's string) and the continuation tokens are the joined
    tokens past the context's length. An empty context is replaced by the prefix token (BOS,
    else EOS; the continuation is then tokenised without special tokens, and if it already
    starts with that token, its first token becomes the context). Only the continuation is
    scored (natural log), as the harness does.

Batching pads on the right and passes no attention mask (as the harness does): with causal
attention, real tokens never see the padding and keep their positions, so every architecture
gives the one-at-a-time result (to float rounding) without position ids. Sequences are sorted by length so a batch wastes little padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

SCORING_RULES = ("afp", "lm-eval")
_ROWS_PER_CHUNK = 8
LN2 = math.log(2.0)


@dataclass(frozen=True)
class EncodedRequest:
    """Token ids of one request and the index of the first scored token."""

    input_ids: tuple[int, ...]
    start: int  # tokens [start:] are scored, each given everything before it


def prefix_token_id(tokenizer) -> int:
    """The token an empty context is conditioned on: BOS, else EOS (as lm-evaluation-harness)."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has neither a BOS nor an EOS token to condition an empty context on")
    return tokenizer.eos_token_id


def _encode(tokenizer, text: str, prefix_id: int, add_special_tokens: bool | None = None) -> list[int]:
    if add_special_tokens is None:
        # the harness skips special tokens when the text already starts with the prefix token
        add_special_tokens = not text.startswith(tokenizer.decode([prefix_id]))
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


def encode_lm_eval(tokenizer, context: str, continuation: str,
                   prefix_id: int | None = None) -> tuple[list[int], list[int]]:
    """``(context_ids, continuation_ids)`` exactly as lm-evaluation-harness builds them."""
    prefix_id = prefix_token_id(tokenizer) if prefix_id is None else prefix_id
    if context == "":
        cont = _encode(tokenizer, continuation, prefix_id, add_special_tokens=False)
        if cont and cont[0] == prefix_id:
            return cont[:1], cont[1:]
        return [prefix_id], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation, prefix_id)
    ctx = _encode(tokenizer, context, prefix_id)
    return ctx, whole[len(ctx):]


def encode_request(tokenizer, context: str, continuation: str, rule: str) -> EncodedRequest:
    """Token ids and first scored position of a request under ``rule`` ("afp" or "lm-eval")."""
    if rule == "afp":
        ids = list(tokenizer.encode(context + continuation))
        return EncodedRequest(tuple(ids), 1)
    if rule == "lm-eval":
        ctx, cont = encode_lm_eval(tokenizer, context, continuation)
        return EncodedRequest(tuple(ctx + cont), len(ctx))
    raise ValueError(f"unknown scoring rule {rule!r} (expected one of {', '.join(SCORING_RULES)})")


def encode_requests(tokenizer, pairs: Sequence[tuple[str, str]], rule: str) -> list[EncodedRequest]:
    """:func:`encode_request` for many (context, continuation) pairs at once: the texts go to
    the tokenizer in batches and each distinct context is encoded once (the choices of an
    item share theirs). Same ids as one at a time."""
    if rule not in SCORING_RULES:
        raise ValueError(f"unknown scoring rule {rule!r} (expected one of {', '.join(SCORING_RULES)})")
    if not pairs:
        return []
    if rule == "afp":
        ids = tokenizer([c + k for c, k in pairs])["input_ids"]
        return [EncodedRequest(tuple(x), 1) for x in ids]
    prefix_id = prefix_token_id(tokenizer)
    prefix_text = tokenizer.decode([prefix_id])
    split = []
    for context, continuation in pairs:
        n_spaces = len(context) - len(context.rstrip())
        if context and n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        split.append((context, continuation))
    # texts to encode: (text, add_special_tokens) -> ids
    wanted: dict[tuple[str, bool], None] = {}
    for context, continuation in split:
        if context == "":
            wanted[(continuation, False)] = None
        else:
            for text in (context, context + continuation):
                wanted[(text, not text.startswith(prefix_text))] = None
    cache: dict[tuple[str, bool], list[int]] = {}
    for flag in (True, False):
        texts = [t for t, f in wanted if f is flag]
        if texts:
            cache.update(((t, flag), list(x))
                         for t, x in zip(texts, tokenizer(texts, add_special_tokens=flag)["input_ids"]))
    out = []
    for context, continuation in split:
        if context == "":
            cont = cache[(continuation, False)]
            ctx, cont = (cont[:1], cont[1:]) if cont and cont[0] == prefix_id else ([prefix_id], cont)
        else:
            ctx = cache[(context, not context.startswith(prefix_text))]
            whole_text = context + continuation
            cont = cache[(whole_text, not whole_text.startswith(prefix_text))][len(ctx):]
        out.append(EncodedRequest(tuple(ctx + cont), len(ctx)))
    return out


def afp_sequence_scores(logits, input_ids, attention_mask):
    """The reference's choice score: sum over the whole sequence of log2 p(token).

    ``logits``: (batch, seq, vocab); ``input_ids``, ``attention_mask``: (batch, seq).
    Returns (batch,) float32: sum_{t>=1} mask_t * log2 softmax(logits_{t-1})[ids_t].
    """
    import torch

    logp = torch.log_softmax(logits.float()[:, :-1], dim=-1)
    token = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token * attention_mask[:, 1:].to(token.dtype)).sum(-1) / LN2


def score_encoded(model, requests: Sequence[EncodedRequest], *, batch_size: int = 16,
                  pad_token_id: int = 0, max_length: int | None = None,
                  progress: bool = False) -> list[tuple[float, bool]]:
    """``(sum of natural-log probabilities of the scored tokens, all greedy?)`` per request.

    Requests are sorted by length and run ``batch_size`` at a time, right-padded. A sequence
    longer than ``max_length`` loses tokens on the left (as the harness truncates), never
    scored ones unless the scored part alone is too long.
    """
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].input_ids))
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    batches = [order[k:k + batch_size] for k in range(0, len(order), max(1, batch_size))]
    iterator = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc="scoring", unit="batch")
    with torch.inference_mode():
        for batch in iterator:
            rows, starts = [], []
            for i in batch:
                ids, start = list(requests[i].input_ids), requests[i].start
                if max_length is not None and len(ids) > max_length:
                    cut = len(ids) - max_length
                    ids, start = ids[cut:], max(1, start - cut)
                rows.append(ids)
                starts.append(max(1, start))
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
            scored = torch.zeros((len(rows), width - 1), dtype=torch.bool)  # position t predicts t+1
            for r, ids in enumerate(rows):
                input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                scored[r, starts[r] - 1:len(ids) - 1] = True
            input_ids, scored = input_ids.to(device), scored.to(device)
            # No attention mask (as the harness): right padding under causal attention never
            # reaches a real token, and the unmasked causal path is the fast one.
            logits = model(input_ids=input_ids).logits[:, :-1]
            target = input_ids[:, 1:]
            totals, greedy = [], []
            # a few rows at a time in float32, so the copy stays small for large vocabularies
            for lo in range(0, logits.shape[0], _ROWS_PER_CHUNK):
                part = logits[lo:lo + _ROWS_PER_CHUNK].float()
                tgt, keep = target[lo:lo + _ROWS_PER_CHUNK], scored[lo:lo + _ROWS_PER_CHUNK]
                token_logp = part.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(part, -1)
                # float64 sum: the total of a long text does not depend on the padded width
                totals += torch.where(keep, token_logp, torch.zeros_like(token_logp)).double().sum(-1).tolist()
                greedy += ((part.argmax(-1) == tgt) | ~keep).all(-1).tolist()
                del part, token_logp
            for r, i in enumerate(batch):
                results[i] = (totals[r], bool(greedy[r]))
    return results  # type: ignore[return-value]


def model_max_length(model, tokenizer) -> int | None:
    """The longest sequence the model takes (its position table), if it has one."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and value < 10**9 else None
