"""MT evaluation: scores against sacrebleu's own functions, tables, decoding conventions, spBLEU offline."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


HYPS = ["the cat sat on the mat", "a dog runs in the park today", "green trees grow"]
REFS = ["the cat sat on a mat", "the dog runs in the park", "green trees are growing"]


def test_bleu_and_chrf_equal_sacrebleu():
    import sacrebleu

    from xlt.eval.mt import make_metrics, score

    got = score(HYPS, REFS, make_metrics())
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    plus = score(HYPS, REFS, make_metrics(chrf_word_order=2))
    assert set(plus) == {"bleu", "chrf++"}
    assert plus["chrf++"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score, abs=1e-9)
    assert plus["chrf++"] != pytest.approx(got["chrf"])


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory):
    sentencepiece = pytest.importorskip("sentencepiece")
    root = tmp_path_factory.mktemp("spm")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(HYPS + REFS + ["the quick brown fox jumps over the lazy dog"] * 3), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(root / "tiny"), vocab_size=40,
                                             model_type="unigram", minloglevel=2)
    (root / "models").mkdir()
    (root / "tiny.model").rename(root / "models" / "flores200sacrebleuspm")
    return root / "models" / "flores200sacrebleuspm"


def test_spbleu_from_a_local_model_equals_sacrebleu_flores200(spm_file, monkeypatch):
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers import tokenizer_spm

    from xlt.eval.mt import make_metrics, score, signatures

    metrics = make_metrics(spm_model=spm_file)
    got = score(HYPS, REFS, metrics)
    # sacrebleu's own flores200 tokenizer, pointed at the same file (no download)
    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(spm_file.parent.parent))
    want = BLEU(tokenize="flores200").corpus_score(HYPS, [REFS]).score
    assert got["spbleu"] == pytest.approx(want, abs=1e-9)
    assert got["spbleu"] != pytest.approx(got["bleu"])
    assert "tok:flores200" in signatures(metrics)["spbleu"]


def test_missing_spm_file_is_a_config_error(tmp_path):
    from xlt.errors import ConfigError
    from xlt.eval.mt import make_metrics

    with pytest.raises(ConfigError, match="no such SentencePiece model file"):
        make_metrics(spm_model=tmp_path / "nope.model")


def test_tier_averages_and_table():
    from xlt.eval.mt import format_comparison, format_direction_table, order_languages, tier_averages

    tiers = {"aa": "low", "bb": "high", "cc": "med"}
    scores = {("aa", "bb"): 10.0, ("bb", "aa"): 20.0, ("bb", "cc"): 30.0, ("cc", "aa"): 40.0}
    assert order_languages(["aa", "bb", "cc"], tiers) == ["bb", "cc", "aa"]
    avg = tier_averages(scores, tiers)
    assert avg["all"] == 25.0
    assert avg["by_source_tier"] == {"high": 25.0, "low": 10.0, "med": 40.0}
    assert avg["by_target_tier"] == {"high": 10.0, "low": 30.0, "med": 30.0}
    assert avg["by_tier_pair"]["high->low"] == 20.0
    table = format_direction_table(scores, tiers, title="t")
    lines = table.splitlines()
    assert lines[2].split() == ["bb", "cc", "aa", "avg"]
    assert lines[3].split() == ["high", "bb", "-", "30.0", "20.0", "25.0"]
    comparison = format_comparison({"x": scores}, tiers, metric="bleu")
    assert comparison.splitlines()[1].split() == ["system", "all", "src:high", "src:med", "src:low",
                                                  "tgt:high", "tgt:med", "tgt:low"]
    assert comparison.splitlines()[2].split()[:2] == ["x", "25.00"]


def test_heatmap_figure():
    from xlt.eval.mt import plot_direction_heatmap

    fig = plot_direction_heatmap({("aa", "bb"): 1.0, ("bb", "aa"): 2.0}, {"aa": "high"}, title="t")
    assert fig.axes[0].get_title() == "t"


@pytest.fixture(scope="module")
def tiny_translation_model():
    from xlt.testing import tiny_model, train_nllb_tokenizer

    tokenizer = train_nllb_tokenizer(["eng_Latn", "deu_Latn", "fra_Latn"])
    return tiny_model("m2m100", tokenizer, seed=3), tokenizer


def test_encoding_follows_the_nllb_convention(tiny_translation_model):
    from xlt.translation import encode_texts

    _, tokenizer = tiny_translation_model
    tokenizer.src_lang, tokenizer.tgt_lang = "eng_Latn", "deu_Latn"
    reference = tokenizer("The cat sat on the mat.", text_target="Der Hund schläft im Garten.")
    assert encode_texts(tokenizer, ["The cat sat on the mat."], "eng_Latn", 64)[0] == reference["input_ids"]
    assert encode_texts(tokenizer, ["Der Hund schläft im Garten."], "deu_Latn", 64)[0] == reference["labels"]
    assert len(encode_texts(tokenizer, ["The cat sat on the mat."], "eng_Latn", 4)[0]) == 4


def test_mixed_direction_batches_equal_forced_bos_generation(tiny_translation_model):
    from xlt.eval.mt import translate_many
    from xlt.translation import encode_texts

    model, tokenizer = tiny_translation_model
    items = [("The cat sat on the mat.", "eng_Latn", "deu_Latn"), ("Le chat dort sur le lit.", "fra_Latn", "eng_Latn"),
             ("Hello world.", "eng_Latn", "fra_Latn")]
    got = translate_many(model, tokenizer, items, num_beams=1, batch_size=8, max_new_tokens=6)
    for (text, src, tgt), hyp in zip(items, got):  # one direction at a time, with forced_bos_token_id
        ids = torch.tensor(encode_texts(tokenizer, [text], src, 64))
        with torch.no_grad():
            out = model.generate(input_ids=ids, forced_bos_token_id=tokenizer.convert_tokens_to_ids(tgt),
                                 max_new_tokens=7, num_beams=1, do_sample=False)
        assert out[0, 1].item() == tokenizer.convert_tokens_to_ids(tgt)
        assert tokenizer.decode(out[0, 2:].tolist(), skip_special_tokens=True).strip() == hyp


def test_unknown_language_token_is_a_model_error(tiny_translation_model):
    from xlt.errors import ModelError
    from xlt.eval.mt import translate

    model, tokenizer = tiny_translation_model
    with pytest.raises(ModelError, match="tokenizer has no token for language 'qaa'"):
        translate(model, tokenizer, ["x"], "qaa", "eng_Latn")


def test_cli_errors_are_one_line(xlt_cli, tmp_path):
    from xlt.formats import ParallelPair, write_jsonl

    data = write_jsonl(tmp_path / "test.jsonl", [ParallelPair("eng", "deu", "a", "b")])
    result = xlt_cli("eval", "mt", "--data", data, "--system", "bad/name=x", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 2 and result.stderr.strip().startswith("xlt: error:")
    assert "system name 'bad/name'" in result.stderr
    result = xlt_cli("eval", "mt", "--data", data, "--model", tmp_path, "--directions", "eng-fra",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 2 and "has no 'eng-fra' pairs" in result.stderr


@pytest.mark.parametrize("options,limit", [
    ({}, lambda width: 200),                                    # fairseq-generate: a = 0, b = 200
    ({"max_len_a": 1.5, "max_len_b": 3}, lambda width: int(1.5 * width + 3)),
    ({"max_new_tokens": 7}, lambda width: 7),
])
def test_generation_length_limit_is_fairseqs_by_default(tiny_translation_model, monkeypatch, options, limit):
    from xlt.eval.mt import encode_texts, translate_many

    model, tokenizer = tiny_translation_model
    items = [("The cat sat on the mat.", "eng_Latn", "deu_Latn"), ("Hello.", "fra_Latn", "eng_Latn")]
    seen = []
    real = model.generate

    def recording(**kwargs):
        seen.append((kwargs["input_ids"].shape[1], kwargs["max_new_tokens"]))
        return real(**{**kwargs, "max_new_tokens": 2})

    monkeypatch.setattr(model, "generate", recording)
    translate_many(model, tokenizer, items, num_beams=1, batch_size=8, **options)
    width = max(len(encode_texts(tokenizer, [text], src, 256)[0]) for text, src, _ in items)
    assert seen == [(width, limit(width))]


# --------------------------------------------------------------------------------------------
# Wrong-language rate beside the scores

EN = ["The children walked to school together because it was raining.", "My brother bought a new car yesterday."]
DE = ["Die Kinder gingen zusammen zur Schule, weil es regnete.", "Mein Bruder hat gestern ein neues Auto gekauft."]


def _scripted_systems(monkeypatch, outputs):
    """Systems that 'translate' by a script: each source text -> a fixed hypothesis."""
    import xlt.eval.mt as mt

    loaded = []

    def load_system(path, **kwargs):
        loaded.append(path)
        return None, None, None, None

    monkeypatch.setattr(mt, "_load_system", load_system)
    monkeypatch.setattr(mt, "translate_many", lambda model, tok, items, **kw: [outputs[text] for text, _, _ in items])
    return loaded


def test_wrong_language_rate_per_direction(monkeypatch, caplog):
    pytest.importorskip("py3langid")
    from xlt.eval.mt import evaluate
    from xlt.formats import ParallelPair

    pairs = [ParallelPair("eng_Latn", "deu_Latn", EN[0], DE[0]), ParallelPair("eng_Latn", "deu_Latn", EN[1], DE[1]),
             ParallelPair("deu_Latn", "eng_Latn", DE[0], EN[0]), ParallelPair("deu_Latn", "eng_Latn", DE[1], EN[1]),
             ParallelPair("eng_Latn", "qaa", EN[0], "zo ba ke")]
    # into German: one right, one left in English; into English: both right; qaa: unknown to the identifier
    outputs = {EN[0]: DE[0], EN[1]: EN[1], DE[0]: EN[0], DE[1]: EN[1]}
    _scripted_systems(monkeypatch, {**outputs})
    import xlt.eval.language_id as language_id

    monkeypatch.setattr(language_id, "_warned", set())
    with caplog.at_level("WARNING", logger="xlt"):
        result = evaluate(pairs, {"sys": "unused"}, progress=False)
        evaluate(pairs, {"sys": "unused"}, progress=False)  # the same warning is not given twice
    directions = result.systems["sys"]["directions"]
    assert directions[("eng_Latn", "deu_Latn")]["wrong_language_rate"] == 0.5
    assert directions[("deu_Latn", "eng_Latn")]["wrong_language_rate"] == 0.0
    assert directions[("eng_Latn", "qaa")]["wrong_language_rate"] is None
    assert [r.get("hyp_lang") for r in result.hypotheses["sys"]] == ["de", "en", "en", "en", None]
    assert [r.message for r in caplog.records] == [
        "xlt: no wrong-language rate for qaa: the language identifier (py3langid) does not know it"]
    off = evaluate(pairs, {"sys": "unused"}, progress=False, wrong_language="off")
    assert all(v["wrong_language_rate"] is None for v in off.systems["sys"]["directions"].values())


def test_wrong_language_on_refuses_an_unknown_target_before_loading(monkeypatch):
    pytest.importorskip("py3langid")
    from xlt.errors import ConfigError
    from xlt.eval.mt import evaluate
    from xlt.formats import ParallelPair

    loaded = _scripted_systems(monkeypatch, {EN[0]: "zo ba ke"})
    with pytest.raises(ConfigError, match="language 'qaa': the language identifier"):
        evaluate([ParallelPair("eng_Latn", "qaa", EN[0], "zo ba ke")], {"sys": "unused"}, progress=False,
                 wrong_language="on")
    assert loaded == []


def test_cli_reports_the_wrong_language_rate(xlt_cli, tmp_path, tiny_translation_model):
    """The rates in mt_scores.json are those py3langid itself gives the written hypotheses."""
    pytest.importorskip("py3langid")
    import json

    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from xlt.formats import ParallelPair, write_jsonl

    model, tokenizer = tiny_translation_model
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    data = write_jsonl(tmp_path / "test.jsonl", [ParallelPair("eng_Latn", "deu_Latn", e, d) for e, d in zip(EN, DE)]
                       + [ParallelPair("deu_Latn", "eng_Latn", d, e) for e, d in zip(EN, DE)])
    out = tmp_path / "out"
    result = xlt_cli("eval", "mt", "--data", data, "--model", tmp_path / "m", "--num-beams", "1",
                     "--max-new-tokens", "8", "--wrong-language", "on", "--out", out, "--device", "cpu",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "wrong-language rate, %" in result.stdout
    scores = json.loads((out / "mt_scores.json").read_text())
    hyps = [json.loads(line) for line in (out / "hypotheses.m.jsonl").read_text().splitlines()]
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    for direction, want in (("eng_Latn-deu_Latn", "de"), ("deu_Latn-eng_Latn", "en")):
        rows = [h for h in hyps if f"{h['src_lang']}-{h['tgt_lang']}" == direction]
        wrong = [not h["hyp"].strip() or identifier.classify(h["hyp"])[0] != want for h in rows]
        assert scores["systems"]["m"]["directions"][direction]["wrong_language_rate"] == sum(wrong) / len(rows)
    assert "wrong_language_rate" in scores["systems"]["m"]["averages"]
    assert scores["xlt_versions"]["py3langid"] is not None
