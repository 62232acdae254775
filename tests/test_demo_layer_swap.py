"""``xlt demo --full``'s layer-swapping experiment: its verdicts from step results, its steps
and their order, its quick settings, and one tiny run of the experiment."""

from __future__ import annotations

from pathlib import Path

import pytest


def _constructed_results(fs, *, task_source=1.0, swapped_source=1.0, base_nll=2.0, gains=(0.2, 0.3)):
    """Layer-swap step results as the full demo writes them: 10 items per language; the task
    expert is wrong on every target item, the language expert right on the first 1 of 10, the
    swapped model right on the first ``gain`` share."""
    from xlt.demo.full import units

    results = {f"full-world-w{w}": {"source_language": "qaa"} for w in fs["world_seeds"]}
    gold = [0, 1] * 5

    def row(n):
        correct = [1] * n + [0] * (10 - n)
        return {"correct": correct, "gold": gold, "accuracy": n / 10, "majority_rate": 0.5}

    for k, u in enumerate(units(fs)):
        results[f"full-base-w{u['world']}-b{u['base']}"] = {"unigram": {"base_nll": base_nll, "unigram_nll": 4.0}}
        targets = ("qab", "qac", "qad")
        test = {"task expert": {"qaa": row(round(10 * task_source)), **{lang: row(0) for lang in targets}},
                "language expert": {lang: row(1) for lang in targets},
                "swapped": {lang: row(round(10 * gains[k])) for lang in targets}}
        kept = {lang: row(round(10 * swapped_source)) for lang in targets}
        results[f"full-layer-swap-{u['name']}"] = {"unit": u, "test": test, "swapped_source": kept}
    return results


def test_layer_swap_reproduction_from_constructed_runs():
    from xlt.demo.full import reproductions
    from xlt.demo.full_layer_swap import layer_swap_reproduction, layer_swap_table
    from xlt.demo.settings import full_settings

    fs = full_settings(quick=True)  # 1 world, 2 runs
    got = layer_swap_reproduction(fs, _constructed_results(fs))
    assert set(got) == {"layer swap", "layer swap vs language expert"}
    main = got["layer swap"]
    assert main.method == "layer swap" and main.baseline == "task expert" and main.prediction == "increase"
    # the mean over runs of the mean paired difference over the 30 target items
    assert main.effect == pytest.approx((0.2 + 0.3) / 2)
    assert main.seeds == 2 and main.verdict == "reproduced" and main.precondition_met
    assert main.settings_chosen == fs["chosen"]["layer_swap"]
    versus = got["layer swap vs language expert"]
    assert versus.baseline == "language expert" and versus.effect == pytest.approx((0.1 + 0.2) / 2)
    # the full demo's verdicts include both
    assert {"layer swap", "layer swap vs language expert"} <= set(
        reproductions({"full": fs}, _constructed_results(fs)))

    table = layer_swap_table(fs, _constructed_results(fs))
    assert set(table) == {"task expert", "language expert", "swapped"}
    assert sorted(table["swapped"]) == ["qab", "qac", "qad"]  # target languages only
    assert table["swapped"]["qac"]["mean"] == pytest.approx(0.25)
    assert table["swapped"]["qac"]["std"] == pytest.approx(0.0707107, rel=1e-5)  # sample sd of 0.2, 0.3
    assert table["task expert"]["qab"]["per_run"] == {"w1-b0-s0": 0.0, "w1-b1-s1": 0.0}
    # answers (gold where right, the other label where wrong), gold 0,1,0,1...: right on 2 -> five 0s
    # and five 1s; right on 3 -> six 0s; wrong on all -> five and five
    assert table["swapped"]["qac"]["one_answer"] == pytest.approx((0.5 + 0.6) / 2)
    assert table["task expert"]["qac"]["one_answer"] == pytest.approx(0.5)

    from xlt.demo.report import _layer_swap_section

    md, doc = [], {}
    _layer_swap_section(md.append, doc, {"full": fs}, _constructed_results(fs))
    assert "| swapped | 25.0 ± 7.1 (55 %) | 25.0 ± 7.1 (55 %) | 25.0 ± 7.1 (55 %) |" in md
    assert "| task expert | 0.0 ± 0.0 (50 %) | 0.0 ± 0.0 (50 %) | 0.0 ± 0.0 (50 %) |" in md
    assert doc["full_layer_swap"] == table
    md = []
    _layer_swap_section(md.append, {}, {"full": {k: v for k, v in fs.items() if k != "layer_swap"}},
                        _constructed_results(fs))
    assert md == []  # no experiment, no section

    # a swap that does not transfer: the swapped model scores as the task expert, never reproduced
    flat = layer_swap_reproduction(fs, _constructed_results(fs, gains=(0.0, 0.0)))["layer swap"]
    assert flat.effect == 0 and flat.verdict != "reproduced"
    # a task expert that did not learn its source task (60 % against 50 % + 10 points): invalid
    invalid = layer_swap_reproduction(fs, _constructed_results(fs, task_source=0.6))["layer swap"]
    assert invalid.verdict == "invalid" and [p.met for p in invalid.preconditions] == [False, True, True]
    # so does a swap that lost the task in the source (one answer to every item: 50 %), though
    # it "gains" on the targets
    lost = layer_swap_reproduction(fs, _constructed_results(fs, swapped_source=0.5))["layer swap"]
    assert lost.verdict == "invalid" and [p.met for p in lost.preconditions] == [True, False, True]
    assert lost.effect > 0
    assert [p.name for p in lost.preconditions] == ["the task expert learned the source task",
                                                    "the swapped model kept the source task",
                                                    "base model beats a unigram model"]
    # and a base model worse than the unigram model
    worse = layer_swap_reproduction(fs, _constructed_results(fs, base_nll=5.0))["layer swap"]
    assert worse.verdict == "invalid" and [p.met for p in worse.preconditions] == [True, True, False]
    # a missing step: nothing yet
    partial = _constructed_results(fs)
    del partial["full-layer-swap-w1-b1-s1"]
    assert layer_swap_reproduction(fs, partial) is None


class _Step:
    def __init__(self, name, title, run, needs=()):
        self.name, self.title, self.run, self.needs = name, title, run, needs


def test_layer_swap_steps_follow_their_task_expert(tmp_path):
    from xlt.demo.full import full_steps, units
    from xlt.demo.settings import full_settings

    fs = full_settings()
    steps = {s.name: s for s in full_steps(tmp_path, fs, device="cpu", step_class=_Step)}
    for u in units(fs):  # 6 runs: worlds 1 and 2, three runs each
        step = steps[f"full-layer-swap-{u['name']}"]
        assert set(step.needs) == {f"full-base-w{u['world']}-b{u['base']}", f"full-mid-align-sft-{u['name']}"}
    assert len([n for n in steps if n.startswith("full-layer-swap-")]) == 6
    del fs["layer_swap"]
    assert not [n for n in full_steps(tmp_path, fs, device="cpu", step_class=_Step)
                if n.name.startswith("full-layer-swap-")]


@pytest.mark.parametrize("with_layer_swap", [True, False])
def test_the_sft_arm_keeps_its_model_for_the_layer_swap_step(tmp_path, monkeypatch, with_layer_swap):
    from xlt.demo import full
    from xlt.demo.full_layer_swap import task_expert_dir
    from xlt.demo.settings import full_settings

    def fake_train(arm, base, world, out, s, *, seed, device):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return {}

    monkeypatch.setattr(full, "train_arm", fake_train)
    monkeypatch.setattr(full, "evaluate_items", lambda *a, **k: {})
    fs = full_settings(quick=True)
    if not with_layer_swap:
        del fs["layer_swap"]
    u = full.units(fs)[0]
    steps = {s.name: s for s in full.full_steps(tmp_path, fs, device="cpu", step_class=_Step)}
    steps[f"full-mid-align-sft-{u['name']}"].run()
    steps[f"full-mid-align-parallel-lm-{u['name']}"].run()
    assert (task_expert_dir(tmp_path / "full", u) / "config.json").is_file() == with_layer_swap
    assert not (tmp_path / "full" / "models" / f"parallel-lm-{u['name']}").exists()


@pytest.mark.parametrize("kept", [True, False])
def test_the_layer_swap_step_uses_the_kept_sft_model_or_trains_the_arm_again(tmp_path, monkeypatch, kept):
    """A resumed demo whose sft step ran without this experiment has no model left: the step
    trains the sft arm again, with the mid-align settings and the run's seed; either way the task
    expert's directory is removed afterwards."""
    from xlt.demo import full, full_layer_swap
    from xlt.demo.settings import full_settings

    fs = full_settings(quick=True)
    u = full.units(fs)[1]
    task = full_layer_swap.task_expert_dir(tmp_path / "full", u)
    calls = []

    def fake_train(arm, base, world, out, s, *, seed, device):
        calls.append((arm, s, seed))
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    def fake_run(task_dir, base, world, work, s, *, seed, device):
        assert (task_dir / "config.json").is_file() and task_dir == task and s == fs["layer_swap"]
        return {"test": {}}

    if kept:
        fake_train("sft", None, None, task, fs["mid_align"], seed=u["seed"], device="cpu")
        calls.clear()
    monkeypatch.setattr(full, "train_arm", fake_train)
    monkeypatch.setattr(full_layer_swap, "layer_swap_run", fake_run)
    steps = {s.name: s for s in full.full_steps(tmp_path, fs, device="cpu", step_class=_Step)}
    got = steps[f"full-layer-swap-{u['name']}"].run()
    assert got["task_expert_retrained"] is (not kept)
    assert calls == ([] if kept else [("sft", fs["mid_align"], u["seed"])])
    assert not task.exists()


def test_quick_and_full_layer_swap_settings():
    from xlt.demo.settings import default_settings, full_settings

    full, quick = full_settings()["layer_swap"], full_settings(quick=True)["layer_swap"]
    layers = default_settings()["base"]["model"]["layers"]
    # the top block from the language expert (the bottom one lost the task on world 0)
    assert (full["bottom"], full["top"], full["outer"]) == (0, 1, "task") and layers == 4
    assert quick["bottom"] + quick["top"] < layers
    assert full["test_limit"] is None  # every test item
    assert (full["lines"], full["steps"], full["lr"]) == (1500, 60, 1e-3)
    assert quick["steps"] < full["steps"] and quick["lines"] < full["lines"] and quick["test_limit"] == 50
    assert quick["precondition_margin"] == full["precondition_margin"] == 0.10
    chosen = full_settings()["chosen"]["layer_swap"]
    assert "world 0" in chosen


WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "red", "blue"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, tiny_llama_dir):
    """A hand-made world of three languages (6 polarity test items and 20 corpus lines each) and a
    task expert: the tiny Llama with seeded noise on every weight (no training: the step's wiring
    is under test, not learning)."""
    import json
    import random

    root = tmp_path_factory.mktemp("layer-swap")
    world = root / "world"
    (world / "tasks" / "polarity").mkdir(parents=True)
    (world / "corpus").mkdir()
    rng = random.Random(0)
    langs = ("qaa", "qab", "qac")
    (world / "world.json").write_text(json.dumps({"source_language": "qaa",
                                                  "languages": [{"code": c} for c in langs]}))
    items = [{"lang": lang, "context": " ".join(rng.choices(WORDS, k=6)) + " ?", "choices": [" yes", " no"],
              "label": n % 2} for lang in langs for n in range(6)]
    (world / "tasks" / "polarity" / "test.choice.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    for lang in langs:
        (world / "corpus" / f"{lang}.txt").write_text(
            "".join(" ".join(rng.choices(WORDS, k=5)) + "\n" for _ in range(20)))
    task = root / "task"
    _noisy_copy(tiny_llama_dir, task, seed=1)
    return world, tiny_llama_dir, task


def _noisy_copy(base: Path, out: Path, *, seed: int) -> None:
    import torch

    from xlt.models import load_model, load_tokenizer

    model = load_model(base, kind="causal", dtype="float32", device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.5)
    model.save_pretrained(out)
    load_tokenizer(base).save_pretrained(out)


def _run(world, base, task, tmp_path, monkeypatch, **swap):
    from xlt.demo import full_layer_swap

    def fake_expert(base_dir, world_dir, lang, out, s, *, seed, device):
        _noisy_copy(base_dir, out, seed=seed)
        return {"lines": s["lines"], "train_loss": 0.0, "steps": s["steps"]}

    monkeypatch.setattr(full_layer_swap, "train_language_expert", fake_expert)
    s = {"lines": 8, "steps": 2, "lr": 1e-3, "batch_size": 4, "warmup": 0, "test_limit": 5, **swap}
    return full_layer_swap.layer_swap_run(task, base, world, tmp_path / "work", s, seed=0, device="cpu")


def test_layer_swap_run_scores_each_target_with_its_own_expert(tiny_world, tmp_path, monkeypatch):
    """Every block and outer tensor from the language expert: the swapped model answers every
    item as that target's language expert (not as the task expert). Work is removed."""
    import json

    world, base, task = tiny_world
    layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    got = _run(world, base, task, tmp_path, monkeypatch, bottom=layers, top=0, outer="language")
    test = got["test"]
    assert sorted(test["task expert"]) == ["qaa", "qab", "qac"]
    assert sorted(test["language expert"]) == sorted(test["swapped"]) == sorted(got["swapped_source"]) == ["qab", "qac"]
    assert got["sources"]["blocks"] == ["language"] * layers
    for lang in ("qab", "qac"):
        assert len(test["swapped"][lang]["correct"]) == 5  # test_limit
        assert test["swapped"][lang]["correct"] == test["language expert"][lang]["correct"]
    # the experts answer differently somewhere (the check above could fail)
    assert any(test["language expert"][lang]["correct"] != test["task expert"][lang]["correct"]
               for lang in ("qab", "qac"))
    assert not (tmp_path / "work").exists()


def test_language_expert_is_full_fine_tuning_on_every_token_of_its_lines(tiny_world, tmp_path, monkeypatch):
    from xlt.demo import full_layer_swap, transfer

    world, base, _ = tiny_world
    seen = {}

    def fake_run_align(method, base_dir, texts, pairs, out, s, *, seed, device, progress):
        seen.update(method=method, texts=texts, pairs=pairs, s=s, seed=seed)
        Path(out).mkdir(parents=True)
        return {"train_loss": 1.5, "steps": s["steps"]}

    monkeypatch.setattr(transfer, "_run_align", fake_run_align)
    s = {"lines": 7, "steps": 3, "lr": 2e-3, "batch_size": 4, "warmup": 1}
    got = full_layer_swap.train_language_expert(base, world, "qab", tmp_path / "qab", s, seed=9, device="cpu")
    lines = (world / "corpus" / "qab.txt").read_text().splitlines()[:7]
    assert [(t.prompt, t.completion, t.append_eos) for t in seen["texts"]] == [("", line, False) for line in lines]
    assert seen["pairs"] == [] and seen["method"] == "sft" and seen["seed"] == 9
    assert seen["s"]["use_lora"] is False and (seen["s"]["steps"], seen["s"]["lr"]) == (3, 2e-3)
    assert got == {"lines": 7, "train_loss": 1.5, "steps": 3}
    assert (tmp_path / "qab" / "tokenizer.json").is_file()  # the swapped model takes the task expert's
