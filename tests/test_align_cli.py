"""The real ``xlt train sft | mid-align | afp`` command lines, end to end and on bad input."""

from __future__ import annotations

import json

import pytest

from _versions_helpers import assert_records_versions

from _align_helpers import tiny_texts, write_task_and_pair_files


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Toolkit-format task and parallel files, and the two references' own formats."""
    root = tmp_path_factory.mktemp("align-data")
    tasks, pairs = tiny_texts(16)
    write_task_and_pair_files(root, tasks, pairs)
    with open(root / "mid.json", "w") as f:
        for t, p in zip(tasks, pairs):
            f.write(json.dumps({"text_parallel_0": p.candidate, "text_parallel_1": p.anchor,
                                "prefix": t.prompt, "text": t.completion + "</s>"}) + "\n")
    with open(root / "afp.json", "w") as f:
        for k, (t, p) in enumerate(zip(tasks, pairs)):
            completion = t.completion if k else ""  # the generators' row for an empty output
            text = t.prompt + " Answer in Qab:" + completion
            f.write(json.dumps({"sent0": p.anchor, "sent1": p.candidate, "clm_text": text,
                                "clm_prompt_len": len(text) - len(completion)}) + "\n")
    (root / "empty_side.jsonl").write_text(json.dumps({"src_lang": "qaa", "tgt_lang": "qab", "src": "a cat",
                                                       "tgt": "  "}) + "\n")
    (root / "no_completion.jsonl").write_text(json.dumps({"lang": "qaa", "prompt": "Q: x"}) + "\n")
    return root


COMMON = ["--per_device_train_batch_size", "4", "--logging_steps", "1", "--learning_rate", "1e-2",
          "--disable_tqdm", "true", "--lora_target_modules", "q_proj", "v_proj"]


@pytest.mark.slow
def test_mid_align_end_to_end_then_resume_with_the_saved_config(xlt_cli, tiny_llama_dir, data, tmp_path):
    from xlt.models import load_adapter, load_model

    out = tmp_path / "run"
    args = ["train", "mid-align", "--model", tiny_llama_dir, "--train_file", data / "train.jsonl",
            "--parallel_file", data / "pairs.jsonl", "--eval_parallel_file", data / "pairs.jsonl",
            "--eval_strategy", "steps", "--eval_steps", "2", "--save_steps", "2", "--max_steps", "4",
            "--output_dir", out, *COMMON]
    done = xlt_cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("adapter_config.json", "adapter_model.safetensors", "train_config.json", "log_history.json",
                 "tokenizer.json", "checkpoint-2"):
        assert (out / name).exists(), name
    history = json.loads((out / "log_history.json").read_text())
    steps = {h["step"]: h for h in history if "loss" in h}
    assert {"task_loss", "alignment_loss"} & set(steps[1]) and "eval_alignment_retrieval_accuracy" in \
        next(h for h in history if "eval_loss" in h)
    config = json.loads((out / "train_config.json").read_text())
    assert config["schedule"] == "alternate" and config["alignment_temperature"] == 0.1
    assert_records_versions(config)  # and --config below ignores that record
    # the engine the run actually trained under, in the file and the closing line (ignored by --config)
    assert config["xlt_engine"] == {"engine": "single", "world_size": 1}
    assert done.stdout.strip().splitlines()[-1].endswith(f"trained under single x 1 process -> {out}")
    model = load_adapter(load_model(tiny_llama_dir), out)
    assert type(model).__name__.startswith("Peft")
    # a killed run continues from its checkpoint; the saved config reproduces the run's options
    done = xlt_cli("train", "mid-align", "--config", out / "train_config.json",
                   "--resume_from_checkpoint", out / "checkpoint-2")
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = {h["step"]: h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h}
    for step in (3, 4):
        assert resumed[step]["loss"] == pytest.approx(steps[step]["loss"], rel=1e-5)


@pytest.mark.parametrize("command,train_file", [("afp", "afp.json"), ("mid-align", "mid.json"), ("sft", "train.jsonl")])
def test_reference_formats_and_presets_run(tiny_llama_dir, data, tmp_path, capsys, command, train_file):
    from xlt.cli import main

    out = tmp_path / command
    status = main(["train", command, "--model", str(tiny_llama_dir), "--train_file", str(data / train_file),
                   "--max_steps", "2", "--output_dir", str(out), *COMMON])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    history = json.loads((out / "log_history.json").read_text())
    logged = set().union(*[h.keys() for h in history])
    assert "task_loss" in logged
    assert ("alignment_loss" in logged) == (command != "sft")
    assert "16 task examples, " + ("0" if command == "sft" else "16") + " pairs" in captured.out


def test_bad_input_is_one_clear_line(xlt_cli, tiny_llama_dir, data, tmp_path, capsys):
    from xlt.cli import main

    base = ["--model", str(tiny_llama_dir), "--output_dir", str(tmp_path / "never")]
    # the real command line, in a subprocess, once
    done = xlt_cli("train", "mid-align", "--train_file", data / "train.jsonl",
                   "--parallel_file", data / "empty_side.jsonl", *base)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("xlt: error:")]
    assert len(lines) == 1 and "empty_side.jsonl:1: field 'tgt': empty text" in lines[0], done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    # the other cases through the same entry point, in this process
    cases = [
        (["train", "sft", "--train_file", str(data / "no_completion.jsonl")],
         "no_completion.jsonl:1: field 'completion': missing"),
        (["train", "afp", "--train_file", str(data / "afp.json"), "--alignment_temperature", "0"],
         "alignment_temperature must be a finite number > 0"),
        (["train", "mid-align", "--train_file", str(data / "mid.json"), "--alignment_layer", "9"],
         "layer 9 is outside the model: it has 4 decoder blocks, so the layer must be in 0..4"),
        (["train", "afp", "--train_file", str(data / "train.jsonl")],
         "needs parallel pairs"),
    ]
    for argv, message in cases:
        assert main([*argv, *base]) == 2, argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("xlt: error:")]
        assert len(lines) == 1 and message in lines[0], err[-1500:]
    assert not (tmp_path / "never").exists()


def test_example_configs_parse_with_the_papers_settings(tmp_path):
    from pathlib import Path

    import yaml

    from xlt.align.cli import AlignDataArguments
    from xlt.align.config import PRESETS
    from xlt.config import parse_dataclasses

    examples = Path(__file__).resolve().parents[1] / "examples"
    expected = {"recipes/mid-align-llama3-8b.yaml": ("mid-align", 16, 0.1),
                "recipes/mid-align-qwen2.5-7b.yaml": ("mid-align", 16, 0.1),
                "sft-llama3-8b.yaml": ("sft", None, 0.1), "recipes/afp-xglm-564m.yaml": ("afp", 1, 0.05)}
    for name, (preset, layer, tau) in expected.items():
        values = yaml.safe_load((examples / name).read_text())
        if "deepspeed" in values:  # shipped, valid JSON; deepspeed itself is not installed here
            json.loads((examples.parent / values.pop("deepspeed")).read_text())
        for key in ("bf16", "tf32"):  # need a GPU
            values.pop(key, None)
        path = tmp_path / Path(name).name
        path.write_text(yaml.safe_dump(values))
        data, cfg = parse_dataclasses([AlignDataArguments, PRESETS[preset]], ["--config", str(path)], prog=name)
        assert cfg.preset == preset and cfg.alignment_layer == layer and cfg.alignment_temperature == tau
        assert data.model.startswith(("meta-llama/", "Qwen/", "facebook/"))
    for ds in (examples / "deepspeed").glob("*.json"):
        assert json.loads(ds.read_text())["zero_optimization"]["stage"] in (2, 3)


def test_same_seed_same_adapter_bytes(tiny_llama_dir, data, tmp_path, capsys):
    from xlt.cli import main

    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        assert main(["train", "mid-align", "--model", str(tiny_llama_dir), "--train_file", str(data / "train.jsonl"),
                     "--parallel_file", str(data / "pairs.jsonl"), "--max_steps", "2", "--output_dir", str(out),
                     "--save_strategy", "no", *COMMON]) == 0, capsys.readouterr().err[-2000:]
        outs.append((out / "adapter_model.safetensors").read_bytes())
    assert outs[0] == outs[1]


def test_separate_alternate_streams_from_the_command_line(tiny_llama_dir, data, tmp_path, capsys):
    from xlt.align.config import AFPConfig
    from xlt.cli import main
    from xlt.errors import ConfigError

    out = tmp_path / "streams"
    status = main(["train", "mid-align", "--model", str(tiny_llama_dir), "--train_file", str(data / "train.jsonl"),
                   "--parallel_file", str(data / "pairs.jsonl"), "--alternate_streams", "separate",
                   "--max_steps", "2", "--gradient_accumulation_steps", "2", "--output_dir", str(out), *COMMON])
    assert status == 0, capsys.readouterr().err[-2000:]
    history = json.loads((out / "log_history.json").read_text())
    assert all("task_loss" in h and "alignment_loss" in h for h in history if "loss" in h and "step" in h)
    assert json.loads((out / "train_config.json").read_text())["alternate_streams"] == "separate"
    with pytest.raises(ConfigError, match="needs the alternate schedule"):
        AFPConfig(output_dir=str(tmp_path / "afp"), alternate_streams="separate")


def test_fsdp_version_1_is_refused_in_one_line(tiny_llama_dir, data, tmp_path, capsys, monkeypatch):
    from xlt.cli import main

    # what `accelerate launch` sets with an FSDP config that does not ask for version 2
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    status = main(["train", "mid-align", "--model", str(tiny_llama_dir), "--train_file", str(data / "mid.json"),
                   "--output_dir", str(tmp_path / "never"), *COMMON])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("xlt: error: FSDP version 1 is not supported") and "use FSDP version 2" in err[0]
    assert not (tmp_path / "never").exists()
