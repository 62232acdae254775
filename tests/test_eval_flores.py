"""FLORES in ``xlt eval suite``: directions, FLORES+ files in the hub schema, scores equal to
sacrebleu's command line on the same hypotheses and references, the wrong-language rate, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_eval_benchmarks import write_jsonl, write_parquet
from xlt.errors import ConfigError, DataError

SENTENCES = {
    "eng_Latn": ["The museum opened in the year 1901.", "Rain fell all week, so the river rose.",
                 "The team trained every morning before the match."],
    "fra_Latn": ["Le musée a ouvert ses portes en 1901.", "Il a plu toute la semaine, alors la rivière a monté.",
                 "L'équipe s'entraînait chaque matin avant le match."],
    "deu_Latn": ["Das Museum wurde im Jahr 1901 eröffnet.", "Es regnete die ganze Woche, also stieg der Fluss.",
                 "Die Mannschaft trainierte jeden Morgen vor dem Spiel."],
}


def flores_rows(lang: str, ids=(1, 2, 3)) -> list[dict]:
    """Rows in openlanguagedata/flores_plus's schema."""
    code, script = lang.split("_")
    return [{"id": k, "iso_639_3": code, "iso_15924": script, "glottocode": "xxxx1234", "text": text,
             "url": f"https://en.wikinews.org/wiki/{k}", "domain": "wikinews", "topic": "news", "has_image": False,
             "has_hyperlink": False, "last_updated": "2.1"} for k, text in zip(ids, SENTENCES[lang])]


@pytest.fixture()
def flores_dir(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    root = tmp_path / "flores"
    write_jsonl(root / "eng_Latn.jsonl", flores_rows("eng_Latn"))
    write_parquet(root / "fra_Latn.parquet", flores_rows("fra_Latn"))
    write_jsonl(root / "deu_Latn.jsonl", flores_rows("deu_Latn"))
    write_jsonl(root / "fra_Latn.jsonl", flores_rows("fra_Latn"))
    return root


def test_directions():
    from xlt.eval.flores import parse_directions

    langs = ["eng_Latn", "fra_Latn", "deu_Latn"]
    assert parse_directions(["en-xx"], langs) == [("eng_Latn", "fra_Latn"), ("eng_Latn", "deu_Latn")]
    assert parse_directions(["xx-en"], langs, "fra_Latn") == [("eng_Latn", "fra_Latn"), ("deu_Latn", "fra_Latn")]
    assert len(parse_directions(["all"], langs)) == 6
    assert parse_directions(["en-xx", "xx-en", "deu_Latn-fra_Latn", "eng_Latn-fra_Latn"], langs) == [
        ("eng_Latn", "fra_Latn"), ("eng_Latn", "deu_Latn"), ("fra_Latn", "eng_Latn"), ("deu_Latn", "eng_Latn"),
        ("deu_Latn", "fra_Latn")]
    assert parse_directions(["zh-CN-en"], ["en", "zh-CN"]) == [("zh-CN", "en")]  # a code holding a '-'
    for spec, message in ((["eng_Latn-spa_Latn"], "does not name two of --languages"),
                          (["eng_Latn-eng_Latn"], "translates a language into itself"),
                          (["english"], "cannot read 'english'")):
        with pytest.raises(ConfigError, match=message):
            parse_directions(spec, langs)
    with pytest.raises(ConfigError, match="--pivot: 'spa_Latn' is not in --languages"):
        parse_directions(["en-xx"], langs, "spa_Latn")


def test_flores_plus_files_and_their_errors(flores_dir, tmp_path):
    from xlt.eval.flores import direction_items, read_sentences

    pattern = str(flores_dir / "{lang}.jsonl")
    en, fr = read_sentences(pattern, "eng_Latn"), read_sentences(str(flores_dir / "{lang}.parquet"), "fra_Latn")
    assert list(en) == ["1", "2", "3"] and fr["2"] == SENTENCES["fra_Latn"][1]
    items = direction_items(en, fr, "eng_Latn", "fra_Latn", limit=2)
    assert items == [("1", SENTENCES["eng_Latn"][0], SENTENCES["fra_Latn"][0]),
                     ("2", SENTENCES["eng_Latn"][1], SENTENCES["fra_Latn"][1])]
    # the same sentences matched by id, whatever the file order
    write_jsonl(tmp_path / "shuffled" / "fra_Latn.jsonl", flores_rows("fra_Latn")[::-1])
    shuffled = read_sentences(str(tmp_path / "shuffled" / "{lang}.jsonl"), "fra_Latn")
    assert direction_items(en, shuffled, "eng_Latn", "fra_Latn") == direction_items(en, fr, "eng_Latn", "fra_Latn")
    with pytest.raises(DataError, match=r"eng_Latn and fra_Latn hold different sentence ids \(1 only in eng_Latn, "
                                        r"0 only in fra_Latn, e.g. '3'\)"):
        direction_items(en, {k: v for k, v in fr.items() if k != "3"}, "eng_Latn", "fra_Latn")
    bad = write_jsonl(tmp_path / "bad" / "eng_Latn.jsonl", [flores_rows("eng_Latn")[0], {"id": 2, "text": " "}])
    with pytest.raises(DataError, match=str(bad) + r" item 2: field 'text': flores: missing or empty"):
        read_sentences(str(tmp_path / "bad" / "{lang}.jsonl"), "eng_Latn")
    write_jsonl(tmp_path / "dup" / "eng_Latn.jsonl", flores_rows("eng_Latn", ids=(1, 2, 1)))
    with pytest.raises(DataError, match=r"item 3: field 'id': flores: sentence id 1 appears twice"):
        read_sentences(str(tmp_path / "dup" / "{lang}.jsonl"), "eng_Latn")


def _sacrebleu_cli(ref, hyp, *args, env=None) -> float:
    proc = subprocess.run([sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-b", "-w", "4", *args],
                          capture_output=True, text=True, env=env, check=True)
    return float(proc.stdout.strip())


@pytest.mark.slow
def test_suite_translates_the_directions_and_scores_as_sacrebleus_command_line(tiny_llama_dir, flores_dir, tmp_path,
                                                                               capsys):
    import os

    import py3langid
    import sentencepiece

    from xlt.cli import main

    spm_root = tmp_path / "spm"
    (spm_root / "models").mkdir(parents=True)
    corpus = spm_root / "corpus.txt"
    corpus.write_text("\n".join(s for lang in SENTENCES.values() for s in lang) * 3, encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(spm_root / "tiny"), vocab_size=60,
                                             model_type="unigram", minloglevel=2)
    spm = (spm_root / "tiny.model").rename(spm_root / "models" / "flores200sacrebleuspm")
    out = tmp_path / "suite"
    argv = ["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "flores",
            "--languages", "eng_Latn,fra_Latn,deu_Latn", "--directions", "en-xx", "deu_Latn-fra_Latn",
            "--data", f"flores={flores_dir}/{{lang}}.jsonl", "--spm-model", str(spm), "--max-new-tokens", "8",
            "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    directions = ["eng_Latn-fra_Latn", "eng_Latn-deu_Latn", "deu_Latn-fra_Latn"]
    assert sorted(report["results"]["flores"]) == sorted(directions) and report["tasks"]["flores"]["directions"] == directions
    env = dict(os.environ, SACREBLEU=str(spm_root))
    hyps_seen = []
    for direction in directions:
        part = json.loads((out / "parts" / f"flores.{direction}.json").read_text())
        hyps = [p["hyp"] for p in part["predictions"]]
        refs = [p["ref"] for p in part["predictions"]]
        tgt = direction.split("-")[1]
        assert refs == SENTENCES[tgt] and len(part["items"]["chrf++"]) == 3
        hyps_seen += hyps
        (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
        (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
        metrics = report["results"]["flores"][direction]
        assert metrics["chrf++"] == pytest.approx(
            _sacrebleu_cli(tmp_path / "ref.txt", tmp_path / "hyp.txt", "-m", "chrf", "--chrf-word-order", "2"), abs=1e-4)
        assert metrics["bleu"] == pytest.approx(_sacrebleu_cli(tmp_path / "ref.txt", tmp_path / "hyp.txt", "-m", "bleu"),
                                                abs=1e-4)
        assert metrics["spbleu"] == pytest.approx(_sacrebleu_cli(tmp_path / "ref.txt", tmp_path / "hyp.txt", "-m", "bleu",
                                                                 "-tok", "flores200", env=env), abs=1e-4)
        # the wrong-language rate: an independent call of the identifier on the same outputs
        expected = tgt[:2]
        wrong = sum(not h.strip() or py3langid.classify(h)[0] != expected for h in hyps) / len(hyps)
        assert metrics["wrong_language_rate"] == pytest.approx(wrong) and metrics["n"] == 3
    assert any(h.strip() for h in hyps_seen)  # the comparison is not of empty outputs only
    markdown = (out / "results.md").read_text()
    assert "FLORES translation, 0-shot, beam 1" in markdown and "| flores (spBLEU) |" in markdown
    assert not (out / "heatmap.png").exists()  # no multiple-choice task
    # resumed: nothing left to translate
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 scored, 3 from earlier runs" in capsys.readouterr().out
    # xlt eval compare pairs runs by sentence-level chrF++, shown in chrF++ points
    import shutil

    from sacrebleu.metrics import CHRF

    shutil.copytree(out, tmp_path / "again")
    assert main(["eval", "compare", str(out), str(tmp_path / "again")]) == 0
    table = capsys.readouterr().out
    part = json.loads((out / "parts" / "flores.eng_Latn-fra_Latn.json").read_text())
    mean = sum(CHRF(word_order=2).sentence_score(p["hyp"], [p["ref"]]).score for p in part["predictions"]) / 3
    assert f"| flores | chrf++ | eng_Latn-fra_Latn | 3 | {mean:.1f} | {mean:.1f} | +0.0 [+0.0, +0.0] |" in table


def test_suite_flores_bad_input_fails_before_the_model(flores_dir, tmp_path, capsys):
    from xlt.cli import main

    def run(*extra):
        argv = ["eval", "suite", "--model", str(tmp_path / "no-model"), "--tasks", "flores", "--languages",
                "eng_Latn,fra_Latn", "--data", f"flores={flores_dir}/{{lang}}.jsonl", "--out", str(tmp_path / "o"),
                *extra]
        code = main(argv)
        return code, capsys.readouterr().err.strip()

    code, err = run("--spm-model", str(tmp_path / "nope.model"))
    assert code == 2 and "no such SentencePiece model file" in err and err.count("\n") == 0
    code, err = run("--shots", "2")
    assert code == 2 and "flores: translated 0-shot; --shots 2" in err
    code, err = run("--directions", "eng_Latn-spa_Latn")
    assert code == 2 and "does not name two of --languages" in err
    write_jsonl(tmp_path / "short" / "eng_Latn.jsonl", flores_rows("eng_Latn")[:2])
    write_jsonl(tmp_path / "short" / "fra_Latn.jsonl", flores_rows("fra_Latn"))
    code, err = run("--data", f"flores={tmp_path}/short/{{lang}}.jsonl")
    assert code == 2 and "eng_Latn and fra_Latn hold different sentence ids" in err
    assert not (tmp_path / "o").exists()
