"""``xlt demo --full``'s mid-align experiment: the arms are paired (the very same task
micro-batches, in the same order), the control arm's loss is causal LM on the parallel text,
the SFT arm's pair micro-batches do nothing, and the base model's unigram check computes what
it says."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from xlt.synth import WorldConfig, generate_world, write_world

SMALL = dict(corpus_lines=1200, task_train=40, task_dev=10, task_test=20, translation_train=20,
             translation_dev=8, translation_test=12, parallel_train=24, vocab_size=300)


@pytest.fixture(scope="module")
def world_and_base(tmp_path_factory):
    """A small world and a random tiny Llama over its tokenizer (the experiment's base model)."""
    import transformers as tf

    from xlt.demo.transfer import tiny_llama
    from xlt.models import load_tokenizer

    root = tmp_path_factory.mktemp("full")
    world = root / "world"
    write_world(generate_world(WorldConfig(seed=3, **SMALL)), world)
    tokenizer = load_tokenizer(world / "tokenizer")
    tf.set_seed(0)
    config = tiny_llama(len(tokenizer), tokenizer, {"layers": 2, "hidden": 16, "heads": 2, "mlp": 32}, 64)
    base = root / "base"
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return world, base


SETTINGS = {"steps": 3, "batch_size": 4, "lr": 1e-3, "warmup": 0, "alignment_weight": 1.0, "tasks": ["polarity"]}


def _record_micro_batches(monkeypatch):
    """Record (objective, input ids) of every training micro-batch the align trainer computes a loss on."""
    from xlt.align import trainer as trainer_module

    seen: list = []
    original = trainer_module.AlignTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            objective = inputs.get(trainer_module._OBJECTIVE)
            key = "input_ids" if objective == "task" else "anchor_input_ids"
            seen.append((objective, inputs[key].tolist()))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_module.AlignTrainer, "compute_loss", compute_loss)
    return seen


@pytest.mark.slow
def test_every_arm_sees_the_same_task_micro_batches_in_the_same_order(world_and_base, tmp_path, monkeypatch):
    from xlt.demo.full import train_arm

    world, base = world_and_base
    seen = {}
    for arm in ("sft", "parallel-lm", "mid-align", "align-last"):
        records = _record_micro_batches(monkeypatch)
        summary = train_arm(arm, base, world, tmp_path / arm, SETTINGS, seed=5, device="cpu")
        assert summary["steps"] == 3
        seen[arm] = list(records)
        monkeypatch.undo()
    # two micro-batches per step: task, then pairs
    for arm, records in seen.items():
        assert [objective for objective, _ in records] == ["task", "alignment"] * 3, arm
    for arm in ("parallel-lm", "mid-align", "align-last"):
        assert seen[arm] == seen["sft"], arm  # the same task and pair micro-batches, in order
    # and they are not all alike (the check could fail)
    tasks = [ids for objective, ids in seen["sft"] if objective == "task"]
    assert tasks[0] != tasks[1]
    # another seed orders them differently
    records = _record_micro_batches(monkeypatch)
    train_arm("sft", base, world, tmp_path / "other", SETTINGS, seed=6, device="cpu")
    assert records != seen["sft"]


def test_arm_objectives_on_a_pair_micro_batch(world_and_base):
    """``none``: zero, no forward; ``lm``: the mean of the two sides' token cross-entropies,
    computed here by hand from the logits."""
    from xlt.align.config import MidAlignConfig
    from xlt.demo.full import arm_trainer_class
    from xlt.models import load_model, load_tokenizer

    world, base = world_and_base
    tokenizer = load_tokenizer(base, padding_side="right")
    model = load_model(base, kind="causal", dtype="float32", device="cpu")
    args = MidAlignConfig(output_dir="unused", use_cpu=True, report_to="none", use_lora=False, alignment_layer=1)
    trainer = arm_trainer_class()(model=model, args=args, processing_class=tokenizer)
    a = tokenizer(["qaa one two", "three"], padding=True, return_tensors="pt")
    c = tokenizer(["four five six seven", "eight"], padding=True, return_tensors="pt")
    pair = {"anchor_input_ids": a["input_ids"], "anchor_attention_mask": a["attention_mask"],
            "candidate_input_ids": c["input_ids"], "candidate_attention_mask": c["attention_mask"]}

    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    trainer.pair_objective = "none"
    zero = trainer._alignment_loss(model, pair, True)
    assert float(zero.detach()) == 0.0 and zero.requires_grad and not calls
    handle.remove()

    trainer.pair_objective = "lm"
    got = float(trainer._alignment_loss(model, pair, True))
    want = []
    with torch.no_grad():
        for side in (a, c):
            logits = model(input_ids=side["input_ids"], attention_mask=side["attention_mask"]).logits
            total, count = 0.0, 0
            for row in range(logits.shape[0]):
                n = int(side["attention_mask"][row].sum())
                for t in range(1, n):
                    total -= float(torch.log_softmax(logits[row, t - 1], -1)[side["input_ids"][row, t]])
                    count += 1
            want.append(total / count)
    assert got == pytest.approx(sum(want) / 2, rel=1e-5)

    trainer.pair_objective = "contrastive"
    assert float(trainer._alignment_loss(model, pair, True)) > 0


def test_unigram_check_against_a_direct_computation(world_and_base):
    from xlt.demo.full import unigram_check
    from xlt.formats import read_records
    from xlt.models import load_model, load_tokenizer

    world, base = world_and_base
    got = unigram_check(base, world, device="cpu", limit=10)
    tokenizer = load_tokenizer(base)
    model = load_model(base, kind="causal", dtype="float32", device="cpu")
    counts: Counter = Counter()
    for path in sorted((world / "corpus").glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            counts.update(tokenizer.encode(line, add_special_tokens=False))
    total = sum(counts.values())
    texts = sorted({p.tgt for p in read_records(world / "translation" / "test.jsonl", "parallel")})[:10]
    lm = uni = 0.0
    n = 0
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():  # the model's own loss: the mean over the predicted tokens
            loss = float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss)
        lm += loss * (len(ids) - 1)
        uni += sum(-math.log((counts[t] + 1) / (total + len(tokenizer))) for t in ids[1:])
        n += len(ids) - 1
    assert got["tokens"] == n
    assert got["base_nll"] == pytest.approx(lm / n, rel=1e-5)
    assert got["unigram_nll"] == pytest.approx(uni / n, rel=1e-9)
    # a random model is worse than the unigram model: the precondition can fail
    assert got["base_nll"] > got["unigram_nll"]


def test_units_vary_world_base_and_fine_tuning_seeds():
    from xlt.demo.full import units

    runs = units({"world_seeds": [1, 2], "units_per_world": 3})
    assert len(runs) == 6 and len({u["name"] for u in runs}) == 6
    assert {u["world"] for u in runs} == {1, 2}
    assert {u["base"] for u in runs} == {u["seed"] for u in runs} == {0, 1, 2}


def _constructed_results(fs, *, sft_source=1.0, base_nll=2.0, gains=(0.2, 0.3)):
    """Step results as the full demo writes them: 2 runs, 3 arms, 4 languages x 10 items; the
    mid-align arm is right on the first ``gain`` share of each target's items where SFT is wrong."""
    from xlt.demo.full import units

    results = {f"full-world-w{w}": {"source_language": "qaa"} for w in fs["world_seeds"]}
    gold = [0, 1] * 5
    for k, u in enumerate(units(fs)):
        results[f"full-base-w{u['world']}-b{u['base']}"] = {"unigram": {"base_nll": base_nll, "unigram_nll": 4.0}}
        for arm in fs["mid_align"]["arms"]:
            test = {}
            for lang in ("qaa", "qab", "qac", "qad"):
                if lang == "qaa":
                    correct = [1] * round(10 * sft_source) + [0] * (10 - round(10 * sft_source))
                elif arm == "mid-align":
                    n = round(10 * gains[k])
                    correct = [1] * n + [0] * (10 - n)
                else:
                    correct = [0] * 10
                test[lang] = {"correct": correct, "gold": gold, "accuracy": sum(correct) / 10, "majority_rate": 0.5}
            results[f"full-mid-align-{arm}-{u['name']}"] = {"unit": u, "test": test}
    return results


def test_mid_align_reproduction_from_constructed_runs():
    from xlt.demo.full import mid_align_reproduction, mid_align_table
    from xlt.demo.settings import full_settings

    fs = full_settings(quick=True)  # 1 world, 2 runs, arms sft / parallel-lm / mid-align
    got = mid_align_reproduction(fs, _constructed_results(fs))
    assert set(got) == {"mid-align", "mid-align vs control"}
    main = got["mid-align"]
    # effect: the mean over runs of the mean paired difference over the 30 target items
    assert main.effect == pytest.approx((0.2 + 0.3) / 2)
    assert main.seeds == 2 and main.prediction == "increase"
    assert main.ci_low > 0 and main.verdict == "reproduced" and main.precondition_met
    table = mid_align_table(fs, _constructed_results(fs))
    assert table["mid-align"]["qab"]["mean"] == pytest.approx(0.25)
    assert table["mid-align"]["qab"]["std"] == pytest.approx(0.0707107, rel=1e-5)  # sample sd of 0.2, 0.3

    # a baseline that did not learn its source task (60 % against a 50 % majority + 10 points) makes it invalid
    invalid = mid_align_reproduction(fs, _constructed_results(fs, sft_source=0.6))["mid-align"]
    assert invalid.verdict == "invalid" and not invalid.precondition_met
    assert [p.met for p in invalid.preconditions] == [False, True]
    # so does a base model worse than the unigram model
    worse = mid_align_reproduction(fs, _constructed_results(fs, base_nll=5.0))["mid-align"]
    assert worse.verdict == "invalid" and [p.met for p in worse.preconditions] == [True, False]
    # no gain: inconclusive or a zero effect, never reproduced
    flat = mid_align_reproduction(fs, _constructed_results(fs, gains=(0.0, 0.0)))["mid-align"]
    assert flat.effect == 0 and flat.verdict != "reproduced"
    # a missing step: nothing yet
    partial = _constructed_results(fs)
    del partial["full-mid-align-sft-w1-b1-s1"]
    assert mid_align_reproduction(fs, partial) is None


@pytest.mark.slow
def test_adamergex_run_at_t0_scores_every_arm_like_the_task_adapter(world_and_base, tmp_path):
    """At t = 0 both merges are the task adapter itself: every arm scores every item alike."""
    from xlt.demo.full import adamergex_run

    world, base = world_and_base
    s = {"task": {"lora_r": 2, "lr": 1e-2, "steps": 2, "batch_size": 4, "warmup": 0, "lora_extra_targets": ["lm_head"]},
         "ref_lines": 8, "ref_steps": 1, "ref_lr": 1e-2, "t": 0.0, "test_limit": 6}
    got = adamergex_run(base, world, tmp_path / "am", s, seed=0, device="cpu")
    alone = got["test"]["task adapter alone"]
    assert sorted(alone) == ["qaa", "qab", "qac", "qad"]
    for arm in ("task arithmetic", "adamergex"):
        assert sorted(got["test"][arm]) == ["qab", "qac", "qad"]
        for lang, row in got["test"][arm].items():
            assert row["correct"] == alone[lang]["correct"] and len(row["correct"]) == 6
    assert not (tmp_path / "am").exists()  # adapters and merged models are removed


def test_registered_experiment_modules_enter_settings_steps_verdicts_and_report(tmp_path, monkeypatch):
    """An experiment in a module of its own joins the full demo through ``EXPERIMENT_MODULES``
    alone: its settings, its steps (after the shared ones), its reproductions and its report."""
    import sys
    import types
    from collections import namedtuple

    from xlt.demo import full
    from xlt.demo.settings import full_settings

    module = types.ModuleType("xlt_fake_experiment")
    module.settings = lambda quick: {"steps": 3 if quick else 30, "chosen": "by hand"}
    module.steps = lambda root, fs, *, device, step_class: [step_class(f"full-fake-{i}", str(root), None)
                                                             for i in range(fs["fake"]["steps"])]
    module.reproduction = lambda fs, results: ({"fake": results["full-fake-0"]} if "full-fake-0" in results
                                              else None)
    module.report = lambda out, fs, results: (["## fake", str(out)], {"n": fs["fake"]["steps"]})
    monkeypatch.setitem(sys.modules, "xlt_fake_experiment", module)
    monkeypatch.setattr(full, "EXPERIMENT_MODULES", (("fake", "xlt_fake_experiment"),))

    fs = full_settings(quick=True)
    assert fs["fake"] == {"steps": 3, "chosen": "by hand"}
    assert full_settings(quick=False)["fake"]["steps"] == 30
    Step = namedtuple("Step", "name title run needs", defaults=((),))
    names = [s.name for s in full.full_steps(tmp_path, fs, device="cpu", step_class=Step)]
    assert names[-3:] == ["full-fake-0", "full-fake-1", "full-fake-2"]
    assert names[0] == "full-world-w1"
    settings = {"full": fs}
    assert full.reproductions(settings, {"full-fake-0": "r"})["fake"] == "r"
    assert "fake" not in full.reproductions(settings, {})
    assert full.experiment_reports(tmp_path, settings, {}) == [("fake", ["## fake", str(tmp_path)], {"n": 3})]
    assert full.experiment_reports(tmp_path, {}, {}) == []
    del fs["fake"]  # not in the settings: not run
    assert not any(n.startswith("full-fake") for n in
                   (s.name for s in full.full_steps(tmp_path, fs, device="cpu", step_class=Step)))
