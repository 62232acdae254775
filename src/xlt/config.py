"""Command-line parsing shared by every subcommand.

Trainer-style commands follow the HfArgumentParser / TRL conventions: their options are the
fields of one or more dataclasses (trainer configs extend ``transformers.TrainingArguments``),
``--config file.yaml`` supplies values, and ``--key value`` on the command line overrides them.
Every parse error is a one-line :class:`~xlt.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

from xlt.errors import ConfigError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in ``--help`` and errors raised as :class:`ConfigError`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        """Accept ``--foo_bar`` wherever ``--foo-bar`` is an option (and the reverse), as the
        trainer commands do through HfArgumentParser: either spelling works everywhere."""
        extra = []
        for name in names:
            if name.startswith("--"):
                body = name[2:]
                for alias in ("--" + body.replace("-", "_"), "--" + body.replace("_", "-")):
                    if alias != name and alias not in names and alias not in extra \
                            and alias not in self._option_string_actions:
                        extra.append(alias)
        return super().add_argument(*names, *extra, **kwargs)

    def error(self, message: str):  # noqa: D102 - argparse API
        raise ConfigError(f"{self.prog}: {message}")


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of option names to values."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def parse_dataclasses(dataclass_types: Sequence[type], argv: Sequence[str], *, prog: str,
                      description: str | None = None) -> tuple:
    """Parse ``argv`` (with an optional ``--config file.yaml``) into one instance per dataclass.

    Values from the YAML file become defaults; command-line flags override them. A YAML key
    that no dataclass knows is an error naming the file and the key, except the package
    versions and the engine a saved ``train_config.json`` records (``xlt_versions``,
    ``xlt_engine``), which are ignored.
    """
    from transformers import HfArgumentParser

    class _Parser(HfArgumentParser):
        def error(self, message: str):
            raise ConfigError(f"{self.prog}: {message}")

    parser = _Parser(tuple(dataclass_types), prog=prog, description=description)
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file of option values; command-line flags override it")
    argv = list(argv)
    config_path = _pop_config(argv)
    if config_path is not None:
        values = load_yaml_config(config_path)
        from xlt.provenance import VERSIONS_KEY

        values.pop(VERSIONS_KEY, None)  # what a saved train_config.json records, not an option
        values.pop("xlt_engine", None)  # likewise (xlt.engines.ENGINE_KEY)
        known = {action.dest: action for action in parser._actions}
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise ConfigError(f"{config_path}: unknown option(s) {', '.join(unknown)}")
        for key, action in known.items():
            if key in values:
                action.required = False  # satisfied by the file
        parser.set_defaults(**values)
    try:
        namespace = parser.parse_args(argv)
    except SystemExit as exc:  # --help
        raise exc
    outputs = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        kwargs = {k: v for k, v in vars(namespace).items() if k in names}
        try:
            instance = dtype(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{prog}: {str(exc).strip().splitlines()[0]}") from None
        check_training_arguments(instance)
        outputs.append(instance)
    return tuple(outputs)


def check_training_arguments(args) -> None:
    """Refuse absurd values of the shared ``TrainingArguments`` fields before any work.

    transformers accepts a negative batch size or a NaN learning rate and fails much later
    (in the data loader or the optimizer) with an error that names neither the option nor the
    value. Objects that are not ``TrainingArguments`` are left alone.
    """
    try:
        from transformers import TrainingArguments
    except ImportError:  # pragma: no cover
        return
    if not isinstance(args, TrainingArguments):
        return
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps"):
        value = getattr(args, name, None)
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ConfigError(f"--{name} must be an integer >= 1, got {value}")
    for name in ("learning_rate", "weight_decay", "max_grad_norm", "num_train_epochs",
                 "warmup_steps", "adam_epsilon"):
        value = getattr(args, name, None)
        if value is not None:
            require_positive(f"--{name}", value, allow_zero=True)
    for name in ("adam_beta1", "adam_beta2"):
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and 0.0 <= value < 1.0):
            raise ConfigError(f"--{name} must be in [0, 1), got {value}")
    for name in ("save_steps", "logging_steps", "eval_steps"):
        value = getattr(args, name, None)
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ConfigError(f"--{name} must be > 0, got {value}")


def _pop_config(argv: list[str]) -> str | None:
    for k, arg in enumerate(argv):
        if arg == "--config":
            if k + 1 >= len(argv):
                raise ConfigError("--config expects a file path")
            path = argv[k + 1]
            del argv[k:k + 2]
            return path
        if arg.startswith("--config="):
            del argv[k]
            return arg.split("=", 1)[1]
    return None


# --------------------------------------------------------------------------------------------
# Small validators for option values (used by the commands and by config dataclasses)


def require_positive(name: str, value: float | int, *, allow_zero: bool = False) -> None:
    """Raise a :class:`ConfigError` unless ``value`` is a finite number > 0 (or >= 0)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value}")


def require_probability(name: str, value: float) -> None:
    """Raise a :class:`ConfigError` unless ``0 <= value <= 1``."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")


def used_options(data, training_args, *, drop=("resume_from_checkpoint", "overwrite")) -> dict:
    """Every option value of a run, keyed by option name: a file ``--config`` accepts again.

    ``data`` is a plain options dataclass, ``training_args`` a ``TrainingArguments`` subclass
    (its ``to_dict`` masks secrets such as hub tokens as ``<...>``; those are left out). Options
    that only make sense for one invocation (``drop``) are removed. The package versions of
    the run are added under ``xlt_versions`` (:mod:`xlt.provenance`).
    """
    import json

    values = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    raw = training_args.to_dict()
    for f in dataclasses.fields(training_args):
        if not f.init or f.name not in raw or f.name.startswith("_"):
            continue
        value = raw[f.name]
        if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
            continue  # a masked secret
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        values[f.name] = value
    for key in drop:
        values.pop(key, None)
    from xlt.provenance import VERSIONS_KEY, package_versions

    values[VERSIONS_KEY] = package_versions()  # a record of the run, ignored by --config
    return values
