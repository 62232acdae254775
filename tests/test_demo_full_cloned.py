"""``xlt demo --full``'s cloned-language experiment: the arms are paired, the scores compute what
they say, and the verdicts follow from constructed runs (sharing, no sharing, a failed
precondition)."""

from __future__ import annotations

import math
from collections import namedtuple

import pytest
import torch

from xlt.demo import full_cloned as fc

Step = namedtuple("Step", "name title run needs", defaults=((),))


def test_steps_one_per_run_and_arm_needing_only_their_world(tmp_path):
    from xlt.demo.full import full_steps
    from xlt.demo.settings import full_settings

    fs = full_settings(quick=True)
    names = {s.name: s.needs for s in full_steps(tmp_path, fs, device="cpu", step_class=Step)
             if s.name.startswith("full-cloned-")}
    expected = {f"full-cloned-{arm}-w{w}-b{k}-s{k}" for w in fs["world_seeds"] for k in range(2)
                for arm in ("50-50", "90-10", "schedule")}
    assert set(names) == expected
    assert all(needs == (f"full-world-w{name.split('-w')[1].split('-')[0]}",) for name, needs in names.items())
    full = full_settings(quick=False)
    assert [u["name"] for u in fc.runs(full)] == [f"w{w}-b{k}-s{k}" for w in (1, 2) for k in range(2)]
    assert full["cloned"]["arms"]["schedule"] == {"p_clone": 0.1, "language_schedule": "0.1_0.9"}


def test_arms_draw_languages_from_the_same_numbers():
    """Same seed, same uniform draws: every sequence that is L2 under 90/10 is L2 under 50/50, and
    the schedule's first half is the 90/10 arm's assignment exactly."""
    from xlt.pretrain.cloned import LanguageMap, LanguageSchedule
    from xlt.pretrain.data import LanguageAssignment

    lmap = LanguageMap.cloned(50, 1)
    steps, batch = 40, 8
    half = LanguageAssignment(lmap, LanguageSchedule(0.5, steps), batch, seed=3).languages
    imbalanced = LanguageAssignment(lmap, LanguageSchedule(0.1, steps), batch, seed=3).languages
    scheduled = LanguageAssignment(lmap, LanguageSchedule("0.1_0.9", steps, initial=0.1), batch, seed=3).languages
    assert bool((half[imbalanced == 1] == 1).all())
    assert 0.05 < float(imbalanced.float().mean()) < 0.15 and 0.4 < float(half.float().mean()) < 0.6
    first = steps // 2 * batch
    assert torch.equal(scheduled[:first], imbalanced[:first])
    assert float(scheduled[first:].float().mean()) > 0.8
    # and the same windows in the same order: only the language of each differs
    from xlt.pretrain.data import PretrainDataset, TokenStore

    store = TokenStore.from_array(torch.randint(1, 50, (1000,), generator=torch.Generator().manual_seed(0)).numpy())
    windows = []
    for p in (0.5, 0.1):
        assignment = LanguageAssignment(lmap, LanguageSchedule(p, steps), batch, seed=3)
        data = PretrainDataset([store], lmap, assignment, 16, seed=3)
        windows.append([(data[i]["input_ids"] % 50).tolist() for i in range(len(data))])
    assert windows[0] == windows[1] and len(windows[0]) == steps * batch


def test_unigram_nll_by_hand():
    train = [[3, 4, 4], [4]]  # with EOS (2) after each line: counts 3:1, 4:3, 2:2; total 6
    got = fc.unigram_nll(train, [[4, 3], [5, 5]], vocab_size=6, eos_id=2)
    total = 6 + 6
    first = -(math.log(4 / total) + math.log(2 / total) + math.log(3 / total)) / 3
    second = -(2 * math.log(1 / total) + math.log(3 / total)) / 3
    assert got == pytest.approx([first, second])


def test_sentence_nll_is_the_models_own_loss_on_the_sentence_after_eos():
    import transformers as tf

    from xlt.pretrain.cloned import LanguageMap

    lmap = LanguageMap.cloned(20, 1, shared_ids=[0, 1, 2])
    tf.set_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    model.eval()
    sentences = [[5, 7, 9], [11, 3]]
    got = fc.sentence_nll(model, sentences, lmap, "L2", eos_id=2)
    for sentence, value in zip(sentences, got):
        ids = torch.tensor([[2] + [t + 20 for t in sentence] + [2]])  # L2: shifted, EOS shared
        with torch.no_grad():
            assert value == pytest.approx(float(model(input_ids=ids, labels=ids).loss), rel=1e-5)


def _step(arm: str, sims: list[list[float]], nll_l1: list[float], *, untrained=None, unigram=None, nll_l2=None):
    step = {"arm": arm, "layers": 4, "similarity": sims, "nll": {"L1": nll_l1, "L2": nll_l2 or nll_l1},
            "unigram_nll": unigram or [4.0] * len(nll_l1), "ppl": {"L1": 5.0, "L2": 6.0}}
    if untrained is not None:
        step["untrained_similarity"] = untrained
    return step


def _results(fs: dict, *, base: float, imbalanced: float, untrained: float = -0.05, nll: float = 1.5,
             schedule_nll: float = 1.4) -> dict:
    """Every run: 50/50 clone cosine ``base`` at layers 1-3 (noise per sentence), 90/10
    ``imbalanced``; layer 0 and 4 are far off (they must not enter the verdict)."""
    out = {}
    for r, u in enumerate(fc.runs(fs)):
        def rows(level):
            return [[9.0] + [level + 0.01 * ((i * 7 + r) % 5 - 2)] * 3 + [-9.0] for i in range(30)]
        out[fc.step_name("50-50", u)] = _step("50-50", rows(base), [nll] * 30, untrained=rows(untrained))
        out[fc.step_name("90-10", u)] = _step("90-10", rows(imbalanced), [nll] * 30)
        out[fc.step_name("schedule", u)] = _step("schedule", rows(base), [schedule_nll + 0.01 * (i % 3) for i in range(30)])
    return out


def test_reproduction_from_constructed_runs():
    from xlt.demo.settings import full_settings

    fs = full_settings(quick=False)
    assert fc.reproduction(fs, {}) is None
    more = fc.reproduction(fs, _results(fs, base=0.3, imbalanced=0.5))
    r = more["cloned"]
    assert (r.verdict, r.seeds, r.unit, r.scale) == ("reproduced", 4, "cosine", 1.0)
    assert r.effect == pytest.approx(0.2) and r.ci_low > 0
    assert [p.met for p in r.preconditions] == [True, True]
    assert r.preconditions[1].value == pytest.approx(0.35)
    assert more["cloned schedule"].verdict == "reproduced"
    assert more["cloned schedule"].effect == pytest.approx(-0.09)
    less = fc.reproduction(fs, _results(fs, base=0.5, imbalanced=0.3, schedule_nll=1.6))
    assert less["cloned"].verdict == "not reproduced" and less["cloned schedule"].verdict == "not reproduced"
    # no sharing in the 50/50 run: the comparison means nothing
    flat = fc.reproduction(fs, _results(fs, base=0.0, imbalanced=0.3, untrained=0.0))
    assert flat["cloned"].verdict == "invalid" and not flat["cloned"].preconditions[1].met
    # sharing "at all": a small gain whose interval is above 0 is enough
    small = fc.reproduction(fs, _results(fs, base=0.0, imbalanced=0.3, untrained=-0.05))
    assert small["cloned"].preconditions[1].met and small["cloned"].verdict == "reproduced"
    # a model worse than a unigram model on held-out L1 text
    worse = fc.reproduction(fs, _results(fs, base=0.3, imbalanced=0.5, nll=4.5))
    assert worse["cloned"].verdict == "invalid" and not worse["cloned"].preconditions[0].met


def test_report_table_and_plot(tmp_path):
    from xlt.demo.settings import full_settings

    fs = full_settings(quick=False)
    lines, summary = fc.report(tmp_path, fs, _results(fs, base=0.3, imbalanced=0.5))
    assert set(summary["arms"]) == {"50-50", "90-10", "schedule", "untrained"}
    assert summary["arms"]["90-10"]["middle_similarity"] == pytest.approx(0.5)
    assert summary["arms"]["untrained"]["similarity_by_layer"][0] == pytest.approx(9.0)
    assert any(line.startswith("| 90-10 | 4 | 9.000 | 0.500") for line in lines)
    assert (tmp_path / "full_cloned.png").is_file()
    assert fc.report(tmp_path, fs, {})[1] == {"arms": {}}


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from xlt.synth import WorldConfig, generate_world, write_world

    world = tmp_path_factory.mktemp("cloned") / "world"
    write_world(generate_world(WorldConfig(seed=3, corpus_lines=1200, task_train=40, task_dev=10, task_test=20,
                                           translation_train=20, translation_dev=8, translation_test=12,
                                           parallel_train=24, vocab_size=300)), world)
    return world


def test_pretrain_lm_trains_with_the_language_schedule(small_world, tmp_path, monkeypatch):
    from xlt.demo.transfer import pretrain_lm
    from xlt.pretrain import train

    seen = []

    def build_trainer(config, *args, model=None, **kwargs):
        seen.append((config.p_clone, config.schedule().stages(), model.state_dict()))
        raise RuntimeError("recorded")

    monkeypatch.setattr(train, "build_trainer", build_trainer)
    s = fc.settings(quick=True)
    for arm in ("schedule", "50-50"):
        a = s["arms"][arm]
        with pytest.raises(RuntimeError, match="recorded"):
            pretrain_lm([small_world / "corpus" / "qaa.txt"], small_world / "tokenizer", tmp_path / "m", s, seed=0,
                        device="cpu", n_clones=1, p_clone=a["p_clone"], language_schedule=a["language_schedule"],
                        progress=False)
    assert [(p, stages) for p, stages, _ in seen] == [(0.1, [(0, 4, 0.1), (4, 8, 0.9)]), (0.5, [(0, 8, 0.5)])]
    # every arm of a run starts from the same weights
    assert all(torch.equal(seen[0][2][k], seen[1][2][k]) for k in seen[0][2])


def test_one_arm_end_to_end_on_a_small_world(small_world, tmp_path, monkeypatch):
    world = small_world
    s = fc.settings(quick=True)
    work = tmp_path / "work"
    # record the model pre-training starts from and the models whose similarity is measured
    from xlt.analysis import similarity
    from xlt.pretrain import train

    initial, measured = [], []
    build, analyze = train.build_trainer, similarity.analyze_parallel

    def build_trainer(*args, model=None, **kwargs):
        initial.append({k: v.clone() for k, v in model.state_dict().items()})
        return build(*args, model=model, **kwargs)

    def analyze_parallel(model, *args, **kwargs):
        measured.append({k: v.clone() for k, v in model.state_dict().items()})
        return analyze(model, *args, **kwargs)

    monkeypatch.setattr(train, "build_trainer", build_trainer)
    monkeypatch.setattr(similarity, "analyze_parallel", analyze_parallel)
    out = fc.cloned_run(world, work, s, "50-50", seed=0, device="cpu")
    assert len(initial) == 1 and len(measured) == 2
    assert initial[0].keys() == measured[1].keys()
    assert all(torch.equal(initial[0][k], measured[1][k]) for k in initial[0])  # untrained = initial weights
    assert not all(torch.equal(initial[0][k], measured[0][k]) for k in initial[0])  # the trained one moved
    assert not work.exists()
    assert out["items"] == s["items"] == len(out["nll"]["L1"]) == len(out["unigram_nll"])
    assert all(len(row) == s["model"]["layers"] + 1 for row in out["similarity"] + out["untrained_similarity"])
    assert out["pretrain"]["steps"] == s["steps"]
    assert all(math.isfinite(v) and v > 1 for v in out["ppl"].values())
    with pytest.raises(ValueError, match="unknown arm"):
        fc.cloned_run(world, work, s, "80-20", seed=0, device="cpu")


def test_a_small_cosine_effect_is_read_with_its_decimals(tmp_path):
    """An effect of +0.02 cosine with an interval above 0 must not read "0.0 ... level with"."""
    from xlt.demo.report import _verdict_table
    from xlt.demo.settings import full_settings
    from xlt.demo.verdicts import Reproduction, reproduction_sentence

    fs = full_settings(quick=False)
    r = fc.reproduction(fs, _results(fs, base=0.3, imbalanced=0.32))["cloned"]
    assert r.verdict == "reproduced"
    sentence = reproduction_sentence(r)
    assert "+0.020 cosine, 90/10 above 50/50 (95 % CI +0.020 to +0.020" in sentence
    assert "| +0.020 cosine | +0.020 to +0.020 |" in _verdict_table({"cloned": r})[2]
    assert Reproduction.from_dict(r.to_dict()).digits == 3
