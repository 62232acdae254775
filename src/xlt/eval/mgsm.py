"""MGSM: grade-school maths in 11 languages, answered directly, scored by number exact match.

The task of lm-evaluation-harness 0.4.13's ``mgsm_direct_<lang>`` (0-shot): each test problem is
written with the language's prompt (``templates/mgsm.yaml``, ``"Frage: {question}\\nAntwort:"``),
completed greedily (left-padded batches, :func:`xlt.eval.task.generate_completions`) until EOS,
``"\\n\\n"`` or ``"\\n"`` or ``max_new_tokens`` (the harness's ``max_gen_toks``, 256), and scored
against ``str(answer_number)`` by the harness's exact match with ``ignore_case`` and
``ignore_punctuation`` (both strings lowercased and stripped of :data:`string.punctuation`) after
one of its two filters:

* ``exact_match`` (its ``remove_whitespace`` filter): the completion stripped of surrounding
  whitespace;
* ``exact_match_flexible`` (its ``flexible-extract`` filter): the last match of
  ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` in the completion (its first non-empty group, stripped), or
  ``"[invalid]"`` when there is none.

So ``"$1,234."`` matches 1234 (punctuation removed), ``"18.0"`` does not match 18 (it becomes
``"180"``), as in the harness.

With chain-of-thought (:class:`MgsmCotTask`, ``templates/mgsm_cot.yaml``): the harness's
``mgsm_native_cot_<lang>``. The problem is written ``question cue + question + "\n" + answer
cue`` ("Frage: ...\nSchritt-für-Schritt-Antwort:"), after k exemplars from the train split
(each its question, which carries the question cue already, a newline, the answer cue, a space,
its step-by-step ``answer`` without the cue, and a blank line), drawn for each problem in turn as
the harness draws them (:func:`xlt.eval.icl.sample_demonstrations_per_item`; the harness's
few-shot seed is 1234). Generation stops at the language's question cue, ``</s>`` or
``<|im_end|>`` (or EOS). ``exact_match`` is then its ``strict-match`` filter (the first match of
the language's "The answer is N" pattern, group 1, or ``"[invalid]"``) and
``exact_match_flexible`` its ``flexible-extract`` (the last number, as above).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Sequence

from xlt.errors import ConfigError, DataError

#: the harness's flexible-extract pattern (mgsm/direct/direct_yaml), last match taken
NUMBER_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
#: what the harness's regex filter returns when nothing matches
INVALID = "[invalid]"
MGSM_FIELDS = ("question", "answer_number")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@dataclass
class MgsmTask:
    """MGSM's settings as data (``templates/mgsm.yaml``): the prompt per language, the stop
    strings, the generation budget and the hub dataset. Offers the attributes the suite reads of
    a multiple-choice template (``task``, ``source``, ``dataset``, ``reader``, ``scoring``,
    :meth:`prompt_for`)."""

    prompts: dict[str, str]
    stop: list[str]
    max_new_tokens: int
    dataset: dict[str, Any] = field(default_factory=dict)
    task: str = "mgsm"
    source: str = "template mgsm"
    reader: str = "mgsm"
    label_field: str = "answer_number"
    scoring: str = "exact_match"

    def prompt_for(self, lang: str) -> "MgsmPrompt":
        if lang not in self.prompts:
            raise ConfigError(f"{self.source}: MGSM has no prompt for language {lang!r} "
                              f"(it has {', '.join(self.prompts)})")
        return MgsmPrompt(self.prompts[lang])


@dataclass
class MgsmPrompt:
    test_template: str  # "Frage: {question}\nAntwort:"

    def render(self, question: str) -> str:
        return self.test_template.replace("{question}", question)


def load_mgsm_task() -> MgsmTask:
    """The shipped MGSM settings (``templates/mgsm.yaml``)."""
    import yaml

    data = yaml.safe_load(resources.files("xlt.eval").joinpath("templates", "mgsm.yaml").read_text("utf-8"))
    return MgsmTask(prompts=dict(data["prompts"]), stop=list(data["stop"]), max_new_tokens=int(data["max_new_tokens"]),
                    dataset=dict(data["dataset"]))


def _answer_number(value: Any, where: dict, task: str) -> str:
    """``answer_number`` as the harness writes it (``{{answer_number|string}}`` of an integer)."""
    if isinstance(value, bool):
        value = None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int):
        raise DataError(f"{task}: answer_number {value!r} is not an integer", field="answer_number", **where)
    return str(value)


def mgsm_items(rows: list[tuple[dict, dict]], task: str = "mgsm") -> list:
    """MGSM rows -> :class:`~xlt.eval.readers.RawItem`: ``question`` (text); label: the gold
    number as a string."""
    from xlt.eval.readers import RawItem

    items = []
    for where, row in rows:
        for name in MGSM_FIELDS:
            if row.get(name) is None:
                raise DataError(f"{task}: missing (expected fields {', '.join(MGSM_FIELDS)})", field=name, **where)
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise DataError(f"{task}: the question is not a non-empty text", field="question", **where)
        fields = {"question": row["question"]}
        if isinstance(row.get("answer"), str) and row["answer"].strip():
            fields["answer"] = row["answer"]  # the train split's step-by-step answer (CoT exemplars)
        items.append(RawItem(fields, _answer_number(row["answer_number"], where, task), where=where))
    return items


@dataclass
class MgsmCotPrompt:
    """One language's chain-of-thought format (see the module doc and ``templates/mgsm_cot.yaml``)."""

    question: str  # "Frage: "
    answer: str  # "Schritt-für-Schritt-Antwort:"
    answer_start: int  # an exemplar's target: its answer from this character on
    pattern: str  # the strict-match filter
    stop: list[str]

    @property
    def test_template(self) -> str:
        return f"{self.question}{{question}}\n{self.answer}"

    def render(self, question: str) -> str:
        return f"{self.question}{question}\n{self.answer}"

    def exemplar(self, item) -> str:
        """An exemplar (a train item with its ``answer``) as it precedes the problem."""
        answer = item.fields.get("answer")
        if not answer:
            raise DataError("mgsm_cot: an exemplar needs its step-by-step 'answer' (the train split's rows "
                            "have one; the test split's do not)", field="answer", **item.where)
        return f"{item.fields['question']}\n{self.answer} {answer[self.answer_start:]}\n\n"

    def strict(self, completion: str) -> str:
        """The strict-match filter: group 1 of the pattern's first match, else :data:`INVALID`."""
        matches = re.findall(self.pattern, completion)
        if not matches:
            return INVALID
        first = matches[0]
        if isinstance(first, tuple):
            first = next((g for g in first if g), "")
        return first.strip() or INVALID


@dataclass
class MgsmCotTask:
    """MGSM with native chain-of-thought exemplars (``templates/mgsm_cot.yaml``); the attributes
    the suite reads as of :class:`MgsmTask`."""

    prompts: dict[str, MgsmCotPrompt]
    max_new_tokens: int
    dataset: dict[str, Any] = field(default_factory=dict)
    task: str = "mgsm_cot"
    source: str = "template mgsm_cot"
    reader: str = "mgsm"
    label_field: str = "answer_number"
    scoring: str = "exact_match"

    def prompt_for(self, lang: str) -> MgsmCotPrompt:
        if lang not in self.prompts:
            raise ConfigError(f"{self.source}: MGSM has no prompt for language {lang!r} "
                              f"(it has {', '.join(self.prompts)})")
        return self.prompts[lang]


def load_mgsm_cot_task() -> MgsmCotTask:
    """The shipped chain-of-thought MGSM settings (``templates/mgsm_cot.yaml``)."""
    import yaml

    data = yaml.safe_load(resources.files("xlt.eval").joinpath("templates", "mgsm_cot.yaml").read_text("utf-8"))
    prompts = {lang: MgsmCotPrompt(str(p["question"]), str(p["answer"]), int(p["answer_start"]), str(p["pattern"]),
                                   [str(x) for x in p["stop"]]) for lang, p in data["prompts"].items()}
    return MgsmCotTask(prompts=prompts, max_new_tokens=int(data["max_new_tokens"]), dataset=dict(data["dataset"]))


def evaluate_mgsm_cot(model, tokenizer, items: Sequence, *, prompt: MgsmCotPrompt,
                      exemplars: Sequence[Sequence] | None = None, max_new_tokens: int = 256,
                      batch_size: int = 16, language: str | None = None,
                      wrong_language: str = "auto") -> tuple[dict[str, Any], dict[str, list], list[dict]]:
    """Greedy chain-of-thought answers to ``items``, each after its ``exemplars`` (train items;
    none for 0-shot); returns what :func:`evaluate_mgsm` returns, ``exact_match`` being the
    strict-match filter, and, given the problems' ``language``, ``wrong_language_rate``: the
    share of completions (the reasoning, in the language) the language identifier does not
    identify as it (``None`` where it does not know the language; see
    :func:`xlt.eval.language_id.expected_labels`)."""
    import hashlib

    from xlt.eval.task import generate_completions

    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    items = list(items)
    if not items:
        raise ConfigError("mgsm_cot: no items to evaluate")
    exemplars = exemplars if exemplars is not None else [[] for _ in items]
    prompts = ["".join(prompt.exemplar(e) for e in demos) + prompt.render(item.fields["question"])
               for item, demos in zip(items, exemplars)]
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size, stop=prompt.stop)
    per_item: dict[str, list] = {"key": [], "exact_match": [], "exact_match_flexible": []}
    predictions = []
    for item, text, completion in zip(items, prompts, completions):
        strict, flexible = prompt.strict(completion), extract_number(completion)
        per_item["key"].append(hashlib.sha256(f"{item.label}\x00{text}".encode("utf-8")).hexdigest()[:16])
        per_item["exact_match"].append(float(harness_exact_match(strict, item.label)))
        per_item["exact_match_flexible"].append(float(harness_exact_match(flexible, item.label)))
        predictions.append({"prompt": text, "completion": completion, "target": item.label,
                            "strict": strict, "extracted": flexible})
    n = len(items)
    metrics = {"exact_match": sum(per_item["exact_match"]) / n,
               "exact_match_flexible": sum(per_item["exact_match_flexible"]) / n, "n": n}
    if language is not None:
        from xlt.eval.language_id import expected_labels, wrong_language_rate

        known = expected_labels([language], wrong_language)[language] is not None
        metrics["wrong_language_rate"] = wrong_language_rate(completions, language) if known else None
    return metrics, per_item, predictions


def extract_number(text: str) -> str:
    """The harness's flexible-extract filter: the last match of :data:`NUMBER_PATTERN`, its
    first non-empty group, stripped; :data:`INVALID` when nothing matches."""
    matches = NUMBER_PATTERN.findall(text)
    if not matches:
        return INVALID
    groups = [g for g in matches[-1] if g]
    return groups[0].strip() if groups else INVALID


def harness_exact_match(prediction: str, reference: str) -> bool:
    """Equality after lowercasing and removing ASCII punctuation from both (the harness's
    ``exact_match`` with ``ignore_case`` and ``ignore_punctuation``)."""
    return prediction.lower().translate(_PUNCTUATION) == reference.lower().translate(_PUNCTUATION)


def score_completion(completion: str, reference: str) -> dict[str, float]:
    """``{"exact_match", "exact_match_flexible"}`` (0/1) of one completion."""
    return {"exact_match": float(harness_exact_match(completion.strip(), reference)),
            "exact_match_flexible": float(harness_exact_match(extract_number(completion), reference))}


def evaluate_mgsm(model, tokenizer, items: Sequence, *, prompt: MgsmPrompt, stop: Sequence[str] = ("\n\n", "\n"),
                  max_new_tokens: int = 256, batch_size: int = 16,
                  progress: bool = False) -> tuple[dict[str, Any], dict[str, list], list[dict]]:
    """Greedy direct answers to ``items`` (:func:`mgsm_items`) in one language.

    Returns ``(metrics, per_item, predictions)``: ``metrics`` ``{"exact_match",
    "exact_match_flexible", "n"}``; ``per_item`` ``{"key", "exact_match", "exact_match_flexible"}``
    lists in item order (``key``: a digest of the prompt and gold number, what ``xlt eval
    compare`` pairs by); ``predictions`` ``{"prompt", "completion", "target", "extracted"}`` dicts.
    """
    import hashlib

    from xlt.eval.task import generate_completions

    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    items = list(items)
    if not items:
        raise ConfigError("mgsm: no items to evaluate")
    prompts = [prompt.render(item.fields["question"]) for item in items]
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size, stop=stop, progress=progress)
    per_item: dict[str, list] = {"key": [], "exact_match": [], "exact_match_flexible": []}
    predictions = []
    for item, text, completion in zip(items, prompts, completions):
        scores = score_completion(completion, item.label)
        digest = hashlib.sha256(f"{item.label}\x00{text}".encode("utf-8")).hexdigest()[:16]
        per_item["key"].append(digest)
        for name, value in scores.items():
            per_item[name].append(value)
        predictions.append({"prompt": text, "completion": completion, "target": item.label,
                            "extracted": extract_number(completion)})
    n = len(items)
    metrics = {"exact_match": sum(per_item["exact_match"]) / n,
               "exact_match_flexible": sum(per_item["exact_match_flexible"]) / n, "n": n}
    return metrics, per_item, predictions
