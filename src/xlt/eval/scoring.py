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
gives the one-at-a-time result (to float rounding) without position ids. Sequences are sorted by
length so a batch wastes little padding.

Shared prefixes. The choices of one item share their context (demonstrations included), so
the batched scorer computes each shared prefix once. With a model that takes position ids and
a custom 4-D attention mask (:func:`_one_pass_refusal`), an item is one row: the prefix, then
each choice's remaining tokens, a mask that lets each choice see the prefix and itself, and
positions that restart after the prefix for each choice (one forward, little padding).
Otherwise two passes: the prefixes right-padded without a mask (as above), then the
continuations with an attention mask that hides each prefix's padding and position ids that
continue it. Fewer tokens go through the model (a 5-shot prompt shared by three choices is
computed once instead of three times) and the scores are the one-at-a-time scores to float
rounding. Sequences longer than half a sliding attention window are scored whole, and so is a
chunk whose model returns no attention-only cache (recurrent or linear-attention state would
have taken in the padding). ``batch_size=1`` (one sequence per forward) and
``share_prefix=False`` keep the plain path; any other refusal is announced once
(:mod:`xlt.fastpath`). The cache is passed under the name the installed transformers uses:
``cache`` from 5.25 on, ``past_key_values`` before (read from the forward's signature).

Shared demonstrations. The items of one (task, language, shots, seed) carry the same
demonstrations, so their contexts begin with the same tokens. Runs of requests whose contexts
share a long common token prefix are found on the token ids (sorted contexts; see
:func:`_demonstration_groups`: requests of other tasks or languages, whose prefixes differ,
fall into other runs), the prefix is computed once per run (batch 1), and its key/value cache
is expanded over each batch as a view (no copy per item) while the members' own tokens (the
item's context, then its choices, as above) are scored with positions after the prefix. Only
requests that fit the context (and half a sliding window) join a run; a model whose returned
cache cannot be expanded is announced once (``shared-demonstration cache``) and its run scored
as if it did not exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from xlt import fastpath

SCORING_RULES = ("afp", "lm-eval")
SHARED_DEMONSTRATIONS = "shared-demonstration cache"  # the xlt.fastpath name of a run's shared base
_ROWS_PER_CHUNK = 8
_MIN_BASE_TOKENS = 4  # a shorter common prefix is not worth a forward of its own
_MIN_SAVED_TOKENS = 32
LN2 = math.log(2.0)


@dataclass(frozen=True)
class EncodedRequest:
    """Token ids of one request and the index of the first scored token."""

    input_ids: tuple[int, ...]
    start: int  # tokens [start:] are scored, each given everything before it
    # leading tokens shared with the other requests of the same context (0: none known); the
    # batched scorer computes ``input_ids[:shared]`` once for all requests that share it
    shared: int = field(default=0, compare=False)


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
        ids = [tuple(x) for x in tokenizer([c + k for c, k in pairs])["input_ids"]]
        # the whole text is tokenised at once, so the choices of a context share the longest
        # common prefix of their ids (a merge across the context's end may shorten it)
        common: dict[str, tuple[int, ...]] = {}
        for (context, _), x in zip(pairs, ids):
            seen = common.get(context)
            common[context] = x if seen is None else seen[:_common_length(seen, x)]
        return [EncodedRequest(x, 1, len(common[context])) for (context, _), x in zip(pairs, ids)]
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
    encoded = []
    for context, continuation in split:
        if context == "":
            cont = cache[(continuation, False)]
            ctx, cont = (cont[:1], cont[1:]) if cont and cont[0] == prefix_id else ([prefix_id], cont)
        else:
            ctx = cache[(context, not context.startswith(prefix_text))]
            whole_text = context + continuation
            cont = cache[(whole_text, not whole_text.startswith(prefix_text))][len(ctx):]
        encoded.append((tuple(ctx + cont), len(ctx)))
    # The choices of an item share at least its context's tokens, often more: a choice that
    # repeats the premise (0-shot XNLI: an empty context; k-shot: the demonstrations alone, as
    # the delimiter moves into the continuation) shares the premise's tokens with the item's
    # other choices, which sit beside it. The shared length is the longest common prefix with
    # a neighbour of the same context.
    out = []
    for k, (ids, start) in enumerate(encoded):
        near = [_common_length(ids, encoded[j][0]) for j in (k - 1, k + 1)
                if 0 <= j < len(encoded) and pairs[j][0] == pairs[k][0]]
        out.append(EncodedRequest(ids, start, max(start, min(len(ids) - 1, max(near, default=0)))))
    return out


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n


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
                  progress: bool = False, share_prefix: bool = True) -> list[tuple[float, bool]]:
    """``(sum of natural-log probabilities of the scored tokens, all greedy?)`` per request.

    Requests are sorted by length and run ``batch_size`` at a time, right-padded. A sequence
    longer than ``max_length + 1`` loses tokens on the left as the harness truncates
    (:func:`harness_window`), never scored ones unless the scored part alone is too long. With ``share_prefix`` (and
    ``batch_size > 1`` and a model with a key/value cache), requests that share their first
    ``shared`` tokens are scored from one pass over that prefix (see the module's docstring).
    """
    import torch

    results: list[tuple[float, bool] | None] = [None] * len(requests)
    groups, singles, shared_runs = [], list(range(len(requests))), []
    accepted = _forward_kwargs(model)
    window = None
    if share_prefix and batch_size > 1:
        refusal = _kv_cache_refusal(model, accepted)
        if refusal:
            fastpath.refuse(fastpath.SHARED_PREFIX, refusal)
        else:
            window = _sliding_window(model)
            longest = _longest_shared(max_length, window)
            eligible = [i for i, r in enumerate(requests) if longest is None or len(r.input_ids) <= longest]
            shared_runs, _ = _demonstration_groups(requests, eligible)
            in_runs = {i for _, members in shared_runs for i in members}
            rest = [i for i in range(len(requests)) if i not in in_runs]
            groups, singles = _prefix_groups(requests, batch_size, max_length, window, indices=rest)
            lengths = [len(r.input_ids) for r in requests if r.shared >= 2]
            if window and any(n > window // 2 for n in lengths):
                fastpath.refuse(fastpath.SHARED_PREFIX, f"requests longer than half the model's "
                                f"{window}-token sliding window are scored whole")
            if max_length is not None and any(n > max_length for n in lengths):
                fastpath.refuse(fastpath.SHARED_PREFIX, f"requests longer than the model's "
                                f"{max_length}-token context are truncated and scored whole")
    one_pass = False
    if groups or shared_runs:
        refusal = _one_pass_refusal(model, accepted)
        if refusal:
            fastpath.refuse(fastpath.ONE_PASS_CHOICES, refusal,
                            "each context is computed first and its choices after it, in two passes")
        one_pass = refusal is None
    chunks = [("plain", batch) for batch in _plain_batches(requests, singles, batch_size)]
    if one_pass:
        chunks += [("one-pass", batch) for batch in _one_pass_batches(requests, groups, batch_size)]
    else:
        chunks += [("shared", chunk) for chunk in _group_chunks(groups, batch_size)]
    chunks += [("run", run) for run in shared_runs]
    iterator = chunks
    if progress:
        from tqdm import tqdm

        iterator = tqdm(chunks, desc="scoring", unit="batch")
    with torch.inference_mode():
        for kind, chunk in iterator:
            if kind == "plain":
                _score_plain(model, requests, chunk, results, pad_token_id, max_length)
            elif kind == "one-pass":
                _score_one_pass(model, requests, chunk, results, pad_token_id, batch_size, None, accepted)
            elif kind == "shared":
                _score_shared(model, requests, chunk, results, pad_token_id, batch_size, accepted)
            elif not _score_run(model, requests, chunk, results, pad_token_id, batch_size, accepted,
                                one_pass):
                # the shared run's cache could not be reused: its members as if it did not exist
                run_groups, run_singles = _prefix_groups(requests, batch_size, max_length, window,
                                                         indices=chunk[1])
                for batch in _plain_batches(requests, run_singles, batch_size):
                    _score_plain(model, requests, batch, results, pad_token_id, max_length)
                _score_groups(model, requests, run_groups, results, pad_token_id, batch_size, accepted, one_pass)
    return results  # type: ignore[return-value]


def _score_groups(model, requests, groups, results, pad_token_id, batch_size, accepted, one_pass,
                  base=None) -> None:
    """Prefix groups in one pass per row (``one_pass``) or in two passes, continuing ``base``."""
    if one_pass:
        for batch in _one_pass_batches(requests, groups, batch_size):
            _score_one_pass(model, requests, batch, results, pad_token_id, batch_size, base, accepted)
    else:
        for chunk in _group_chunks(groups, batch_size):
            _score_shared(model, requests, chunk, results, pad_token_id, batch_size, accepted, base)


def cache_argument(accepted: set[str]) -> str | None:
    """The name under which a forward taking the arguments ``accepted`` receives a key/value
    cache: ``cache`` (transformers >= 5.25), ``past_key_values`` (earlier releases), or None."""
    for name in ("cache", "past_key_values"):
        if name in accepted:
            return name
    return None


def output_cache(output):
    """The key/value cache a model output carries (the field ``cache`` in transformers >= 5.25,
    ``past_key_values`` before), without touching the deprecated alias; None if it has none."""
    fields = getattr(output, "__dataclass_fields__", None) or {}
    for name in ("cache", "past_key_values"):
        if name in fields:
            return getattr(output, name)
    return None


def _kv_cache_refusal(model, accepted: set[str]) -> str | None:
    """Why ``model`` (whose forward takes the arguments ``accepted``) cannot continue from a
    key/value cache with an attention mask; None when it can."""
    from xlt.models import unwrap_model

    name = type(unwrap_model(model)).__name__
    try:
        can_generate = bool(unwrap_model(model).can_generate())
    except (AttributeError, TypeError):
        can_generate = False
    if not can_generate:
        return f"{name} is not a generative model (no key/value cache to continue from)"
    if cache_argument(accepted) is None:
        return f"{name}.forward takes no key/value cache argument ('cache' or 'past_key_values')"
    if "attention_mask" not in accepted:
        return f"{name}.forward takes no attention_mask"
    return None


def _sliding_window(model) -> int | None:
    """The model's sliding attention window, if some of its layers use one."""
    config = getattr(model, "config", None)
    config = getattr(config, "get_text_config", lambda: config)()
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or getattr(config, "use_sliding_window", True) is False:
        return None
    return window


def _forward_kwargs(model) -> set[str]:
    """The argument names of the underlying model's ``forward`` (empty if unknown)."""
    import inspect

    from xlt.models import unwrap_model

    try:
        return set(inspect.signature(unwrap_model(model).forward).parameters)
    except (TypeError, ValueError):
        return set()


def _longest_shared(max_length: int | None, window: int | None) -> int | None:
    """The longest request a cache may be shared for: the context (longer ones are truncated)
    and half a sliding window (padded prefix + padded tail stay inside the window, as the whole
    sequence would)."""
    if window:
        return window // 2 if max_length is None else min(max_length, window // 2)
    return max_length


def _prefix_groups(requests: Sequence[EncodedRequest], batch_size: int, max_length: int | None,
                   window: int | None = None, indices: Sequence[int] | None = None):
    """``([(prefix_length, [request indices]), ...], [indices scored alone])``: requests with
    the same first ``shared`` tokens form a group (at most ``batch_size`` members each). Only
    ``indices`` (default: all) are placed."""
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    singles = []
    longest = _longest_shared(max_length, window)
    for i in range(len(requests)) if indices is None else indices:
        request = requests[i]
        n = len(request.input_ids)
        if request.shared >= 2 and (longest is None or n <= longest):
            by_prefix.setdefault(request.input_ids[:request.shared], []).append(i)
        else:
            singles.append(i)
    groups = []
    for prefix, members in by_prefix.items():
        # every member keeps at least one token after the prefix (it is scored from the
        # prefix's last position and continues from there)
        length = min(len(prefix), min(len(requests[i].input_ids) for i in members) - 1)
        if len(members) < 2 or length < 2:
            singles.extend(members)
            continue
        for lo in range(0, len(members), batch_size):
            part = members[lo:lo + batch_size]
            if len(part) < 2:
                singles.extend(part)
            else:
                groups.append((length, part))
    singles.sort()
    return groups, singles


def _demonstration_groups(requests: Sequence[EncodedRequest], indices: Sequence[int]):
    """``([(base_length, [request indices]), ...], [indices in no run])``: runs of requests whose
    contexts (their first ``shared`` tokens; all but the last token when ``shared`` is 0) begin
    with the same ``base_length + 1`` token ids, such as the items of one (task, language,
    shots, seed), whose demonstrations are the same. Each run's first ``base_length`` tokens are
    computed once for all its members (:func:`_score_run`).

    The contexts are sorted by their ids, so each possible common prefix is a range of them and
    the longest common prefix of a range is the least over its neighbours'. A range either
    forms a run or splits where that least is reached (the branching of the token trie), taking
    whichever saves more tokens: ``(distinct contexts - 1) * base_length``. Requests of another
    task or language share at most a few tokens with these, so they fall into other runs."""
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i in indices:
        request = requests[i]
        context = request.input_ids[:request.shared] if request.shared else request.input_ids[:-1]
        by_context.setdefault(context, []).append(i)
    contexts = sorted(by_context)
    common = [_common_length(a, b) for a, b in zip(contexts, contexts[1:])]
    best: dict[tuple[int, int], tuple[int, list]] = {}
    stack = [(0, len(contexts), False)]
    while stack:  # post-order over the ranges, without recursion (the trie may be deep)
        lo, hi, children_done = stack.pop()
        if hi - lo < 2:
            best[(lo, hi)] = (0, [])
            continue
        least = min(common[lo:hi - 1])
        cuts = [k + 1 for k in range(lo, hi - 1) if common[k] == least]
        parts = list(zip([lo] + cuts, cuts + [hi]))
        if not children_done:
            stack.append((lo, hi, True))
            stack.extend((a, b, False) for a, b in parts)
            continue
        split_saving = sum(best[part][0] for part in parts)
        base = least - 1  # the last common token stays in each member's suffix (it predicts the next)
        own_saving = (hi - lo - 1) * base
        if base >= _MIN_BASE_TOKENS and own_saving >= max(split_saving, _MIN_SAVED_TOKENS):
            best[(lo, hi)] = (own_saving, [(base, lo, hi)])
        else:
            best[(lo, hi)] = (split_saving, [run for part in parts for run in best[part][1]])
        for part in parts:
            del best[part]
    runs, placed = [], set()
    for base, lo, hi in best[(0, len(contexts))][1] if contexts else []:
        members = sorted(i for context in contexts[lo:hi] for i in by_context[context])
        runs.append((base, members))
        placed.update(members)
    return runs, [i for i in indices if i not in placed]


def _plain_batches(requests, indices, batch_size):
    order = sorted(indices, key=lambda i: -len(requests[i].input_ids))
    return [order[k:k + batch_size] for k in range(0, len(order), max(1, batch_size))]


def _group_chunks(groups, batch_size):
    """Groups sorted by prefix length, ``batch_size`` prefixes to a chunk."""
    ordered = sorted(groups, key=lambda g: -g[0])
    return [ordered[k:k + batch_size] for k in range(0, len(ordered), batch_size)]


def _token_logp(logits, target):
    """Per-token natural-log probabilities and greedy flags, a few rows at a time in float32
    (so the copy stays small for large vocabularies)."""
    import torch

    logps, greedy = [], []
    for lo in range(0, logits.shape[0], _ROWS_PER_CHUNK):
        part = logits[lo:lo + _ROWS_PER_CHUNK].float()
        tgt = target[lo:lo + _ROWS_PER_CHUNK]
        logps.append(part.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(part, -1))
        greedy.append(part.argmax(-1) == tgt)
        del part
    return torch.cat(logps), torch.cat(greedy)


def _score_plain(model, requests, batch, results, pad_token_id, max_length, base=None, accepted=()) -> None:
    """Whole sequences, right-padded, no mask. With ``base`` (a :class:`_Base`), each sequence
    continues the base's tokens: its cache, expanded over the batch, and positions after it."""
    import torch

    device = next(model.parameters()).device
    rows, starts = [], []
    for i in batch:
        ids, start = harness_window(list(requests[i].input_ids), requests[i].start, max_length)
        rows.append(ids)
        starts.append(max(1, start))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    scored = torch.zeros((len(rows), width - 1), dtype=torch.bool)  # position t predicts t+1
    for r, ids in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        scored[r, starts[r] - 1:len(ids) - 1] = True
    input_ids, scored = input_ids.to(device), scored.to(device)
    # No attention mask (as the harness): right padding under causal attention never reaches
    # a real token, and the unmasked causal path is the fast one.
    # The last token is only a target: it is not fed (so a row of max_length + 1 tokens fits).
    fed = input_ids[:, :-1] if width > 1 else input_ids
    if base is None:
        logits = model(input_ids=fed, use_cache=False).logits[:, :width - 1]
    else:  # still no mask: the base is real tokens and the padding comes after every real one
        logits = model(input_ids=fed, **base.kwargs(len(rows), fed.shape[1], accepted)).logits[:, :width - 1]
    token_logp, greedy = _token_logp(logits, input_ids[:, 1:])
    # float64 sum: the total of a long text does not depend on the padded width
    totals = torch.where(scored, token_logp, torch.zeros_like(token_logp)).double().sum(-1).tolist()
    all_greedy = (greedy | ~scored).all(-1).tolist()
    for r, i in enumerate(batch):
        results[i] = (totals[r], bool(all_greedy[r]))


def harness_window(ids: list[int], start: int, max_length: int | None) -> tuple[list[int], int]:
    """``(ids, start)`` cut to what lm-evaluation-harness scores of a request longer than the
    model's context: the last ``max_length + 1`` tokens, of which all but the last are fed
    (``tokens[-(L+1):-1]``) and all but the first are predicted; ``start`` moves with the cut
    (never below 1). A request of at most ``max_length + 1`` tokens is left whole."""
    if max_length is None or len(ids) <= max_length + 1:
        return ids, start
    cut = len(ids) - (max_length + 1)
    return ids[cut:], max(1, start - cut)


def _score_shared(model, requests, chunk, results, pad_token_id, batch_size, accepted, base=None) -> None:
    """One chunk of prefix groups: the prefixes in one right-padded pass (no mask: the fast
    causal path), keeping its key/value cache; then the members' continuations, ``batch_size``
    at a time, against their prefixes' cache, with a mask that hides the prefixes' padding and
    positions that continue the prefixes'. With ``base`` (a :class:`_Base`), the prefixes
    continue the base's cache (expanded over the chunk) and every position is offset by it."""
    import torch

    device = next(model.parameters()).device
    lengths = [length for length, _ in chunk]
    width = max(lengths)
    prefix_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
    prefix_mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for g, (length, members) in enumerate(chunk):
        prefix_ids[g, :length] = torch.tensor(requests[members[0]].input_ids[:length])
        prefix_mask[g, :length] = 1
    prefix_ids = prefix_ids.to(device)
    # does any member score a token inside its prefix (afp)? else only the last logits are needed
    inner = any(requests[i].start < length for length, members in chunk for i in members)
    kwargs = {"use_cache": True} if base is None else base.kwargs(len(chunk), width, accepted)
    offset = 0 if base is None else base.length
    last_cols = sorted({length - 1 for length in lengths})
    if not inner and "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = torch.tensor(last_cols, device=device)
        last_at = {c: k for k, c in enumerate(last_cols)}
    else:
        last_at = {c: c for c in last_cols}
    out = model(input_ids=prefix_ids, **kwargs)
    prefix_logits, cache = out.logits, output_cache(out)
    if not _attention_only(cache):
        # no cache, or recurrent / linear-attention state that the prefix padding has entered:
        # this chunk is scored whole
        what = ("no key/value cache" if cache is None
                else f"a {type(cache).__name__} that holds more than attention keys and values")
        fastpath.refuse(fastpath.SHARED_PREFIX, f"{type(model).__name__} returned {what}")
        everyone = [i for _, group in chunk for i in group]
        for lo in range(0, len(everyone), batch_size):
            _score_plain(model, requests, everyone[lo:lo + batch_size], results, pad_token_id, None,
                         base, accepted)
        return
    fastpath.taken(fastpath.SHARED_PREFIX)
    every_group = torch.arange(len(chunk), device=device)
    last = torch.log_softmax(prefix_logits[every_group, [last_at[n - 1] for n in lengths]].float(), -1)
    last_greedy = last.argmax(-1)  # (groups,): predicts each member's token [length]
    if inner:  # running sums over the prefix, so any member's range [start, length) is a difference
        inner_logp, inner_greedy = _token_logp(prefix_logits[:, :-1], prefix_ids[:, 1:])
        zero = torch.zeros((len(chunk), 1), dtype=torch.float64)
        inner_sum = torch.cat([zero, inner_logp.double().cpu().cumsum(-1)], -1)
        inner_miss = torch.cat([zero, (~inner_greedy).double().cpu().cumsum(-1)], -1)
    del prefix_logits, out

    members = sorted(((g, i) for g, (_, group) in enumerate(chunk) for i in group),
                     key=lambda m: lengths[m[0]] - len(requests[m[1]].input_ids))  # longest tail first
    for lo in range(0, len(members), batch_size):
        batch = members[lo:lo + batch_size]
        rows = torch.tensor([g for g, _ in batch])
        tails = [requests[i].input_ids[lengths[g]:] for g, i in batch]
        tail_width = max(len(x) for x in tails)
        tail_ids = torch.full((len(batch), tail_width), pad_token_id, dtype=torch.long)
        tail_mask = torch.zeros((len(batch), tail_width), dtype=torch.long)
        # tokens scored from the tail pass: position j predicts tail token j + 1
        scored = torch.zeros((len(batch), max(1, tail_width - 1)), dtype=torch.bool)
        first_scored, inner_lo = [], []
        for r, (g, i) in enumerate(batch):
            tail, start = tails[r], max(1, requests[i].start)
            tail_ids[r, :len(tail)] = torch.tensor(tail)
            tail_mask[r, :len(tail)] = 1
            scored[r, max(start, lengths[g] + 1) - lengths[g] - 1:len(tail) - 1] = True
            first_scored.append(start <= lengths[g])
            inner_lo.append(min(start, lengths[g]) - 1)
        sub = _select_cache(cache, rows.to(device))
        mask = [prefix_mask[rows], tail_mask]
        if offset:
            mask.insert(0, torch.ones((len(batch), offset), dtype=torch.long))
        kwargs = {"attention_mask": torch.cat(mask, -1).to(device),
                  cache_argument(accepted): sub, "use_cache": True}
        if "position_ids" in accepted:
            starts = torch.tensor([offset + lengths[g] for g, _ in batch])
            kwargs["position_ids"] = (starts[:, None] + torch.arange(tail_width)[None]).to(device)
        tail_ids = tail_ids.to(device)
        tail_logits = model(input_ids=tail_ids, **kwargs).logits[:, :-1]
        del sub
        totals = torch.zeros(len(batch), dtype=torch.float64)
        greedy = torch.ones(len(batch), dtype=torch.bool)
        if tail_width > 1:
            tail_logp, tail_greedy = _token_logp(tail_logits, tail_ids[:, 1:])
            keep = scored.to(device)
            totals += torch.where(keep, tail_logp, torch.zeros_like(tail_logp)).double().sum(-1).cpu()
            greedy &= (tail_greedy | ~keep).all(-1).cpu()
        del tail_logits
        # token [length], predicted at the prefix's last position
        first = torch.tensor(first_scored)
        device_rows = rows.to(device)
        first_lp = last[device_rows, tail_ids[:, 0]].double().cpu()
        first_greedy = (last_greedy[device_rows] == tail_ids[:, 0]).cpu()
        totals += torch.where(first, first_lp, torch.zeros_like(first_lp))
        greedy &= first_greedy | ~first
        if inner:  # tokens [start, length) inside the prefix
            cols = torch.tensor(inner_lo)
            ends = torch.tensor([lengths[g] - 1 for g, _ in batch])
            totals += inner_sum[rows, ends] - inner_sum[rows, cols]
            greedy &= (inner_miss[rows, ends] - inner_miss[rows, cols]) == 0
        for r, (_, i) in enumerate(batch):
            results[i] = (float(totals[r]), bool(greedy[r]))


def _one_pass_refusal(model, accepted: set[str]) -> str | None:
    """Why ``model`` cannot score a context and all its choices in one row (the context once,
    then each choice's tokens seeing the context and themselves, through a custom 4-D attention
    mask and per-token positions); None when it can. transformers' masking utilities pass a
    4-D mask through as given; a model that builds its mask otherwise, or its position biases
    from a 2-D padding mask (ALiBi), keeps the two-pass path."""
    import sys

    from xlt.models import unwrap_model

    inner = unwrap_model(model)
    name = type(inner).__name__
    if "position_ids" not in accepted:
        return f"{name}.forward takes no position_ids"
    implementation = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    if implementation not in ("sdpa", "eager"):
        return f"the {implementation!r} attention implementation takes no custom 4-D mask (sdpa and eager do)"
    module = vars(sys.modules[type(inner).__module__]) if type(inner).__module__ in sys.modules else {}
    if not any(n in module for n in ("create_causal_mask", "create_sliding_window_causal_mask")):
        return f"{name} does not build its attention mask with transformers' masking utilities"
    if any("alibi" in n.lower() for n in module):
        return f"{name} derives ALiBi position biases from a 2-D padding mask"
    return None


def _one_pass_batches(requests, groups, batch_size):
    """Prefix groups packed into one-pass batches: one row per group (its prefix, then every
    member's remaining tokens), rows sorted by length so little is padded, at most
    ``batch_size`` requests to a batch (one group may be a batch alone)."""
    def row_length(group):
        length, members = group
        return length + sum(len(requests[i].input_ids) - length for i in members)

    batches, current, count = [], [], 0
    for group in sorted(groups, key=row_length, reverse=True):
        if current and count + len(group[1]) > batch_size:
            batches.append(current)
            current, count = [], 0
        current.append(group)
        count += len(group[1])
    if current:
        batches.append(current)
    return batches


_SCORED_ROWS_PER_CHUNK = 512


def _score_one_pass(model, requests, batch, results, pad_token_id, batch_size, base=None,
                    accepted=()) -> None:
    """A batch of prefix groups, one row each: the group's prefix (positions 0..L-1), then each
    member's tokens after it (positions L, L+1, ...), right-padded. A 4-D additive mask lets each
    member's tokens see the prefix and their own earlier tokens only, so every token is
    computed once and each request's scores are its one-at-a-time scores (to float rounding).
    Token t of a member is predicted at the prefix position t - 1 (t < L), at the prefix's last
    position (t = L, every member), or at its own position in the row. With ``base`` (a
    :class:`_Base`), rows continue the base's cache (expanded over the batch) and every position
    is offset by it. A model whose returned cache holds more than attention keys and values
    (recurrent state would carry one choice into the next) has the batch's requests scored
    whole, announced once."""
    import torch

    device = next(model.parameters()).device
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    rows, segments, positions = [], [], []
    scored_rows, scored_cols, targets, owners = [], [], [], []
    members_in_order = []
    for r, (length, members) in enumerate(batch):
        prefix = list(requests[members[0]].input_ids[:length])
        ids, segment, position = prefix[:], [0] * length, list(range(length))
        for j, i in enumerate(members, 1):
            request = requests[i]
            tail = list(request.input_ids[length:])
            at = len(ids)  # the row index of this member's token [length]
            for t in range(max(1, request.start), len(request.input_ids)):
                scored_rows.append(r)
                scored_cols.append(t - 1 if t <= length else at + t - length - 1)
                targets.append(request.input_ids[t])
                owners.append(len(members_in_order))
            members_in_order.append(i)
            ids += tail
            segment += [j] * len(tail)
            position += range(length, length + len(tail))
        rows.append(ids)
        segments.append(segment)
        positions.append(position)
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    segment_ids = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, ids in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        segment_ids[r, :len(ids)] = torch.tensor(segments[r])
        position_ids[r, :len(ids)] = torch.tensor(positions[r])
    column = torch.arange(width)
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]
    allowed = (column[:, None] >= column[None, :])[None] & ((key == 0) | (key == query)) & (key >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)[None]  # padding sees itself (no empty softmax row)
    offset = 0 if base is None else base.length
    if offset:  # every token sees the whole base
        allowed = torch.cat([torch.ones((len(rows), width, offset), dtype=torch.bool), allowed], -1)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
    # the cache is asked for to see that it holds attention keys and values only: recurrent or
    # linear-attention state runs along the row, across the choices, whatever the mask says
    kwargs = {"use_cache": True} if base is None else base.kwargs(len(rows), width, accepted)
    kwargs["attention_mask"] = mask.to(device)
    kwargs["position_ids"] = (position_ids + offset).to(device)
    # only the columns some member scores need logits (under lm-eval, not the context's
    # earlier positions): the head and its softmax are a large share of a big vocabulary's cost
    needed = sorted(set(scored_cols))
    if len(needed) < width and "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = torch.tensor(needed, device=device) if needed else 1
        kept = {c: k for k, c in enumerate(needed)}
        scored_cols = [kept[c] for c in scored_cols]
    out = model(input_ids=input_ids.to(device), **kwargs)
    del kwargs
    logits, cache = out.logits, output_cache(out)
    del out
    if not _attention_only(cache):
        what = ("no key/value cache" if cache is None
                else f"a {type(cache).__name__} that holds more than attention keys and values")
        fastpath.refuse(fastpath.ONE_PASS_CHOICES, f"{type(model).__name__} returned {what}",
                        "these requests are scored whole")
        del logits, cache
        everyone = [i for _, group in batch for i in group]
        for lo in range(0, len(everyone), batch_size):
            _score_plain(model, requests, everyone[lo:lo + batch_size], results, pad_token_id, None,
                         base, accepted)
        return
    del cache
    fastpath.taken(fastpath.SHARED_PREFIX)
    fastpath.taken(fastpath.ONE_PASS_CHOICES)
    totals = torch.zeros(len(members_in_order), dtype=torch.float64)
    misses = torch.zeros(len(members_in_order), dtype=torch.long)
    if targets:
        row_index, col_index = torch.tensor(scored_rows, device=device), torch.tensor(scored_cols, device=device)
        target, owner = torch.tensor(targets, device=device), torch.tensor(owners)
        for lo in range(0, len(targets), _SCORED_ROWS_PER_CHUNK):
            hi = lo + _SCORED_ROWS_PER_CHUNK
            part = logits[row_index[lo:hi], col_index[lo:hi]].float()  # (n, vocab)
            tgt = target[lo:hi]
            logp = part.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(part, -1)
            totals.index_add_(0, owner[lo:hi], logp.double().cpu())
            misses.index_add_(0, owner[lo:hi], (part.argmax(-1) != tgt).long().cpu())
            del part
    del logits
    for k, i in enumerate(members_in_order):
        results[i] = (float(totals[k]), bool(misses[k] == 0))


@dataclass
class _Base:
    """The key/value cache of a run's common first ``length`` tokens (batch 1)."""

    cache: object
    length: int

    def kwargs(self, rows: int, width: int, accepted) -> dict:
        """Forward arguments that continue the base with ``rows`` sequences of ``width`` tokens:
        the cache expanded to ``rows`` (a view: each layer's first update concatenates onto
        it) and positions after the base."""
        import torch

        device = self.cache.layers[0].keys.device
        kwargs = {cache_argument(accepted): _expand_cache(self.cache, rows), "use_cache": True}
        if "position_ids" in accepted:
            kwargs["position_ids"] = (self.length + torch.arange(width, device=device))[None].expand(rows, -1)
        return kwargs


def _score_run(model, requests, run, results, pad_token_id, batch_size, accepted, one_pass=False) -> bool:
    """One run of requests that share their first ``base_length`` tokens (see
    :func:`_demonstration_groups`): those tokens are computed once (batch 1) and every member's
    remaining tokens are scored against their cache, as :func:`_score_shared` and
    :func:`_score_plain` do without it. Scored tokens inside the base are summed once from its
    logits. False (nothing scored, refusal announced) when the model's cache cannot be shared."""
    import torch

    length, members = run
    device = next(model.parameters()).device
    ids = requests[members[0]].input_ids
    starts = [max(1, requests[i].start) for i in members]
    inner = min(starts) <= length  # some member scores tokens [start, length] inside the base
    kwargs = {"use_cache": True}
    if not inner and "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = 1
    base_ids = torch.tensor([ids[:length]], dtype=torch.long, device=device)
    out = model(input_ids=base_ids, **kwargs)
    cache = output_cache(out)
    if not _attention_only(cache) or not all(layer.keys is not None and layer.keys.dim() == 4
                                             for layer in cache.layers):
        what = ("no key/value cache" if cache is None
                else f"a {type(cache).__name__} whose layers cannot be expanded over a batch")
        fastpath.refuse(SHARED_DEMONSTRATIONS, f"{type(model).__name__} returned {what}")
        return False
    fastpath.taken(SHARED_DEMONSTRATIONS)
    if inner:  # running sums over tokens 1..length (position t - 1 predicts token t)
        target = torch.tensor(ids[1:length + 1], dtype=torch.long, device=device)
        logp, greedy = _token_logp(out.logits[0, :length], target)
        zero = torch.zeros(1, dtype=torch.float64)
        inner_sum = torch.cat([zero, logp.double().cpu().cumsum(0)])
        inner_miss = torch.cat([zero, (~greedy).double().cpu().cumsum(0)])
    del out
    base = _Base(cache, length)
    # each member from the base's end on; its token [length] is the first input, so the suffix
    # pass scores tokens [length + 1:] and the base the ones before
    suffixes = [EncodedRequest(requests[i].input_ids[length:], max(1, requests[i].start - length),
                               max(0, requests[i].shared - length)) for i in members]
    scores: list = [None] * len(members)
    groups, singles = _prefix_groups(suffixes, batch_size, None)
    for batch in _plain_batches(suffixes, singles, batch_size):
        _score_plain(model, suffixes, batch, scores, pad_token_id, None, base, accepted)
    _score_groups(model, suffixes, groups, scores, pad_token_id, batch_size, accepted, one_pass, base)
    for k, i in enumerate(members):
        total, all_greedy = scores[k]
        if starts[k] <= length:
            total += float(inner_sum[length] - inner_sum[starts[k] - 1])
            all_greedy = all_greedy and bool(inner_miss[length] == inner_miss[starts[k] - 1])
        results[i] = (total, all_greedy)
    return True


def _expand_cache(cache, rows: int):
    """A cache whose layers view ``cache``'s batch-1 keys and values as ``rows`` rows (no
    copy); ``cache`` is left as is (an attention layer's update replaces its tensors)."""
    import copy

    expanded = copy.copy(cache)
    expanded.layers = []
    for layer in cache.layers:
        layer = copy.copy(layer)
        layer.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
        layer.values = layer.values.expand(rows, *layer.values.shape[1:])
        expanded.layers.append(layer)
    return expanded


def _attention_only(cache) -> bool:
    """Whether ``cache`` holds only attention keys and values (per position, so the padding
    after a shorter prefix can be masked out)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    if not isinstance(cache, DynamicCache):
        return False
    return all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers)


def _select_cache(cache, rows):
    """A cache holding ``cache``'s entries for ``rows`` (repeats allowed); ``cache`` is left as is."""
    import copy

    # attention layers' reorder and update replace their tensors: a shallow copy is enough
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.reorder_cache(rows)
    return selected


def model_max_length(model, tokenizer) -> int | None:
    """The longest sequence the model takes (its position table), if it has one."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and value < 10**9 else None
