"""The README's tour runs as written: every command of the block marked ``<!-- tour ... -->``
runs through the real ``xlt`` (one process per command, through the shell) in an empty
directory, in order, and must succeed and end with its summary line (what was done, where it
was written). Step counts are cut to ``$XLT_TOUR_STEPS`` (default 2)
by rewriting each ``--max_steps N``; nothing else is changed.

The commands of the other blocks (real models and data) are not run, but each must name an
existing ``xlt`` command.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC

README = Path(__file__).resolve().parents[1] / "README.md"
TOUR_MARK = "<!-- tour"


def _blocks(text: str) -> list[tuple[bool, str]]:
    """``(is_tour, body)`` of every fenced ``bash`` block; a tour block follows the mark."""
    out = []
    for match in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
        before = text[:match.start()].rstrip()
        comment_start = before.rfind("<!--")
        is_tour = (comment_start >= 0 and before.endswith("-->")
                   and before[comment_start:].startswith(TOUR_MARK))
        out.append((is_tour, match.group(1)))
    return out


def _commands(body: str) -> list[str]:
    """Command lines of a block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"[ \t]*\\\n\s*", " ", body)
    lines = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            lines.append(line.strip())
    return lines


def tour_commands(text: str) -> list[str]:
    tours = [body for is_tour, body in _blocks(text) if is_tour]
    assert tours, f"{README}: no ```bash block after a {TOUR_MARK} ... --> comment"
    return [cmd for body in tours for cmd in _commands(body)]


def with_steps(command: str, steps: str) -> str:
    return re.sub(r"--max_steps(\s+|=)\d+", rf"--max_steps\g<1>{steps}", command)


def test_tour_parsing_finds_the_marked_block_only():
    text = ("intro\n```bash\nxlt no\n```\n<!-- tour: runs -->\n```bash\n# a comment\n"
            "xlt synth --out w \\\n    --seed 1   # why\n\nxlt pretrain --max_steps 300 --x 1\n```\n")
    commands = tour_commands(text)
    assert commands == ["xlt synth --out w --seed 1   # why", "xlt pretrain --max_steps 300 --x 1"]
    assert with_steps(commands[1], "2") == "xlt pretrain --max_steps 2 --x 1"


def test_every_readme_command_names_an_xlt_command():
    """Commands not run by the tour test at least name a command that exists."""
    from xlt.cli import COMMANDS

    text = README.read_text(encoding="utf-8")
    checked = 0
    for _, body in _blocks(text):
        for command in _commands(body):
            words = shlex.split(command, comments=True)
            if "xlt" not in words[:6]:
                continue
            words = words[words.index("xlt") + 1:]
            node = COMMANDS
            while isinstance(node, dict):
                assert words and words[0] in node, f"README: unknown command in {command!r}"
                node, words = node[words[0]], words[1:]
            checked += 1
    assert checked >= 20


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path):
    commands = tour_commands(README.read_text(encoding="utf-8"))
    assert commands[0].startswith("xlt synth"), "the tour starts from nothing"
    steps = os.environ.get("XLT_TOUR_STEPS", "2")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "xlt"  # the `xlt` of the README: this checkout's package
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m xlt \"$@\"\n", encoding="utf-8")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for command in commands:
        assert command.startswith("xlt "), f"README tour: not an xlt command: {command!r}"
        run = with_steps(command, steps)
        proc = subprocess.run(["bash", "-c", run], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"README tour command failed: {run}\n{proc.stderr[-3000:]}"
        lines = proc.stdout.strip().splitlines()
        assert lines, f"README tour command printed nothing: {run}"
        check_summary_line(lines[-1], run, work)


def check_summary_line(line: str, command: str, cwd: Path) -> None:
    """A command's last line of output says what it did and where it wrote:
    ``xlt <command>: <what> -> <path>[, <path>]`` (each path exists), or ``... (no file written)``."""
    words = shlex.split(command)
    prog = " ".join(words[:3] if words[1] in ("train", "data", "merge", "eval", "analyze", "lslo") else words[:2])
    assert line.startswith(f"{prog}: "), f"{command}: last line is not its summary: {line!r}"
    if line.endswith("(no file written)"):
        return
    assert " -> " in line, f"{command}: the summary names no output: {line!r}"
    for path in line.rsplit(" -> ", 1)[1].split(", "):
        assert (cwd / path).exists(), f"{command}: the summary names {path}, which does not exist"


@pytest.mark.parametrize("argv", [
    "xlt synth --out w --corpus-lines 1200 --task-train 120 --task-dev 30 --task-test 60 --translation-train 60 "
    "--translation-dev 12 --translation-test 18 --parallel-train 50 --vocab-size 500",
    "xlt data reference-lm --input text.txt --lang sw --out ref.jsonl --prompt-units 4",
])
def test_commands_outside_the_tour_end_with_their_summary(argv, tmp_path):
    from conftest import run_xlt

    (tmp_path / "text.txt").write_text("one two three four five six seven eight nine ten\n" * 3, encoding="utf-8")
    proc = run_xlt(*shlex.split(argv)[1:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    check_summary_line(proc.stdout.strip().splitlines()[-1], argv, tmp_path)
