"""Atomic outputs: a writer killed mid-write leaves the old state or the new one, never a mix;
the temporaries it leaves are cleaned by the next write; nothing is replaced without
``--overwrite``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _reliability_helpers import build_workspace, listing, reaped, sigkill, wait_for_file

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama_dir, tiny_model_dir):
    return build_workspace(tmp_path_factory.mktemp("atomic-ws"), Path(tiny_llama_dir),
                           m2m_dir=Path(tiny_model_dir("m2m100")))


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def _kill_mid_write(mode: str, argv: list[str], tmp_path: Path) -> None:
    """Start the slowed-down writer, wait until it is inside its write, SIGKILL it."""
    marker = tmp_path / f"{mode}.writing"
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{HERE}")
    proc = subprocess.Popen([sys.executable, str(HERE / "_reliability_slow_writer.py"), mode, str(marker),
                             *map(str, argv)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with reaped(proc):
        wait_for_file(proc, marker, "its write")
        sigkill(proc)


@pytest.mark.slow
def test_killed_merge_leaves_the_old_state_or_nothing(workspace, tmp_path, capsys):
    from xlt.cli import main

    out = tmp_path / "outputs" / "merged"
    out.parent.mkdir()
    merge = ["merge", "linear", "--adapters", workspace["lora_a"], workspace["lora_b"], "--out", out]

    # 1. no output yet: killed mid-write -> still no output, only a hidden temporary
    _kill_mid_write("merge", merge, tmp_path)
    assert not out.exists()
    stray = _siblings(out)
    assert len(stray) == 1 and stray[0].startswith(".merged.tmp-"), stray
    assert (out.parent / stray[0] / "adapter_model.safetensors").is_file()  # it was mid-write

    # the rerun is not tripped by the stray temporary, and removes it
    assert main([str(a) for a in merge]) == 0
    assert _siblings(out) == []
    first = _digest(out)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(first)

    # 2. an output exists: a killed --overwrite run leaves it byte for byte
    reweighted = merge + ["--weights", "0.9", "0.1", "--overwrite"]
    _kill_mid_write("merge", reweighted, tmp_path)
    assert _digest(out) == first
    assert main([str(a) for a in reweighted]) == 0
    second = _digest(out)
    assert second.keys() == first.keys() and second != first
    assert _siblings(out) == []
    capsys.readouterr()


@pytest.mark.slow
def test_killed_synth_leaves_nothing_and_the_rerun_is_complete(tmp_path, capsys):
    from xlt.cli import main

    out = tmp_path / "worlds" / "world"
    out.parent.mkdir()
    synth = ["synth", "--out", out, "--languages", "2", "--corpus-lines", "200", "--task-train", "20",
             "--task-dev", "5", "--task-test", "5", "--translation-train", "10", "--translation-dev", "5",
             "--translation-test", "5", "--parallel-train", "10", "--vocab-size", "300"]
    _kill_mid_write("synth", synth, tmp_path)
    assert not out.exists()
    stray = _siblings(out)
    assert len(stray) == 1 and stray[0].startswith(".world.tmp-"), stray
    assert (out.parent / stray[0] / "corpus").is_dir()  # it was mid-write

    assert main([str(a) for a in synth]) == 0
    assert (out / "world.json").is_file() and (out / "tokenizer").is_dir()
    assert _siblings(out) == []
    capsys.readouterr()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_kill_between_the_two_renames_restores_the_old_directory(tmp_path):
    """atomic_dir moves the old directory aside, then the new one in: a kill in between leaves
    NAME missing and ``.NAME.old-PID`` holding the old state; the next write puts it back."""
    from xlt.errors import OutputExistsError
    from xlt.io import atomic_dir

    out = tmp_path / "result"
    pid = _dead_pid()
    old = tmp_path / f".result.old-{pid}"
    old.mkdir()
    (old / "weights").write_text("old", encoding="utf-8")
    (tmp_path / f".result.tmp-{pid}-abc123").mkdir()
    with pytest.raises(OutputExistsError):
        with atomic_dir(out):
            pass
    assert (out / "weights").read_text() == "old"
    assert listing(tmp_path) == ["result", "result/weights"]


def test_temporaries_of_a_live_writer_are_left_alone(tmp_path):
    from xlt.io import clean_stale

    out = tmp_path / "result"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".result.tmp-{proc.pid}-xyz"
        live.mkdir()
        dead = tmp_path / f".result.tmp-{_dead_pid()}-xyz"
        dead.mkdir()
        other = tmp_path / f".other.tmp-{_dead_pid()}-xyz"
        other.mkdir()
        assert clean_stale(out) == [dead]
        assert live.is_dir() and other.is_dir()
    finally:
        proc.kill()
        proc.wait()


EXISTING = [
    ("merge linear", "merge linear --adapters {lora_a} {lora_b} --out {out}"),
    ("merge adamergex", "merge adamergex --task {lora_a} --ref-target {lora_b} --ref-source {lora_a} "
     "--t 1 --out {out}"),
    ("data reference-lm", "data reference-lm --input {corpus} --lang qaa --out {out}"),
    ("synth", "synth --out {out} --languages 2"),
    ("eval mt", "eval mt --data {pairs} --model {model} --out {out}"),
    ("analyze similarity", "analyze similarity --model {model} --pairs {pairs} --output_dir {out}"),
    ("lslo export", "lslo export --adapter {lora_a} --src qaa --tgt qab --out {out}"),
    ("train sft", "train sft --model {model} --train_file {task} --output_dir {out} --max_steps 1"),
    ("eval ppl", "eval ppl --model {model} --corpus {corpus} --output {out}"),
    ("train lslo", "train lslo --model {m2m} --train_file {nllb_pairs} --output_dir {out} --max_steps 1"),
    ("pretrain", "pretrain --corpus {corpus} --tokenizer {model} --output_dir {out} --max_steps 1 "
     "--preset tiny --seq_len 16"),
]


@pytest.mark.parametrize("name,template", EXISTING, ids=[e[0] for e in EXISTING])
def test_an_existing_output_is_never_replaced_without_overwrite(name, template, workspace, tmp_path, capsys):
    from xlt.cli import main

    out = tmp_path / "existing"
    if name == "eval ppl":
        out.write_text("old", encoding="utf-8")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("old", encoding="utf-8")
    before = listing(tmp_path)
    status = main([part.format(out=out, **workspace) for part in template.split()])
    err = capsys.readouterr().err
    assert status == 2 and "--overwrite" in err, err
    assert listing(tmp_path) == before
    assert (out.read_text() if out.is_file() else (out / "keep.txt").read_text()) == "old"
