"""FLORES-200 / FLORES+ translation in ``xlt eval suite``: directions, data, scores.

FLORES+ (``openlanguagedata/flores_plus`` on the hub, the maintained successor of FLORES-200)
has one config per language (``eng_Latn``, ``fra_Latn``, ...) with splits ``dev`` (997
sentences) and ``devtest`` (1,012); the rows of every language carry the same ``id`` for the
same sentence, and ``text``. The suite scores ``devtest`` (or local JSON Lines / parquet files
in that schema) in the directions asked for:

* ``en-xx``: from the pivot language (``--pivot``, default the first of ``--languages``) into
  every other; ``xx-en``: from every other into the pivot; ``all``: every ordered pair;
* or explicit directions ``SRC-TGT`` (where a code holds a ``-`` itself, the split whose two
  halves are both among the languages).

A direction's sentences are those both languages hold, matched by ``id`` in the source's order;
two languages whose files hold different ids are an error naming both (a FLORES split is
complete in every language, so a difference means a wrong or truncated file).

Hypotheses come from :func:`xlt.eval.mt.translate_many` (decoder-only models continue a
:class:`~xlt.translation.TranslationPrompt`, greedy by default, left-padded batches sorted by
length). Scores per direction (:func:`xlt.eval.mt.make_metrics`, sacrebleu): ``bleu`` (13a),
``chrf++`` (chrF with word order 2) and, with a SentencePiece model file (the FLORES-200 model,
``flores200_sacrebleu_tokenizer_spm.model``; never downloaded here), ``spbleu``; beside them the
``wrong_language_rate`` (:mod:`xlt.eval.language_id`) and ``n``. Per item (for ``xlt eval
compare``): sentence-level chrF++ and a key made of the direction, the sentence id and the
reference.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from xlt.errors import ConfigError, DataError

DATASET = "openlanguagedata/flores_plus"
TEST_SPLIT = "devtest"
FIELDS = ("id", "text")
DIRECTION_SETS = ("en-xx", "xx-en", "all")


@dataclass
class FloresTask:
    """FLORES's settings, with the attributes the suite reads of a task (``task``, ``source``,
    ``dataset``, ``scoring``, :meth:`prompt_for`)."""

    dataset: dict[str, str] = field(default_factory=lambda: {"path": DATASET, "split": TEST_SPLIT})
    task: str = "flores"
    source: str = "task flores"
    reader: str = "flores"
    scoring: str = "sacrebleu"

    def prompt_for(self, lang: str):  # every language is a FLORES code; prompts are per direction
        return None


def parse_directions(specs: Sequence[str], languages: Sequence[str], pivot: str | None = None) -> list[tuple[str, str]]:
    """The ordered ``(src, tgt)`` directions of ``specs`` (``en-xx``, ``xx-en``, ``all`` or
    ``SRC-TGT``) over ``languages``, without repeats, in the order given; ``pivot`` (default the
    first language) is the ``en`` of ``en-xx`` / ``xx-en``. A direction naming a language not in
    ``languages`` is a :class:`ConfigError`."""
    languages = list(dict.fromkeys(languages))
    if not languages:
        raise ConfigError("flores: no languages")
    pivot = pivot or languages[0]
    if pivot not in languages:
        raise ConfigError(f"--pivot: {pivot!r} is not in --languages ({', '.join(languages)})")
    others = [lang for lang in languages if lang != pivot]
    out: list[tuple[str, str]] = []
    for spec in specs:
        if spec == "en-xx":
            out += [(pivot, lang) for lang in others]
        elif spec == "xx-en":
            out += [(lang, pivot) for lang in others]
        elif spec == "all":
            out += [(a, b) for a in languages for b in languages if a != b]
        else:  # SRC-TGT; a code may itself hold a '-' (zh-CN): the split whose halves are languages
            splits = [(spec[:i], spec[i + 1:]) for i, c in enumerate(spec) if c == "-"]
            known = [(a, b) for a, b in splits if a in languages and b in languages]
            if not splits or any(not a or not b for a, b in splits[:1] + splits[-1:]):
                raise ConfigError(f"--directions: cannot read {spec!r} (expected {', '.join(DIRECTION_SETS)} "
                                  "or SRC-TGT)")
            if len(known) != 1:
                raise ConfigError(f"--directions: {spec!r} does not name two of --languages ({', '.join(languages)})")
            src, tgt = known[0]
            if src == tgt:
                raise ConfigError(f"--directions: {spec!r} translates a language into itself")
            out.append((src, tgt))
    out = list(dict.fromkeys(out))
    if not out:
        raise ConfigError("--directions: no direction (give at least two languages)")
    return out


def sentences(rows: list[tuple[dict, dict]], task: str = "flores") -> dict[str, str]:
    """FLORES+ rows -> ``{id: text}`` in file order; a missing field, an empty text or a repeated
    id is a :class:`DataError` naming the file, row and field."""
    out: dict[str, str] = {}
    for where, row in rows:
        for name in FIELDS:
            if row.get(name) is None or (name == "text" and not str(row[name]).strip()):
                raise DataError(f"{task}: missing or empty (expected fields id, text)", field=name, **where)
        key = str(row["id"])
        if key in out:
            raise DataError(f"{task}: sentence id {key} appears twice", field="id", **where)
        out[key] = str(row["text"])
    return out


def read_sentences(source: str, lang: str, *, split: str = TEST_SPLIT, task: str = "flores") -> dict[str, str]:
    """One language's sentences from ``hf:DATASET`` (config = the language, ``split``) or a path
    pattern with ``{lang}`` (a JSON Lines, JSON or parquet file read by ``datasets``)."""
    from pathlib import Path

    from xlt.eval.readers import dataset_rows, hub_rows

    if source.startswith("hf:"):
        return sentences(hub_rows(source[3:], lang, split, task=task), task)
    if "{lang}" not in source:
        raise ConfigError(f"--data flores={source}: needs '{{lang}}' (one file per language) or hf:DATASET")
    return sentences(dataset_rows(Path(source.replace("{lang}", lang))), task)


def direction_items(src_sentences: dict[str, str], tgt_sentences: dict[str, str], src: str, tgt: str,
                    limit: int | None = None) -> list[tuple[str, str, str]]:
    """``(id, source text, reference)`` of the sentences both languages hold, in the source's
    order (the first ``limit``); different id sets are a :class:`DataError` naming both."""
    only_src = [k for k in src_sentences if k not in tgt_sentences]
    only_tgt = [k for k in tgt_sentences if k not in src_sentences]
    if only_src or only_tgt:
        raise DataError(f"flores: {src} and {tgt} hold different sentence ids ({len(only_src)} only in {src}, "
                        f"{len(only_tgt)} only in {tgt}, e.g. {(only_src or only_tgt)[0]!r}); FLORES splits are "
                        "complete in every language")
    items = [(k, text, tgt_sentences[k]) for k, text in src_sentences.items()]
    return items[:limit] if limit is not None else items


@dataclass
class FloresUnit:
    """One direction to translate and score: ``language`` is ``"SRC-TGT"`` (the suite's column)."""

    src: str
    tgt: str
    items: list[tuple[str, str, str]]
    num_beams: int = 1
    max_new_tokens: int = 256
    prompt: Any = None  # a TranslationPrompt (decoder-only models), None: the default
    task: str = "flores"

    @property
    def language(self) -> str:
        return f"{self.src}-{self.tgt}"


def evaluate_flores(model, tokenizer, unit: FloresUnit, metrics: dict[str, Any], *, batch_size: int = 16,
                    wrong_language: str = "auto") -> tuple[dict[str, Any], dict[str, list], list[dict]]:
    """Translate ``unit``'s sentences and score them: ``(scores, per_item, predictions)``;
    ``scores`` ``{metric: corpus score, "wrong_language_rate": share or None, "n"}``;
    ``per_item`` ``{"key", "chrf++"}`` (sentence-level chrF++); ``predictions`` ``{"id", "src",
    "ref", "hyp"}`` dicts."""
    from sacrebleu.metrics import CHRF

    from xlt.eval.language_id import expected_labels, wrong_language_rate
    from xlt.eval.mt import score, translate_many

    if not unit.items:
        raise ConfigError(f"flores {unit.language}: no sentences to translate")
    hyps = translate_many(model, tokenizer, [(text, unit.src, unit.tgt) for _, text, _ in unit.items],
                          num_beams=unit.num_beams, batch_size=batch_size, max_new_tokens=unit.max_new_tokens,
                          prompt=unit.prompt)
    refs = [ref for _, _, ref in unit.items]
    scores: dict[str, Any] = score(hyps, refs, metrics)
    label = expected_labels([unit.tgt], wrong_language)[unit.tgt]
    scores["wrong_language_rate"] = wrong_language_rate(hyps, unit.tgt) if label is not None else None
    scores["n"] = len(hyps)
    sentence_chrf = CHRF(word_order=2)
    per_item: dict[str, list] = {"key": [], "chrf++": []}
    for (key, _, ref), hyp in zip(unit.items, hyps):
        per_item["key"].append(hashlib.sha256(f"{unit.language}\x00{key}\x00{ref}".encode("utf-8")).hexdigest()[:16])
        per_item["chrf++"].append(float(sentence_chrf.sentence_score(hyp, [ref]).score))
    predictions = [{"id": key, "src": src, "ref": ref, "hyp": hyp} for (key, src, ref), hyp in zip(unit.items, hyps)]
    return scores, per_item, predictions
