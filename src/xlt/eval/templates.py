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
        derived:                # optional words chosen by a field's value
          conjunction: {from: question, values: {cause: because, effect: so}}

Every template needs exactly one ``{choice}``; every other placeholder must be a field of the
reader's items or a derived word. Problems are :class:`~xlt.errors.ConfigError` naming the
template file and prompt.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

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
    "jsonl": None,
}

BUILTIN_TASKS = ("pawsx", "xnli", "xcopa", "xstorycloze", "xwinograd", "belebele", "sib200")


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

    def values(self, fields: Mapping[str, Any], where: dict | None = None) -> dict[str, Any]:
        """Item fields plus the derived words."""
        values = dict(fields)
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
                           "scoring", "dataset"}
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
    dataset = data.get("dataset")
    if dataset is not None:
        if not isinstance(dataset, Mapping) or not {"path", "split"} <= set(dataset) \
                or set(dataset) - {"path", "split", "dev_split"}:
            raise ConfigError(f"{source}: 'dataset' needs 'path' and 'split' (and optionally 'dev_split')")
        dataset = {str(k): str(v) for k, v in dataset.items()}
    prompts_data = data["prompts"]
    if not isinstance(prompts_data, Mapping) or not prompts_data:
        raise ConfigError(f"{source}: 'prompts' must map prompt languages to formats")
    known = READER_FIELDS[reader]
    prompts = {}
    for lang, spec in prompts_data.items():
        where = f"{source}: prompt {lang!r}"
        if not isinstance(spec, Mapping) or "template" not in spec or "choices" not in spec:
            raise ConfigError(f"{where}: needs 'template' and 'choices'")
        extra = set(spec) - {"template", "demo_template", "test_template", "choices", "derived"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        derived = {}
        for name, rule in (spec.get("derived") or {}).items():
            if not isinstance(rule, Mapping) or "from" not in rule or not isinstance(rule.get("values"), Mapping):
                raise ConfigError(f"{where}: derived {name!r} needs 'from' and a 'values' mapping")
            derived[name] = (str(rule["from"]), {str(k): str(v) for k, v in rule["values"].items()})
        choices = spec["choices"]
        if not isinstance(choices, list) or len(choices) != len(labels):
            raise ConfigError(f"{where}: 'choices' must list {len(labels)} verbalisers (one per label)")
        texts = {"template": str(spec["template"]),
                 "demo_template": str(spec.get("demo_template", spec["template"])),
                 "test_template": str(spec.get("test_template", spec["template"]))}
        allowed = None if known is None else known | set(derived)
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
        for name, (source_field, _) in derived.items():
            if known is not None and source_field not in known:
                raise ConfigError(f"{where}: derived {name!r} reads field {source_field!r}, which "
                                  f"reader {reader!r} does not provide")
        prompts[str(lang)] = PromptFormat(texts["demo_template"], texts["test_template"],
                                          tuple(str(c) for c in choices), derived)
    return TaskTemplate(task=str(data.get("task", Path(source).stem)), reader=reader, labels=tuple(labels),
                        prompts=prompts, connector=str(data.get("connector", "</s>")), split=split,
                        label_field=str(data.get("label_field", "label")), source=source, scoring=scoring,
                        dataset=dataset)


def load_template(name_or_path: str) -> TaskTemplate:
    """A shipped template by task name (pawsx, xnli, xcopa, xstorycloze, xwinograd, belebele,
    sib200) or a YAML file."""
    import yaml

    path = Path(name_or_path)
    if name_or_path in BUILTIN_TASKS and not path.exists():
        text = resources.files("xlt.eval").joinpath("templates", f"{name_or_path}.yaml").read_text("utf-8")
        source = f"template {name_or_path}"
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
    return parse_template(data, source)
