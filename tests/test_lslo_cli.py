"""``xlt train lslo``, ``xlt lslo export`` and ``xlt eval mt`` through the real command line."""

from __future__ import annotations

import json

import pytest

from _versions_helpers import assert_records_versions
import torch

from _lslo_helpers import TOY_LANGS, toy_corpus, toy_pairs


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    from xlt.formats import write_jsonl
    from xlt.testing import save_tiny_model, train_nllb_tokenizer

    root = tmp_path_factory.mktemp("lslo-world")
    write_jsonl(root / "train.jsonl", toy_pairs(4, seed=0))
    write_jsonl(root / "test.jsonl", toy_pairs(1, seed=1))
    tokenizer = train_nllb_tokenizer(TOY_LANGS, toy_corpus(), vocab_size=300)
    save_tiny_model("m2m100", root / "model", tokenizer=tokenizer, hidden_size=32, num_layers=4)
    save_tiny_model("m2m100", root / "other", tokenizer=tokenizer, hidden_size=32, num_layers=4, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(toy_world, xlt_cli):
    out = toy_world / "lslo"
    result = _run(xlt_cli, "train", "lslo", "--model", toy_world / "model", "--train_file", toy_world / "train.jsonl",
                     "--output_dir", out, "--num_train_epochs", "2", "--per_device_train_batch_size", "16",
                     "--tiers", "qaa=high", "qab=med", "qac=low", "qad=low", "--pruning", "language",
                     "--pruning_t1", "1", "--pruning_t2", "1", "--target_pruning_ratio", "0.5",
                     "--learning_rate", "0.01", "--use_cpu", "--disable_tqdm", "true")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.slow
def test_train_writes_adapter_report_and_config(trained):
    from safetensors.torch import load_file

    names = {p.name for p in trained.iterdir()}
    assert {"lslo_config.json", "lslo_model.safetensors", "pruning_report.json", "pruning_report.png",
            "train_config.json", "tokenizer.json"} <= names
    meta = json.loads((trained / "lslo_config.json").read_text())
    assert meta["config"]["languages"] == TOY_LANGS
    assert meta["config"]["encoder_directions"] == ["src", "src"]
    report = json.loads((trained / "pruning_report.json").read_text())
    # epoch 2 >= t1 + t2: half of every language's B pool is zero in the file (ranks 2, 2, 8, 8)
    pool = {"qaa": 1664, "qab": 1664, "qac": 6656, "qad": 6656}
    state = load_file(str(trained / "lslo_model.safetensors"))
    for lang, size in pool.items():
        zeros = sum(int((t == 0).sum()) for k, t in state.items() if k.endswith(f".lora_b.{lang}"))
        assert zeros >= round(0.5 * size)
        assert report["per_language"][lang]["total"] == size
    assert [e["epoch"] for e in report["schedule"]["epochs"]] == [1, 2]
    assert state["model.encoder.layers.0.fc1.lora_b.qab"].abs().sum() > 0  # it trained


@pytest.mark.slow
def test_export_equals_lslo_direction_and_eval_mt(trained, toy_world, xlt_cli, tmp_path):
    from xlt.lslo import load_lslo
    from xlt.models import load_model

    out = tmp_path / "qab-qad"
    result = _run(xlt_cli, "lslo", "export", "--adapter", trained, "--src", "qab", "--tgt", "qad", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    exported = load_model(out)
    assert exported.generation_config.forced_bos_token_id is not None
    lslo = load_lslo(load_model(toy_world / "model"), trained)
    ids = torch.tensor([[5, 9, 17, 33, 2], [7, 11, 2, 1, 1]])
    mask = (ids != 1).long()
    dec = torch.tensor([[2, 8, 20, 21], [2, 8, 30, 31]])
    with torch.no_grad():
        want = lslo(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                    src_lang_ids=["qab", "qab"], tgt_lang_ids=["qad", "qad"]).logits
        got = exported(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert (got - want).abs().max().item() < 1e-5

    scores = tmp_path / "eval"
    result = _run(xlt_cli, "eval", "mt", "--data", toy_world / "test.jsonl", "--system", f"lslo={trained}",
                     "--system", f"base={toy_world / 'model'}", "--num-beams", "2", "--max-new-tokens", "8",
                     "--directions", "qaa-qab", "qab-qad", "qad-qac", "qac-qaa",
                     "--chrf-word-order", "2", "--out", scores)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "== lslo: bleu" in result.stdout and "chrf++ averages by resource tier" in result.stdout
    assert "signature bleu: nrefs:1|case:mixed|eff:no|tok:13a" in result.stdout
    doc = json.loads((scores / "mt_scores.json").read_text())
    assert set(doc["systems"]) == {"lslo", "base"}
    assert_records_versions(doc)
    assert_records_versions(json.loads((trained / "train_config.json").read_text()))
    assert sorted(doc["systems"]["lslo"]["directions"]) == ["qaa-qab", "qab-qad", "qac-qaa", "qad-qac"]
    assert doc["tiers"] == {"qaa": "high", "qab": "med", "qac": "low", "qad": "low"}
    assert (scores / "heatmap.lslo.bleu.png").stat().st_size > 0
    hyps = [json.loads(line) for line in (scores / "hypotheses.lslo.jsonl").read_text().splitlines()]
    assert len(hyps) == 4 and {"src_lang", "tgt_lang", "src", "ref", "hyp"} <= set(hyps[0])


def _run(xlt_cli, *args):
    """The real CLI, single-threaded (the suite shares two cores with other work)."""
    return xlt_cli(*args, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def _one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout[-500:], result.stderr[-1500:])
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("xlt: error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.mark.slow
def test_bad_input_is_a_one_line_error(toy_world, xlt_cli, tmp_path):
    common = ["train", "lslo", "--model", toy_world / "model", "--train_file", toy_world / "train.jsonl",
              "--use_cpu", "--max_steps", "1"]
    _one_line_error(_run(xlt_cli, *common, "--output_dir", tmp_path / "a", "--languages", "qaa", "qab", "qac"),
                    "train.jsonl:", "unknown language code 'qad'")
    _one_line_error(_run(xlt_cli, *common, "--output_dir", tmp_path / "b", "--encoder_directions", "src*3"),
                    "encoder_directions has 3 entries but the model has 2 encoder layers")


@pytest.mark.slow
def test_adapter_for_another_base_is_refused(trained, toy_world, xlt_cli, tmp_path):
    result = _run(xlt_cli, "lslo", "export", "--adapter", trained, "--model", toy_world / "other",
                     "--src", "qaa", "--tgt", "qab", "--out", tmp_path / "x")
    _one_line_error(result, "saved for another base model")
    assert not (tmp_path / "x").exists()
    result = _run(xlt_cli, "lslo", "export", "--adapter", trained, "--src", "qaa", "--tgt", "eng", "--out", tmp_path / "y")
    _one_line_error(result, "language 'eng' is not in the adapter's languages")


# ------------------------------------------------------------------------------------------------
# decoder-only models: xlt train lslo on a tiny Llama, then export and xlt eval mt


@pytest.fixture(scope="module")
def causal_trained(toy_world, tiny_llama_dir, xlt_cli):
    out = toy_world / "lslo-llama"
    result = _run(xlt_cli, "train", "lslo", "--model", tiny_llama_dir, "--train_file", toy_world / "train.jsonl",
                  "--eval_file", toy_world / "train.jsonl", "--eval_strategy", "epoch", "--eval_on_start", "true",
                  "--output_dir", out, "--num_train_epochs", "3", "--per_device_train_batch_size", "16",
                  "--tiers", "qac=low", "qad=low", "--decoder_directions", "src*2,tgt*2",
                  "--language_names", "qaa=Alpha", "qab=Beta", "--learning_rate", "0.01",
                  "--use_cpu", "--disable_tqdm", "true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "decoder-only" in result.stdout and "redrawn each epoch" in result.stdout
    return out


@pytest.mark.slow
def test_causal_training_lowers_the_loss_and_the_adapter_routes(causal_trained, tiny_llama_dir):
    from xlt.lslo import load_lslo
    from xlt.models import load_model, load_tokenizer

    history = json.loads((causal_trained / "log_history.json").read_text())
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert len(evals) == 4 and evals[-1] < evals[0] - 0.05, evals  # on the training pairs themselves
    meta = json.loads((causal_trained / "lslo_config.json").read_text())
    assert meta["config"]["decoder_directions"] == ["src", "src", "tgt", "tgt"]
    assert meta["config"]["dim"] is None and meta["config"]["encoder_directions"] is None
    assert meta["translation_prompt"]["template"] == "{src_lang}: {src}\n{tgt_lang}:"
    assert meta["translation_prompt"]["language_names"] == {"qaa": "Alpha", "qab": "Beta"}

    lslo = load_lslo(load_model(tiny_llama_dir), causal_trained).eval()
    tok = load_tokenizer(tiny_llama_dir)
    ids = torch.tensor([tok("Alpha: sun red tree\nBeta:")["input_ids"]] * 2)

    def logits(src, tgt):
        with torch.no_grad():
            return lslo(input_ids=ids, src_lang_ids=src, tgt_lang_ids=tgt).logits

    same = logits(["qaa", "qaa"], ["qab", "qab"])
    assert (same[0] - same[1]).abs().max() < 1e-6
    mixed = logits(["qaa", "qaa"], ["qab", "qac"])
    assert (mixed[0] - same[0]).abs().max() < 1e-6     # example 0 unchanged by its neighbour
    assert (mixed[1] - same[1]).abs().max() > 1e-4     # the target language picks the top layers' subspace
    src_changed = logits(["qad", "qaa"], ["qab", "qab"])
    assert (src_changed[0] - same[0]).abs().max() > 1e-4  # the source language the bottom layers'


@pytest.mark.slow
def test_resuming_mid_epoch_reproduces_the_run(causal_trained, tiny_llama_dir, toy_world, xlt_cli, tmp_path):
    """Same seed, same adapter; a run resumed inside epoch 2 redraws that epoch's rows identically."""
    from safetensors.torch import load_file

    out = tmp_path / "resumed"
    common = ["train", "lslo", "--model", tiny_llama_dir, "--train_file", toy_world / "train.jsonl",
              "--output_dir", out, "--num_train_epochs", "3", "--per_device_train_batch_size", "16",
              "--tiers", "qac=low", "qad=low", "--decoder_directions", "src*2,tgt*2",
              "--language_names", "qaa=Alpha", "qab=Beta", "--learning_rate", "0.01",
              "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "steps", "--save_steps", "4"]
    result = _run(xlt_cli, *common, "--max_steps", "4")  # 3 steps per epoch: stops inside epoch 2
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = json.loads((out / "checkpoint-4" / "lslo_config.json").read_text())
    assert checkpoint["translation_prompt"]["language_names"]["qab"] == "Beta"  # evaluable as it is
    result = _run(xlt_cli, *common, "--resume_from_checkpoint", out / "checkpoint-4")
    assert result.returncode == 0, result.stderr[-2000:]
    want = load_file(str(causal_trained / "lslo_model.safetensors"))
    got = load_file(str(out / "lslo_model.safetensors"))
    assert want.keys() == got.keys()
    assert max(float((want[k] - got[k]).abs().max()) for k in want) == 0.0


@pytest.mark.slow
def test_causal_export_and_eval_mt(causal_trained, tiny_llama_dir, toy_world, xlt_cli, tmp_path):
    from xlt.lslo import load_lslo
    from xlt.models import load_model

    out = tmp_path / "qaa-qab"
    result = _run(xlt_cli, "lslo", "export", "--adapter", causal_trained, "--src", "qaa", "--tgt", "qab", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    exported = load_model(out)
    assert exported.config.xlt_translation_prompt["language_names"]["qab"] == "Beta"
    lslo = load_lslo(load_model(tiny_llama_dir), causal_trained)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
    with torch.no_grad():
        want = lslo(input_ids=ids, src_lang_ids=["qaa"], tgt_lang_ids=["qab"]).logits
        got = exported(input_ids=ids).logits
    assert (got - want).abs().max().item() < 1e-5

    scores = tmp_path / "eval"
    result = _run(xlt_cli, "eval", "mt", "--data", toy_world / "test.jsonl", "--system", f"lslo={causal_trained}",
                  "--system", f"exported={out}", "--system", f"base={tiny_llama_dir}", "--num-beams", "2",
                  "--max-new-tokens", "8", "--directions", "qaa-qab", "qab-qad", "--out", scores)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((scores / "mt_scores.json").read_text())
    assert set(doc["systems"]) == {"lslo", "exported", "base"}
    assert sorted(doc["systems"]["lslo"]["directions"]) == ["qaa-qab", "qab-qad"]
    hyps = [json.loads(line) for line in (scores / "hypotheses.lslo.jsonl").read_text().splitlines()]
    assert len(hyps) == 2
    for h in hyps:  # the continuation only: no prompt, one line
        assert h["src"] not in h["hyp"] and "Beta:" not in h["hyp"] and "\n" not in h["hyp"]


@pytest.mark.slow
def test_causal_bad_input_is_a_one_line_error(toy_world, tiny_llama_dir, xlt_cli, tmp_path):
    common = ["train", "lslo", "--model", tiny_llama_dir, "--train_file", toy_world / "train.jsonl",
              "--use_cpu", "--max_steps", "1"]
    _one_line_error(_run(xlt_cli, *common, "--output_dir", tmp_path / "a", "--encoder_directions", "src*2"),
                    "encoder_directions given", "decoder-only")
    _one_line_error(_run(xlt_cli, *common, "--output_dir", tmp_path / "b", "--prompt_template", "{tgt_lang}:"),
                    "no {src} placeholder")
    assert not any((tmp_path / d).exists() for d in "ab")
