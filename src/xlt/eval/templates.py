"""Prompt templates for multiple-choice in-context evaluation, as YAML data.

A template file (the five shipped ones live in ``xlt/eval/templates/``)::

    task: pawsx                 # a name
    reader: pawsx               # file reader (see xlt.eval.readers), or "jsonl" + label_field
    labels: [1, 0]              # raw gold label of choice 0, 1, ... (choice index = position)
    connector: "</s>"           # appended to every demonstration
    split: choice               # lm-eval rule: continuation starts at the choice ("choice")
                                # or after it ("after_choice": partial scoring)
    scoring: afp                # default scoring rule of 'xlt eval icl' (afp or lm-eval)
    dataset:                    # optional: where the data lives on the hub (config = language)
      path: facebook/belebele
      split: test               # the test split; dev_split: the demonstrations' (optional)
    prompts:
      en:                       # prompt language ("default" serves any language)
        template: "{sentence1}, right? {choice}, {sentence2}"
        demo_template: ...      # optional, for demonstrations (defaults to template)
        test_template: ...      # optional, for the scored item (defaults to template)
        choices: ["Yes", "No"]  # verbalisers; may refer to fields, e.g. "{choice1}"
        derived:                # optional words chosen by a field's value, or a field rewritten
          conjunction: {from: question, values: {cause: because, effect: so}}
          premise_cut: {from: premise, apply: [strip, drop_last_char]}
        drop_empty: [sentence1]  # optional: items whose field is missing or "" are left out
    target_delimiter: ""        # put where the text splits into context and continuation
                                # (before the choice; after it under after_choice), in the
                                # demonstrations too: lm-evaluation-harness's target_delimiter
    demonstrations: fixed       # "fixed": the same k for every item (AFP's rule); "per_item":
                                # drawn for each item in turn, as lm-evaluation-harness does;
                                # "per_item_excluding_item": the same, never the item itself
                                # (see xlt.eval.icl.sample_demonstrations_per_item);
                                # "first_n": the first k dev items in file order for every
                                # item (lm-evaluation-harness's first_n sampler)
    demonstrations_by: subject  # optional: demonstrations only from dev items whose field
                                # has the scored item's value (the harness's per-subject tasks)
    report_by: cultural_sensitivity_label  # optional: accuracy also per value of this field

Every template needs exactly one ``{choice}``; every other placeholder must be a field of the
reader's items or a derived word. ``apply`` rewrites a field with named steps, in order (see
:data:`TRANSFORMS`). The five AFP tasks also ship as ``<task>.lm-eval.yaml``: the prompts of
lm-evaluation-harness 0.4.13's own task files (``load_template(task, prompts="lm-eval")``).
Problems are :class:`~xlt.errors.ConfigError` naming the template file and prompt.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from xlt.errors import ConfigError, DataError

#: fields each reader provides (None: any, checked per item)
READER_FIELDS: dict[str, set[str] | None] = {
    "pawsx": {"sentence1", "sentence2", "id"},
    "xnli": {"premise", "hypothesis"},
    "xcopa": {"premise", "choice1", "choice2", "question"},
    "xstorycloze": {"s1", "s2", "s3", "s4", "ending1", "ending2"},
    "xwinograd": {"part1", "part2", "option1", "option2"},
    "belebele": {"flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4"},
    "sib200": {"text", "index_id"},
    "global_mmlu": {"question", "option_a", "option_b", "option_c", "option_d", "subject", "subject_category",
                    "cultural_sensitivity_label", "sample_id"},
    "jsonl": None,
}

BUILTIN_TASKS = ("pawsx", "xnli", "xcopa", "xstorycloze", "xwinograd", "belebele", "sib200", "global_mmlu")
#: tasks whose prompts exist in two versions: the AFP paper's and lm-evaluation-harness's
PROMPT_SETS = ("afp", "lm-eval")
LM_EVAL_TASKS = ("pawsx", "xnli", "xcopa", "xstorycloze", "xwinograd")
DEMONSTRATION_RULES = ("fixed", "per_item", "per_item_excluding_item", "first_n")


def _detokenize(text: str) -> str:
    """lm-evaluation-harness's PAWS-X detokenisation: no space before n't, ')', after '(',
    around '"', nor before an apostrophe, '.' or ','."""
    for old, new in ((" n't", "n't"), (" )", ")"), ("( ", "("), ('" ', '"'), (' "', '"')):
        text = text.replace(old, new)
    return re.sub(r" (['.,])", r"\1", text)


#: named steps of a derived field's ``apply`` (the rewrites lm-evaluation-harness's task files make)
TRANSFORMS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "drop_last_char": lambda text: text[:-1],
    "drop_final_punctuation": lambda text: text[:-1] if text.endswith((".", ",", ";")) else text,
    "lower_first": lambda text: text[:1].lower() + text[1:],
    "detokenize": _detokenize,
}


def _placeholders(text: str, where: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: malformed template {text!r} ({exc})") from None


@dataclass(frozen=True)
class PromptFormat:
    """One prompt language of a template."""

    demo_template: str
    test_template: str
    choices: tuple[str, ...]
    derived: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)
    rewritten: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # name -> (field, steps)
    drop_empty: tuple[str, ...] = ()

    def keeps(self, fields: Mapping[str, Any]) -> bool:
        """False for an item whose ``drop_empty`` fields are missing or empty."""
        return all(fields.get(name) not in (None, "") for name in self.drop_empty)

    def values(self, fields: Mapping[str, Any], where: dict | None = None) -> dict[str, Any]:
        """Item fields plus the derived words and rewritten fields."""
        values = dict(fields)
        for name, (source, steps) in self.rewritten.items():
            text = str(fields.get(source, ""))
            for step in steps:
                text = TRANSFORMS[step](text)
            values[name] = text
        for name, (source, mapping) in self.derived.items():
            key = str(fields.get(source))
            if key not in mapping:
                raise DataError(f"value {key!r} has no {name!r} word in the template (expected one of "
                                f"{', '.join(map(str, mapping))})", field=source, **(where or {}))
            values[name] = mapping[key]
        return values


@dataclass(frozen=True)
class TaskTemplate:
    """A task's prompts per language, its reader and its label order."""

    task: str
    reader: str
    labels: tuple[Any, ...]
    prompts: Mapping[str, PromptFormat]
    connector: str = "</s>"
    split: str = "choice"
    label_field: str = "label"
    source: str = "<template>"
    scoring: str = "afp"
    dataset: Mapping[str, str] | None = None  # {"path", "split", "dev_split"?}: hub location
    target_delimiter: str = ""
    demonstrations: str = "fixed"  # or "per_item", "per_item_excluding_item", "first_n" (see xlt.eval.icl)
    demonstrations_by: str | None = None  # demonstrations share this field's value with the item
    report_by: str | None = None  # accuracy also reported per value of this field
    prompts_from: str = "afp"  # the prompt set a built-in template comes from (afp or lm-eval)

    def prompt_for(self, lang: str) -> PromptFormat:
        if lang in self.prompts:
            return self.prompts[lang]
        if "default" in self.prompts:
            return self.prompts["default"]
        raise ConfigError(f"{self.source}: template {self.task!r} has no prompt for language {lang!r} "
                          f"(it has {', '.join(self.prompts)}); add one, or pass --prompt-language")

    def label_index(self, raw: Any, where: dict) -> int:
        for k, value in enumerate(self.labels):
            if raw == value or str(raw) == str(value):
                return k
        raise DataError(f"label {raw!r} is outside the choices (expected one of "
                        f"{', '.join(map(str, self.labels))})", field="label", **where)

    def parts(self, prompt: PromptFormat, fields: Mapping[str, Any], *, demo: bool,
              where: dict | None = None) -> tuple[str, list[str], str]:
        """``(prefix, choice strings, suffix)`` of one item: the rendered text for choice ``c``
        is ``prefix + choices[c] + suffix``."""
        values = prompt.values(fields, where)
        template = prompt.demo_template if demo else prompt.test_template
        before, after = template.split("{choice}", 1)
        try:
            prefix = before.format_map(values)
            suffix = after.format_map(values)
            choices = [c.format_map(values) for c in prompt.choices]
        except KeyError as exc:
            raise DataError(f"template {self.source} needs field {exc.args[0]!r}, which this item "
                            "lacks", **(where or {})) from None
        return prefix, choices, suffix


def parse_template(data: Mapping[str, Any], source: str) -> TaskTemplate:
    """Validate a template mapping (from YAML) and build a :class:`TaskTemplate`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a template must be a mapping")
    for key in ("reader", "labels", "prompts"):
        if key not in data:
            raise ConfigError(f"{source}: template has no {key!r}")
    unknown = set(data) - {"task", "reader", "labels", "prompts", "connector", "split", "label_field",
                           "scoring", "dataset", "target_delimiter", "demonstrations", "demonstrations_by",
                           "report_by"}
    if unknown:
        raise ConfigError(f"{source}: unknown template key(s) {', '.join(sorted(unknown))}")
    reader = str(data["reader"])
    if reader not in READER_FIELDS:
        raise ConfigError(f"{source}: unknown reader {reader!r} (expected one of {', '.join(READER_FIELDS)})")
    labels = data["labels"]
    if not isinstance(labels, list) or len(labels) < 2:
        raise ConfigError(f"{source}: 'labels' must list the raw label of each choice (2 or more)")
    split = data.get("split", "choice")
    if split not in ("choice", "after_choice"):
        raise ConfigError(f"{source}: split must be 'choice' or 'after_choice', got {split!r}")
    scoring = data.get("scoring", "afp")
    if scoring not in ("afp", "lm-eval"):
        raise ConfigError(f"{source}: scoring must be 'afp' or 'lm-eval', got {scoring!r}")
    demonstrations = data.get("demonstrations", "fixed")
    if demonstrations not in DEMONSTRATION_RULES:
        raise ConfigError(f"{source}: demonstrations must be one of {', '.join(DEMONSTRATION_RULES)}, "
                          f"got {demonstrations!r}")
    known = READER_FIELDS[reader]
    for key in ("demonstrations_by", "report_by"):
        name = data.get(key)
        if name is not None and known is not None and name not in known:
            raise ConfigError(f"{source}: {key} names field {name!r}, which reader {reader!r} does not provide "
                              f"(fields: {', '.join(sorted(known))})")
    dataset = data.get("dataset")
    if dataset is not None:
        if not isinstance(dataset, Mapping) or not {"path", "split"} <= set(dataset) \
                or set(dataset) - {"path", "split", "dev_split"}:
            raise ConfigError(f"{source}: 'dataset' needs 'path' and 'split' (and optionally 'dev_split')")
        dataset = {str(k): str(v) for k, v in dataset.items()}
    prompts_data = data["prompts"]
    if not isinstance(prompts_data, Mapping) or not prompts_data:
        raise ConfigError(f"{source}: 'prompts' must map prompt languages to formats")
    prompts = {}
    for lang, spec in prompts_data.items():
        where = f"{source}: prompt {lang!r}"
        if not isinstance(spec, Mapping) or "template" not in spec or "choices" not in spec:
            raise ConfigError(f"{where}: needs 'template' and 'choices'")
        extra = set(spec) - {"template", "demo_template", "test_template", "choices", "derived", "drop_empty"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        derived, rewritten = {}, {}
        for name, rule in (spec.get("derived") or {}).items():
            if isinstance(rule, Mapping) and "from" in rule and isinstance(rule.get("apply"), list) \
                    and "values" not in rule:
                bad = [step for step in rule["apply"] if step not in TRANSFORMS]
                if bad:
                    raise ConfigError(f"{where}: derived {name!r} applies unknown step {bad[0]!r} "
                                      f"(known: {', '.join(TRANSFORMS)})")
                rewritten[name] = (str(rule["from"]), tuple(rule["apply"]))
                continue
            if not isinstance(rule, Mapping) or "from" not in rule or not isinstance(rule.get("values"), Mapping):
                raise ConfigError(f"{where}: derived {name!r} needs 'from' and a 'values' mapping "
                                  "or an 'apply' list")
            derived[name] = (str(rule["from"]), {str(k): str(v) for k, v in rule["values"].items()})
        drop_empty = spec.get("drop_empty") or []
        if not isinstance(drop_empty, list):
            raise ConfigError(f"{where}: drop_empty must list field names")
        choices = spec["choices"]
        if not isinstance(choices, list) or len(choices) != len(labels):
            raise ConfigError(f"{where}: 'choices' must list {len(labels)} verbalisers (one per label)")
        texts = {"template": str(spec["template"]),
                 "demo_template": str(spec.get("demo_template", spec["template"])),
                 "test_template": str(spec.get("test_template", spec["template"]))}
        allowed = None if known is None else known | set(derived) | set(rewritten)
        for key, text in texts.items():
            names = _placeholders(text, where)
            if names.count("choice") != 1:
                raise ConfigError(f"{where}: {key} {text!r} needs exactly one {{choice}} placeholder "
                                  f"(found {names.count('choice')})")
            if allowed is not None:
                bad = [n for n in names if n != "choice" and n not in allowed]
                if bad:
                    raise ConfigError(f"{where}: {key} refers to {{{bad[0]}}}, which reader {reader!r} "
                                      f"does not provide (fields: {', '.join(sorted(allowed))})")
        for choice in choices:
            names = _placeholders(str(choice), where)
            if "choice" in names or (allowed is not None and any(n not in allowed for n in names)):
                raise ConfigError(f"{where}: choice {choice!r} refers to an unknown field")
        for name, (source_field, _) in [*derived.items(), *rewritten.items()]:
            if known is not None and source_field not in known:
                raise ConfigError(f"{where}: derived {name!r} reads field {source_field!r}, which "
                                  f"reader {reader!r} does not provide")
        prompts[str(lang)] = PromptFormat(texts["demo_template"], texts["test_template"],
                                          tuple(str(c) for c in choices), derived, rewritten,
                                          tuple(str(n) for n in drop_empty))
    return TaskTemplate(task=str(data.get("task", Path(source).stem)), reader=reader, labels=tuple(labels),
                        prompts=prompts, connector=str(data.get("connector", "</s>")), split=split,
                        label_field=str(data.get("label_field", "label")), source=source, scoring=scoring,
                        dataset=dataset, target_delimiter=str(data.get("target_delimiter", "")),
                        demonstrations=demonstrations, demonstrations_by=data.get("demonstrations_by"),
                        report_by=data.get("report_by"))


def load_template(name_or_path: str, prompts: str = "afp") -> TaskTemplate:
    """A shipped template by task name (pawsx, xnli, xcopa, xstorycloze, xwinograd, belebele,
    sib200, global_mmlu) or a YAML file.

    ``prompts="lm-eval"`` picks, for the five AFP tasks, lm-evaluation-harness's prompts
    (``<task>.lm-eval.yaml``) instead of the AFP paper's; Belebele, SIB-200 and Global-MMLU have one prompt
    set (the harness's) and a template file is itself, so for those it changes nothing.
    """
    import yaml

    if prompts not in PROMPT_SETS:
        raise ConfigError(f"unknown prompt set {prompts!r} (expected {' or '.join(PROMPT_SETS)})")
    path = Path(name_or_path)
    if name_or_path in BUILTIN_TASKS and not path.exists():
        stem = f"{name_or_path}.lm-eval" if prompts == "lm-eval" and name_or_path in LM_EVAL_TASKS \
            else name_or_path
        text = resources.files("xlt.eval").joinpath("templates", f"{stem}.yaml").read_text("utf-8")
        source = f"template {stem}"
    else:
        if not path.is_file():
            raise ConfigError(f"{name_or_path}: no such template file (or built-in task: "
                              f"{', '.join(BUILTIN_TASKS)})")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    template = parse_template(data, source)
    if name_or_path in LM_EVAL_TASKS and prompts == "lm-eval" and not path.exists():
        from dataclasses import replace

        template = replace(template, prompts_from="lm-eval")
    return template
