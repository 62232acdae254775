"""Multilingual multiple-choice in-context evaluation (AFP's protocol, or lm-evaluation-harness's).

An evaluation turns each test item into one (context, continuation) request per choice, scores
them with a causal LM and predicts the argmax:

* **Demonstrations**: ``k`` items of the prompt language's dev split, the same for every test
  item of a (task, language, k, seed): the dev items are shuffled with ``random.Random(seed)``
  and the first ``k`` taken (the reference's rule); or, for a template with ``demonstrations:
  per_item`` (the ``lm-eval`` prompt set), drawn for each item in turn as lm-evaluation-harness
  draws them (:func:`sample_demonstrations_per_item`). A template task writes each as its
  demo template with the gold choice, followed by the template's connector (``"</s>"``); a
  :class:`~xlt.formats.MultipleChoiceItem` task writes ``context + target_delimiter + gold``
  joined and followed by ``fewshot_delimiter`` ("\\n\\n"), as the harness does.
* **Requests**: template tasks split the rendered text at the choice (``split: choice``) or
  after it (``split: after_choice``); multiple-choice items use ``context`` and
  ``target_delimiter + choice``.
* **Scoring** (:mod:`xlt.eval.scoring`): ``afp`` sums log2 p over the whole text, ``lm-eval``
  sums the continuation's log-likelihood; ``acc`` is the argmax (ties: first choice),
  ``acc_norm`` the argmax of log-likelihood / characters of the continuation (lm-eval only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from xlt.errors import ConfigError, DataError
from xlt.eval.scoring import LN2, encode_requests, model_max_length, score_encoded

#: "auto": a space between context and choice unless one of them already has whitespace there
#: (a synthetic world's choices start with a space); " " is lm-evaluation-harness's default.
TARGET_DELIMITER = "auto"
FEWSHOT_DELIMITER = "\n\n"


@dataclass
class PreparedItem:
    """A test item ready to score: one (context, continuation) request per choice."""

    lang: str
    requests: list[tuple[str, str]]
    gold: int
    norm_lengths: list[int]  # characters of each choice's continuation (acc_norm)
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemResult:
    lang: str
    gold: int
    loglikelihoods: list[float]  # natural log (lm-eval) or bits (afp)
    pred: int
    pred_norm: int | None
    greedy: list[bool]
    where: str = ""
    key: str = ""  # a digest of the item's gold and request texts: the same item in two runs has the same key

    @property
    def correct(self) -> bool:
        return self.pred == self.gold

    def to_dict(self) -> dict:
        return {"lang": self.lang, "gold": self.gold, "loglikelihoods": self.loglikelihoods,
                "pred": self.pred, "pred_norm": self.pred_norm, "acc": float(self.pred == self.gold),
                "acc_norm": None if self.pred_norm is None else float(self.pred_norm == self.gold),
                "where": self.where}


def select_demonstrations(dev: Sequence, k: int, seed: int) -> list:
    """The first ``k`` of the dev items after ``random.Random(seed).shuffle`` (reference rule)."""
    if k < 0:
        raise ConfigError(f"number of shots must be >= 0, got {k}")
    if k == 0:
        return []
    if len(dev) < k:
        raise DataError(f"{k} demonstrations requested but the dev split has only {len(dev)} items")
    items = list(dev)
    random.Random(seed).shuffle(items)
    return items[:k]


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for k in range(1, len(values)):
        if values[k] > values[best]:
            best = k
    return best


# --------------------------------------------------------------------------------------------
# Building requests


def _where(raw) -> str:
    where = getattr(raw, "where", {}) or {}
    path = where.get("path")
    if path is None:
        return ""
    if "line" in where:
        return f"{path}:{where['line']}"
    return f"{path} item {where.get('item')}"


def _template_demo_text(template, prompt, demos: Sequence) -> str:
    """The demonstrations of a template task: each rendered with its gold choice (and the
    template's target delimiter at the split point), followed by the connector."""
    text = ""
    for demo in demos:
        gold = template.label_index(demo.label, demo.where)
        prefix, choices, suffix = template.parts(prompt, demo.fields, demo=True, where=demo.where)
        if template.split == "choice":
            text += prefix + template.target_delimiter + choices[gold] + suffix
        else:
            text += prefix + choices[gold] + template.target_delimiter + suffix
        text += template.connector
    return text


def prepare_template_items(template, test_items: Iterable, demos: Sequence, *, lang: str,
                           prompt_language: str | None = None,
                           item_demos: Sequence[Sequence] | None = None) -> list[PreparedItem]:
    """Requests of template-task items (:class:`~xlt.eval.readers.RawItem`) in ``lang``.

    ``demos`` are RawItems of the prompt language (already selected), the same for every item;
    ``item_demos`` (one list per test item) replaces them where each item has its own.
    ``prompt_language`` picks the template's prompt (default ``lang``). The template's
    ``target_delimiter`` opens the continuation (``split: choice``: delimiter + choice + rest;
    ``after_choice``: delimiter + rest); ``norm_lengths`` count the continuation without it, as
    the harness's ``acc_norm`` divides by the characters of the choice.
    """
    prompt = template.prompt_for(prompt_language or lang)
    fixed = _template_demo_text(template, prompt, demos)
    delimiter = template.target_delimiter
    prepared = []
    for k, item in enumerate(test_items):
        demo_text = fixed if item_demos is None else _template_demo_text(template, prompt, item_demos[k])
        gold = template.label_index(item.label, item.where)
        prefix, choices, suffix = template.parts(prompt, item.fields, demo=False, where=item.where)
        if template.split == "choice":
            requests = [(demo_text + prefix, delimiter + choice + suffix) for choice in choices]
        else:
            requests = [(demo_text + prefix + choice, delimiter + suffix) for choice in choices]
        prepared.append(PreparedItem(lang=lang, requests=requests, gold=gold,
                                     norm_lengths=[len(cont) - len(delimiter) for _, cont in requests],
                                     where=_where(item)))
    return prepared


def first_demonstrations(dev: Sequence, k: int) -> list:
    """The first ``k`` dev items in file order (lm-evaluation-harness's ``first_n`` sampler)."""
    if k < 0:
        raise ConfigError(f"number of shots must be >= 0, got {k}")
    if len(dev) < k:
        raise DataError(f"{k} demonstrations requested but the dev split has only {len(dev)} items")
    return list(dev[:k])


def grouped_demonstrations(dev: Sequence, k: int, test_items: Sequence, seed: int, *, by: str,
                           rule: str = "first_n") -> list[list]:
    """Demonstrations per test item from the dev items whose field ``by`` equals the item's (the
    harness's per-subject tasks, e.g. Global-MMLU's 57 subjects with 5 dev items each), chosen in
    each group by ``rule``: ``first_n`` (file order), ``fixed`` (:func:`select_demonstrations`
    with ``seed``), or ``per_item`` / ``per_item_excluding_item`` (one draw sequence per group,
    :func:`sample_demonstrations_per_item`). A group with fewer than ``k`` dev items is a
    :class:`DataError` naming the field and value."""
    groups: dict = {}
    for item in dev:
        groups.setdefault(item.fields.get(by), []).append(item)
    members: dict = {}
    for index, item in enumerate(test_items):
        members.setdefault(item.fields.get(by), []).append(index)
    out: list[list] = [[] for _ in test_items]
    for value, indices in members.items():
        pool = groups.get(value, [])
        if len(pool) < k:
            raise DataError(f"{k} demonstrations requested but the dev split has only {len(pool)} items "
                            f"with {by} = {value!r}")
        if rule == "first_n":
            chosen = [pool[:k]] * len(indices)
        elif rule == "fixed":
            chosen = [select_demonstrations(pool, k, seed)] * len(indices)
        else:
            chosen = sample_demonstrations_per_item(pool, k, [test_items[i] for i in indices], seed,
                                                    exclude_item=rule == "per_item_excluding_item")
        for index, demos in zip(indices, chosen):
            out[index] = list(demos)
    return out


def sample_demonstrations_per_item(dev: Sequence, k: int, test_items: Sequence, seed: int, *,
                                   exclude_item: bool = False) -> list[list]:
    """lm-evaluation-harness's demonstrations: ``k`` dev items drawn for each test item in turn
    with one ``random.Random(seed)`` per task and language (so item ``i``'s draw depends on the
    ones before it; the harness's few-shot seed is 1234): ``rng.sample(dev, k)``, or with
    ``exclude_item`` (the harness does this when its few-shot split is its test split, which
    for a task without a test split means "both unset": XNLI, XStoryCloze)
    ``rng.sample(dev, k + 1)`` less the dev items equal to the test item, first ``k`` kept
    (and, should that leave fewer than ``k``, ``rng.sample`` of the dev items unequal to it).
    Items are equal when their fields and label are."""
    if k < 0:
        raise ConfigError(f"number of shots must be >= 0, got {k}")
    if k == 0:
        return [[] for _ in test_items]
    if len(dev) < k + int(exclude_item):
        raise DataError(f"{k} demonstrations requested but the dev split has only {len(dev)} items")
    rng = random.Random(seed)
    pool = list(dev)
    draws = []
    for item in test_items:
        if not exclude_item:
            draws.append(rng.sample(pool, k))
            continue
        same = (item.fields, item.label)
        drawn = [d for d in rng.sample(pool, k + 1) if (d.fields, d.label) != same][:k]
        if len(drawn) < k:
            drawn = rng.sample([d for d in pool if (d.fields, d.label) != same], k)
        draws.append(drawn)
    return draws


def delimiter_for(context: str, choice: str, target_delimiter: str = TARGET_DELIMITER) -> str:
    """The text put between ``context`` and ``choice``: ``target_delimiter`` itself, or for
    ``"auto"`` a space unless the context ends or the choice starts with whitespace."""
    if target_delimiter != "auto":
        return target_delimiter
    if (context and context[-1].isspace()) or (choice and choice[0].isspace()):
        return ""
    return " "


def prepare_choice_items(items: Iterable, demos: Sequence, *, target_delimiter: str = TARGET_DELIMITER,
                         fewshot_delimiter: str = FEWSHOT_DELIMITER) -> list[PreparedItem]:
    """Requests of :class:`~xlt.formats.MultipleChoiceItem` records (lm-evaluation-harness layout):
    context ``demos + item.context``, continuation ``delimiter + choice`` (see
    :func:`delimiter_for`); acc_norm divides by the characters of the choice."""
    prefix = ""
    if demos:
        prefix = fewshot_delimiter.join(
            d.context + delimiter_for(d.context, d.choices[d.label], target_delimiter) + d.choices[d.label]
            for d in demos)
        prefix += fewshot_delimiter
    prepared = []
    for k, item in enumerate(items):
        requests = [(prefix + item.context, delimiter_for(item.context, choice, target_delimiter) + choice)
                    for choice in item.choices]
        prepared.append(PreparedItem(lang=item.lang, requests=requests, gold=item.label,
                                     norm_lengths=[len(c) for c in item.choices],
                                     where=getattr(item, "where", "") or f"item {k + 1}"))
    return prepared


# --------------------------------------------------------------------------------------------
# Scoring and aggregation


def item_key(item: PreparedItem) -> str:
    """16 hex digits of the SHA-256 of the item's gold index and (context, continuation) texts:
    equal for the same item, prompt and demonstrations whatever model scores it."""
    import hashlib
    import json

    text = json.dumps([item.gold, item.requests], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def score_items(model, tokenizer, items: Sequence[PreparedItem], *, scoring: str = "afp",
                batch_size: int = 16, progress: bool = False, share_prefix: bool = True) -> list[ItemResult]:
    """Score every choice of every item; ``batch_size`` sequences per forward pass (an item's
    shared context is run once for its choices unless ``share_prefix`` is off; see
    :func:`xlt.eval.scoring.score_encoded`)."""
    if scoring not in ("afp", "lm-eval"):
        raise ConfigError(f"unknown scoring rule {scoring!r} (expected afp or lm-eval)")
    encoded = encode_requests(tokenizer, [pair for item in items for pair in item.requests], scoring)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = score_encoded(model, encoded, batch_size=batch_size, pad_token_id=pad,
                           max_length=model_max_length(model, tokenizer), progress=progress,
                           share_prefix=share_prefix)
    results = []
    cursor = 0
    for item in items:
        chunk = scores[cursor:cursor + len(item.requests)]
        cursor += len(item.requests)
        lls = [s for s, _ in chunk]
        if scoring == "afp":
            lls = [s / LN2 for s in lls]  # bits, as the reference reports
            pred_norm = None
        else:
            pred_norm = _argmax([ll / max(1, n) for ll, n in zip(lls, item.norm_lengths)])
        results.append(ItemResult(lang=item.lang, gold=item.gold, loglikelihoods=lls, pred=_argmax(lls),
                                  pred_norm=pred_norm, greedy=[g for _, g in chunk], where=item.where,
                                  key=item_key(item)))
    return results


def accuracy_table(results: Iterable[ItemResult]) -> dict[str, dict[str, Any]]:
    """``{lang: {"acc", "acc_norm" (lm-eval rule only), "n"}}`` in order of first appearance."""
    table: dict[str, dict[str, Any]] = {}
    sums: dict[str, list[float]] = {}
    for r in results:
        s = sums.setdefault(r.lang, [0.0, 0.0, 0.0])
        s[0] += r.pred == r.gold
        s[1] += (r.pred_norm == r.gold) if r.pred_norm is not None else 0.0
        s[2] += 1
        table.setdefault(r.lang, {"has_norm": r.pred_norm is not None})
    out = {}
    for lang, (acc, acc_norm, n) in sums.items():
        row = {"acc": acc / n, "n": int(n)}
        if table[lang]["has_norm"]:
            row["acc_norm"] = acc_norm / n
        out[lang] = row
    return out


def prepare_icl_items(*, template=None, test: Mapping[str, Sequence], dev: Mapping[str, Sequence] | None = None,
                      shots: int = 0, seed: int = 0, prompt_language: str | None = None,
                      target_delimiter: str = TARGET_DELIMITER,
                      fewshot_delimiter: str = FEWSHOT_DELIMITER) -> list[PreparedItem]:
    """The requests of every test item of every language, demonstrations included (see
    :func:`evaluate_icl`). A template's ``drop_empty`` leaves items out of the test items and
    of the demonstration pool before anything is drawn."""
    prepared: list[PreparedItem] = []
    for lang, items in test.items():
        plang = prompt_language or lang
        prompt = template.prompt_for(plang) if template is not None else None
        if prompt is not None and prompt.drop_empty:
            items = [it for it in items if prompt.keeps(it.fields)]
        demos, per_item = [], None
        if shots:
            if dev is None or plang not in dev:
                raise ConfigError(f"{shots}-shot evaluation of {lang!r} needs a dev split in {plang!r}")
            pool = dev[plang]
            if prompt is not None and prompt.drop_empty:
                pool = [it for it in pool if prompt.keeps(it.fields)]
            if template is not None and template.demonstrations_by:
                per_item = grouped_demonstrations(pool, shots, items, seed, by=template.demonstrations_by,
                                                  rule=template.demonstrations)
            elif template is not None and template.demonstrations == "first_n":
                demos = first_demonstrations(pool, shots)
            elif template is not None and template.demonstrations != "fixed":
                per_item = sample_demonstrations_per_item(
                    pool, shots, items, seed, exclude_item=template.demonstrations == "per_item_excluding_item")
            else:
                demos = select_demonstrations(pool, shots, seed)
        if template is None:
            prepared += prepare_choice_items(items, demos, target_delimiter=target_delimiter,
                                             fewshot_delimiter=fewshot_delimiter)
        else:
            prepared += prepare_template_items(template, items, demos, lang=lang, prompt_language=plang,
                                               item_demos=per_item)
    return prepared


def evaluate_icl(model, tokenizer, *, template=None, test: Mapping[str, Sequence],
                 dev: Mapping[str, Sequence] | None = None, shots: int = 0, seed: int = 0,
                 scoring: str = "afp", prompt_language: str | None = None, batch_size: int = 16,
                 target_delimiter: str = TARGET_DELIMITER, fewshot_delimiter: str = FEWSHOT_DELIMITER,
                 progress: bool = False, share_prefix: bool = True) -> tuple[dict[str, dict[str, Any]], list[ItemResult]]:
    """Evaluate ``model`` on every language of ``test`` with ``shots`` demonstrations.

    ``template``: a :class:`~xlt.eval.templates.TaskTemplate` (``test``/``dev`` hold
    :class:`~xlt.eval.readers.RawItem` lists per language), or ``None`` for
    :class:`~xlt.formats.MultipleChoiceItem` lists. Demonstrations come from
    ``dev[prompt_language or lang]``: the same for every item, or drawn per item where the
    template says ``demonstrations: per_item``. Returns (per-language table, per-item results).
    """
    prepared = prepare_icl_items(template=template, test=test, dev=dev, shots=shots, seed=seed,
                                 prompt_language=prompt_language, target_delimiter=target_delimiter,
                                 fewshot_delimiter=fewshot_delimiter)
    results = score_items(model, tokenizer, prepared, scoring=scoring, batch_size=batch_size,
                          progress=progress, share_prefix=share_prefix)
    return accuracy_table(results), results


def format_table(table: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """A plain-text per-language accuracy table (percentages) with an average row."""
    has_norm = any("acc_norm" in row for row in table.values())
    header = f"{'lang':<10}{'acc':>8}" + (f"{'acc_norm':>10}" if has_norm else "") + f"{'n':>8}"
    lines = ([title] if title else []) + [header, "-" * len(header)]
    for lang, row in table.items():
        line = f"{lang:<10}{100 * row['acc']:>8.2f}"
        if has_norm:
            line += f"{100 * row.get('acc_norm', float('nan')):>10.2f}"
        lines.append(line + f"{row['n']:>8d}")
    if len(table) > 1:
        rows = list(table.values())
        line = f"{'average':<10}{100 * sum(r['acc'] for r in rows) / len(rows):>8.2f}"
        if has_norm:
            line += f"{100 * sum(r.get('acc_norm', 0.0) for r in rows) / len(rows):>10.2f}"
        lines.append(line + f"{sum(r['n'] for r in rows):>8d}")
    return "\n".join(lines)
