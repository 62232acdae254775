"""The Python call behind each command gives what the command gives.

``xlt train sft | mid-align | afp`` = parse -> :func:`xlt.align.train`; ``xlt train lslo`` = parse
-> :func:`xlt.lslo.train`; ``xlt eval mt`` = read -> :func:`xlt.eval.mt.evaluate` -> print and
write. Each test builds the options in Python (no argv), calls the function in this process and
compares with an independent run of the real command line in a subprocess.
"""

from __future__ import annotations

import json

import pytest
import torch

from _align_helpers import tiny_texts, write_task_and_pair_files
from _lslo_helpers import TOY_LANGS, toy_corpus, toy_pairs

pytestmark = pytest.mark.slow


def _same_threads() -> dict:
    """The subprocess computes with as many threads as this process (same float reductions)."""
    return {"OMP_NUM_THREADS": str(torch.get_num_threads()), "MKL_NUM_THREADS": str(torch.get_num_threads())}


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_tensors(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _options(path, *out_dirs) -> dict:
    """train_config.json without the values that name the output directory."""
    values = json.loads(path.read_text())
    return {k: v for k, v in values.items() if not any(str(d) in str(v) for d in out_dirs)}


def _losses(path) -> list:
    return [(h["step"], h["loss"]) for h in json.loads(path.read_text()) if "loss" in h]


@pytest.fixture(scope="module")
def align_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-align")
    tasks, pairs = tiny_texts(16)
    write_task_and_pair_files(root, tasks, pairs)
    return root


def test_align_train_equals_the_command(tiny_llama_dir, align_data, tmp_path, xlt_cli, capsys):
    from xlt.align import AlignDataArguments, train
    from xlt.align.config import MidAlignConfig

    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    done = xlt_cli("train", "mid-align", "--model", tiny_llama_dir, "--train_file", align_data / "train.jsonl",
                   "--parallel_file", align_data / "pairs.jsonl", "--max_steps", "3", "--save_strategy", "no",
                   "--per_device_train_batch_size", "4", "--logging_steps", "1", "--learning_rate", "1e-2",
                   "--disable_tqdm", "true", "--lora_target_modules", "q_proj", "v_proj",
                   "--output_dir", cli_out, env=_same_threads())
    assert done.returncode == 0, done.stderr[-2000:]

    lines = []
    config = MidAlignConfig(output_dir=str(api_out), max_steps=3, save_strategy="no", per_device_train_batch_size=4,
                            logging_steps=1.0, learning_rate=1e-2, disable_tqdm=True,
                            lora_target_modules=["q_proj", "v_proj"])
    data = AlignDataArguments(model=str(tiny_llama_dir), train_file=str(align_data / "train.jsonl"),
                              parallel_file=[str(align_data / "pairs.jsonl")])
    capsys.readouterr()
    trainer = train(config, data, report=lines.append, progress=False)
    assert capsys.readouterr().out == ""  # the call prints nothing; the summary went to report
    assert trainer.state.global_step == 3 and trainer.alignment_layer == 2  # num_layers // 2 of 4

    said = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("xlt train mid-align: ")]
    # the command adds its closing summary line to what the call reports
    assert lines == said[:-1] and said[-1].startswith("LoRA adapter after 3 steps")
    assert lines[0].startswith("16 task examples, 16 pairs")
    _assert_same_tensors(_tensors(api_out / "adapter_model.safetensors"),
                         _tensors(cli_out / "adapter_model.safetensors"))
    api_options = _options(api_out / "train_config.json", api_out)
    assert api_options == _options(cli_out / "train_config.json", cli_out)
    assert api_options["schedule"] == "alternate" and api_options["max_steps"] == 3
    assert _losses(api_out / "log_history.json") == _losses(cli_out / "log_history.json")


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    from xlt.formats import write_jsonl
    from xlt.testing import save_tiny_model, train_nllb_tokenizer

    root = tmp_path_factory.mktemp("api-lslo")
    write_jsonl(root / "train.jsonl", toy_pairs(4, seed=0))
    write_jsonl(root / "test.jsonl", toy_pairs(1, seed=1))
    tokenizer = train_nllb_tokenizer(TOY_LANGS, toy_corpus(), vocab_size=300)
    save_tiny_model("m2m100", root / "model", tokenizer=tokenizer, hidden_size=32, num_layers=2)
    return root


@pytest.fixture(scope="module")
def lslo_runs(toy_world, xlt_cli):
    """The same LSLo run through ``xlt train lslo`` and through :func:`xlt.lslo.train`."""
    from xlt.lslo import LSLoDataArguments, train
    from xlt.lslo.trainer import LSLoTrainingConfig

    cli_out, api_out = toy_world / "cli", toy_world / "api"
    tiers = ["qaa=high", "qab=med", "qac=low", "qad=low"]
    done = xlt_cli("train", "lslo", "--model", toy_world / "model", "--train_file", toy_world / "train.jsonl",
                   "--output_dir", cli_out, "--num_train_epochs", "2", "--per_device_train_batch_size", "16",
                   "--tiers", *tiers, "--pruning", "language", "--pruning_t1", "1", "--pruning_t2", "1",
                   "--target_pruning_ratio", "0.5", "--learning_rate", "0.01", "--use_cpu",
                   "--disable_tqdm", "true", env=_same_threads())
    assert done.returncode == 0, done.stderr[-2000:]
    lines = []
    config = LSLoTrainingConfig(output_dir=str(api_out), num_train_epochs=2.0, per_device_train_batch_size=16,
                                tiers=tiers, pruning="language", pruning_t1=1, pruning_t2=1,
                                target_pruning_ratio=0.5, learning_rate=0.01, use_cpu=True, disable_tqdm=True)
    trainer = train(config, LSLoDataArguments(model=str(toy_world / "model"),
                                              train_file=str(toy_world / "train.jsonl")),
                    report=lines.append, progress=False)
    return {"cli": cli_out, "api": api_out, "stdout": done.stdout, "lines": lines, "trainer": trainer}


def test_lslo_train_equals_the_command(lslo_runs):
    cli_out, api_out = lslo_runs["cli"], lslo_runs["api"]
    said = [line.split(": ", 1)[1] for line in lslo_runs["stdout"].splitlines() if line.startswith("xlt train lslo: ")]
    assert lslo_runs["lines"] == said[:-1] and "adapter after" in said[-1]  # plus the closing line
    assert lslo_runs["lines"][0].startswith("LSLo (")
    state = _tensors(api_out / "lslo_model.safetensors")
    _assert_same_tensors(state, _tensors(cli_out / "lslo_model.safetensors"))
    assert any(t.abs().sum() > 0 for k, t in state.items() if ".lora_b." in k)  # it trained
    assert json.loads((api_out / "lslo_config.json").read_text()) == \
        json.loads((cli_out / "lslo_config.json").read_text())
    assert json.loads((api_out / "pruning_report.json").read_text()) == \
        json.loads((cli_out / "pruning_report.json").read_text())
    api_options = _options(api_out / "train_config.json", api_out)
    assert api_options == _options(cli_out / "train_config.json", cli_out)
    assert api_options["pruning"] == "language" and api_options["tiers"][2] == "qac=low"
    assert _losses(api_out / "log_history.json") == _losses(cli_out / "log_history.json")
    assert lslo_runs["trainer"].state.epoch == 2


def test_mt_evaluate_equals_the_command(lslo_runs, toy_world, xlt_cli, tmp_path, capsys):
    from xlt.eval.mt import evaluate, make_metrics
    from xlt.formats import read_records

    adapter, base = lslo_runs["cli"], toy_world / "model"
    out = tmp_path / "scores"
    done = xlt_cli("eval", "mt", "--data", toy_world / "test.jsonl", "--system", f"base={base}",
                   "--system", f"lslo={adapter}", "--num-beams", "2", "--max-new-tokens", "8",
                   "--chrf-word-order", "2", "--device", "cpu", "--out", out, env=_same_threads())
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads((out / "mt_scores.json").read_text())

    pairs = read_records(toy_world / "test.jsonl", "parallel")
    capsys.readouterr()
    result = evaluate(pairs, {"base": base, "lslo": adapter}, metrics=make_metrics(chrf_word_order=2),
                      device="cpu", num_beams=2, max_new_tokens=8, progress=False)
    assert capsys.readouterr().out == ""
    assert list(result.systems) == ["base", "lslo"]
    directions = {(p.src_lang, p.tgt_lang) for p in pairs}
    for name, system in result.systems.items():
        assert set(system["directions"]) == directions
        assert {f"{s}-{t}": v for (s, t), v in system["directions"].items()} == doc["systems"][name]["directions"]
        assert system["lslo"] == (name == "lslo") == doc["systems"][name]["lslo"]
        written = [json.loads(line) for line in (out / f"hypotheses.{name}.jsonl").read_text().splitlines()]
        assert result.hypotheses[name] == written
    assert result.tiers == doc["tiers"] == {"qaa": "high", "qab": "med", "qac": "low", "qad": "low"}
    assert result.signatures == doc["signatures"] and set(result.signatures) == {"bleu", "chrf++"}
    chrf = result.scores("chrf++")
    assert chrf["lslo"] == {d: v["chrf++"] for d, v in result.systems["lslo"]["directions"].items()}
