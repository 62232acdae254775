"""The world checks of the analysis tools: they run on a small world and a tiny random Llama, the
lens prompts are word-aligned with the parallel file, and the neuron verdict decides as stated."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from xlt.synth import WorldConfig, generate_world, write_world

SMALL = dict(corpus_lines=400, task_train=8, task_dev=4, task_test=4, translation_train=8,
             translation_dev=12, translation_test=8, parallel_train=8, vocab_size=1000)  # most words one token


@pytest.fixture(scope="module")
def world_and_base(tmp_path_factory):
    """A small world and a random tiny Llama over its tokenizer."""
    import transformers as tf

    from xlt.demo.transfer import tiny_llama
    from xlt.models import load_tokenizer

    root = tmp_path_factory.mktemp("world-checks")
    world = root / "world"
    write_world(generate_world(WorldConfig(seed=3, **SMALL)), world)
    tokenizer = load_tokenizer(world / "tokenizer")
    tf.set_seed(0)
    config = tiny_llama(len(tokenizer), tokenizer, {"layers": 2, "hidden": 16, "heads": 2, "mlp": 64}, 64)
    base = root / "base"
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return world, base


SETTINGS = {"lens_prompts": 10, "neuron_lines": 40, "ppl_lines": 5, "batch_size": 8}


def test_world_checks_run_and_return_the_documented_keys(world_and_base):
    from xlt.demo.world_checks import world_checks

    world, base = world_and_base
    got = world_checks(base, world, device="cpu", settings=SETTINGS)
    json.dumps(got)  # JSON-ready
    assert set(got) == {"settings", "lens", "neurons", "passed"}
    lens, neurons = got["lens"], got["neurons"]
    for check in (lens, neurons):
        assert {"what", "expected", "passed"} <= set(check) and isinstance(check["passed"], bool)
    assert lens["n_prompts"] == len(lens["prompts"]) == 10
    assert lens["layers"] == [1, 2] and len(lens["p_target"]) == len(lens["p_pivot"]) == 2  # 2 blocks
    assert lens["passed"] == (lens["p_target"][-1] > lens["p_pivot"][-1])
    assert lens["p_pivot"][lens["pivot_peak_layer"] - 1] == max(lens["p_pivot"])
    langs = ["qaa", "qab", "qac", "qad"]
    assert neurons["languages"] == langs and sorted(neurons["counts"]) == langs
    assert sorted(neurons["ppl"]["none"]) == langs
    for off, row in neurons["ratio"].items():
        assert neurons["counts"][off] > 0
        for lang in langs:  # the ratio is the two perplexities' quotient
            assert row[lang] == pytest.approx(neurons["ppl"][off][lang] / neurons["ppl"]["none"][lang])
    assert got["passed"] == (lens["passed"] and neurons["passed"])


def test_lens_prompts_are_word_aligned_with_the_parallel_file(world_and_base):
    """Checked against the raw JSON lines, split on spaces here."""
    from xlt.demo.world_checks import aligned_lens_probes
    from xlt.formats import read_records
    from xlt.models import load_tokenizer

    world, base = world_and_base
    tokenizer = load_tokenizer(base)
    path = world / "parallel" / "qaa-qab.dev.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    probes = aligned_lens_probes(read_records(path, "parallel"), tokenizer, source="qaa", target="qab",
                                 n_prompts=12, per_sentence=3)
    assert len(probes) == 12
    assert max(Counter(p["pair"] for p in probes).values()) <= 3  # at most 3 per sentence
    for p in probes:
        row = raw[p["pair"]]
        assert row["src_lang"] == "qaa" and row["tgt_lang"] == "qab"
        qaa, qab = row["src"].split(" "), row["tgt"].split(" ")
        k = p["k"]
        assert 2 <= k <= len(qab) - 1
        assert p["prompt"] == " ".join(qab[:k])
        assert p["target"] == " " + qab[k] and p["pivot"] == " " + qaa[k]
        assert qab[k] != qaa[k]
        for word in (qab[k], qaa[k]):
            assert len(tokenizer.encode(" " + word, add_special_tokens=False)) == 1
    # word k of qab translates word k of qaa: the lexicon maps both to one concept
    lexicon = json.loads((world / "world.json").read_text(encoding="utf-8"))["lexicon"]
    concept = {lang: {w: c for c, w in words.items()} for lang, words in lexicon.items()}
    mapped = [(concept["qab"].get(p["target"][1:]), concept["qaa"].get(p["pivot"][1:])) for p in probes]
    known = [(a, b) for a, b in mapped if a is not None and b is not None]
    assert len(known) == len(probes) and all(a == b for a, b in known)
    assert len({a for a, _ in known}) >= 4  # not only the determiner
    # shared anchors are skipped: no probe's target equals its pivot
    assert all(p["target"] != p["pivot"] for p in probes)


def test_neuron_verdict_on_constructed_ratios():
    from xlt.demo.world_checks import neuron_verdict

    ratios = {"a": {"a": 3.0, "b": 1.1, "c": 1.0}, "b": {"a": 1.2, "b": 2.0, "c": 1.3}}
    got = neuron_verdict(ratios, {"a": 5, "b": 2, "c": 0})
    assert got["passed"] and sorted(got["rows"]) == ["a", "b"]
    assert got["rows"]["a"]["own"] == 3.0 and got["rows"]["a"]["others_mean"] == pytest.approx(1.05)
    # b's deactivation hurts c more than b: b fails, so the check fails
    ratios["b"]["c"] = 2.5
    got = neuron_verdict(ratios, {"a": 5, "b": 2, "c": 0})
    assert got["rows"]["a"]["passed"] and not got["rows"]["b"]["passed"] and not got["passed"]
    # a tie is not a pass; a language without neurons is not judged; no neurons at all fails
    assert not neuron_verdict({"a": {"a": 1.5, "b": 1.5}}, {"a": 1})["passed"]
    assert neuron_verdict({"a": {"a": 1.0, "b": 9.0}}, {"a": 0})["rows"] == {}
    assert not neuron_verdict({}, {"a": 0})["passed"]


def test_lens_verdict():
    from xlt.demo.world_checks import lens_verdict

    got = lens_verdict([0.1, 0.2, 0.6], [0.3, 0.5, 0.2])
    assert got["passed"] and got["pivot_peak_layer"] == 2 and got["pivot_above_target_layers"] == [1, 2]
    assert not lens_verdict([0.1, 0.2], [0.3, 0.2])["passed"]  # equal at the last layer: not passed


def test_unknown_setting_is_one_clear_error(world_and_base):
    from xlt.demo.world_checks import world_checks
    from xlt.errors import ConfigError

    world, base = world_and_base
    with pytest.raises(ConfigError, match="lens_promts"):
        world_checks(base, world, device="cpu", settings={"lens_promts": 5})
    with pytest.raises(ConfigError, match="lens_target"):
        world_checks(base, world, device="cpu", settings={"lens_target": "qaa"})
