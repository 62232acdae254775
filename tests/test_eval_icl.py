"""Multiple-choice ICL evaluation: scoring rules, batching, templates, readers, CLI."""

from __future__ import annotations

import json
import math

import pytest

from _versions_helpers import assert_records_versions

from xlt.errors import ConfigError, DataError

WORDS = "the cat dog sat on mat red blue big small runs eats".split()


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from xlt.models import load_model, load_tokenizer

    model = load_model(tiny_llama_dir, dtype="float32")
    model.eval()
    return model, load_tokenizer(tiny_llama_dir)


@pytest.fixture(scope="module")
def pawsx_dir(tmp_path_factory):
    import random

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("pawsx")
    for lang in ("en", "zh"):
        (root / lang).mkdir()
        for split in ("dev_2k", "test_2k"):
            lines = ["id\tsentence1\tsentence2\tlabel"]
            for i in range(8):
                s1 = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
                s2 = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
                lines.append(f"{i}\t{s1}\t{s2}\t{i % 2}")
            (root / lang / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _choice_items(n=12, seed=1, lang="en"):
    import random

    from xlt.formats import MultipleChoiceItem

    rng = random.Random(seed)
    items = []
    for i in range(n):
        context = "" if i % 4 == 0 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))
        if i % 3 == 1:
            context += " "  # a trailing space moves into the continuation
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(3)]
        items.append(MultipleChoiceItem(lang=lang, context=context, choices=tuple(choices), label=i % 3))
    return items


# -------------------------------------------------------------------------------------------- C5


def test_c5_afp_choice_scores():
    import torch

    from xlt.eval.scoring import afp_sequence_scores

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.tensor([[2, 3, 4, 5, 6], [2, 3, 4, 1, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    scores = afp_sequence_scores(logits, ids, mask)
    assert scores.tolist() == pytest.approx([-11.716999, -10.233022], abs=1e-5)
    assert int(scores.argmax()) == 1


# -------------------------------------------------------------------------------------------- lm-eval rule


def test_encode_lm_eval_rules(bpe_tokenizer):
    from xlt.eval.scoring import encode_lm_eval

    tok = bpe_tokenizer
    # trailing space of the context moves to the continuation; joint tokenisation, then split
    ctx, cont = encode_lm_eval(tok, "The cat ", "sat on the mat.")
    whole = tok.encode("The cat sat on the mat.")
    assert ctx == tok.encode("The cat") and ctx + cont == whole
    # empty context: conditioned on the prefix token (BOS here), continuation without specials
    ctx, cont = encode_lm_eval(tok, "", " Yes")
    assert ctx == [tok.bos_token_id] and cont == tok.encode(" Yes", add_special_tokens=False)
    # a text that already starts with the BOS string gets no second BOS
    ctx, cont = encode_lm_eval(tok, "<s>Hello", " world")
    assert ctx[:2] != [tok.bos_token_id, tok.bos_token_id]


def test_batch_encoding_equals_one_at_a_time(bpe_tokenizer):
    from xlt.eval.scoring import encode_request, encode_requests

    pairs = [("The cat ", "sat."), ("", " Yes"), ("", "<s> No"), ("<s>Hello", " world"), ("A\n\n", "B"),
             ("The cat ", "ran."), ("x", "")]
    for rule in ("afp", "lm-eval"):
        assert encode_requests(bpe_tokenizer, pairs, rule) == [encode_request(bpe_tokenizer, c, k, rule)
                                                               for c, k in pairs]


def test_lm_eval_loglikelihood_matches_manual_forward(llama):
    import torch

    from xlt.eval.icl import prepare_choice_items, score_items

    model, tok = llama
    items = _choice_items(3)
    results = score_items(model, tok, prepare_choice_items(items, [], target_delimiter=" "), scoring="lm-eval",
                          batch_size=8)
    for item, result in zip(items, results):
        for choice, ll in zip(item.choices, result.loglikelihoods):
            context, continuation = item.context, " " + choice
            n = len(context) - len(context.rstrip())
            if n:
                context, continuation = context[:-n], context[-n:] + continuation
            if context:
                full = tok.encode(context + continuation)
                start = len(tok.encode(context))
            else:
                full = [tok.bos_token_id] + tok.encode(continuation, add_special_tokens=False)
                start = 1
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
            expected = sum(logp[t - 1, full[t]].item() for t in range(start, len(full)))
            assert ll == pytest.approx(expected, abs=1e-5)


def test_auto_delimiter_and_fewshot_layout():
    from xlt.eval.icl import delimiter_for, prepare_choice_items
    from xlt.formats import MultipleChoiceItem

    assert delimiter_for("Q?", "yes") == " " and delimiter_for("Q? ", "yes") == ""
    assert delimiter_for("Q?", " yes") == "" and delimiter_for("Q?", " yes", " ") == " "
    demo = MultipleChoiceItem(lang="qaa", context="a b ?", choices=(" x", " y"), label=1)
    item = MultipleChoiceItem(lang="qaa", context="c d ?", choices=(" x", " y"), label=0)
    [prepared] = prepare_choice_items([item], [demo])
    assert prepared.requests == [("a b ? y\n\nc d ?", " x"), ("a b ? y\n\nc d ?", " y")]
    [strict] = prepare_choice_items([item], [demo], target_delimiter=" ")
    assert strict.requests[0] == ("a b ?  y\n\nc d ?", "  x")


def test_acc_norm_divides_by_characters(monkeypatch, llama):
    from xlt.eval import icl
    from xlt.formats import MultipleChoiceItem

    model, tok = llama
    item = MultipleChoiceItem(lang="en", context="x", choices=("a", "bbbbbbbbbb"), label=1)
    # log-likelihoods -2 (1 char) and -10 (10 chars): acc picks 0, acc_norm picks 1 (-2 < -1)
    monkeypatch.setattr(icl, "score_encoded", lambda *a, **k: [(-2.0, False), (-10.0, False)])
    [result] = icl.score_items(model, tok, icl.prepare_choice_items([item], []), scoring="lm-eval")
    assert result.pred == 0 and result.pred_norm == 1
    table = icl.accuracy_table([result])
    assert table == {"en": {"acc": 0.0, "acc_norm": 1.0, "n": 1}}


# -------------------------------------------------------------------------------------------- batching


@pytest.mark.parametrize("arch,scoring", [("llama", "afp"), ("xglm", "lm-eval"), ("gpt2", "lm-eval"),
                                          ("bloom", "afp"), ("gemma", "lm-eval"), ("qwen2", "afp"),
                                          ("mistral", "lm-eval")])
def test_batched_equals_one_at_a_time(tiny_model_dir, arch, scoring):
    """Every decoder fixture takes the shared-prefix path (never refused) and gives the
    one-at-a-time scores."""
    from xlt import fastpath
    from xlt.eval.icl import prepare_choice_items, score_items
    from xlt.models import load_model, load_tokenizer

    path = tiny_model_dir(arch)
    model = load_model(path, dtype="float32").eval()
    tok = load_tokenizer(path)
    demos = _choice_items(2, seed=5)
    prepared = prepare_choice_items(_choice_items(7), demos)
    one = score_items(model, tok, prepared, scoring=scoring, batch_size=1)
    # 7: whole items per forward; 2: a context's choices split over groups and tail batches
    for batch_size in (7, 2):
        fastpath.reset()
        many = score_items(model, tok, prepared, scoring=scoring, batch_size=batch_size)
        counts = fastpath.counts()
        assert counts["taken"].get(fastpath.SHARED_PREFIX, 0) > 0, counts
        assert fastpath.SHARED_PREFIX not in counts["refused"], counts
        for a, b in zip(one, many):
            assert a.loglikelihoods == pytest.approx(b.loglikelihoods, abs=1e-5)
            assert a.pred == b.pred and a.greedy == b.greedy


def test_cache_is_passed_under_the_installed_name():
    """The shared-prefix path must find the cache argument of the installed transformers:
    ``cache`` from 5.25, ``past_key_values`` before; a model output's cache likewise."""
    import inspect

    from transformers import LlamaForCausalLM
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from xlt.eval.scoring import cache_argument, output_cache

    accepted = set(inspect.signature(LlamaForCausalLM.forward).parameters)
    name = cache_argument(accepted)
    assert name in accepted and name in ("cache", "past_key_values")
    assert cache_argument({"input_ids", "attention_mask"}) is None
    assert cache_argument({"past_key_values"}) == "past_key_values"
    marker = object()
    fields = CausalLMOutputWithPast.__dataclass_fields__
    field = "cache" if "cache" in fields else "past_key_values"
    assert output_cache(CausalLMOutputWithPast(**{field: marker})) is marker
    assert output_cache(object()) is None


def _count_tokens(model):
    """Count the tokens ``model``'s forward passes take (a pre-hook); returns the counter."""
    seen = {"tokens": 0}

    def count(module, args, kwargs):
        seen["tokens"] += kwargs["input_ids"].numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    return seen


@pytest.mark.parametrize("scoring", ["afp", "lm-eval"])
def test_shared_prefix_runs_a_context_once(llama, scoring):
    """With 3 demonstrations shared by 3 choices, the batched scorer must put far fewer tokens
    through the model than the sum of the sequences, and still give the same scores."""
    import copy

    from xlt.eval.icl import prepare_choice_items, score_items
    from xlt.eval.scoring import encode_requests, score_encoded

    model, tok = llama
    prepared = prepare_choice_items(_choice_items(6, seed=3), _choice_items(3, seed=9))
    encoded = encode_requests(tok, [r for item in prepared for r in item.requests], scoring)
    whole = sum(len(e.input_ids) for e in encoded)
    counted = copy.deepcopy(model)
    seen = _count_tokens(counted)
    shared = score_encoded(counted, encoded, batch_size=8, pad_token_id=tok.pad_token_id)
    assert seen["tokens"] < 0.6 * whole  # each prefix (most of a sequence) once instead of 3 times
    seen["tokens"] = 0
    plain = score_encoded(counted, encoded, batch_size=8, pad_token_id=tok.pad_token_id, share_prefix=False)
    assert seen["tokens"] >= whole
    assert [s for s, _ in shared] == pytest.approx([s for s, _ in plain], abs=1e-5)
    assert [g for _, g in shared] == [g for _, g in plain]
    one = score_items(model, tok, prepared, scoring=scoring, batch_size=1)
    assert [ll for r in one for ll in r.loglikelihoods] == pytest.approx(
        [s for s, _ in shared] if scoring == "lm-eval" else [s / math.log(2) for s, _ in shared], abs=1e-5)


def test_shared_prefix_falls_back_without_an_attention_cache(llama, caplog, monkeypatch):
    """A model that returns no key/value cache (or recurrent state) is scored whole, correctly,
    and the refusal is announced, by the one-pass path and by the two-pass path alike."""
    import copy
    import logging

    from xlt import fastpath

    from xlt.eval.icl import prepare_choice_items, score_items
    from xlt.eval.scoring import encode_requests

    model, tok = llama
    no_cache = copy.deepcopy(model)
    seen = _count_tokens(no_cache)

    def drop_cache(module, args, kwargs, output):
        for name in ("cache", "past_key_values"):
            if name in output.__dataclass_fields__:
                setattr(output, name, None)
        return output

    no_cache.register_forward_hook(drop_cache, with_kwargs=True)
    prepared = prepare_choice_items(_choice_items(5, seed=8), _choice_items(2, seed=3))
    one = score_items(model, tok, prepared, scoring="afp", batch_size=1)
    # the one pass cannot see that the model holds attention state only: its rows are scored whole
    fastpath.reset()
    with caplog.at_level(logging.WARNING, logger="xlt"):
        alone = score_items(no_cache, tok, prepared, scoring="afp", batch_size=4)
    said = [r.getMessage() for r in caplog.records if "one-pass choices is off" in r.getMessage()]
    assert len(said) == 1 and "no key/value cache" in said[0] and "scored whole" in said[0]
    assert fastpath.ONE_PASS_CHOICES not in fastpath.counts()["taken"]
    for a, b in zip(one, alone):
        assert a.loglikelihoods == pytest.approx(b.loglikelihoods, abs=1e-5)
    # the two-pass path (the one pass refused) finds no cache after its prefix pass
    from xlt.eval import scoring

    caplog.clear()

    monkeypatch.setattr(scoring, "_one_pass_refusal", lambda model, accepted: "refused here")
    seen["tokens"] = 0
    fastpath.reset()
    with caplog.at_level(logging.WARNING, logger="xlt"):
        many = score_items(no_cache, tok, prepared, scoring="afp", batch_size=4)
    # the refusal is said once, with its reason, however many chunks fell back
    said = [r.getMessage() for r in caplog.records if "shared-prefix scoring is off" in r.getMessage()]
    assert len(said) == 1 and "no key/value cache" in said[0]
    assert fastpath.counts()["refused"][fastpath.SHARED_PREFIX] >= 2
    assert fastpath.SHARED_PREFIX not in fastpath.counts()["taken"]
    for a, b in zip(one, many):
        assert a.loglikelihoods == pytest.approx(b.loglikelihoods, abs=1e-5)
    encoded = encode_requests(tok, [r for item in prepared for r in item.requests], "afp")
    # the prefix passes ran, found no cache, and every sequence then went through whole
    assert seen["tokens"] > sum(len(e.input_ids) for e in encoded)


def test_shared_prefix_respects_a_sliding_window(bpe_tokenizer, caplog):
    """A model whose attention window is shorter than the sequences: prefix sharing must not
    change what each token sees (requests too long for the window are scored whole, and the
    refusal is announced)."""
    import logging

    from xlt import fastpath
    from xlt.eval.icl import prepare_choice_items, score_items
    from xlt.testing import tiny_model

    model = tiny_model("mistral", bpe_tokenizer, sliding_window=16)
    prepared = prepare_choice_items(_choice_items(5, seed=4), _choice_items(2, seed=6))
    one = score_items(model, bpe_tokenizer, prepared, scoring="afp", batch_size=1)
    fastpath.reset()
    with caplog.at_level(logging.WARNING, logger="xlt"):
        many = score_items(model, bpe_tokenizer, prepared, scoring="afp", batch_size=4)
    assert any("16-token sliding window" in r.getMessage() for r in caplog.records)
    for a, b in zip(one, many):
        assert a.loglikelihoods == pytest.approx(b.loglikelihoods, abs=1e-5)


def test_shared_prefix_with_a_peft_adapter_and_truncation(llama):
    from peft import LoraConfig, get_peft_model

    from xlt.eval.scoring import encode_requests, score_encoded
    from xlt.eval.icl import prepare_choice_items

    model, tok = llama
    import copy

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                  init_lora_weights=False)).eval()
    prepared = prepare_choice_items(_choice_items(6, seed=2), _choice_items(2, seed=7))
    encoded = encode_requests(tok, [r for item in prepared for r in item.requests], "afp")
    cap = sorted(len(e.input_ids) for e in encoded)[len(encoded) // 2]  # half the requests are cut
    one = score_encoded(peft_model, encoded, batch_size=1, pad_token_id=tok.pad_token_id, max_length=cap)
    many = score_encoded(peft_model, encoded, batch_size=6, pad_token_id=tok.pad_token_id, max_length=cap)
    assert [s for s, _ in many] == pytest.approx([s for s, _ in one], abs=1e-5)
    base = score_encoded(model, encoded, batch_size=6, pad_token_id=tok.pad_token_id, max_length=cap)
    assert max(abs(a - b) for (a, _), (b, _) in zip(base, many)) > 1e-3  # the adapter is used


# -------------------------------------------------------------------------------------------- templates


def test_demonstrations_and_prompt_strings(pawsx_dir):
    import random

    from xlt.eval.icl import prepare_template_items, select_demonstrations
    from xlt.eval.readers import read_pawsx
    from xlt.eval.templates import load_template

    template = load_template("pawsx")
    dev = read_pawsx(pawsx_dir / "en" / "dev_2k.tsv")
    demos = select_demonstrations(dev, 3, seed=0)
    shuffled = list(range(len(dev)))
    random.Random(0).shuffle(shuffled)
    assert [d.fields["id"] for d in demos] == [str(i) for i in shuffled[:3]]
    [item] = read_pawsx(pawsx_dir / "en" / "test_2k.tsv")[:1]
    [prepared] = prepare_template_items(template, [item], demos, lang="en")
    verbal = {1: "Yes", 0: "No"}
    demo_text = "".join(f"{d.fields['sentence1']}, right? {verbal[d.label]}, {d.fields['sentence2']}</s>"
                        for d in demos)
    s1, s2 = item.fields["sentence1"], item.fields["sentence2"]
    assert prepared.requests == [(demo_text + f"{s1}, right? ", f"Yes, {s2}"),
                                 (demo_text + f"{s1}, right? ", f"No, {s2}")]
    assert prepared.gold == (0 if item.label == 1 else 1)


def test_shipped_templates_load_and_render():
    from xlt.eval.readers import RawItem
    from xlt.eval.templates import BUILTIN_TASKS, load_template

    for name in BUILTIN_TASKS:
        template = load_template(name)
        assert template.task == name
    xcopa = load_template("xcopa")
    item = RawItem({"premise": "The man fell", "choice1": "He slipped.", "choice2": "He sang.",
                    "question": "cause"}, 0)
    prefix, choices, suffix = xcopa.parts(xcopa.prompt_for("en"), item.fields, demo=False)
    assert prefix + choices[0] + suffix == "cause: The man fell because He slipped."
    # the reference's words and its single template ("{question}: {premise} {conjunction} {label}")
    reference_words = {"zh": {"cause": ("起因", "因为"), "effect": ("影响", "所以")},
                       "ar": {"cause": ("السبب", "لأن"), "effect": ("تأثير", "لذا")}}
    for lang, words in reference_words.items():
        for question, (question_word, conjunction) in words.items():
            fields = {"premise": "P", "choice1": "A", "choice2": "B", "question": question}
            prefix, choices, suffix = xcopa.parts(xcopa.prompt_for(lang), RawItem(fields, 0).fields, demo=False)
            assert prefix + choices[1] + suffix == f"{question_word}: P {conjunction} B"
    wino = load_template("xwinograd")
    assert wino.split == "after_choice" and wino.prompt_for("ja") is wino.prompt_for("fr")


def test_template_errors(tmp_path):
    from xlt.eval.templates import load_template

    bad = tmp_path / "nochoice.yaml"
    bad.write_text("reader: xnli\nlabels: [entailment, neutral, contradiction]\nprompts:\n  en:\n"
                   "    template: 'Premise: {premise} Hypothesis: {hypothesis} Answer: '\n"
                   "    choices: [A, B, C]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"nochoice.yaml: prompt 'en'.*\{choice\}"):
        load_template(str(bad))
    unknown = tmp_path / "field.yaml"
    unknown.write_text("reader: pawsx\nlabels: [1, 0]\nprompts:\n  en:\n    template: '{sentence3} {choice}'\n"
                       "    choices: [Yes, No]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="sentence3"):
        load_template(str(unknown))
    with pytest.raises(ConfigError, match="no prompt for language 'de'"):
        load_template("pawsx").prompt_for("de")


# -------------------------------------------------------------------------------------------- readers


def test_readers_public_formats(tmp_path):
    from xlt.eval import readers

    (tmp_path / "xnli.tsv").write_text("A man sleeps.\tA person rests.\tentailment\n", encoding="utf-8")
    [x] = readers.read_xnli(tmp_path / "xnli.tsv")
    assert x.fields == {"premise": "A man sleeps.", "hypothesis": "A person rests."} and x.label == "entailment"
    (tmp_path / "xnli.jsonl").write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": 2}) + "\n")
    assert readers.read_xnli(tmp_path / "xnli.jsonl")[0].label == "contradiction"
    (tmp_path / "official.tsv").write_text(
        "language\tgold_label\tsentence1\tsentence2\nde\tneutral\tEin Mann.\tEine Frau.\n", encoding="utf-8")
    [o] = readers.read_xnli(tmp_path / "official.tsv")
    assert (o.lang, o.label, o.fields["premise"]) == ("de", "neutral", "Ein Mann.")
    (tmp_path / "xcopa.jsonl").write_text(json.dumps({"premise": "p", "choice1": "a", "choice2": "b",
                                                      "question": "effect", "label": 1}) + "\n")
    assert readers.read_xcopa(tmp_path / "xcopa.jsonl")[0].label == 1
    (tmp_path / "story.tsv").write_text("InputStoryid\ts1\ts2\ts3\ts4\te1\te2\tAnswerRightEnding\n"
                                        "x\tA.\tB.\tC.\tD.\tE.\tF.\t2\n", encoding="utf-8")
    [s] = readers.read_xstorycloze(tmp_path / "story.tsv")
    assert s.fields["s4"] == "D." and s.fields["ending2"] == "F." and s.label == 2
    (tmp_path / "wino.jsonl").write_text(json.dumps({"sentence": "Tom told _ a story.", "option1": "Ann",
                                                     "option2": "him", "answer": "1"}) + "\n")
    [w] = readers.read_xwinograd(tmp_path / "wino.jsonl")
    assert (w.fields["part1"], w.fields["part2"], w.label) == ("Tom told ", " a story.", 1)


def test_reader_errors_name_file_and_line(tmp_path):
    from xlt.eval import readers
    from xlt.eval.templates import load_template

    bad = tmp_path / "test_2k.tsv"
    bad.write_text("id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n2\tonly two\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad}:3: expected 4 tab-separated columns"):
        readers.read_pawsx(bad)
    label = tmp_path / "label.tsv"
    label.write_text("id\tsentence1\tsentence2\tlabel\n1\ta\tb\t7\n", encoding="utf-8")
    [item] = readers.read_pawsx(label)
    with pytest.raises(DataError, match=rf"{label}:2: field 'label': label 7 is outside the choices"):
        load_template("pawsx").label_index(item.label, item.where)


# -------------------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_icl_cli_two_languages(tiny_llama_dir, pawsx_dir, tmp_path, xlt_cli):
    out, samples = tmp_path / "r.json", tmp_path / "s.jsonl"
    proc = xlt_cli("eval", "icl", "--model", tiny_llama_dir, "--task", "pawsx",
                   "--test", f"{pawsx_dir}/{{lang}}/test_2k.tsv", "--dev", f"{pawsx_dir}/{{lang}}/dev_2k.tsv",
                   "--languages", "en", "zh", "--shots", "0", "2", "--seeds", "0", "1",
                   "--output", out, "--log-samples", samples)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert_records_versions(report)
    assert [(r["shots"], r["seed"]) for r in report["runs"]] == [(0, 0), (2, 0), (2, 1)]
    for run in report["runs"]:
        assert {lang: row["n"] for lang, row in run["results"].items()} == {"en": 8, "zh": 8}
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 3 * 16
    acc = sum(r["acc"] for r in rows[:8]) / 8  # first run, English
    assert report["runs"][0]["results"]["en"]["acc"] == pytest.approx(acc)
    assert "pawsx  2-shot  seed 1" in proc.stdout and "average" in proc.stdout
    # the whole-sequence scorer gives the same per-choice scores as the default (shared prefixes)
    plain = tmp_path / "plain.jsonl"
    proc = xlt_cli("eval", "icl", "--model", tiny_llama_dir, "--task", "pawsx", "--no-prefix-sharing",
                   "--test", f"{pawsx_dir}/{{lang}}/test_2k.tsv", "--dev", f"{pawsx_dir}/{{lang}}/dev_2k.tsv",
                   "--languages", "en", "zh", "--shots", "2", "--seeds", "0", "--log-samples", plain)
    assert proc.returncode == 0, proc.stderr
    plain_rows = [json.loads(line) for line in plain.read_text().splitlines()]
    assert len(plain_rows) == 16
    for a, b in zip(plain_rows, rows[16:32]):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-5)
    # bad input: a TSV line with a missing column -> one line naming the file and line, no output
    bad = tmp_path / "bad" / "en"
    bad.mkdir(parents=True)
    (bad / "test_2k.tsv").write_text("id\tsentence1\tsentence2\tlabel\n1\ta\n", encoding="utf-8")
    proc = xlt_cli("eval", "icl", "--model", tiny_llama_dir, "--task", "pawsx", "--languages", "en",
                   "--test", f"{tmp_path}/bad/{{lang}}/test_2k.tsv", "--output", tmp_path / "bad.json")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "test_2k.tsv:2:" in proc.stderr
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.slow
def test_lm_eval_harness_agreement(llama, tiny_llama_dir, tmp_path, xlt_cli):
    # lm-evaluation-harness is in the test extra (pinned by the lock): this parity check runs on
    # every CI run, never skipped
    import lm_eval  # noqa: F401
    from xlt.eval.icl import evaluate_icl
    from xlt.eval.lm_eval_bridge import run_lm_eval
    from xlt.formats import write_jsonl

    model, tok = llama
    items = _choice_items(9)
    data = tmp_path / "mc.jsonl"
    write_jsonl(data, items)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "local_mc.yaml").write_text(
        "task: xlt_local_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"{{context}}\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n", encoding="utf-8")
    harness = run_lm_eval(model, tok, ["xlt_local_mc"], include_path=[str(tasks)], log_samples=True,
                          batch_size=4)
    table, results = evaluate_icl(model, tok, test={"en": items}, scoring="lm-eval", batch_size=4,
                                  target_delimiter=" ")  # the harness's target_delimiter exactly
    samples = sorted(harness["samples"]["xlt_local_mc"], key=lambda s: s["doc_id"])
    assert len(samples) == len(results) == 9
    for sample, result in zip(samples, results):
        theirs = [resp[0][0] for resp in sample["resps"]]
        assert result.loglikelihoods == pytest.approx(theirs, abs=1e-4)
    metrics = harness["results"]["xlt_local_mc"]
    assert table["en"]["acc"] == pytest.approx(metrics["acc,none"])
    assert table["en"]["acc_norm"] == pytest.approx(metrics["acc_norm,none"])
    # the command writes the harness's results with the versions of the stack (lm_eval included)
    out = tmp_path / "lm-eval.json"
    proc = xlt_cli("eval", "lm-eval", "--model", tiny_llama_dir, "--tasks", "xlt_local_mc", "--include-path",
                   tasks, "--batch-size", "4", "--output", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["results"]["xlt_local_mc"]["acc,none"] == pytest.approx(metrics["acc,none"])
    assert_records_versions(doc)
    from importlib import metadata

    assert doc["xlt_versions"]["lm_eval"] == metadata.version("lm_eval")
