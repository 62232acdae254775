"""``xlt demo --full``'s LSLo experiment: an 8-language world in three tiers whose directions get
parallel data in proportion to their poorer language's tier, every arm on the same data, the
shared LoRA with LSLo's parameter count, and verdicts on the low tier's sentence chrF (invalid
when the baseline does not beat copying the source)."""

from __future__ import annotations

from collections import Counter, namedtuple

import pytest

from xlt.formats import ParallelPair

Step = namedtuple("Step", "name title run needs", defaults=((),))


def _fs(quick: bool = True) -> dict:
    from xlt.demo.settings import full_settings

    return full_settings(quick=quick)


def test_settings_world_tiers_and_registration():
    from xlt.demo.full import EXPERIMENT_MODULES
    from xlt.synth import WorldConfig

    assert ("lslo", "xlt.demo.full_lslo") in EXPERIMENT_MODULES
    for quick in (True, False):
        s = _fs(quick)["lslo"]
        config = WorldConfig(seed=1, **s["world"])  # the generator accepts the world as it is
        assert config.languages == 8 and len(set(config.word_orders)) == 3
        assert sorted(s["tiers"]) == config.codes
        assert Counter(s["tiers"].values()) == {"high": 3, "med": 3, "low": 2}
        assert s["tiers"]["qaa"] == "high"  # the source is high-resource
        assert s["tier_ranks"] == {"high": 2, "med": 2, "low": 8}  # the paper's README ranks
        assert s["units_per_world"] >= 2 and s["chosen"]
        # room for the fine-tuning pairs and, after them, the base model's pairs
        assert config.translation_train >= s["pairs_high"] + s["base_pairs_high"]


def _records(codes, meanings):
    return [ParallelPair(src_lang=a, tgt_lang=b, src=f"{a}{m}", tgt=f"{b}{m}")
            for a in codes for b in codes if a != b for m in range(meanings)]


def test_split_pairs_sizes_by_the_poorer_tier_disjoint_base_equal_test():
    from xlt.demo.full_lslo import split_pairs

    s = {"tiers": {"a": "high", "b": "high", "c": "med", "d": "low"},
         "tier_share": {"high": 1.0, "med": 0.3, "low": 0.1}, "pairs_high": 20, "base_pairs_high": 30,
         "test_per_direction": 3}
    data = split_pairs(_records("abcd", 50), _records("abcd", 5), s, "a")
    ft = Counter((p.src_lang, p.tgt_lang) for p in data["finetune"])
    assert ft[("a", "b")] == ft[("b", "a")] == 20
    assert ft[("a", "c")] == ft[("c", "b")] == 6  # 0.3 * 20
    assert ft[("c", "d")] == ft[("d", "a")] == 2  # 0.1 * 20: the poorer side decides
    assert len(ft) == 12
    # the fine-tuning pairs of a direction are its first meanings
    assert sorted(int(p.src[1:]) for p in data["finetune"] if (p.src_lang, p.tgt_lang) == ("c", "d")) == [0, 1]
    base = Counter((p.src_lang, p.tgt_lang) for p in data["base"])
    assert base == {("a", "b"): 30, ("b", "a"): 30, ("a", "c"): 9, ("c", "a"): 9, ("a", "d"): 3, ("d", "a"): 3}
    # base meanings never occur in fine-tuning
    assert not {p.src[1:] for p in data["base"]} & {p.src[1:] for p in data["finetune"]}
    assert Counter((p.src_lang, p.tgt_lang) for p in data["test"]) == {d: 3 for d in ft}

    from xlt.errors import ConfigError

    with pytest.raises(ConfigError, match="a-b has 40 training pairs"):
        split_pairs(_records("abcd", 40), [], s, "a")


def test_sentence_chrf_and_copy_baseline():
    from sacrebleu.metrics import CHRF

    from xlt.demo.full_lslo import copy_scores, sentence_chrf

    assert sentence_chrf(["the cat sat", "zzz"], ["the cat sat", "the cat sat"]) == [100.0, 0.0]
    pairs = [ParallelPair("a", "b", "kato sidis", "kat sat"), ParallelPair("a", "b", "x", "y")]
    expected = CHRF().sentence_score("kato sidis", ["kat sat"]).score
    assert copy_scores(pairs) == {"a-b": [pytest.approx(expected), 0.0]}


def test_step_graph():
    from xlt.demo.full import full_steps

    fs = _fs(quick=False)
    names = {s.name: s.needs for s in full_steps(__import__("pathlib").Path("/x"), fs, device="cpu", step_class=Step)
             if s.name.startswith("full-lslo")}
    runs = [f"w{w}-b{k}-s{k}" for w in fs["world_seeds"] for k in range(fs["lslo"]["units_per_world"])]
    assert len(names) == len(fs["world_seeds"]) + len(runs) * 5
    for run in runs:
        assert names[f"full-lslo-base-{run}"] == (f"full-lslo-world-w{run[1]}",)
        for arm in ("lslo", "lslo-pruned", "shared", "full"):
            assert names[f"full-lslo-{arm}-{run}"] == (f"full-lslo-base-{run}",)


def _constructed(fs, *, gain=5.0, shared_low=40.0, copy=20.0, base=40.0):
    """Step results: every arm scores ``shared_low`` (+ ``gain`` for LSLo on the low tier, + a
    run-dependent wobble) per item; the copy baseline ``copy``; the base model ``base``."""
    s = fs["lslo"]
    from xlt.demo.full_lslo import runs

    directions = [f"{a}-{b}" for a in s["tiers"] for b in s["tiers"] if a != b]
    out = {}
    for k, u in enumerate(runs(fs)):
        def items(low: float, other: float = 30.0):
            return {d: [low + k + i if s["tiers"][d[4:]] == "low" else other + i for i in range(2)]
                    for d in directions}
        out[f"full-lslo-base-{u['name']}"] = {
            "source": "qaa", "test": {"items": items(base, base), "chrf": {d: base for d in directions}},
            "copy": {d: [copy, copy] for d in directions}}
        for arm, low in (("shared", shared_low), ("full", shared_low), ("lslo", shared_low + gain),
                         ("lslo-pruned", shared_low - gain)):
            chrf = {d: low if s["tiers"][d[4:]] == "low" else 30.0 for d in directions}
            out[f"full-lslo-{arm}-{u['name']}"] = {"test": {"items": items(low), "chrf": chrf},
                                                   "trainable_parameters": 100 if arm != "full" else 1000}
            if arm == "lslo-pruned":
                out[f"full-lslo-{arm}-{u['name']}"]["pruning"] = {"b_surviving": 5, "b_parameters": 50}
    return out


def test_reproduction_from_constructed_runs(tmp_path):
    from xlt.demo.full_lslo import reproduction, report

    fs = _fs(quick=True)
    got = reproduction(fs, _constructed(fs))
    assert set(got) == {"lslo", "lslo (pruned)", "lslo vs full fine-tuning"}
    main = got["lslo"]
    assert main.effect == pytest.approx(5.0) and main.unit == "chrF" and main.scale == 1.0
    assert main.verdict == "reproduced" and main.seeds == 2
    assert got["lslo (pruned)"].effect == pytest.approx(-5.0)
    assert got["lslo (pruned)"].verdict == "not reproduced"
    # every direction: -5 on the 14 directions into low languages of 56, 0 elsewhere
    assert got["lslo vs full fine-tuning"].effect == pytest.approx(-5.0 * 14 / 56)
    # no difference: never reproduced
    assert reproduction(fs, _constructed(fs, gain=0.0))["lslo"].verdict == "inconclusive"
    # the shared LoRA no better than copying the source (+ 10 chrF) on the low tier: invalid
    invalid = reproduction(fs, _constructed(fs, shared_low=25.0))["lslo"]
    assert invalid.verdict == "invalid" and [p.met for p in invalid.preconditions] == [False, True]
    assert invalid.preconditions[0].value == pytest.approx(25.5)  # worst run: k = 0, items 25 and 26
    # a base model that does not translate: invalid too
    assert [p.met for p in reproduction(fs, _constructed(fs, base=25.0))["lslo"].preconditions] == [True, False]
    partial = _constructed(fs)
    del partial["full-lslo-shared-w1-b1-s1"]
    assert reproduction(fs, partial) is None

    lines, data = report(tmp_path, fs, _constructed(fs))
    assert data["systems"]["lslo"]["tiers"]["low"]["mean"] == pytest.approx(45.0)
    assert data["systems"]["lslo"]["tiers"]["high"]["mean"] == pytest.approx(30.0)
    assert data["trainable_parameters"] == {"lslo": 100, "lslo-pruned": 100, "shared": 100, "full": 1000}
    assert any(line.startswith("| lslo | 100 | 30.0 ± 0.0 | 30.0 ± 0.0 | 45.0 ± 0.0 |") for line in lines)
    assert "Pruned LSLo, run w1-b0-s0: 5 of 50 B entries survive (10.0 %)." in lines
    assert (tmp_path / "full_lslo.png").is_file()


@pytest.mark.usefixtures("one_thread")
def test_quick_steps_end_to_end(tmp_path, monkeypatch):
    """The quick steps of one run, in order: every arm trained and scored on the same test items;
    the shared LoRA has LSLo's parameter count (d x sum of ranks x 2 per adapted module, counted
    from the saved files); models are removed; the verdicts and the report follow."""
    from xlt.demo.full import full_steps
    from xlt.demo.full_lslo import reproduction, runs

    from xlt.lslo.trainer import TranslationCollator

    fs = _fs(quick=True)
    s = fs["lslo"]
    first = runs(fs)[0]["name"]
    batches: dict = {}  # step name -> the training batches' (input ids, labels), in order
    collate = TranslationCollator.__call__
    current = []

    def recording(self, features):
        batches.setdefault(current[-1], []).append([(f["input_ids"], f["labels"]) for f in features])
        return collate(self, features)

    monkeypatch.setattr(TranslationCollator, "__call__", recording)
    results = {}
    for step in full_steps(tmp_path, fs, device="cpu", step_class=Step):
        if step.name.startswith("full-lslo") and step.name.endswith((first, "world-w1")) \
                and "-full-" not in step.name:  # full fine-tuning left out: time
            current.append(step.name)
            results[step.name] = step.run()
    # every arm trains on the same rows in the same order (mixed directions)
    arms = [batches[f"full-lslo-{arm}-{first}"] for arm in ("lslo", "lslo-pruned", "shared")]
    assert arms[0] == arms[1] == arms[2] and len(arms[0]) >= 2 * s["epochs"]
    assert len({tuple(row[0][:1]) for batch in arms[0] for row in batch}) == 8  # every source language tag
    # a batch mixes directions: (source tag, target tag) pairs
    assert all(len({(row[0][0], row[1][0]) for row in batch}) > 1 for batch in arms[0])
    base = results[f"full-lslo-base-{first}"]
    directions = sorted(base["copy"])
    assert len(directions) == 56 and all(len(v) == s["test_per_direction"] for v in base["copy"].values())
    params = {}
    for arm in ("lslo", "lslo-pruned", "shared"):
        step = results[f"full-lslo-{arm}-{first}"]
        assert sorted(step["test"]["items"]) == directions
        assert all(len(v) == s["test_per_direction"] for v in step["test"]["items"].values())
        params[arm] = step["trainable_parameters"]
    d, modules = s["model"]["hidden"], 5 + 8  # one encoder and one decoder layer
    assert params["lslo"] == params["shared"] == params["lslo-pruned"] == modules * 2 * d * (3 * 2 + 3 * 2 + 2 * 8)
    assert results[f"full-lslo-lslo-pruned-{first}"]["pruning"]["schedule"]["target"] == 0.9
    assert not list((tmp_path / "lslo").glob("lslo-*")) and not list((tmp_path / "lslo").glob("full-*"))
    # one run of two: the verdicts wait for the other
    assert reproduction(fs, results) is None


def test_full_settings_and_arm_configs_as_documented(tmp_path):
    """docs/demo.md's figures: the world, the data shares, the base, and the arms' training options."""
    from xlt.demo.full_lslo import ARMS, arm_config
    from xlt.lslo.pruning import pruning_ratio

    s = _fs(quick=False)["lslo"]
    assert s["world"]["word_orders"] == ["SVO", "SVO", "SOV", "SVO", "VSO", "SOV", "SVO", "VSO"]
    assert s["tiers"] == {"qaa": "high", "qab": "high", "qac": "high", "qad": "med", "qae": "med", "qaf": "med",
                          "qag": "low", "qah": "low"}
    assert s["tier_share"] == {"high": 1.0, "med": 0.3, "low": 0.1}
    assert (s["pairs_high"], s["base_pairs_high"], s["test_per_direction"]) == (200, 1200, 8)
    assert s["model"] == {"hidden": 64, "layers": 4} and s["base_steps"] == 800  # 2 + 2 layers
    assert s["units_per_world"] == 2 and s["num_beams"] == 1 and s["precondition_margin"] == 10.0
    # the pruning target is reached at epoch 3 of 4
    ratios = [pruning_ratio(e, s["pruning_t1"], s["pruning_t2"], s["target_pruning_ratio"]) for e in (1, 2, 3, 4)]
    assert ratios == [0.0, pytest.approx(0.7875), 0.9, 0.9] and s["epochs"] == 4
    configs = {arm: arm_config(arm, tmp_path / arm, s, seed=1, device="cpu") for arm in ARMS}
    for arm, c in configs.items():
        assert (c.learning_rate, c.lr_scheduler_type, c.num_train_epochs) == (3e-3, "constant", 4.0)
        assert (c.adam_beta1, c.adam_beta2, c.label_smoothing_factor, c.sampling_temperature) == (0.9, 0.98, 0.2, 5.0)
        assert c.seed == 1 and c.per_device_train_batch_size == 32
        assert c.pruning == ("language" if arm == "lslo-pruned" else "none")
    assert configs["full"].full_finetune and configs["shared"].shared and configs["shared"].shared_rank is None
    lslo = configs["lslo"].lslo_config(sorted(s["tiers"]))
    assert [lslo.rank_of(l) for l in sorted(s["tiers"])] == [2, 2, 2, 2, 2, 2, 8, 8]
