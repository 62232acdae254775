"""The pinned set-up: the lock's contents, its reader, and the one-line failure of a pin that has
no distribution for this platform (tools/environment.py, used by the Makefile)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "environment.py"
sys.path.insert(0, str(TOOL.parent))

import environment  # noqa: E402


def _pyproject_requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["test"])


def test_the_lock_pins_every_dependency_and_the_test_extras_exactly():
    pins = environment.read_lock(ROOT / "constraints.txt")
    for requirement in _pyproject_requirements():
        name = environment.canonical(re.split(r"[<>=!~\[ ;]", requirement, 1)[0])
        assert name in pins, f"constraints.txt does not pin {name}"
        assert re.fullmatch(r"\d+(\.\d+)*([a-z]+\d*)?(\.post\d+)?", pins[name]), (name, pins[name])
    assert "lm-eval" in pins  # the harness parity test runs in CI
    assert "xlt" not in pins and "pip" not in pins


def test_pyproject_keeps_ranges_for_pip_install_xlt():
    for requirement in _pyproject_requirements():
        assert "==" not in requirement, requirement


def test_lock_reader_names_the_line_of_a_bad_pin(tmp_path):
    lock = tmp_path / "constraints.txt"
    lock.write_text("# comment\ntorch==2.13.0\npeft>=0.21\n", encoding="utf-8")
    with pytest.raises(environment.SetupError, match=r"constraints.txt:3: expected 'name==version'"):
        environment.read_lock(lock)
    lock.write_text("Torch==2.13.0  # why\nlm_eval==0.4.13\n", encoding="utf-8")
    assert environment.read_lock(lock) == {"torch": "2.13.0", "lm-eval": "0.4.13"}


@pytest.mark.parametrize("output,expected", [
    ("ERROR: Could not find a version that satisfies the requirement torch==9.9 (from versions: 2.13.0)\n"
     "ERROR: No matching distribution found for torch==9.9\n", "torch==9.9"),
    ("ERROR: No matching distribution found for tokenizers\n", "tokenizers==0.23.3"),
    ("ERROR: Exception: something else broke\n", None),
])
def test_pip_failures_are_recognised(output, expected):
    assert environment.pip_failure(output, {"tokenizers": "0.23.3"}) == expected


def test_a_pin_without_a_distribution_fails_install_in_one_line(tmp_path):
    """A lock whose torch has no wheel here: one line naming the package and the remedies.
    (pip runs offline, as a dry run, against an empty wheel folder: nothing is installed.)"""
    lock = tmp_path / "constraints.txt"
    lock.write_text("torch==99.0.0\n", encoding="utf-8")
    empty = tmp_path / "wheels"
    empty.mkdir()
    env = {"XLT_PIP_ARGS": f"--dry-run --no-index --find-links {empty}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(TOOL), "install", "--lock", str(lock)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "torch==99.0.0" in lines[0] and "TORCH_INDEX_URL" in lines[0] and "make lock" in lines[0]
    assert proc.stdout == ""


def test_versions_line_names_the_stack():
    proc = subprocess.run([sys.executable, str(TOOL), "versions"], capture_output=True, text=True, timeout=60)
    import transformers

    assert proc.returncode == 0
    assert proc.stdout.startswith("versions: python ")
    assert f"transformers {transformers.__version__}" in proc.stdout
    for name in environment.STACK:
        assert f"{name} " in proc.stdout
