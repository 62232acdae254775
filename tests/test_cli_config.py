"""The command line: dispatch, help, one-line errors, YAML configs with overrides, atomic outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from xlt.cli import COMMANDS
from xlt.config import parse_dataclasses, require_positive, require_probability
from xlt.errors import ConfigError, OutputExistsError
from xlt.io import atomic_dir, atomic_file, read_json, write_json


def test_help_lists_every_command(xlt_cli):
    result = xlt_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f"\n  {name}" in result.stdout
    sub = xlt_cli("merge", "--help")
    assert sub.returncode == 0
    for name in COMMANDS["merge"]:
        assert name in sub.stdout


def test_version(xlt_cli):
    from xlt import __version__

    result = xlt_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"xlt {__version__}"


def test_unknown_command_is_one_line(xlt_cli):
    result = xlt_cli("frobnicate")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "xlt: error: xlt: unknown command 'frobnicate' (expected one of "
        + ", ".join(COMMANDS) + ")"]
    nested = xlt_cli("train", "nope")
    assert nested.returncode == 2 and "xlt train: unknown command 'nope'" in nested.stderr


def test_every_command_target_resolves():
    """Each target in the command table names a module:function pair in the package."""
    import importlib.util

    def targets(node):
        for entry in node.values():
            if isinstance(entry, dict):
                yield from targets(entry)
            else:
                yield entry[0]

    for target in targets(COMMANDS):
        module, _, func = target.partition(":")
        assert module.startswith("xlt.") and func.endswith("_command"), target
        parent = module.rsplit(".", 1)[0]
        # the package of every target exists, or the command reports "not available"
        if importlib.util.find_spec(parent) is not None and importlib.util.find_spec(module) is not None:
            mod = importlib.import_module(module)
            assert callable(getattr(mod, func, None)), target


@dataclass
class _Args:
    data: str = field(metadata={"help": "a data file"})
    steps: int = field(default=10, metadata={"help": "number of steps"})
    temperature: float = field(default=0.1, metadata={"help": "softmax temperature"})
    name: str = field(default="x", metadata={"help": "a name"})

    def __post_init__(self):
        require_positive("temperature", self.temperature)


def test_yaml_values_become_defaults_and_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: from_yaml.jsonl\nsteps: 50\ntemperature: 0.05\n")
    (args,) = parse_dataclasses([_Args], ["--config", str(cfg), "--steps", "7"], prog="t")
    assert (args.data, args.steps, args.temperature, args.name) == ("from_yaml.jsonl", 7, 0.05, "x")


def test_config_errors_name_the_file_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: a\nstepz: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown option\(s\) stepz"):
        parse_dataclasses([_Args], ["--config", str(cfg)], prog="t")
    cfg.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: invalid YAML"):
        parse_dataclasses([_Args], ["--config", str(cfg)], prog="t")
    cfg.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_dataclasses([_Args], ["--config", str(cfg)], prog="t")
    with pytest.raises(ConfigError, match="config file not found"):
        parse_dataclasses([_Args], ["--config", str(tmp_path / "none.yaml")], prog="t")


def test_flag_errors_are_config_errors():
    with pytest.raises(ConfigError, match="required"):
        parse_dataclasses([_Args], [], prog="t")
    with pytest.raises(ConfigError, match="invalid int value"):
        parse_dataclasses([_Args], ["--data", "d", "--steps", "many"], prog="t")
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0, got nan"):
        parse_dataclasses([_Args], ["--data", "d", "--temperature", "nan"], prog="t")


def test_training_arguments_subclass_parses(tmp_path):
    from transformers import TrainingArguments

    @dataclass
    class MyConfig(TrainingArguments):
        align_layer: int = field(default=16, metadata={"help": "layer"})

    (args,) = parse_dataclasses([MyConfig], ["--output_dir", str(tmp_path), "--align_layer", "3",
                                             "--per_device_train_batch_size", "4"], prog="t")
    assert args.align_layer == 3 and args.per_device_train_batch_size == 4
    with pytest.raises(ConfigError, match="warmup_ratio"):
        parse_dataclasses([MyConfig], ["--output_dir", str(tmp_path), "--warmup_ratio", "0.1"], prog="t")


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), None, True])
def test_require_positive_rejects(value):
    with pytest.raises(ConfigError):
        require_positive("x", value)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_require_probability_rejects(value):
    with pytest.raises(ConfigError):
        require_probability("p", value)


def test_atomic_dir_leaves_old_state_on_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("crash mid-write")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary left behind
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(os.listdir(out)) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_atomic_file_and_json(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    with pytest.raises(ValueError):
        with atomic_file(path) as handle:
            handle.write("partial")
            raise ValueError("boom")
    assert read_json(path) == {"a": [1, 2], "b": 1}
    path.write_text('{"a": 1,\n oops}')
    with pytest.raises(Exception, match=r"x\.json:2: invalid JSON"):
        read_json(path)


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "f.json", {})
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
