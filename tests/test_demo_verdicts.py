"""The demo's statistics, verdicts and reading (xlt.demo.verdicts), on constructed results,
against independent computations (hand-computed t intervals, normal approximations of the
bootstrap, published t quantiles)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xlt.demo.verdicts import (Precondition, Reproduction, learned_source_task, majority_rate,
                               paired_interval, precondition, reading, reproduce, seed_interval, t_quantile,
                               verdict)
from xlt.errors import DataError

# ------------------------------------------------------------------------------------------ t


@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 3, 3.182446), (0.975, 4, 2.776445),
    (0.975, 9, 2.262157), (0.95, 30, 1.697261), (0.995, 5, 4.032143), (0.9, 120, 1.288646),
])
def test_t_quantile_matches_published_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-6)


def test_t_quantile_approaches_the_normal_quantile():
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)


def test_seed_interval_is_the_student_t_interval_with_the_sample_std():
    diffs = [0.10, 0.20, 0.30]
    # by hand: mean 0.2, sample sd 0.1 (ddof 1), t_{0.975, 2} = 4.302653
    half = 4.302653 * 0.1 / math.sqrt(3)
    effect, low, high = seed_interval(diffs)
    assert effect == pytest.approx(0.2)
    assert low == pytest.approx(0.2 - half, abs=1e-6)
    assert high == pytest.approx(0.2 + half, abs=1e-6)


def test_seed_interval_at_another_level():
    diffs = [1.0, 2.0, 4.0, 5.0, 8.0]
    mean, sd = 4.0, math.sqrt(((3 ** 2) + 2 ** 2 + 0 + 1 + 4 ** 2) / 4)
    half = 2.131847 * sd / math.sqrt(5)  # t_{0.95, 4}
    _, low, high = seed_interval(diffs, level=0.90)
    assert (low, high) == pytest.approx((mean - half, mean + half), abs=1e-5)


def test_one_seed_gives_no_seed_interval():
    assert tuple(seed_interval([0.17])) == (0.17, -math.inf, math.inf)


def test_equal_seed_differences_give_a_zero_width_interval():
    assert tuple(seed_interval([0.05, 0.05, 0.05])) == pytest.approx((0.05, 0.05, 0.05))


@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [0.1, float("nan")]])
def test_seed_interval_refuses_bad_input(bad):
    with pytest.raises(ValueError, match="diffs"):
        seed_interval(bad)


# ------------------------------------------------------------------------------------------ bootstrap


def test_item_bootstrap_of_one_seed_matches_the_normal_approximation():
    rng = np.random.default_rng(7)
    n = 4000
    a = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < 0.3, 1 - a, a)  # flip 30 % of the items
    d = b - a
    se = d.std() / math.sqrt(n)  # the bootstrap's own variance uses the population sd
    effect, low, high = paired_interval([a.tolist()], [b.tolist()])
    assert effect == pytest.approx(d.mean())
    half = 1.959964 * se
    assert low == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(d.mean() + half, abs=0.1 * half)


def test_two_level_bootstrap_combines_seed_and_item_variance():
    """Each resample averages S independent draws: a random seed's item-resampled mean. Its
    variance is (population variance of the seed means + mean of σ_s² / n_s) / S."""
    rng = np.random.default_rng(3)
    seeds, a, b, diffs = 30, [], [], []
    for s in range(seeds):
        n = int(rng.integers(150, 300))  # seeds may differ in item counts
        shift = rng.normal(0.0, 0.08)  # a seed effect
        arm_a = (rng.random(n) < 0.5).astype(float)
        arm_b = (rng.random(n) < 0.6 + shift).astype(float)
        a.append(arm_a.tolist())
        b.append(arm_b.tolist())
        diffs.append(arm_b - arm_a)
    means = np.array([d.mean() for d in diffs])
    within = np.array([d.var() / d.size for d in diffs])
    sd = math.sqrt((means.var() + within.mean()) / seeds)
    effect, low, high = paired_interval(a, b, n_boot=8000)
    assert effect == pytest.approx(means.mean())
    assert low == pytest.approx(means.mean() - 1.959964 * sd, abs=0.1 * 1.96 * sd)
    assert high == pytest.approx(means.mean() + 1.959964 * sd, abs=0.1 * 1.96 * sd)
    # and it is wider than the item bootstrap alone would be (the seed effect is real)
    assert high - low > 2 * 1.96 * math.sqrt(within.mean() / seeds) * 1.2


def test_bootstrap_keeps_the_pairing_by_item():
    """b = a with 20 of 1,000 wrong items made right: paired, +2 points is far from 0 (se 0.44
    points); resampled unpaired it would not be (se about 2.2 points)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 1000)
    wrong = np.flatnonzero(a == 0)[:20]
    b = a.copy()
    b[wrong] = 1
    effect, low, high = paired_interval([a.tolist()], [b.tolist()])
    assert effect == pytest.approx(0.02)
    assert 0.005 < low < 0.02 < high < 0.035


def test_bootstrap_is_deterministic_given_its_seed():
    rng = np.random.default_rng(1)
    a = [rng.integers(0, 2, 100).tolist() for _ in range(3)]
    b = [rng.integers(0, 2, 100).tolist() for _ in range(3)]
    assert paired_interval(a, b, seed=5) == paired_interval(a, b, seed=5)
    assert paired_interval(a, b, seed=5) != paired_interval(a, b, seed=6)


def test_default_bootstrap_is_4000_resamples_with_generator_seed_0():
    rng = np.random.default_rng(4)
    a = [rng.random(50).tolist() for _ in range(2)]  # any per-item metric, not only 0/1
    b = [rng.random(50).tolist() for _ in range(2)]
    assert paired_interval(a, b) == paired_interval(a, b, n_boot=4000, seed=0)
    assert paired_interval(a, b) != paired_interval(a, b, n_boot=3999, seed=0)


def test_identical_arms_give_the_zero_width_interval_at_zero():
    a = [[1, 0, 1, 1], [0, 0, 1]]
    assert tuple(paired_interval(a, a)) == (0.0, 0.0, 0.0)


def test_effect_is_the_mean_over_seeds_of_per_seed_means():
    a = [[0, 0, 0, 0], [0, 0]]
    b = [[1, 0, 0, 0], [1, 1]]
    assert paired_interval(a, b).effect == pytest.approx((0.25 + 1.0) / 2)


@pytest.mark.parametrize("a, b, words", [
    ([[1, 0]], [[1, 0], [0, 1]], "a has 1 seed(s), b has 2"),
    ([[1, 0, 1]], [[1, 0]], "seed 0: a has 3 items, b has 2"),
    ([[1, 0], [1]], [[1, 0], [1, 1]], "seed 1: a has 1 items, b has 2"),
    ([], [], "no seeds"),
    ([[]], [[]], "seed 0: no items"),
    ([[[1, 0]]], [[[1, 0]]], "seed 0: expected a flat list"),
    ([[1, float("nan")]], [[1, 0]], "seed 0: a score is not a finite number"),
    ("10", "01", "shape (seeds, items)"),
])
def test_paired_interval_names_what_mismatched(a, b, words):
    with pytest.raises(ValueError) as info:
        paired_interval(a, b)
    assert words in str(info.value)


def test_paired_interval_refuses_a_bad_level():
    with pytest.raises(DataError, match="level"):
        paired_interval([[1]], [[0]], level=95)


# ------------------------------------------------------------------------------------------ majority rate


def test_majority_rate_is_the_score_of_a_constant_answer():
    labels = [0] * 105 + [1] * 95
    assert majority_rate(labels) == 0.525
    assert majority_rate(["yes", "no", "no", "maybe"]) == 0.5
    with pytest.raises(ValueError, match="labels"):
        majority_rate([])


# ------------------------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize("prediction, low, high, met, expected", [
    ("increase", 0.01, 0.20, True, "reproduced"),
    ("increase", -0.20, -0.01, True, "not reproduced"),
    ("increase", -0.05, 0.10, True, "inconclusive"),
    ("decrease", -0.20, -0.01, True, "reproduced"),
    ("decrease", 0.01, 0.20, True, "not reproduced"),
    ("decrease", -0.05, 0.10, True, "inconclusive"),
    # the precondition comes first, whatever the interval
    ("increase", 0.01, 0.20, False, "invalid"),
    ("decrease", 0.01, 0.20, False, "invalid"),
    ("increase", float("nan"), float("nan"), False, "invalid"),
    # touching 0 does not exclude it
    ("increase", 0.0, 0.20, True, "inconclusive"),
    ("decrease", -0.20, 0.0, True, "inconclusive"),
    ("increase", -0.20, 0.0, True, "inconclusive"),
    ("increase", 0.0, 0.0, True, "inconclusive"),
    # infinite bounds are bounds like any other
    ("increase", -math.inf, math.inf, True, "inconclusive"),
    ("increase", 0.01, math.inf, True, "reproduced"),
    ("decrease", 0.01, math.inf, True, "not reproduced"),
    ("decrease", -math.inf, -0.01, True, "reproduced"),
    # no interval: no evidence either way
    ("increase", float("nan"), 0.2, True, "inconclusive"),
    ("increase", 0.1, float("nan"), True, "inconclusive"),
])
def test_verdict_truth_table(prediction, low, high, met, expected):
    assert verdict(prediction, low, high, met) == expected


def test_verdict_refuses_an_unknown_prediction_and_a_reversed_interval():
    with pytest.raises(ValueError, match="prediction"):
        verdict("better", 0.1, 0.2, True)
    with pytest.raises(ValueError, match="low bound"):
        verdict("increase", 0.2, 0.1, True)


def test_preconditions():
    ok = learned_source_task(1.0, [0] * 105 + [1] * 95)
    assert ok.met and ok.threshold == pytest.approx(0.625) and "52.5 %" in ok.text and "200" in ok.text
    # a constant answer scores exactly the majority rate: not learned
    assert not learned_source_task(0.525, [0] * 105 + [1] * 95).met
    assert not learned_source_task(0.60, [0] * 105 + [1] * 95).met  # above the rate, not by the margin
    # lower is better (perplexity of the base against a unigram model)
    assert precondition("base beats unigram", 12.0, 40.0, text="ppl", higher_is_better=False).met
    assert not precondition("base beats unigram", 41.0, 40.0, text="ppl", higher_is_better=False).met
    assert not precondition("x", float("nan"), 0.5, text="").met


# ------------------------------------------------------------------------------------------ reproductions


def _arms(rng, seeds, n, p_a, p_b):
    return ([(rng.random(n) < p_a).astype(int).tolist() for _ in range(seeds)],
            [(rng.random(n) < p_b).astype(int).tolist() for _ in range(seeds)])


def test_a_method_that_transfers_is_reproduced():
    rng = np.random.default_rng(11)
    a, b = _arms(rng, 3, 600, 0.5, 0.7)
    learned = learned_source_task(1.0, [0] * 105 + [1] * 95)
    r = reproduce(method="mid-align", baseline="SFT", metric="target accuracy", prediction="increase",
                  a=a, b=b, preconditions=[learned], settings_chosen="source dev")
    by_hand = np.mean([np.mean(np.array(y) - np.array(x)) for x, y in zip(a, b)])
    assert r.effect == pytest.approx(by_hand)
    assert r.verdict == "reproduced" and r.seeds == 3 and r.precondition_met
    (line, summary) = reading({"mid-align": r})
    assert line.startswith(f"mid-align vs SFT on target accuracy: {100 * by_hand:+.1f} points, "
                           "mid-align above SFT (95 % CI +")
    assert "3 seeds): reproduced — the interval lies wholly above 0" in line
    assert summary == "Of 1 experiment — reproduced: mid-align."


def test_degenerate_run_every_arm_the_same_constant_answer_is_invalid_and_no_difference():
    labels = np.array([0] * 105 + [1] * 95)
    constant = (labels == 0).astype(int).tolist()  # every model answers class 0
    learned = learned_source_task(float(np.mean(constant)), labels.tolist())
    r = reproduce(method="AFP", baseline="SFT", metric="target accuracy", prediction="increase",
                  a=[constant, constant], b=[constant, constant], preconditions=[learned])
    assert (r.effect, r.ci_low, r.ci_high) == (0.0, 0.0, 0.0)
    assert r.verdict == "invalid" and not r.precondition_met
    line = reading({"afp": r})[0]
    assert "0.0 points, AFP level with SFT" in line
    assert "invalid — precondition 'baseline learned the source task' failed: 52.5 % against a threshold of 62.5 %" \
        in line
    assert "reproduced" not in line and "learns" not in line


def test_tie_with_a_zero_width_interval_is_said_as_no_difference():
    r = Reproduction("LSLo", "shared LoRA", "chrF", "increase", 0.0, 0.0, 0.0, 3, True, [],
                     verdict("increase", 0.0, 0.0, True), scale=1.0, unit="chrF")
    line = reading({"lslo": r})[0]
    assert "LSLo level with shared LoRA" in line
    assert "inconclusive — no difference: the interval is the single point 0" in line


def test_a_tie_that_rounds_to_zero_is_level_and_includes_zero():
    r = Reproduction("AFP", "SFT", "accuracy", "increase", 0.0004, -0.03, 0.031, 3, True, [],
                     verdict("increase", -0.03, 0.031, True))
    line = reading({"afp": r})[0]
    assert "0.0 points, AFP level with SFT (95 % CI -3.0 to +3.1, 3 seeds): inconclusive — the interval includes 0." \
        in line


def test_a_negative_gain_is_said_as_such_and_not_reproduced():
    r = Reproduction("AdaMergeX", "task adapter", "target accuracy", "increase", -0.05, -0.08, -0.02, 3, True, [],
                     verdict("increase", -0.08, -0.02, True))
    line = reading({"adamergex": r})[0]
    assert "-5.0 points, AdaMergeX below task adapter (95 % CI -8.0 to -2.0, 3 seeds)" in line
    assert "not reproduced — the interval lies wholly below 0, a decrease where the paper predicts an increase" \
        in line


def test_a_predicted_decrease_on_a_raw_metric():
    r = Reproduction("90/10", "50/50", "minority perplexity", "decrease", -1.5, -2.0, -1.0, 2, True, [],
                     verdict("decrease", -2.0, -1.0, True), scale=1.0, unit="perplexity")
    line = reading({"cloned": r})[0]
    assert "-1.5 perplexity, 90/10 below 50/50 (95 % CI -2.0 to -1.0, 2 seeds): reproduced — the interval lies " \
           "wholly below 0, the paper's predicted decrease." in line


def test_one_seed():
    # the seed t interval is unbounded: inconclusive, said as such
    effect, low, high = seed_interval([0.3])
    r = Reproduction("mid-align", "SFT", "accuracy", "increase", effect, low, high, 1, True, [],
                     verdict("increase", low, high, True))
    line = reading({"m": r})[0]
    assert "(no interval, 1 seed): inconclusive — one seed gives no interval over seeds." in line
    # the paired bootstrap with one seed is the item bootstrap, which can decide
    rng = np.random.default_rng(2)
    a, b = _arms(rng, 1, 800, 0.5, 0.75)
    r = reproduce(method="m", baseline="s", metric="acc", prediction="increase", a=a, b=b)
    assert r.seeds == 1 and r.verdict == "reproduced"


def test_failed_precondition_names_value_and_threshold_whatever_the_interval():
    failed = precondition("base beats unigram", 55.0, 40.0, text="base perplexity below the unigram model's",
                          higher_is_better=False, scale=1.0, unit="ppl")
    r = Reproduction("mid-align", "SFT", "accuracy", "increase", 0.2, 0.15, 0.25, 3, False, [failed],
                     verdict("increase", 0.15, 0.25, False))
    assert r.verdict == "invalid"
    line = reading({"m": r})[0]
    assert "invalid — precondition 'base beats unigram' failed: 55.00 ppl against a threshold of 40.00 ppl " \
           "(base perplexity below the unigram model's)" in line


def test_to_dict_is_strict_json_and_round_trips():
    effect, low, high = seed_interval([0.3])
    p = learned_source_task(0.9, [0, 1, 1])
    r = Reproduction("m", "b", "acc", "increase", effect, low, high, 1, True, [p], "inconclusive",
                     settings_chosen="source dev only")
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)
    for key in ("prediction", "effect", "ci_low", "ci_high", "seeds", "precondition_met", "verdict", "metric",
                "baseline", "method", "settings_chosen", "preconditions"):
        assert key in d
    assert d["ci_low"] is None and d["ci_high"] is None
    back = Reproduction.from_dict(json.loads(text))
    assert back == r
    assert isinstance(back.preconditions[0], Precondition)


def test_reading_summary_groups_by_verdict():
    def rep(v, low, high, met=True):
        return Reproduction("m", "b", "acc", "increase", (low + high) / 2, low, high, 3, met, [], v)

    lines = reading({"mid-align": rep("reproduced", 0.1, 0.2), "afp": rep("inconclusive", -0.1, 0.1),
                     "lslo": rep("inconclusive", -0.2, 0.1), "cloned": rep("not reproduced", -0.2, -0.1)})
    assert lines[-1] == ("Of 4 experiments — reproduced: mid-align; not reproduced: cloned; "
                         "inconclusive: afp, lslo.")
    assert reading({}) == []


# ------------------------------------------------------------------------------------------ the report
# write_report on constructed step results (no training): the reading must follow the numbers.

LANGS = [("qaa", "SVO"), ("qab", "SVO"), ("qac", "SOV"), ("qad", "VSO")]


def _report(out, *, source=1.0, gains=None, per_target=None, constant_everywhere=False, reproduction=None,
            seeds=(0, 1, 2), extra=None):
    """A fake finished run in ``out``: 50 test items per language, 27 of class 0 (majority rate 54 %);
    SFT at 50 % on every target; method m's target scores = 50 % + gains[m][seed] + per_target[lang]."""
    from xlt.demo.report import write_report
    from xlt.demo.settings import default_settings

    gains = gains or {"sft": [0.0] * len(seeds), "mid-align": [0.17] * len(seeds), "afp": [0.0] * len(seeds)}
    per_target = per_target or {"qab": 0.0, "qac": 0.0, "qad": 0.0}
    tasks = out / "world" / "tasks" / "polarity"
    tasks.mkdir(parents=True)
    (out / "world" / "world.json").write_text(json.dumps(
        {"source_language": "qaa", "languages": [{"code": c, "name": c, "word_order": o} for c, o in LANGS],
         "settings": {}}))
    settings = default_settings(quick=True)
    settings["seeds"] = list(seeds)
    assert settings["transfer"]["test_limit"] == 50
    for split in ("test", "dev"):
        with open(tasks / f"{split}.choice.jsonl", "w", encoding="utf-8") as f:
            for code, _ in LANGS:
                for i in range(60):  # 10 beyond the limit, all of class 1: they must not count
                    f.write(json.dumps({"lang": code, "context": "c", "choices": ["a", "b"],
                                        "label": 0 if i < 27 else 1}) + "\n")
    results = {"base": {"parameters": 1000, "steps": 80, "tokens_seen": 5000, "train_loss": 3.2, "seconds": 5},
               "base-eval": {**{c: {"accuracy": 0.54 if constant_everywhere in (False, True) else constant_everywhere}
                                for c, _ in LANGS}, "seconds": 1.5}}  # as the step writes it
    for method, by_seed in gains.items():
        for k, seed in enumerate(seeds):
            scores = {}
            for split in ("test", "dev"):
                scores[split] = {}
                for code, _ in LANGS:
                    if constant_everywhere:
                        value = 0.54 if constant_everywhere is True else constant_everywhere
                    elif code == "qaa":
                        value = source
                    else:
                        value = 0.5 + by_seed[k] + (per_target[code] if method != "sft" else 0.0)
                    scores[split][code] = {"accuracy": value}
            results[f"transfer-{method}-s{seed}"] = {"scores": scores, "seconds": 3}
    if reproduction:
        results["reproduction"] = reproduction
    results.update(extra or {})
    write_report(out, settings, results, {}, wall_seconds=10, device="cpu")
    text = (out / "report.md").read_text(encoding="utf-8")
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"),
                     parse_constant=lambda c: pytest.fail(f"results.json holds {c}"))
    return text, doc


def _reading(text):
    return text.split("## What the numbers show", 1)[1].split("## Every setting", 1)[0]


def test_report_reads_scores_against_the_majority_rate_and_uses_sample_std(tmp_path):
    text, doc = _report(tmp_path, gains={"sft": [0.0, 0.02, 0.04], "mid-align": [0.17, 0.19, 0.30]})
    assert "## Verdicts" not in text and "transfer gap" in text
    assert doc["majority_rate"]["test"]["qab"] == {"rate": 0.54, "items": 50, "shares": {"0": 0.54, "1": 0.46}}
    assert "| constant answer (majority class) | 54.0 | 54.0 | 54.0 | 54.0 | 54.0 |" in text
    # the spread is the sample std: SFT targets at 50, 52, 54 % -> 2.0 points (population std: 1.6)
    assert doc["transfer"]["sft"]["qab"]["accuracy_std"] == pytest.approx(0.02)
    assert "52.0 ± 2.0" in text
    reading = _reading(text)
    assert ("SFT learned the task in the source: 100.0% against a majority-class rate of 54.0% for its 50 test "
            "items (threshold 64.0%, the rate plus 10 points).") in reading
    assert "a constant answer scores 54.0% there (SFT 2.0 points below it)" in reading
    # mid-align - SFT per seed: +17, +17, +26 points; t interval by hand
    diffs = [0.17, 0.17, 0.26]
    mean, sd = sum(diffs) / 3, float(np.std(diffs, ddof=1))
    half = 4.302653 * sd / math.sqrt(3)
    assert (f"mid-align minus SFT on target-mean `polarity` accuracy: +{100 * mean:.1f} points, mid-align above "
            f"SFT (95 % CI +{100 * (mean - half):.1f} to +{100 * (mean + half):.1f}, 3 seeds") in reading
    assert "the interval lies above 0" in reading
    assert doc["mid_align_minus_sft_target_accuracy"]["ci_low"] == pytest.approx(mean - half, abs=1e-6)
    by_target = doc["transfer_minus_sft"]["test"]["mid-align"]["qab"]
    assert by_target["per_seed"] == pytest.approx(diffs) and by_target["seeds_better"] == 3
    assert by_target["seeds"] == 3 and by_target["mean"] == pytest.approx(mean)
    assert by_target["ci_high"] == pytest.approx(mean + half, abs=1e-6)
    assert set(doc["transfer_minus_sft"]) == {"test", "dev"}


def test_report_on_a_degenerate_run_says_so_and_compares_nothing(tmp_path):
    text, _ = _report(tmp_path, constant_everywhere=True)
    reading = _reading(text)
    assert ("Every model, the untrained base included, scores 54.0% `polarity` accuracy in every language and "
            "seed, the share of one class among the items scored, which a constant answer scores") in reading
    assert "no model learned the task. No method can be compared with another." in reading
    assert "in the source" not in reading and "minus SFT" not in reading and "reproduced" not in reading


def test_report_on_every_model_answering_the_minority_class(tmp_path):
    # 46 % is the share of class 1 (23 of 50): every model answers class 1
    text, _ = _report(tmp_path, constant_everywhere=0.46)
    assert ("scores 46.0% `polarity` accuracy in every language and seed, the share of one class among the items "
            "scored, which a constant answer scores: no model learned the task.") in _reading(text)
    # all equal at a score no constant answer gives: nothing compared, nothing said about learning
    text, _ = _report(tmp_path / "b", constant_everywhere=0.70)
    assert "scores 70.0% `polarity` accuracy in every language and seed. No method can be compared" in _reading(text)


def test_report_when_the_baseline_did_not_learn_the_source(tmp_path):
    text, _ = _report(tmp_path, source=0.60)  # above 54 %, below 64 %
    reading = _reading(text)
    assert "SFT did not learn the task in the source: 60.0% against a majority-class rate of 54.0%" in reading
    assert "(not interpreted: SFT did not learn the source task)." in reading


def test_report_does_not_call_a_noisy_gain_large(tmp_path):
    # mid-align - SFT per seed: +30, -10, +20 points: positive on average, the interval includes 0
    text, _ = _report(tmp_path, gains={"sft": [0.0, 0.1, 0.0], "mid-align": [0.3, 0.0, 0.2], "afp": [0.0, 0.1, 0.0]})
    reading = _reading(text)
    assert "mid-align higher in 2 of 3 seeds): the interval includes 0." in reading
    assert "large" not in reading
    # AFP equals SFT in every seed: a tie, not a gain
    assert "AFP minus SFT on target-mean `polarity` accuracy: 0.0 points, AFP level with SFT" in reading
    assert "no difference in any seed" in reading
    assert ("AFP minus SFT, target-mean `polarity` accuracy, per seed: 0.0, 0.0, 0.0 points (AFP better in 0 of 3 "
            "seeds; mean 0.0, 95 % CI 0.0 to 0.0 over seeds, Student t)") in text


def test_report_names_a_smallest_gain_only_when_there_is_one(tmp_path):
    text, _ = _report(tmp_path)  # equal gains on every target
    assert "Tied smallest: `qab`, `qac`, `qad`." in _reading(text)
    assert "The smallest gain" not in text
    text, _ = _report(tmp_path / "b", gains={"sft": [0.0, 0.01, 0.03], "mid-align": [0.17, 0.2, 0.18]},
                      per_target={"qab": 0.05, "qac": -0.05, "qad": 0.0})
    assert "Smallest on `qac`" in _reading(text)


def test_report_opens_with_the_verdict_table(tmp_path):
    rng = np.random.default_rng(0)
    a = [(rng.random(400) < 0.5).astype(int).tolist() for _ in range(3)]
    b = [(rng.random(400) < 0.7).astype(int).tolist() for _ in range(3)]
    ok = learned_source_task(1.0, [0] * 105 + [1] * 95)
    weak = learned_source_task(0.585, [0] * 105 + [1] * 95, name="task adapter learned the source task")
    rep = {"adamergex": reproduce(method="AdaMergeX", baseline="task adapter", metric="target accuracy",
                                  prediction="increase", a=a, b=b, preconditions=[weak]).to_dict(),
           "mid-align": reproduce(method="mid-align", baseline="SFT", metric="target accuracy",
                                  prediction="increase", a=a, b=b, preconditions=[ok],
                                  settings_chosen="steps chosen on source dev").to_dict(),
           "afp": reproduce(method="AFP", baseline="SFT", metric="target accuracy", prediction="increase",
                            a=a, b=a, preconditions=[ok]).to_dict()}
    text, doc = _report(tmp_path, reproduction=rep)
    first = text.index("## ")
    assert text[first:].startswith("## Verdicts") and text.index("## Verdicts") < text.index("## The world")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    # the fixed order mid-align, afp, adamergex, lslo, cloned
    assert [r.split("|")[1].strip() for r in rows[:3]] == ["`mid-align`", "`afp`", "`adamergex`"]
    assert rows[0].endswith("| 3 | baseline learned the source task: 100.0 % (needs > 62.5 %): met | **reproduced** |")
    assert rows[1].split("|")[4:6] == [" 0.0 points ", " 0.0 to 0.0 "] and rows[1].endswith("| **inconclusive** |")
    assert rows[2].endswith("58.5 % (needs > 62.5 %): **failed** | **invalid** |")
    verdicts = text.split("## Verdicts", 1)[1].split("## The world", 1)[0]
    assert "AFP vs SFT on target accuracy: 0.0 points, AFP level with SFT (95 % CI 0.0 to 0.0, 3 seeds): " \
           "inconclusive — no difference" in verdicts
    assert "Of 3 experiments — reproduced: mid-align; inconclusive: afp; invalid: adamergex." in verdicts
    assert "Settings of `mid-align`: steps chosen on source dev" in verdicts
    for key in ("mid-align", "afp", "adamergex"):
        entry = doc["reproduction"][key]
        assert {"prediction", "effect", "ci_low", "ci_high", "seeds", "precondition_met", "verdict"} <= set(entry)
    assert doc["reproduction"]["adamergex"]["verdict"] == "invalid"


def test_reading_of_an_interval_that_could_not_be_computed():
    nan = float("nan")
    r = Reproduction("LSLo", "shared LoRA", "chrF", "increase", 0.01, nan, nan, 2, True, [],
                     verdict("increase", nan, nan, True), scale=1.0, unit="chrF")
    line = reading({"lslo": r})[0]
    assert r.verdict == "inconclusive"
    assert "(95 % CI nan to nan, 2 seeds): inconclusive — no interval could be computed." in line
    back = Reproduction.from_dict(json.loads(json.dumps(r.to_dict(), allow_nan=False)))
    assert (back.ci_low, back.ci_high, back.verdict) == (-math.inf, math.inf, "inconclusive")
    assert "(no interval, 2 seeds): inconclusive — the interval is unbounded." in reading({"lslo": back})[0]


def test_report_shows_the_full_demo_arms_and_world_checks(tmp_path):
    """The full demo's per-arm table (mean ± sample sd over runs) and the world checks, passed or
    failed as the step says."""
    table = {"sft": {"qaa": {"mean": 1.0, "std": 0.0, "per_run": {"r1": 1.0, "r2": 1.0}},
                     "qab": {"mean": 0.5, "std": 0.1, "per_run": {"r1": 0.4, "r2": 0.6}}}}
    checks = {"full-world-checks-w1": {"lens": {"passed": True, "expected": "p_target > p_pivot"},
                                       "neurons": {"passed": False, "expected": "own ratio largest"}}}
    text, doc = _report(tmp_path, extra={"full_mid_align": table, **checks})
    assert "| sft | 100.0 ± 0.0 | 50.0 ± 10.0 |" in text
    assert "| `full-world-checks-w1` | lens | p_target > p_pivot | passed |" in text
    assert "| `full-world-checks-w1` | neurons | own ratio largest | **failed** |" in text
    assert doc["world_checks"]["full-world-checks-w1"]["neurons"]["passed"] is False
    assert doc["full_mid_align"] == table
