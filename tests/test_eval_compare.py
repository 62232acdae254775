"""``xlt eval compare``: the paired bootstrap against a normal approximation, the refusals, and
the command end to end on two suite runs of a tiny model, with and without a change."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xlt.errors import ConfigError, DataError


def _run(label, items, *, shots=0, seed=0, limit=None, scoring="lm-eval", prompts=None):
    from xlt.eval.compare import SuiteRun

    tasks = {task: {"scoring": scoring, "prompts": prompts or {lang: "P: {x}" for lang in per}}
             for task, per in items.items()}
    return SuiteRun(label, "m", {"shots": shots, "seed": seed, "limit": limit}, tasks, items)


def _values(acc, keys=None):
    return {"key": keys or [f"k{i}" for i in range(len(acc))], "acc": [float(a) for a in acc]}


def test_bootstrap_matches_the_normal_approximation_and_is_deterministic():
    from xlt.eval.compare import bootstrap_difference

    rng = np.random.default_rng(7)
    # two languages of different sizes; per item the second run is right more often
    base = [rng.random(3000) < 0.5, rng.random(1200) < 0.6]
    other = [np.where(rng.random(b.size) < 0.8, b, rng.random(b.size) < 0.7) for b in base]
    base = [b.astype(float) for b in base]
    other = [o.astype(float) for o in other]
    diffs = [o - b for b, o in zip(base, other)]
    want = np.mean([d.mean() for d in diffs])
    # one language: d ± z sd / sqrt(n); the mean of two: (1/L) sqrt(sum var_l / n_l)
    for strata in ([0], [0, 1]):
        d, low, high = bootstrap_difference([base[s] for s in strata], [other[s] for s in strata], n_boot=4000,
                                            rng=3)
        mean = np.mean([diffs[s].mean() for s in strata])
        se = math.sqrt(sum(diffs[s].var() / diffs[s].size for s in strata)) / len(strata)
        assert d == pytest.approx(mean, abs=1e-12)
        assert low == pytest.approx(mean - 1.959964 * se, abs=0.1 * se)
        assert high == pytest.approx(mean + 1.959964 * se, abs=0.1 * se)
    assert d == pytest.approx(want, abs=1e-12)
    # same seed, same bytes; another seed, another interval
    assert bootstrap_difference(base, other, n_boot=500, rng=11) == bootstrap_difference(base, other, n_boot=500,
                                                                                           rng=11)
    assert bootstrap_difference(base, other, n_boot=500, rng=11) != bootstrap_difference(base, other, n_boot=500,
                                                                                           rng=12)
    # identical runs: a zero-width interval at zero
    assert bootstrap_difference(base, base, n_boot=50) == (0.0, 0.0, 0.0)
    with pytest.raises(DataError, match="stratum 0 has 3 and 2 items"):
        bootstrap_difference([[1, 0, 1]], [[1, 0]])


def test_compare_runs_scores_differences_and_the_task_mean():
    from xlt.eval.compare import compare_runs, comparison_markdown

    a = _run("A", {"sib200": {"en": _values([1, 0, 0, 1]), "fr": _values([0, 0, 1, 1, 0, 0])}})
    b = _run("B", {"sib200": {"en": _values([1, 1, 1, 1]), "fr": _values([0, 0, 1, 1, 1, 1])}})
    out = compare_runs([a, b], n_boot=300, seed=1)
    en, fr, mean = out["tasks"]["sib200"]["languages"]["en"], out["tasks"]["sib200"]["languages"]["fr"], \
        out["tasks"]["sib200"]["mean"]
    assert en["scores"] == {"A": 0.5, "B": 1.0} and fr["scores"] == pytest.approx({"A": 2 / 6, "B": 4 / 6})
    assert en["differences"]["B"]["difference"] == pytest.approx(0.5)
    assert mean["scores"]["A"] == pytest.approx((0.5 + 2 / 6) / 2) and mean["n"] == 10
    assert mean["differences"]["B"]["difference"] == pytest.approx((0.5 + 2 / 6) / 2)
    # every item of B is right where A's is: no resample can give a negative difference
    for row in (en, fr, mean):
        d = row["differences"]["B"]
        assert 0 <= d["low"] <= d["difference"] <= d["high"] <= 1
    assert "A" not in en["differences"]
    # the baseline is a choice; the sign follows
    flipped = compare_runs([a, b], baseline=1, n_boot=300, seed=1)
    assert flipped["tasks"]["sib200"]["languages"]["en"]["differences"]["A"]["difference"] == pytest.approx(-0.5)
    table = comparison_markdown(out)
    assert "| sib200 | acc | en | 4 | 50.0 | 100.0 | +50.0 [" in table
    assert f"| sib200 | acc | **mean** | 10 | {100 * (0.5 + 2 / 6) / 2:.1f} | {100 * (1 + 4 / 6) / 2:.1f} |" in table
    assert compare_runs([a, b], n_boot=300, seed=1) == out  # deterministic by seed
    # languages listed in another order are the same languages; rows follow the baseline's order
    b_reordered = _run("B", {"sib200": dict(reversed(list(b.items["sib200"].items())))})
    again = compare_runs([a, b_reordered], n_boot=300, seed=1)
    assert again["tasks"]["sib200"] == out["tasks"]["sib200"]
    assert list(again["tasks"]["sib200"]["languages"]) == ["en", "fr"]
    # nothing with per-item values (a suite of bits per byte only): refused
    with pytest.raises(ConfigError, match="A: no task with per-item values to compare"):
        compare_runs([_run("A", {}), _run("B", {})])


@pytest.mark.parametrize("change,message", [
    (dict(shots=5), "B: shots 5 differs from the baseline A's 0"),
    (dict(seed=2), "B: seed 2 differs from the baseline A's 0"),
    (dict(limit=3), "B: limit 3 differs from the baseline A's None"),
    (dict(scoring="afp"), "B: sib200 scoring 'afp' differs from the baseline A's 'lm-eval'"),
    (dict(prompts={"en": "other {x}"}), "B: sib200 en prompt differs from the baseline A's"),
    (dict(items={"sib200": {"en": _values([1, 0, 1])}}), "B: sib200 en has 3 items, the baseline A 2"),
    (dict(items={"sib200": {"en": _values([1, 0], ["k0", "zz"])}}), "B: sib200 en item 1 differs"),
    (dict(items={"sib200": {"fr": _values([1, 0])}}), "B: sib200 languages fr differ from the baseline A's en"),
    (dict(items={"xnli": {"en": _values([1, 0])}}), "B: tasks xnli differ from the baseline A's sib200"),
    (dict(items={"sib200": {"en": {"key": ["k0", "k1"], "exact_match": [1.0, 0.0]}}}),
     "B: sib200 en has no per-item 'acc' (it has exact_match)"),
])
def test_compare_refuses_runs_that_differ(change, message):
    from xlt.eval.compare import compare_runs

    items = change.pop("items", {"sib200": {"en": _values([1, 0])}})
    a = _run("A", {"sib200": {"en": _values([1, 1])}})
    b = _run("B", items, **change)
    with pytest.raises(ConfigError) as error:
        compare_runs([a, b], n_boot=10)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_compare_command_end_to_end(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    """Two suite runs, the tiny model and the same model with one weight matrix scaled: the table's
    scores are the suites' own, the items pair up, and an old part is refused clearly."""
    import datasets
    import torch

    from test_eval_benchmarks import SIB_ROWS, write_jsonl
    from xlt.cli import main
    from xlt.models import load_model, load_tokenizer

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    topics = ["science/technology", "travel", "politics", "sports", "health", "entertainment", "geography"]
    rows = [dict(row, index_id=i, category=topics[i % 7], text=f"{row['text']} ({i})")
            for i, row in enumerate(SIB_ROWS * 4)]
    for lang in ("eng_Latn", "fra_Latn"):
        write_jsonl(tmp_path / "sib" / f"{lang}.jsonl", rows if lang == "eng_Latn" else rows[:5])
    changed = tmp_path / "changed"
    model = load_model(tiny_llama_dir, dtype="float32")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    model.save_pretrained(changed)
    load_tokenizer(tiny_llama_dir).save_pretrained(changed)
    runs = []
    for name, path in (("base", tiny_llama_dir), ("changed", changed)):
        runs.append(tmp_path / name)
        assert main(["eval", "suite", "--model", str(path), "--tasks", "sib200", "--languages", "eng_Latn",
                     "fra_Latn", "--data", f"sib200={tmp_path}/sib/{{lang}}.jsonl", "--out", str(runs[-1]),
                     "--device", "cpu"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    out = tmp_path / "cmp" / "compare.md"
    assert main(["eval", "compare", str(runs[0]), str(runs[1]), "--out", str(out), "--n-boot", "400",
                 "--metric", "acc_norm"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    results = [json.loads((run / "results.json").read_text())["results"]["sib200"] for run in runs]
    parts = [json.loads((run / "parts" / "sib200.eng_Latn.json").read_text())["items"] for run in runs]
    assert parts[0]["key"] == parts[1]["key"] and len(parts[0]["key"]) == len(rows)
    assert np.mean(parts[0]["acc"]) == pytest.approx(results[0]["eng_Latn"]["acc"])
    assert np.mean(parts[1]["acc_norm"]) == pytest.approx(results[1]["eng_Latn"]["acc_norm"])
    for lang in ("eng_Latn", "fra_Latn"):
        row = report["tasks"]["sib200"]["languages"][lang]
        assert row["scores"] == pytest.approx({str(runs[0]): results[0][lang]["acc_norm"],
                                               str(runs[1]): results[1][lang]["acc_norm"]})
        d = row["differences"][str(runs[1])]
        assert d["difference"] == pytest.approx(results[1][lang]["acc_norm"] - results[0][lang]["acc_norm"])
        assert d["low"] <= d["difference"] <= d["high"]
    assert row["n"] == 5 and report["tasks"]["sib200"]["mean"]["n"] == len(rows) + 5
    assert parts[0]["acc_norm"] != parts[1]["acc_norm"]  # the change changed some answers
    assert out.read_text().strip() in printed
    # --baseline: the named run first, whatever the order
    assert main(["eval", "compare", str(runs[1]), str(runs[0]), "--baseline", str(runs[0]), "--n-boot", "400",
                 "--metric", "acc_norm"]) == 0
    again = capsys.readouterr().out

    def cells(text, lang):
        start = f"| sib200 | acc_norm | {lang} |"
        return next(line for line in text.splitlines() if line.startswith(start)).split(" | ")

    assert f"| {runs[1]} − {runs[0]} [95 % CI] |" in again
    for lang in ("eng_Latn", "fra_Latn", "**mean**"):
        assert cells(again, lang)[-1] == cells(printed, lang)[-1]  # the same difference and interval
        assert cells(again, lang)[4:6] == cells(printed, lang)[4:6][::-1]  # scores in the order given
    # a run with another --limit is refused, naming it
    limited = tmp_path / "limited"
    assert main(["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "sib200", "--languages", "eng_Latn",
                 "fra_Latn", "--data", f"sib200={tmp_path}/sib/{{lang}}.jsonl", "--limit", "3", "--out", str(limited),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["eval", "compare", str(runs[0]), str(limited)]) == 2
    assert f"{limited}: limit 3 differs from the baseline {runs[0]}'s None" in capsys.readouterr().err
    # a part written before the suite kept per-item values: refused, naming the file
    part = runs[1] / "parts" / "sib200.fra_Latn.json"
    old = json.loads(part.read_text())
    del old["items"]
    part.write_text(json.dumps(old))
    assert main(["eval", "compare", str(runs[0]), str(runs[1])]) == 2
    err = capsys.readouterr().err
    assert "sib200.fra_Latn.json: no per-item values (written by an older xlt eval suite)" in err
