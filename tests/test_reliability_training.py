"""Interrupted and diverging training through the real ``xlt train`` command.

* SIGKILL after a checkpoint, then ``--resume_from_checkpoint true``: the final adapter and the
  logged losses match an uninterrupted run with the same seed (tolerance below).
* SIGTERM: the step under way is finished, a checkpoint saved, no final output written, exit
  status 143 (128 + SIGTERM) and one line saying where to resume from.
* A learning rate of 1e30 makes the loss non-finite: the command stops with one line naming the
  optimizer step, and the checkpoints written before it are kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _reliability_helpers import TASK, _jsonl, reaped, sigkill, wait_for_file

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
#: resumed vs uninterrupted: same data order and RNG state, so only float reassociation differs
ATOL = 1e-5

STEPS, SAVE = 6, 2


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    return _jsonl(tmp_path_factory.mktemp("train-data") / "task.jsonl", TASK)


def _sft(model, train_file, out, *extra) -> list[str]:
    return ["train", "sft", "--model", str(model), "--train_file", str(train_file), "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--max_steps", str(STEPS), "--save_steps", str(SAVE),
            "--logging_steps", "1", "--learning_rate", "1e-3", "--seed", "7", "--report_to", "none",
            "--disable_tqdm", "true", *extra]


def _start_slow(argv: list[str], tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{HERE}")
    return subprocess.Popen([sys.executable, str(HERE / "_reliability_slow_writer.py"), "train",
                             str(tmp_path / "train.started"), *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, step: int) -> None:
    wait_for_file(proc, out / f"checkpoint-{step}" / "trainer_state.json", f"checkpoint-{step}")


def _losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "log_history.json").read_text(encoding="utf-8"))
    return {row["step"]: row["loss"] for row in history if "loss" in row}


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_llama_dir, task_file, tmp_path, capsys):
    from xlt.cli import main

    reference = tmp_path / "reference"
    assert main(_sft(tiny_llama_dir, task_file, reference)) == 0

    out = tmp_path / "killed"
    proc = _start_slow(_sft(tiny_llama_dir, task_file, out), tmp_path)
    with reaped(proc):
        _wait_for_checkpoint(proc, out, SAVE)
        sigkill(proc)
    assert not (out / "adapter_model.safetensors").exists()  # no final output from a killed run
    assert not (out / "train_config.json").exists()

    # a rerun without --resume_from_checkpoint does not silently start over
    assert main(_sft(tiny_llama_dir, task_file, out)) == 2
    assert "already exists" in capsys.readouterr().err

    assert main(_sft(tiny_llama_dir, task_file, out, "--resume_from_checkpoint", "true")) == 0
    expected, got = _adapter(reference), _adapter(out)
    assert expected.keys() == got.keys()
    for key in expected:
        assert (expected[key] - got[key]).abs().max().item() <= ATOL, key
    ref_losses, losses = _losses(reference), _losses(out)
    assert sorted(losses) == sorted(ref_losses) == list(range(1, STEPS + 1))
    for step in ref_losses:
        assert abs(ref_losses[step] - losses[step]) <= ATOL, (step, ref_losses[step], losses[step])
    # the adapter trained at all (the comparison is not between two untouched initialisations)
    assert ref_losses[STEPS] != ref_losses[1]
    capsys.readouterr()


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_143(tiny_llama_dir, task_file, tmp_path):
    from xlt.training import last_checkpoint

    out = tmp_path / "terminated"
    proc = _start_slow(_sft(tiny_llama_dir, task_file, out, "--save_steps", "100"), tmp_path)
    with reaped(proc):
        # a training step is under way (the handler is installed when training begins)
        wait_for_file(proc, tmp_path / "train.started", "the start of training")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    saved = last_checkpoint(out)
    assert saved is not None and 1 <= int(saved.name.split("-")[1]) < STEPS
    assert not (out / "train_config.json").exists()  # not a finished run
    lines = [line for line in stderr.splitlines() if "stopped by" in line]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and saved.name in lines[0] \
        and "--resume_from_checkpoint" in lines[0], lines
    assert "Traceback" not in stderr


def test_non_finite_loss_stops_naming_the_step_and_keeps_checkpoints(tiny_llama_dir, task_file, tmp_path,
                                                                     capsys):
    from xlt.cli import main

    out = tmp_path / "diverged"
    # warm-up: steps 1-2 run at a tiny rate (checkpoint-2 is good), then 1e30 blows the weights up
    status = main(_sft(tiny_llama_dir, task_file, out, "--learning_rate", "1e30", "--warmup_steps", "3",
                       "--lr_scheduler_type", "constant_with_warmup", "--max_grad_norm", "0"))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("xlt: error:")]
    assert status == 2, err[-2000:]
    assert len(lines) == 1 and "optimizer step" in lines[0], lines
    assert "nan" in lines[0].lower() or "inf" in lines[0].lower(), lines
    assert "Traceback" not in err
    assert not (out / "adapter_model.safetensors").exists() and not (out / "train_config.json").exists()
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    step = int(lines[0].split("optimizer step ")[1].split(";")[0].split()[0])
    assert all(int(c.split("-")[1]) < step for c in checkpoints)
    if checkpoints:
        assert checkpoints[-1] in lines[0]
