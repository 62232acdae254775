"""``xlt eval suite``: every (task, language) scored as ``xlt eval icl`` scores it, the summary files,
resuming, and refusing a directory written with other settings."""

from __future__ import annotations

import json

import pytest

from test_eval_benchmarks import BELEBELE_ROWS, SIB_ROWS, write_jsonl, write_parquet


@pytest.fixture()
def suite_data(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    root = tmp_path / "data"
    for lang in ("eng_Latn", "fra_Latn"):
        write_jsonl(root / "belebele" / f"{lang}.jsonl", [dict(r, dialect=lang) for r in BELEBELE_ROWS])
        write_parquet(root / "sib" / lang / "test.parquet", SIB_ROWS[:3] if lang == "fra_Latn" else SIB_ROWS)
        write_jsonl(root / "sib" / lang / "dev.jsonl", SIB_ROWS[::-1])
    return root


def _argv(model, root, out, *extra):
    return ["eval", "suite", "--model", str(model), "--tasks", "belebele,sib200", "--languages", "eng_Latn",
            "fra_Latn", "--data", f"belebele={root}/belebele/{{lang}}.jsonl",
            f"sib200={root}/sib/{{lang}}/test.parquet", "--out", str(out), "--device", "cpu", *extra]


@pytest.mark.slow
def test_suite_scores_like_icl_writes_summaries_and_resumes(tiny_llama_dir, suite_data, tmp_path, capsys,
                                                            monkeypatch):
    import xlt.eval.suite as suite
    from xlt.cli import main
    from xlt.eval.icl import evaluate_icl
    from xlt.eval.readers import belebele_items, dataset_rows, sib200_items
    from xlt.eval.templates import load_template
    from xlt.models import load_model, load_tokenizer

    out = tmp_path / "suite"
    scored = []
    real = suite.evaluate_icl

    def counting(*args, **kwargs):
        scored.append(tuple(kwargs["test"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(suite, "evaluate_icl", counting)
    argv = _argv(tiny_llama_dir, suite_data, out, "--limit", "3")
    assert main(argv) == 0, capsys.readouterr().err
    assert len(scored) == 4
    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["limit"] == 3 and report["xlt_versions"]["torch"]
    assert report["revision"] is None  # a local model has no hub commit
    assert report["tasks"]["belebele"]["prompts"]["eng_Latn"].startswith("P: {flores_passage}")
    # the same numbers as xlt eval icl's evaluation of the same items
    model, tokenizer = load_model(tiny_llama_dir, dtype="float32").eval(), load_tokenizer(tiny_llama_dir)
    for task, read, path in (("belebele", belebele_items, "belebele/{lang}.jsonl"),
                             ("sib200", sib200_items, "sib/{lang}/test.parquet")):
        for lang in ("eng_Latn", "fra_Latn"):
            items = read(dataset_rows(suite_data / path.format(lang=lang)))[:3]
            table, _ = evaluate_icl(model, tokenizer, template=load_template(task), test={lang: items},
                                    scoring="lm-eval")
            assert report["results"][task][lang] == pytest.approx(table[lang])
    markdown = (out / "results.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| sib200 |"))
    en, fr = report["results"]["sib200"]["eng_Latn"]["acc"], report["results"]["sib200"]["fra_Latn"]["acc"]
    assert row == f"| sib200 | {100 * en:.1f} | {100 * fr:.1f} | {100 * (en + fr) / 2:.1f} |"
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resume: a lost part is scored again, the others are read back
    (out / "parts" / "sib200.fra_Latn.json").unlink()
    scored.clear()
    assert main(argv) == 0
    assert scored == [("fra_Latn",)]
    assert json.loads((out / "results.json").read_text())["results"] == report["results"]
    # other settings in the same directory: refused before any work
    capsys.readouterr()
    assert main(_argv(tiny_llama_dir, suite_data, out, "--limit", "2")) == 2
    err = capsys.readouterr().err
    assert "belebele.eng_Latn.json: computed with other settings (limit); give another --out" in err
    assert scored == [("fra_Latn",)]
    # k-shot: demonstrations from --dev, drawn as xlt eval icl draws them
    shot_out = tmp_path / "shots"
    assert main(["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "sib200", "--languages", "eng_Latn",
                 "--data", f"sib200={suite_data}/sib/{{lang}}/test.parquet", "--dev",
                 f"sib200={suite_data}/sib/{{lang}}/dev.jsonl", "--shots", "2", "--seed", "3",
                 "--out", str(shot_out), "--device", "cpu"]) == 0
    items = sib200_items(dataset_rows(suite_data / "sib" / "eng_Latn" / "test.parquet"))
    dev = sib200_items(dataset_rows(suite_data / "sib" / "eng_Latn" / "dev.jsonl"))
    table, _ = evaluate_icl(model, tokenizer, template=load_template("sib200"), test={"eng_Latn": items},
                            dev={"eng_Latn": dev}, shots=2, seed=3, scoring="lm-eval")
    assert json.loads((shot_out / "results.json").read_text())["results"]["sib200"]["eng_Latn"] == \
        pytest.approx(table["eng_Latn"])


def test_suite_bad_input_fails_before_the_model(suite_data, tmp_path, capsys):
    from xlt.cli import main

    missing_model = tmp_path / "no-model"
    assert main(["eval", "suite", "--model", str(missing_model), "--tasks", "xnli", "--languages", "en",
                 "--out", str(tmp_path / "o")]) == 2
    assert "xnli: no hub dataset for this task; give --data xnli=PATTERN" in capsys.readouterr().err
    assert main(["eval", "suite", "--model", str(missing_model), "--tasks", "belebele", "--languages", "eng_Latn",
                 "--shots", "2", "--data", f"belebele={suite_data}/belebele/{{lang}}.jsonl",
                 "--out", str(tmp_path / "o")]) == 2
    assert "belebele: --shots 2 needs demonstrations; give --dev belebele=PATTERN" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad" / "eng_Latn.jsonl", [dict(BELEBELE_ROWS[0], correct_answer_num="9")])
    assert main(["eval", "suite", "--model", str(missing_model), "--tasks", "belebele", "--languages", "eng_Latn",
                 "--data", f"belebele={bad.parent}/{{lang}}.jsonl", "--out", str(tmp_path / "o")]) == 2
    assert "field 'correct_answer_num': belebele: answer number '9'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # a template file is a task too, known by its 'task' name (here the data is read, then the
    # missing model is reported)
    from importlib import resources

    mine = tmp_path / "my_topics.yaml"
    mine.write_text(resources.files("xlt.eval").joinpath("templates", "sib200.yaml").read_text("utf-8")
                    .replace("task: sib200", "task: topics"), encoding="utf-8")
    assert main(["eval", "suite", "--model", str(missing_model), "--tasks", str(mine), "--languages", "eng_Latn",
                 "--data", f"topics={suite_data}/sib/{{lang}}/test.parquet", "--out", str(tmp_path / "o")]) == 2
    assert "no-model" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_suite_bits_per_byte(tiny_llama_dir, tmp_path, capsys):
    """--corpus: the language's bits per byte, as xlt.eval.ppl computes it on the same text."""
    from _pretrain_helpers import write_corpus

    from xlt.cli import main
    from xlt.eval.ppl import sliding_window_perplexity, token_stream
    from xlt.models import load_model, load_tokenizer

    corpus = write_corpus(tmp_path / "en.txt", 12, seed=2)
    out = tmp_path / "ppl-suite"
    argv = ["eval", "suite", "--model", str(tiny_llama_dir), "--languages", "en", "--corpus", f"en={corpus}",
            "--context", "16", "--last-n", "8", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    model, tokenizer = load_model(tiny_llama_dir, dtype="float32").eval(), load_tokenizer(tiny_llama_dir)
    ids, token_bytes = token_stream(corpus.read_text().splitlines(), tokenizer, with_bytes=True)
    want = sliding_window_perplexity(model, ids, context=16, last_n=8, token_bytes=token_bytes)
    got = report["results"]["ppl"]["en"]
    assert got["bits_per_byte"] == pytest.approx(want["bits_per_byte"], rel=1e-6)
    assert got["n_bytes"] == want["n_bytes"] and report["tasks"]["ppl"]["context"] == 16
    assert f"| ppl | {got['bits_per_byte']:.3f} | {got['bits_per_byte']:.3f} |" in (out / "results.md").read_text()
    assert not (out / "heatmap.png").exists()  # no accuracy to draw
    capsys.readouterr()
    assert main([("32" if arg == "16" else arg) for arg in argv]) == 2  # another --context
    assert "ppl.en.json: computed with other settings (context)" in capsys.readouterr().err


def test_suite_global_mmlu_reports_the_cultural_sensitivity_subsets(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    """Global-MMLU in the suite, 2-shot from its dev files: acc, acc_CA and acc_CS per language in
    results.json, and a table per label in results.md."""
    import datasets

    from test_eval_benchmarks import GMMLU_DEV, GMMLU_TEST
    from xlt.cli import main

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    for lang in ("en", "sw"):
        write_jsonl(tmp_path / "gm" / lang / "test.jsonl", GMMLU_TEST)
        write_parquet(tmp_path / "gm" / lang / "dev.parquet", GMMLU_DEV)
    out = tmp_path / "suite"
    assert main(["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "global_mmlu", "--languages", "en,sw",
                 "--data", f"global_mmlu={tmp_path}/gm/{{lang}}/test.jsonl", "--dev",
                 f"global_mmlu={tmp_path}/gm/{{lang}}/dev.parquet", "--shots", "2", "--out", str(out),
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    for lang in ("en", "sw"):
        row = report["results"]["global_mmlu"][lang]
        assert row["n"] == 4 and row["n_CA"] == 2 and row["n_CS"] == 1
    markdown = (out / "results.md").read_text()
    assert "global_mmlu accuracy (%) per cultural_sensitivity_label, 2-shot" in markdown
    ca = [report["results"]["global_mmlu"][lang]["acc_CA"] for lang in ("en", "sw")]
    assert f"| global_mmlu (CA) | {100 * ca[0]:.1f} | {100 * ca[1]:.1f} | {50 * (ca[0] + ca[1]):.1f} |" in markdown


WORLD_POLARITY = """\
# the synthetic world's polarity task as a template: its choice files, every language in one file
task: world_polarity
reader: jsonl
label_field: label
labels: [0, 1]
scoring: lm-eval
prompts:
  default:
    template: "{context}{choice}"
    choices: ["{choices[0]}", "{choices[1]}"]
"""


@pytest.mark.slow
def test_suite_on_a_world_model(tmp_path, capsys, monkeypatch):
    """A model pre-trained on a small synthetic world: its polarity task (a template over the
    world's files), FLORES-style translation built from its parallel data, and bits per byte of
    its corpus, in one suite run; each number equals what the underlying call (or sacrebleu) gives on
    the same inputs."""
    import datasets
    import sacrebleu

    from xlt.cli import main
    from xlt.demo.transfer import pretrain_lm
    from xlt.eval.icl import evaluate_icl
    from xlt.eval.ppl import sliding_window_perplexity, token_stream
    from xlt.eval.templates import load_template
    from xlt.formats import read_records
    from xlt.models import load_model, load_tokenizer
    from xlt.synth import WorldConfig, generate_world, write_world

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    world = tmp_path / "world"
    write_world(generate_world(WorldConfig(seed=5, corpus_lines=600, task_train=20, task_dev=8, task_test=12,
                                           translation_train=8, translation_dev=4, translation_test=6,
                                           parallel_train=12, vocab_size=300)), world)
    langs = ["qaa", "qab"]
    model_dir = tmp_path / "model"
    pretrain_lm([world / "corpus" / f"{c}.txt" for c in langs], world / "tokenizer", model_dir,
                {"model": {"layers": 2, "hidden": 32, "heads": 2, "mlp": 64}, "seq_len": 32, "steps": 20,
                 "batch_size": 8, "lr": 3e-3, "warmup": 2}, seed=0, device="cpu", progress=False)
    template_file = tmp_path / "world_polarity.yaml"
    template_file.write_text(WORLD_POLARITY, encoding="utf-8")
    pairs = read_records(world / "parallel" / "qaa-qab.dev.jsonl", "parallel")[:4]
    for lang, side in (("qaa", "src"), ("qab", "tgt")):
        write_jsonl(tmp_path / "flores" / f"{lang}.jsonl",
                    [{"id": k, "text": getattr(p, side)} for k, p in enumerate(pairs, 1)])
    out = tmp_path / "suite"
    assert main(["eval", "suite", "--model", str(model_dir), "--tasks", str(template_file), "flores",
                 "--languages", "qaa,qab", "--data", f"world_polarity={world}/tasks/polarity/test.choice.jsonl",
                 f"flores={tmp_path}/flores/{{lang}}.jsonl", "--directions", "en-xx", "xx-en",
                 "--max-new-tokens", "12", "--corpus", f"qaa={world}/corpus/qaa.txt",
                 "--context", "32", "--last-n", "16", "--out", str(out), "--device", "cpu"]) == 0, \
        capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())["results"]
    model, tokenizer = load_model(model_dir, dtype="float32").eval(), load_tokenizer(model_dir)
    items = {lang: [it for it in read_records(world / "tasks" / "polarity" / "test.choice.jsonl", "choice")
                    if it.lang == lang] for lang in langs}
    for lang in langs:
        assert results["world_polarity"][lang]["n"] == len(items[lang]) == 12
    template = load_template(str(template_file))
    from xlt.eval.cli import read_eval_split

    test = read_eval_split(f"{world}/tasks/polarity/test.choice.jsonl", template, langs)
    table, _ = evaluate_icl(model, tokenizer, template=template, test=test, scoring="lm-eval")
    for lang in langs:
        assert results["world_polarity"][lang]["acc"] == pytest.approx(table[lang]["acc"])
    for direction in ("qaa-qab", "qab-qaa"):
        part = json.loads((out / "parts" / f"flores.{direction}.json").read_text())
        hyps, refs = [p["hyp"] for p in part["predictions"]], [p["ref"] for p in part["predictions"]]
        assert results["flores"][direction]["chrf++"] == pytest.approx(
            sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    texts = (world / "corpus" / "qaa.txt").read_text(encoding="utf-8").splitlines()
    ids, token_bytes = token_stream(texts, tokenizer, with_bytes=True)
    bpb = sliding_window_perplexity(model, ids, context=32, last_n=16, token_bytes=token_bytes)["bits_per_byte"]
    assert results["ppl"]["qaa"]["bits_per_byte"] == pytest.approx(bpb, rel=1e-6)
