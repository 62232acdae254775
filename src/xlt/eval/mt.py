"""Machine-translation evaluation: translate every direction, score with sacrebleu, tabulate.

Conventions for encoder-decoder models (M2M-100 / NLLB, as the reference implementation's
fairseq setup): the source is ``[src_lang] tokens </s>``, the decoder starts with ``</s>`` and the target-language token is
forced as the first generated token (``forced_bos_token_id``); labels are
``[tgt_lang] tokens </s>``. A language's token is the code itself (NLLB, ``deu_Latn``) or
``__code__`` (M2M-100, ``__de__``). Decoder-only models see a :class:`TranslationPrompt`
(``"{src_lang}: {src}\\n{tgt_lang}:"`` by default) and continue it with the target. These
conventions live in :mod:`xlt.translation`, which the LSLo trainer shares.

Metrics (sacrebleu): BLEU (13a), chrF (``chrf_word_order=2`` gives chrF++) and spBLEU, i.e.
BLEU on SentencePiece pieces, only when a SentencePiece model file is given (sacrebleu would
download the FLORES model, which is impossible offline). The FLORES-101 model
(``sacrebleu_tokenizer_spm.model``, the reference's ``--tokenize spm``) and the FLORES-200
model (``flores200sacrebleuspm``) are recognised by file name and signed as sacrebleu signs
them. Beside them, the wrong-language rate (:mod:`xlt.eval.language_id`): the share of a
direction's hypotheses not identified as its target language.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from xlt.errors import ConfigError, ModelError
from xlt.translation import TranslationPrompt, encode_texts, language_token_id

TIER_ORDER = ("high", "med", "low")


# --------------------------------------------------------------------------------------------
# Generation


def translate(model, tokenizer, sources: Sequence[str], src_lang: str, tgt_lang: str, **kwargs) -> list[str]:
    """Translate ``sources`` from ``src_lang`` to ``tgt_lang``; options as :func:`translate_many`."""
    return translate_many(model, tokenizer, [(text, src_lang, tgt_lang) for text in sources], **kwargs)


#: fairseq-generate's defaults (the LSLo reference's evaluation): at most ``a * src_len + b``
#: generated tokens, the EOS marker excluded.
FAIRSEQ_MAX_LEN_A = 0.0
FAIRSEQ_MAX_LEN_B = 200


def generation_limit(src_len: int, max_len_a: float = FAIRSEQ_MAX_LEN_A, max_len_b: int = FAIRSEQ_MAX_LEN_B) -> int:
    """fairseq-generate's length limit, ``int(max_len_a * src_len + max_len_b)`` tokens after the
    target-language tag, for a batch whose padded source is ``src_len`` tokens wide.

    fairseq then forces EOS; ``generate(max_new_tokens=...)`` stops without it, which leaves
    the same words. The defaults (a = 0, b = 200) allow 200 tokens whatever the source length.
    """
    return int(max_len_a * src_len + max_len_b)


def translate_many(model, tokenizer, items: Sequence[tuple[str, str, str]], *, num_beams: int = 5,
                   batch_size: int = 16, max_new_tokens: int | None = None,
                   max_len_a: float = FAIRSEQ_MAX_LEN_A, max_len_b: int = FAIRSEQ_MAX_LEN_B,
                   max_source_length: int = 256,
                   lslo_languages: Sequence[str] | None = None,
                   progress: Callable[[int], None] | None = None,
                   prompt: TranslationPrompt | None = None) -> list[str]:
    """Translate ``(text, src_lang, tgt_lang)`` items; batches may mix directions.

    Decoder-only models continue ``prompt`` (a :class:`TranslationPrompt`, default template
    ``"{src_lang}: {src}\\n{tgt_lang}:"``), left-padded; the hypothesis is the continuation up to
    EOS, first line only, with the prompt stripped.

    The decoder starts with ``[decoder_start, tgt_lang]`` for every example, which is what
    ``forced_bos_token_id`` produces for a single direction (the forced token scores 0) but works
    per example. Generation stops after ``max_new_tokens`` tokens after the language tag (the
    continuation of a decoder-only prompt), or by default after fairseq-generate's
    :func:`generation_limit` ``int(max_len_a * src_len + max_len_b)`` (200 tokens), ``src_len``
    being the batch's padded source width (decoder-only: the prompts'). With
    ``lslo_languages`` (an :class:`~xlt.lslo.LSLoModel`'s inventory) each example is routed by its
    own source and target language. Batches are sorted by length (order restored afterwards);
    beam search with length penalty 1.0, as the reference's fairseq-generate.
    """
    import torch

    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "generate"):
        raise ModelError(f"MT evaluation needs a generative model; got {type(model).__name__}")
    if num_beams < 1 or batch_size < 1 or (max_new_tokens is not None and max_new_tokens < 1):
        raise ConfigError("num_beams, batch_size and max_new_tokens must be >= 1")
    if not max_len_a >= 0 or max_len_b < 0 or (max_len_a == 0 and max_len_b == 0):
        raise ConfigError(f"max_len_a and max_len_b must be >= 0 and allow a token, got {max_len_a} and {max_len_b}")

    def limit(width: int) -> int:
        return max_new_tokens if max_new_tokens is not None else max(1, generation_limit(width, max_len_a, max_len_b))
    index = _lslo_index(items, lslo_languages)
    if not getattr(config, "is_encoder_decoder", False):
        return _translate_causal(model, tokenizer, items, prompt or TranslationPrompt(), index,
                                 num_beams=num_beams, batch_size=batch_size, limit=limit,
                                 max_source_length=max_source_length, progress=progress)
    encoded: list[list[int]] = [[] for _ in items]
    by_src: dict[str, list[int]] = {}
    for k, (_, src, _) in enumerate(items):
        by_src.setdefault(src, []).append(k)
    for src, ks in by_src.items():
        for k, ids in zip(ks, encode_texts(tokenizer, [items[k][0] for k in ks], src, max_source_length)):
            encoded[k] = ids
    tgt_tokens = {t: language_token_id(tokenizer, t) for t in {it[2] for it in items}}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    outputs: list[str] = [""] * len(encoded)
    model.eval()
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        ids, mask = _pad([encoded[i] for i in rows], pad, left=False)
        prefix = torch.tensor([[start, tgt_tokens[items[i][2]]] for i in rows], dtype=torch.long)
        kwargs: dict[str, Any] = dict(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      decoder_input_ids=prefix.to(device), num_beams=num_beams,
                                      max_new_tokens=limit(ids.shape[1]), do_sample=False, length_penalty=1.0,
                                      early_stopping=num_beams > 1, forced_bos_token_id=None)
        if index is not None:
            kwargs.update(_language_ids(items, rows, index))
        with torch.no_grad():
            generated = model.generate(**kwargs)
        texts = tokenizer.decode(generated[:, 2:].tolist(), skip_special_tokens=True)
        if isinstance(texts, str):
            texts = [texts]
        for r, i in enumerate(rows):
            outputs[i] = texts[r].strip()
        if progress is not None:
            progress(len(rows))
    return outputs


def _pad(sequences: Sequence[Sequence[int]], pad: int, *, left: bool):
    """``(input_ids, attention_mask)`` of ``sequences`` padded to one width, on the left
    (decoder-only prompts) or on the right (encoder inputs)."""
    import torch

    width = max(len(x) for x in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, x in enumerate(sequences):
        lo = width - len(x) if left else 0
        ids[r, lo:lo + len(x)] = torch.tensor(list(x), dtype=torch.long)
        mask[r, lo:lo + len(x)] = 1
    return ids, mask


def _language_ids(items, rows, index) -> dict[str, Any]:
    """LSLo routing of a batch: each row's source and target language index."""
    import torch

    return {"src_lang_ids": torch.tensor([index[items[i][1]] for i in rows], dtype=torch.long),
            "tgt_lang_ids": torch.tensor([index[items[i][2]] for i in rows], dtype=torch.long)}


def _lslo_index(items, lslo_languages) -> dict[str, int] | None:
    if lslo_languages is None:
        return None
    index = {lang: k for k, lang in enumerate(lslo_languages)}
    for _, s, t in items:
        for lang in (s, t):
            if lang not in index:
                raise ConfigError(f"language {lang!r} is not in the LSLo adapter's languages "
                                  f"({', '.join(lslo_languages)})")
    return index


def _translate_causal(model, tokenizer, items, prompt: TranslationPrompt, index, *, num_beams: int,
                      batch_size: int, limit: Callable[[int], int], max_source_length: int,
                      progress) -> list[str]:
    """Decoder-only generation: left-padded prompts, continuation up to EOS, first line kept."""
    import torch

    encoded = prompt.encode_prompts(tokenizer, items, max_source_length)
    config = model.config
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else config.eos_token_id
    if pad is None:
        pad = eos
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    outputs: list[str] = [""] * len(encoded)
    model.eval()
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        ids, mask = _pad([encoded[i] for i in rows], pad, left=True)
        width = ids.shape[1]
        kwargs: dict[str, Any] = dict(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      num_beams=num_beams, max_new_tokens=limit(width), do_sample=False,
                                      length_penalty=1.0, early_stopping=num_beams > 1,
                                      eos_token_id=eos, pad_token_id=pad)
        if index is not None:
            kwargs.update(_language_ids(items, rows, index))
        with torch.no_grad():
            generated = model.generate(**kwargs)
        texts = tokenizer.batch_decode(generated[:, width:].tolist(), skip_special_tokens=True)
        for r, i in enumerate(rows):
            text = texts[r].strip()
            outputs[i] = text.splitlines()[0].strip() if text else ""
        if progress is not None:
            progress(len(rows))
    return outputs


# --------------------------------------------------------------------------------------------
# Scoring

_SPM_SIGNATURES = {"sacrebleu_tokenizer_spm.model": "flores101", "flores200sacrebleuspm": "flores200",
                   "spbleu-1k_tokenizer_spm.model": "spBLEU-1K"}


class _FileSentencePiece:
    """sacrebleu's SentencePiece tokenization, from a local model file (no download)."""

    def __init__(self, path: str | os.PathLike):
        try:
            import sentencepiece
        except ImportError:
            raise ConfigError("spBLEU needs the sentencepiece package (pip install 'xlt[spm]')") from None
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such SentencePiece model file")
        self.processor = sentencepiece.SentencePieceProcessor()
        try:
            self.processor.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"{path}: not a SentencePiece model ({str(exc).splitlines()[0]})") from None
        self.name = _SPM_SIGNATURES.get(path.name, f"spm:{path.name}")
        self._cache: dict[str, str] = {}

    def signature(self) -> str:
        return self.name

    def __call__(self, line: str) -> str:
        out = self._cache.get(line)
        if out is None:
            out = self._cache[line] = " ".join(self.processor.EncodeAsPieces(line))
        return out


def make_metrics(*, chrf_word_order: int = 0, spm_model: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"bleu": BLEU(), "chrf": CHRF(word_order)[, "spbleu": BLEU on SentencePiece pieces]}``.

    ``chrf_word_order=2`` is chrF++ (the metric is then named ``chrf++``).
    """
    from sacrebleu.metrics import BLEU, CHRF

    if chrf_word_order not in (0, 1, 2):
        raise ConfigError(f"chrF word order must be 0, 1 or 2 (chrF++), got {chrf_word_order}")
    metrics: dict[str, Any] = {"bleu": BLEU(),
                               ("chrf++" if chrf_word_order == 2 else "chrf"): CHRF(word_order=chrf_word_order)}
    if spm_model is not None:
        spbleu = BLEU(tokenize="none")
        spbleu.tokenizer = _FileSentencePiece(spm_model)
        spbleu.tokenizer_signature = spbleu.tokenizer.signature()
        metrics["spbleu"] = spbleu
    return metrics


def score(hypotheses: Sequence[str], references: Sequence[str], metrics: dict[str, Any]) -> dict[str, float]:
    """Corpus-level scores of one direction: ``{metric name: score}``."""
    if len(hypotheses) != len(references):
        raise ConfigError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return {name: float(metric.corpus_score(list(hypotheses), [list(references)]).score)
            for name, metric in metrics.items()}


def signatures(metrics: dict[str, Any]) -> dict[str, str]:
    """sacrebleu signature of each metric (valid after a first ``corpus_score``)."""
    out = {}
    for name, metric in metrics.items():
        try:
            out[name] = str(metric.get_signature())
        except Exception:  # sacrebleu raises before the first corpus_score
            out[name] = ""
    return out


# --------------------------------------------------------------------------------------------
# Tables


def group_directions(pairs: Iterable[Any]) -> dict[tuple[str, str], list[Any]]:
    """ParallelPair records grouped by ``(src_lang, tgt_lang)``, in order of first appearance."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for pair in pairs:
        groups.setdefault((pair.src_lang, pair.tgt_lang), []).append(pair)
    return groups


def order_languages(languages: Iterable[str], tiers: dict[str, str]) -> list[str]:
    """Languages sorted by tier (high, med, low, others) then code."""
    rank = {t: k for k, t in enumerate(TIER_ORDER)}
    return sorted(set(languages), key=lambda l: (rank.get(tiers.get(l, ""), len(rank)), tiers.get(l, ""), l))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def tier_averages(scores: dict[tuple[str, str], float], tiers: dict[str, str]) -> dict[str, Any]:
    """Averages of a direction -> score map: overall, by source tier, by target tier, by tier pair.

    The paper groups by resource level without saying whether by source, target or pair; all
    three are reported.
    """
    by_src, by_tgt, by_pair = defaultdict(list), defaultdict(list), defaultdict(list)
    for (s, t), value in scores.items():
        ts, tt = tiers.get(s, "-"), tiers.get(t, "-")
        by_src[ts].append(value)
        by_tgt[tt].append(value)
        by_pair[f"{ts}->{tt}"].append(value)
    return {"all": _mean(list(scores.values())),
            "by_source_tier": {k: _mean(v) for k, v in sorted(by_src.items())},
            "by_target_tier": {k: _mean(v) for k, v in sorted(by_tgt.items())},
            "by_tier_pair": {k: _mean(v) for k, v in sorted(by_pair.items())}}


def format_direction_table(scores: dict[tuple[str, str], float], tiers: dict[str, str], *,
                           title: str = "") -> str:
    """A direction x direction text table (rows source, columns target) grouped by tier."""
    langs = order_languages([l for d in scores for l in d], tiers)
    width = max([6] + [len(l) + 1 for l in langs])
    lines = [title] if title else []
    head = " " * (width + 7) + "".join(f"{l:>{width}}" for l in langs) + f"{'avg':>{width}}"
    tier_row = " " * (width + 7) + "".join(f"{tiers.get(l, '-')[:width - 1]:>{width}}" for l in langs)
    lines += [tier_row, head]
    previous = None
    for s in langs:
        tier = tiers.get(s, "-")
        if previous is not None and tier != previous:
            lines.append("")
        previous = tier
        row = [scores.get((s, t)) for t in langs]
        cells = "".join(f"{'-':>{width}}" if v is None else f"{v:>{width}.1f}" for v in row)
        avg = _mean([v for v in row if v is not None])
        lines.append(f"{tier[:6]:<6} {s:<{width}}{cells}" + (f"{avg:>{width}.1f}" if avg is not None else ""))
    col_avgs = [_mean([scores[(s, t)] for s in langs if (s, t) in scores]) for t in langs]
    lines.append(f"{'':<6} {'avg':<{width}}" + "".join(f"{'-':>{width}}" if v is None else f"{v:>{width}.1f}"
                                                       for v in col_avgs))
    return "\n".join(lines)


def format_comparison(results: dict[str, dict[tuple[str, str], float]], tiers: dict[str, str], *,
                      metric: str) -> str:
    """Systems x (all, source tiers, target tiers) averages of one metric."""
    tier_names = [t for t in TIER_ORDER if t in set(tiers.values())] + sorted(
        {t for t in tiers.values() if t not in TIER_ORDER})
    cols = ["all"] + [f"src:{t}" for t in tier_names] + [f"tgt:{t}" for t in tier_names]
    name_width = max([8] + [len(n) + 1 for n in results])
    lines = [f"{metric} averages by resource tier", f"{'system':<{name_width}}" +
             "".join(f"{c:>10}" for c in cols)]
    for name, scores in results.items():
        avg = tier_averages(scores, tiers)
        values = [avg["all"]] + [avg["by_source_tier"].get(t) for t in tier_names] + \
                 [avg["by_target_tier"].get(t) for t in tier_names]
        lines.append(f"{name:<{name_width}}" + "".join(f"{'-':>10}" if v is None else f"{v:>10.2f}"
                                                        for v in values))
    return "\n".join(lines)


def plot_direction_heatmap(scores: dict[tuple[str, str], float], tiers: dict[str, str], *,
                           title: str = ""):
    """A matplotlib figure: source (rows) x target (columns) heat map, tier-ordered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    langs = order_languages([l for d in scores for l in d], tiers)
    grid = np.full((len(langs), len(langs)), np.nan)
    for (s, t), v in scores.items():
        grid[langs.index(s), langs.index(t)] = v
    size = max(3.5, 0.55 * len(langs) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="equal")
    labels = [f"{l} ({tiers[l]})" if l in tiers else l for l in langs]
    ax.set_xticks(range(len(langs)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(langs)), labels, fontsize=8)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    finite = grid[np.isfinite(grid)]
    mid = float(finite.mean()) if finite.size else 0.0
    for i in range(len(langs)):
        for j in range(len(langs)):
            if math.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < mid else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Systems: what ``xlt eval mt`` runs


@dataclass
class MTEvaluation:
    """What :func:`evaluate` returns.

    ``systems``: name -> ``{"path": str, "lslo": bool, "directions": {(src, tgt): {metric: score,
    ..., "wrong_language_rate": share in [0, 1] or None, "n": pairs}}}``; ``hypotheses``: name ->
    one ``{src_lang, tgt_lang, src, ref, hyp}`` row per pair (plus ``hyp_lang``, the identifier's
    label, where the rate is computed); ``tiers``: language -> resource tier (given, else the first LSLo adapter's, else
    empty); ``signatures``: sacrebleu signature of each metric.
    """

    systems: dict[str, dict[str, Any]]
    hypotheses: dict[str, list[dict[str, str]]]
    tiers: dict[str, str]
    signatures: dict[str, str]

    def scores(self, metric: str) -> dict[str, dict[tuple[str, str], float]]:
        """System -> direction -> score of one metric."""
        return {name: {d: v[metric] for d, v in res["directions"].items()} for name, res in self.systems.items()}


def evaluate(pairs: Sequence[Any], systems: Mapping[str, str | os.PathLike], *,
             metrics: dict[str, Any] | None = None, tiers: dict[str, str] | None = None,
             prompt: TranslationPrompt | None = None, base: str | None = None, tokenizer: str | None = None,
             device: str = "auto", dtype: str = "float32", allow_pickle: bool = False, progress: bool = True,
             wrong_language: str = "auto", **generation: Any) -> MTEvaluation:
    """Translate every direction of ``pairs`` with each system and score each direction.

    ``pairs``: ParallelPair records (directions in order of first appearance); ``systems``: name
    -> a Hugging Face model directory (seq2seq or decoder-only) or an LSLo adapter directory,
    whose base model is ``base`` or else the one it records; ``tokenizer``: default the
    system's, else its base's. ``metrics``: from :func:`make_metrics` (default: BLEU and chrF).
    Decoder-only systems use the prompt they were trained with (recorded in the adapter, or in
    the config of a model written by ``xlt lslo export`` / ``--full_finetune``), else
    ``prompt`` (default :class:`~xlt.translation.TranslationPrompt`). ``generation``: the
    options of :func:`translate_many` (``num_beams``, ``batch_size``, ``max_new_tokens``,
    ``max_len_a``, ``max_len_b``, ``max_source_length``). ``progress``: a progress bar on stderr per system.
    ``wrong_language``: ``auto`` (the rate for every target language the identifier knows, one
    warning naming the others), ``on`` (every target language, else a :class:`ConfigError` before
    any model loads) or ``off``; see :func:`xlt.eval.language_id.expected_labels`.
    """
    from xlt.eval.language_id import expected_labels, identify_languages, wrong_language_rate

    metrics = make_metrics() if metrics is None else metrics
    groups = group_directions(pairs)
    target_labels = expected_labels([t for _, t in groups], wrong_language)
    results: dict[str, dict] = {}
    hypotheses: dict[str, list[dict]] = {}
    for name, path in systems.items():
        model, system_tokenizer, lslo_config, system_prompt = _load_system(
            path, base=base, tokenizer=tokenizer, device=device, dtype=dtype, allow_pickle=allow_pickle,
            prompt=prompt)
        if tiers is None and lslo_config is not None:
            tiers = {lang: lslo_config.tier_of(lang) for lang in lslo_config.languages}
        per_direction = {}
        rows = []
        items = [(p.src, s, t) for (s, t), members in groups.items() for p in members]
        bar = _progress(len(items), name, enabled=progress)
        hyps_all = translate_many(model, system_tokenizer, items,
                                  lslo_languages=lslo_config.languages if lslo_config is not None else None,
                                  progress=bar.update, prompt=system_prompt, **generation)
        offset = 0
        for (src, tgt), members in groups.items():
            hyps = hyps_all[offset:offset + len(members)]
            offset += len(members)
            refs = [p.tgt for p in members]
            label = target_labels[tgt]
            identified = identify_languages(hyps) if label is not None else [None] * len(hyps)
            rate = wrong_language_rate(hyps, tgt, identified=identified) if label is not None else None
            per_direction[(src, tgt)] = dict(score(hyps, refs, metrics), wrong_language_rate=rate, n=len(members))
            rows += [dict({"src_lang": src, "tgt_lang": tgt, "src": p.src, "ref": p.tgt, "hyp": h},
                          **({"hyp_lang": got} if label is not None else {}))
                     for p, h, got in zip(members, hyps, identified)]
        bar.close()
        results[name] = {"path": str(path), "lslo": lslo_config is not None, "directions": per_direction}
        hypotheses[name] = rows
    return MTEvaluation(systems=results, hypotheses=hypotheses, tiers=dict(tiers or {}),
                        signatures=signatures(metrics))


def _progress(total: int, desc: str, *, enabled: bool = True):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sent", file=sys.stderr, disable=None if enabled else True,
                leave=False)


def _load_system(path: str | os.PathLike, *, base: str | None, tokenizer: str | None, device: str, dtype: str,
                 allow_pickle: bool, prompt: TranslationPrompt | None):
    """(model, tokenizer, LSLoConfig or None, TranslationPrompt or None) for a model or adapter directory.

    Decoder-only systems use the prompt they were trained with (recorded in the adapter, or in
    the config of a model written by ``xlt lslo export`` / ``--full_finetune``), else ``prompt``.
    """
    from xlt.lslo.model import base_model_of, is_lslo_dir, load_lslo, read_lslo_metadata
    from xlt.models import load_model, load_tokenizer, resolve_device

    fallback = prompt or TranslationPrompt()
    device = resolve_device(device)
    directory = Path(path)
    if is_lslo_dir(directory):
        base_path = base_model_of(directory, base)
        tok_source = tokenizer or (directory if (directory / "tokenizer_config.json").is_file() else base_path)
        system_tokenizer = load_tokenizer(tok_source)
        model = load_model(base_path, kind="auto", dtype=dtype, device="cpu", allow_pickle=allow_pickle)
        recorded = read_lslo_metadata(directory).get("translation_prompt")
        lslo = load_lslo(model, directory)
        lslo.to(device)
        lslo.eval()
        system_prompt = None
        if not getattr(model.config, "is_encoder_decoder", False):
            system_prompt = TranslationPrompt.from_dict(recorded) if recorded else fallback
        return lslo, system_tokenizer, lslo.lslo_config, system_prompt
    system_tokenizer = load_tokenizer(tokenizer or path)
    model = load_model(path, kind="auto", dtype=dtype, device=device, allow_pickle=allow_pickle)
    model.eval()
    system_prompt = None
    if not getattr(model.config, "is_encoder_decoder", False):
        recorded = getattr(model.config, "xlt_translation_prompt", None)
        system_prompt = TranslationPrompt.from_dict(recorded) if recorded else fallback
    return model, system_tokenizer, None, system_prompt
