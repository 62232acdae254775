"""The logit lens at every layer: which language a causal LM "thinks in" (Wendler et al., 2024).

Wendler et al. ("Do Llamas Work in English? On the Latent Language of Multilingual
Transformers", ACL 2024) decode each block's output ``h_l`` with the model's own final norm and
unembedding, ``softmax(U · norm(h_l))``, at the position that predicts the next word, and track
per layer the probability of the correct next word in the target language, of its translation in
a pivot language (English), and the entropy of the distribution.

Here, per prompt and layer ``l = 1..N`` (the output of block ``l - 1``; layer N is the model's own
output distribution):

* ``p_target`` — probability of the first token of the expected next word;
* ``p_pivot`` — probability of the first token of its pivot-language translation;
* ``entropy`` — ``-sum_v p_v ln p_v`` of the lens distribution, in nats.

One forward pass per batch: forward hooks keep each block's output at the last real position
of every row only (right padding; the causal mask keeps the pads after it from mattering), then
norm and head run once on the stacked ``(N, batch, dim)`` states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from xlt.errors import ConfigError, DataError, ModelError

METRICS = ("p_target", "p_pivot", "entropy")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "layer_norm")


@dataclass(frozen=True)
class LensProbe:
    """One prompt, the expected next word ``target`` and its pivot-language translation ``pivot``."""

    prompt: str
    target: str
    pivot: str


def final_norm_and_head(model):
    """``(final_norm, head, softcap)`` of a causal LM: the modules the model applies after its last
    block, and Gemma-2 style final logit soft-capping (None when the model has none)."""
    from xlt.models import decoder_blocks, unwrap_model

    base = unwrap_model(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None:
        raise ModelError(f"{type(base).__name__} has no output head (get_output_embeddings)")
    blocks = decoder_blocks(base)
    for inner_name in ("model", "transformer", "gpt_neox"):
        inner = getattr(base, inner_name, None)
        if inner is not None and not hasattr(inner, "layers") and not hasattr(inner, "h") \
                and hasattr(inner, "decoder"):
            inner = inner.decoder  # OPT-style: model.decoder.final_layer_norm
        for name in FINAL_NORM_NAMES:
            norm = getattr(inner, name, None) if inner is not None else None
            if norm is not None and norm is not blocks and callable(norm):
                return norm, head, getattr(base.config, "final_logit_softcapping", None)
    raise ModelError(f"cannot find the final norm of {type(base).__name__} (looked for "
                     f"{', '.join(FINAL_NORM_NAMES)})")


def lens_log_probs(model, input_ids, attention_mask=None):
    """Log-probabilities of the logit lens at the last real position of every row, all layers.

    ``input_ids``, ``attention_mask``: ``(batch, seq)``, right-padded. Returns ``(N, batch,
    vocab)`` float32, row ``l - 1`` for layer ``l`` (output of block ``l - 1``); row ``N - 1`` is
    the model's own next-token distribution.
    """
    import torch

    from xlt.models import decoder_blocks

    norm, head, softcap = final_norm_and_head(model)
    blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device)
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask, device=device)
    last = mask.long().sum(dim=1) - 1  # (batch,)
    if bool((last < 0).any()):
        raise DataError("an empty prompt has no position to read the lens at")
    rows = torch.arange(ids.shape[0], device=device)
    captured: list = [None] * len(blocks)

    def make_hook(index: int):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            captured[index] = hidden[rows, last]  # (batch, dim): only the predicting position is kept
        return hook

    handles = [block.register_forward_hook(make_hook(i)) for i, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            if any(c is None for c in captured):
                raise ModelError(f"could not capture every block's output of {type(model).__name__}")
            states = torch.stack(captured)  # (N, batch, dim)
            logits = head(norm(states)).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
    finally:
        for handle in handles:
            handle.remove()
    return torch.log_softmax(logits, dim=-1)


def lens_metrics(log_probs, target_ids, pivot_ids) -> dict:
    """``{"p_target", "p_pivot", "entropy"}``, each ``(N, batch)``, from ``(N, batch, vocab)``
    log-probabilities and one token id per row for the target and the pivot."""
    import torch

    index = torch.arange(log_probs.shape[1], device=log_probs.device)
    target = torch.as_tensor(target_ids, device=log_probs.device)
    pivot = torch.as_tensor(pivot_ids, device=log_probs.device)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).nan_to_num().sum(dim=-1)
    return {"p_target": probs[:, index, target], "p_pivot": probs[:, index, pivot], "entropy": entropy}


def first_token(tokenizer, text: str) -> int:
    """The first token of ``text`` encoded on its own, without special tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DataError(f"{text!r} encodes to no token")
    return int(ids[0])


@dataclass
class LensResult:
    """Per-prompt values ``(n_prompts, N)`` per metric, and which prompts enter the averages."""

    probes: list[LensProbe]
    target_tokens: list[int]
    pivot_tokens: list[int]
    values: dict[str, list[list[float]]]
    included: list[bool]
    num_layers: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, list[float]]]:
        """Per metric: ``mean`` and the 95 % band ``low`` / ``high`` (mean ± 1.96 standard errors) per
        layer, over the included prompts."""
        rows = [i for i, keep in enumerate(self.included) if keep]
        n = len(rows)
        out = {}
        for metric in METRICS:
            mean, low, high = [], [], []
            for layer in range(self.num_layers):
                xs = [self.values[metric][i][layer] for i in rows]
                m = sum(xs) / n
                sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
                half = 1.96 * sd / math.sqrt(n)
                mean.append(m)
                low.append(m - half)
                high.append(m + half)
            out[metric] = {"mean": mean, "low": low, "high": high}
        return out

    def to_dict(self) -> dict:
        summary = self.summary()
        return {
            "num_layers": self.num_layers, "layers": list(range(1, self.num_layers + 1)),
            "n_prompts": len(self.probes), "n_averaged": sum(self.included),
            "entropy_unit": "nats",
            **{metric: summary[metric]["mean"] for metric in METRICS},
            "ci95": {metric: {"low": summary[metric]["low"], "high": summary[metric]["high"]} for metric in METRICS},
            "per_prompt": [
                {"prompt": p.prompt, "target": p.target, "pivot": p.pivot, "target_token": t, "pivot_token": v,
                 "averaged": keep, **{metric: self.values[metric][i] for metric in METRICS}}
                for i, (p, t, v, keep) in enumerate(zip(self.probes, self.target_tokens, self.pivot_tokens,
                                                          self.included))],
            **self.extra,
        }


def run_lens(model, tokenizer, probes: Sequence[LensProbe], *, batch_size: int = 16,
             progress: Callable[[int], Any] | None = None) -> LensResult:
    """The logit lens over ``probes``, ``batch_size`` prompts per forward pass.

    A prompt whose target and pivot share their first token cannot tell the two languages apart;
    it is kept in ``per_prompt`` but left out of the averages (as Wendler et al. drop such words).
    """
    import torch

    from xlt.models import num_layers

    if not probes:
        raise DataError("no prompts to run the lens on")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets = [first_token(tokenizer, p.target) for p in probes]
    pivots = [first_token(tokenizer, p.pivot) for p in probes]
    n_layers = num_layers(model)
    values: dict[str, list[list[float]]] = {metric: [] for metric in METRICS}
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    for start in range(0, len(probes), batch_size):
        batch = probes[start:start + batch_size]
        encoded = [tokenizer(p.prompt)["input_ids"] for p in batch]
        for p, ids in zip(batch, encoded):
            if not ids:
                raise DataError(f"prompt {p.prompt!r} encodes to no token")
            if limit and len(ids) > limit:
                raise DataError(f"prompt {p.prompt[:40]!r}... has {len(ids)} tokens, more than the "
                                f"model's {limit} positions")
        width = max(map(len, encoded))
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in encoded])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in encoded])
        log_probs = lens_log_probs(model, ids, mask)
        metrics = lens_metrics(log_probs, targets[start:start + len(batch)], pivots[start:start + len(batch)])
        for metric in METRICS:
            values[metric].extend(metrics[metric].T.cpu().double().tolist())
        if progress is not None:
            progress(len(batch))
    included = [t != v for t, v in zip(targets, pivots)]
    if not any(included):
        raise DataError("every prompt's target and pivot start with the same token: the lens cannot "
                        "tell the two languages apart")
    return LensResult(list(probes), targets, pivots, values, included, n_layers)


# --------------------------------------------------------------------------------------------
# Probes


def read_probes(path) -> list[LensProbe]:
    """``{"prompt", "target", "pivot"}`` rows (JSON Lines or any format :func:`xlt.formats.iter_rows` reads)."""
    from xlt.formats import iter_rows

    probes = []
    for where, row in iter_rows(path):
        if not isinstance(row, dict):
            raise DataError("expected a JSON object with prompt, target and pivot", path=path, **where)
        for key in ("prompt", "target", "pivot"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise DataError("missing, empty or not a string", path=path, field=key, **where)
        probes.append(LensProbe(row["prompt"], row["target"], row["pivot"]))
    if not probes:
        raise DataError("no prompts", path=path)
    return probes


def probes_from_pairs(pairs: Iterable[Any], *, pivot: str, target_lang: str | None = None,
                      source_lang: str | None = None, shots: int = 4) -> list[LensProbe]:
    """Wendler et al.'s word tasks from parallel pairs that have the pivot language on one side.

    The pairs give a table pivot word -> {language: word}. With ``source_lang``, a translation
    task: ``{shots}`` examples ``src: "w_src" - tgt: "w_tgt"`` then ``src: "query" - tgt: "``;
    without it, the repetition task ``tgt: "w" - tgt: "w"``. The target is the query's word in
    ``target_lang``, the pivot its pivot-language word. Few-shot examples are the next ``shots``
    words of the table (in file order, wrapping around), so the prompts are deterministic.
    """
    table: dict[str, dict[str, str]] = {}
    languages: set[str] = set()
    for pair in pairs:
        sides = {pair.src_lang: pair.src.strip(), pair.tgt_lang: pair.tgt.strip()}
        if pivot not in sides or len(sides) != 2:
            continue
        other = next(lang for lang in sides if lang != pivot)
        languages.add(other)
        table.setdefault(sides[pivot], {})[other] = sides[other]
    if not table:
        raise DataError(f"no pair has the pivot language {pivot!r} on one side")
    if target_lang is None:
        if len(languages) != 1:
            raise ConfigError(f"the pairs pair {pivot} with several languages ({', '.join(sorted(languages))}); "
                              "choose one with --target-lang")
        target_lang = next(iter(languages))
    source = source_lang or target_lang
    for lang in {target_lang, source}:
        if lang not in languages:
            raise ConfigError(f"no pair of {pivot!r} with {lang!r} (languages paired with {pivot}: "
                              f"{', '.join(sorted(languages))})")
    rows = [(pv, words[source], words[target_lang]) for pv, words in table.items()
            if source in words and target_lang in words]
    if len(rows) < shots + 1:
        raise DataError(f"{len(rows)} word(s) in both {source} and {target_lang}, fewer than --shots {shots} + 1")
    probes = []
    for i, (pivot_word, query, answer) in enumerate(rows):
        examples = [rows[(i + k) % len(rows)] for k in range(1, shots + 1)]
        lines = [f'{source}: "{s}" - {target_lang}: "{t}"' for _, s, t in examples]
        lines.append(f'{source}: "{query}" - {target_lang}: "')
        probes.append(LensProbe("\n".join(lines), answer, pivot_word))
    return probes
