"""``xlt demo --full``'s AFP experiment: the world's instruction data (Bactrian-X layout, read by
``xlt data afp`` unchanged), the arms' shared rows, the in-context polarity prompts, the step
graph and the verdicts on constructed step results."""

from __future__ import annotations

import json

import pytest

from xlt.synth import WorldConfig, generate_world

SMALL = dict(corpus_lines=1200, task_train=40, task_dev=10, task_test=20, translation_train=20,
             translation_dev=8, translation_test=12, parallel_train=24, vocab_size=300)


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldConfig(seed=3, **SMALL))


def test_instruction_records_every_language_same_ids_training_meanings_only(world):
    from xlt.synth.instructions import instruction_records

    records = instruction_records(world)
    assert set(records) == set(world.codes)
    ids = [r["id"] for r in records["qaa"]]
    assert len(ids) == 40 + 24 and len(set(ids)) == len(ids)
    for code, rows in records.items():
        assert [r["id"] for r in rows] == ids
        assert all(set(r) == {"instruction", "input", "id", "output"} and r["input"] == "" for r in rows)
    # roles: the answer is a contiguous run of the words of the instruction's sentence
    for code in world.codes:
        for r in records[code][:40]:
            words, answer = r["instruction"].split(), r["output"].split()
            assert any(words[i:i + len(answer)] == answer for i in range(len(words))), (code, r)
        for r in records[code][40:]:  # repeat: the output is the instruction itself
            assert r["output"] == r["instruction"] and r["instruction"].endswith(" .")
    # the same id is the same meaning: the languages' repeat sentences are the parallel pairs
    pairs = world.parallel_pairs("qaa", "qac", "train")
    assert [(p.src, p.tgt) for p in pairs] == [(a["output"], c["output"]) for a, c in
                                               zip(records["qaa"][40:], records["qac"][40:])]
    # never the polarity question or a label word; never a held-out sentence
    for code in world.codes:
        lang = world.language(code)
        banned = {lang.word("q:polarity"), lang.word("label:good"), lang.word("label:bad")}
        held = {lang.sentence(it.meaning) for split in ("dev", "test") for it in world.task_items[split]}
        for r in records[code]:
            assert not banned & set(r["instruction"].split() + r["output"].split())
            sentence = r["instruction"].rsplit(" .", 1)[0] + " ."
            assert sentence not in held
    assert len(instruction_records(world, limit=5)["qab"]) == 10


def test_written_instructions_run_through_xlt_data_afp_unchanged(world, tmp_path):
    from xlt.afp.cli import data_afp_command
    from xlt.errors import ConfigError
    from xlt.synth.instructions import instruction_records, write_instructions

    counts = write_instructions(world, tmp_path / "bx", limit=6)
    assert counts == {f"{c}.json": 12 for c in world.codes}
    assert json.loads((tmp_path / "bx" / "qab.json").read_text(encoding="utf-8")) == \
        instruction_records(world, limit=6)["qab"]
    (tmp_path / "world.json").write_text(json.dumps(world.describe()))  # names for the prompts
    assert data_afp_command(["-m", "crosslingual", "-l", "qaa", "qab", "qac", "-b", str(tmp_path / "bx"),
                             "-o", str(tmp_path / "out"), "--language-names", str(tmp_path / "world.json")],
                            "xlt data afp") == 0
    rows = [json.loads(l) for l in (tmp_path / "out" / "AFP.qaa_qab_qac.X0.5.C0.5.R1.0.json").open()]
    assert len(rows) == 13  # int(1.0 * 12) + 1, the reference's count
    assert {r["clm_text"].split(" Answer in ")[1].split(":")[0] for r in rows} <= {l.name for l in world.languages}
    with pytest.raises(ConfigError, match="instruction kind"):
        instruction_records(world, kinds=("polarity",))


def test_polarity_prompts_are_written_as_xlt_eval_icl_writes_its_context(world):
    from xlt.demo.full_afp import polarity_prompts
    from xlt.eval.icl import prepare_choice_items

    items = world.choice_items("polarity", "train", ["qaa"])
    prompts = polarity_prompts(items, max_demos=3, seed=1, limit=30)
    assert len(prompts) == 30
    counts = set()
    for i, (item, p) in enumerate(zip(items, prompts)):
        assert p.completion == item.choices[item.label] and p.completion.startswith(" ")
        assert p.prompt.endswith(item.context)
        blocks = p.prompt.split("\n\n")
        counts.add(len(blocks) - 1)
        by_text = {d.context + d.choices[d.label]: d for d in items}
        demos = [by_text[b] for b in blocks[:-1] if b in by_text]
        assert len(demos) == len(blocks) - 1 and item not in demos  # demonstrations: other items, gold answers
        # the very text xlt eval icl builds for the item with these demonstrations
        ctx, cont = prepare_choice_items([item], demos)[0].requests[item.label]
        assert (ctx, cont) == (p.prompt, p.completion)
    assert counts <= {0, 1, 2, 3} and len(counts) > 1


def test_arms_share_rows_and_differ_only_in_languages_and_alignment(tmp_path, world):
    from xlt.demo.full_afp import settings, training_data
    from xlt.synth import write_world

    write_world(world, tmp_path / "w", tokenizer=False)
    s = {**settings(quick=True), "instruction_kinds": ["roles", "repeat"]}
    built = training_data(tmp_path / "w", s, seed=2)
    base, pairs = built["instruction-tuning"]
    afp, afp_pairs = built["afp"]
    assert built["cross-lingual-instructions"] == (afp, afp_pairs)
    # 40 role questions + 24 sentences (every training meaning), exact count; 40 polarity prompts
    n = built["info"]["instruction_records"]
    assert pairs == afp_pairs and len(base) == len(afp) == 64 + 40 and n == 64
    assert base[n:] == afp[n:]  # the polarity prompts: identical, same places
    names = {l.code: l.name for l in world.languages}
    assert all(t.prompt.endswith(f"Answer in {names['qaa']}: ") for t in base[:n])
    assert {name for name in names.values() if any(f"Answer in {name}: " in t.prompt for t in afp[:n])} == \
        set(names.values())
    # row i of every arm is the same meaning (the same Bactrian-X id), in the source for the baseline
    from xlt.synth.instructions import instruction_records

    ids: dict = {}
    for code, rows in instruction_records(world).items():
        for r in rows:
            ids.setdefault(r["instruction"], set()).add(r["id"])

    def id_of(task):
        return ids[task.prompt.rsplit(" Answer in ", 1)[0]]

    assert all(id_of(base[i]) & id_of(afp[i]) for i in range(n))
    assert sum(afp[i] != base[i] for i in range(n)) > n // 4
    # contrastive pairs: source instruction (anchor) and its translation
    assert all(p.anchor != p.candidate for p in pairs)


def _results(fs, *, base_source=1.0, gain=0.3, base_nll=2.0):
    """Step results of every arm and run: 4 languages x 10 items at every k; AFP right on the
    first ``gain`` share of each target's items where the other arms are wrong."""
    from xlt.demo.full_afp import runs, step_name

    s = fs["afp"]
    results = {f"full-world-w{w}": {"source_language": "qaa"} for w in fs["world_seeds"]}
    gold = [0, 1] * 5
    for u in runs(fs):
        results[f"full-base-w{u['world']}-b{u['base']}"] = {"unigram": {"base_nll": base_nll, "unigram_nll": 4.0}}
        for arm in s["arms"]:
            test = {}
            for k in map(str, s["shots"]):
                test[k] = {}
                for lang in ("qaa", "qab", "qac", "qad"):
                    if lang == "qaa":
                        n = round(10 * base_source)
                    else:
                        n = round(10 * gain) if arm == "afp" else 0
                    correct = [1] * n + [0] * (10 - n)
                    test[k][lang] = {"correct": correct, "gold": gold, "accuracy": n / 10, "majority_rate": 0.5}
            results[step_name(arm, u)] = {"unit": u, "test": test}
    return results


def test_afp_verdicts_from_constructed_runs():
    from xlt.demo.full_afp import report, reproduction, runs
    from xlt.demo.settings import full_settings

    fs = full_settings(quick=True)
    assert len(runs(fs)) == 2
    got = reproduction(fs, _results(fs))
    assert set(got) == {"afp", "afp (0-shot)", "afp vs cross-lingual instructions"}
    main = got["afp"]
    assert main.effect == pytest.approx(0.3) and main.verdict == "reproduced" and main.precondition_met
    assert main.baseline == "instruction-tuning" and f"{max(fs['afp']['shots'])}-shot" in main.metric
    assert "0-shot" in got["afp (0-shot)"].metric
    flat = reproduction(fs, _results(fs, gain=0.0))["afp"]
    assert flat.effect == 0 and flat.verdict != "reproduced"
    # a baseline that did not learn the source task in context: invalid, whatever the gain
    invalid = reproduction(fs, _results(fs, base_source=0.6))["afp"]
    assert invalid.verdict == "invalid" and [p.met for p in invalid.preconditions] == [False, True]
    worse = reproduction(fs, _results(fs, base_nll=5.0))["afp"]
    assert worse.verdict == "invalid" and [p.met for p in worse.preconditions] == [True, False]
    partial = _results(fs)
    del partial["full-afp-afp-w1-b1-s1"]
    assert reproduction(fs, partial) is None
    fs2 = {**fs, "afp": {**fs["afp"], "arms": ["instruction-tuning", "afp"]}}  # without the control arm
    assert set(reproduction(fs2, _results(fs2))) == {"afp", "afp (0-shot)"}
    lines, summary = report(None, fs, _results(fs))
    assert summary["accuracy"]["afp"]["0"]["qab"]["mean"] == pytest.approx(0.3)
    assert any(line.startswith("afp | ") and "30.0 ± 0.0" in line for line in lines)


def test_afp_steps_one_per_arm_and_run_after_their_base(tmp_path):
    from collections import namedtuple

    from xlt.demo import full
    from xlt.demo.settings import full_settings

    fs = full_settings(quick=True)
    Step = namedtuple("Step", "name title run needs", defaults=((),))
    steps = {s.name: s for s in full.full_steps(tmp_path, fs, device="cpu", step_class=Step)}
    ours = [n for n in steps if n.startswith("full-afp-")]
    assert sorted(ours) == sorted(f"full-afp-{arm}-w1-b{k}-s{k}" for arm in fs["afp"]["arms"] for k in (0, 1))
    assert steps["full-afp-afp-w1-b1-s1"].needs == ("full-base-w1-b1",)
    assert all(need in steps for n in ours for need in steps[n].needs)


@pytest.mark.slow
def test_one_afp_step_trains_with_both_losses_and_scores_every_k_per_item(world, tmp_path):
    import transformers as tf

    from xlt.demo.full_afp import run_arm, settings
    from xlt.demo.transfer import tiny_llama
    from xlt.models import load_tokenizer
    from xlt.synth import write_world

    write_world(world, tmp_path / "w")
    tokenizer = load_tokenizer(tmp_path / "w" / "tokenizer")
    tf.set_seed(0)
    config = tiny_llama(len(tokenizer), tokenizer, {"layers": 2, "hidden": 16, "heads": 2, "mlp": 32}, 64)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    s = {**settings(quick=True), "steps": 2, "test_limit": 5}
    got = run_arm("afp", tmp_path / "base", tmp_path / "w", tmp_path / "work", s, seed=1, device="cpu")
    assert got["train"]["steps"] == 2 and got["train"]["final_alignment_loss"] is not None
    assert set(got["test"]) == {"0", "2"}
    gold = [it.label for it in world.choice_items("polarity", "test", ["qac"])[:5]]
    for k in ("0", "2"):
        assert set(got["test"][k]) == set(world.codes)
        row = got["test"][k]["qac"]
        assert row["gold"] == gold and len(row["correct"]) == 5
        assert row["accuracy"] == pytest.approx(sum(row["correct"]) / 5)
    assert not (tmp_path / "work").exists()  # the model is removed after scoring
