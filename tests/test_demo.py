"""`xlt demo --quick` end to end (real CLI, one run per session) and its resumability."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from _versions_helpers import assert_records_versions

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _xlt(*args, timeout=900):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "xlt", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = _xlt("demo", "--quick", "--seeds", "2", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def _numbers(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _numbers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _numbers(value)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_report_and_plots(quick_demo):
    out, _ = quick_demo
    report = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## The world", "## Task transfer", "## AdaMergeX", "## LSLo", "## Language imbalance",
                    "## What the numbers show", "## Every setting"):
        assert heading in report, heading
    assert "transfer gap" in report
    assert "| constant answer (majority class) |" in report and "population" not in report
    for png in ("transfer_accuracy.png", "similarity_by_layer.png", "mt_heatmap.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"({png})" in report


def test_results_keys_and_ranges(quick_demo):
    out, _ = quick_demo
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert_records_versions(results)
    world = json.loads((out / "world" / "world.json").read_text(encoding="utf-8"))
    assert results["source_language"] == world["source_language"] == "qaa"
    langs = [l["code"] for l in world["languages"]]
    for method in ("sft", "mid-align", "afp"):
        for lang in langs:
            row = results["transfer"][method][lang]
            assert 0.0 <= row["accuracy"] <= 1.0
            per_seed = row["accuracy_per_seed"]
            assert sorted(per_seed) == ["0", "1"]
            # the mean is the mean of the per-seed values, the spread their sample standard deviation
            assert row["accuracy"] == pytest.approx(sum(per_seed.values()) / 2)
            assert row["accuracy_std"] == pytest.approx(statistics.stdev(per_seed.values()))
            assert all(0.0 <= v <= 1.0 for v in per_seed.values())
            assert 0.0 <= row["exact_match"] <= 1.0
    for value in _numbers(results["transfer"]):
        assert 0.0 <= value <= 1.0
    for row in results["adamergex"]["accuracy"].values():
        for cell in row.values():
            assert 0.0 <= cell["mean"] <= 1.0
    for cell in results["lslo"]["chrf"]["lslo"].values():
        assert 0.0 <= cell["mean"] <= 100.0
    for tag in ("50-50", "90-10"):
        assert all(-1.0 - 1e-6 <= v <= 1.0 + 1e-6 for v in results["cloned"][tag]["similarity_by_layer"])
        assert results["cloned"][tag]["perplexity"]["L1"] >= 1.0
    assert results["missing"] == {}
    # the score of a constant answer: the majority class's share of the first test_limit items scored
    limit = results["settings"]["transfer"]["test_limit"]
    labels: dict = {}
    for line in (out / "world" / "tasks" / "polarity" / "test.choice.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if len(labels.setdefault(item["lang"], [])) < limit:
            labels[item["lang"]].append(item["label"])
    for lang in langs:
        rate = max(labels[lang].count(c) for c in set(labels[lang])) / len(labels[lang])
        assert results["majority_rate"]["test"][lang]["rate"] == pytest.approx(rate)
        assert results["majority_rate"]["test"][lang]["items"] == limit


def test_rerun_skips_finished_steps(quick_demo):
    out, _ = quick_demo
    before = {p.name: p.stat().st_mtime_ns for p in (out / "steps").glob("*.json")}
    assert "transfer-mid-align-s1.json" in before and "base.json" in before
    result = _xlt("demo", "--quick", "--seeds", "2", "--out", out, "--no-progress", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "steps").glob("*.json")}
    assert after == before  # nothing recomputed
    assert "done in" not in result.stderr


@pytest.mark.slow
def test_parallel_steps_give_the_sequential_results(quick_demo, tmp_path):
    """--jobs 2 runs steps in worker processes; every seed-0 step must match the sequential run."""
    out, _ = quick_demo
    parallel = tmp_path / "parallel"
    result = _xlt("demo", "--quick", "--seeds", "1", "--jobs", "2", "--out", parallel, "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in (parallel / "steps").glob("*.json"))
    assert "base.json" in names and "transfer-mid-align-s0.json" in names and "lslo-s0.json" in names

    def without_timings(obj):
        if isinstance(obj, dict):
            return {k: without_timings(v) for k, v in obj.items() if "second" not in k}
        if isinstance(obj, list):
            return [without_timings(v) for v in obj]
        return obj

    for name in names:
        a = json.loads((parallel / "steps" / name).read_text(encoding="utf-8"))
        b = json.loads((out / "steps" / name).read_text(encoding="utf-8"))
        assert without_timings(a) == without_timings(b), name


def test_other_settings_in_same_dir_are_refused(quick_demo):
    out, _ = quick_demo
    result = _xlt("demo", "--quick", "--seeds", "1", "--out", out, timeout=120)
    assert result.returncode == 2
    assert "other settings" in result.stderr and "Traceback" not in result.stderr
