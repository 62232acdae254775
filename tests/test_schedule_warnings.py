"""Before training starts, a schedule that cannot reach its target in the run says so, once."""

from __future__ import annotations

import json

import pytest


def test_warmup_warning_compares_warmup_steps_with_the_run():
    from transformers import TrainingArguments

    from xlt.training import warmup_warning

    longer = warmup_warning(TrainingArguments(output_dir="x", warmup_steps=50, learning_rate=3e-3), 10)
    assert "warm-up (50 steps) is longer than the run (10 optimizer steps)" in longer and "3e-03" not in longer
    assert "peak 0.003" in longer
    assert warmup_warning(TrainingArguments(output_dir="x", warmup_steps=10), 10) is None
    assert warmup_warning(TrainingArguments(output_dir="x", warmup_steps=0.5), 3) is None  # a ratio


def test_warn_once_prints_one_line_once(capsys):
    from xlt.training import warn_once

    warn_once("a schedule test message")
    warn_once("a schedule test message")
    assert capsys.readouterr().err == "xlt: warning: a schedule test message\n"


@pytest.mark.slow
def test_sft_warns_once_when_the_warmup_outlasts_the_run(xlt_cli, tiny_llama_dir, tmp_path):
    from _align_helpers import tiny_texts

    tasks, _ = tiny_texts(4)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"lang": "qaa", "prompt": t.prompt, "completion": t.completion}) + "\n"
                             for t in tasks))
    result = xlt_cli("train", "sft", "--model", tiny_llama_dir, "--train_file", train, "--output_dir",
                     tmp_path / "out", "--max_steps", "2", "--warmup_steps", "5", "--per_device_train_batch_size",
                     "2", "--disable_tqdm", "true", "--use_cpu", "--lora_target_modules", "q_proj")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("xlt: warning")]
    assert lines == ["xlt: warning: the warm-up (5 steps) is longer than the run (2 optimizer steps): "
                     "the learning rate never reaches its peak 0.0005"], result.stderr[-2000:]
