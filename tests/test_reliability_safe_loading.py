"""Safe loading through every command that reads weights: a crafted pickle is refused with a
one-line reason and never executed (the marker file it would create stays absent), even where
``--allow-pickle`` is given (pickles are then read with ``weights_only=True``).

Model and adapter loading of xlt.models is tested in test_models.py; this module covers the
commands and the loaders that do not go through it (merge inputs, LSLo adapters)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _reliability_helpers import PAIRS, TASK, _jsonl, crafted_pickle


@pytest.fixture(scope="module")
def pickled(tmp_path_factory, tiny_llama_dir):
    """A model directory whose only weights are a crafted pickle, and data for the commands."""
    root = tmp_path_factory.mktemp("pickled")
    model = root / "model"
    shutil.copytree(tiny_llama_dir, model)
    (model / "model.safetensors").unlink()
    crafted_pickle(model / "pytorch_model.bin", root / "EXECUTED")
    return {"root": root, "model": model, "marker": root / "EXECUTED",
            "task": _jsonl(root / "task.jsonl", TASK), "pairs": _jsonl(root / "pairs.jsonl", PAIRS)}


COMMANDS = [
    ("train sft", "train sft --model {model} --train_file {task} --output_dir {root}/out-sft"),
    ("eval ppl", "eval ppl --model {model} --corpus {task}"),
    ("eval task", "eval task --model {model} --data {task}"),
    ("analyze similarity", "analyze similarity --model {model} --pairs {pairs} --output_dir {root}/out-sim"),
    ("merge linear --base", "merge linear --adapters {lora} {lora} --merge-into-base --base {model} "
     "--out {root}/out-merge"),
]


@pytest.mark.parametrize("name,template", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_commands_refuse_pickle_weights_without_the_flag(name, template, pickled, tiny_llama_dir, capsys):
    from _merge_helpers import lora_config, lora_factors, lora_state_dict, write_adapter_dir

    from xlt.cli import main

    lora = pickled["root"] / "lora"
    if not lora.exists():
        write_adapter_dir(lora, lora_config(), lora_state_dict(lora_factors(1)))
    argv = [part.format(lora=lora, **pickled) for part in template.split()]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pickle" in err and "--allow-pickle" in err, err
    assert not pickled["marker"].exists()
    assert not any(p.name.startswith("out-") for p in pickled["root"].iterdir())


def test_allow_pickle_still_never_runs_code(pickled):
    """With the flag, pickles are unpickled with weights_only=True: plain tensors only."""
    from xlt.errors import ModelError
    from xlt.models import load_model

    with pytest.raises((ModelError, Exception)):  # not a plain tensor file: refused, not run
        load_model(pickled["model"], allow_pickle=True)
    assert not pickled["marker"].exists()


def test_merge_input_pickle_with_the_flag_is_read_as_plain_tensors_only(tmp_path, capsys):
    from _merge_helpers import lora_config

    from xlt.cli import main

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(lora_config()), encoding="utf-8")
    crafted_pickle(adapter / "adapter_model.bin", tmp_path / "EXECUTED")
    status = main(["merge", "linear", "--adapters", str(adapter), str(adapter), "--allow-pickle",
                   "--out", str(tmp_path / "merged")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "adapter_model.bin" in err, err
    assert not (tmp_path / "EXECUTED").exists()
    assert not (tmp_path / "merged").exists()


def test_lslo_adapter_loads_safetensors_only(tmp_path):
    from _lslo_helpers import paper_config, tiny_m2m100

    from xlt.errors import ModelError
    from xlt.lslo import apply_lslo, load_lslo

    adapter = tmp_path / "lslo"
    apply_lslo(tiny_m2m100(), paper_config()).save_pretrained(adapter)
    weights = [p for p in adapter.iterdir() if p.suffix == ".safetensors"]
    assert len(weights) == 1
    weights[0].unlink()
    crafted_pickle(adapter / "lslo_model.bin", tmp_path / "EXECUTED")
    with pytest.raises(ModelError, match="no adapter weights"):
        load_lslo(tiny_m2m100(), adapter)
    assert not (tmp_path / "EXECUTED").exists()


def test_remote_code_is_refused_without_the_flag(pickled, tiny_llama_dir, tmp_path, capsys):
    """A config that asks for code from the model directory (auto_map) never runs it without
    --trust-remote-code: the command refuses (one line naming the flag) or, for a model type
    transformers knows, loads the built-in class instead."""
    from xlt.cli import main

    model = tmp_path / "remote"
    shutil.copytree(tiny_llama_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    (model / "modeling_evil.py").write_text(f"open({str(tmp_path / 'EXECUTED')!r}, 'w')\n")
    status = main(["eval", "task", "--model", str(model), "--data", str(pickled["task"])])
    err = capsys.readouterr().err.strip()
    if status != 0:
        assert len(err.splitlines()) == 1 and "trust" in err.lower(), err
    assert not (tmp_path / "EXECUTED").exists()
