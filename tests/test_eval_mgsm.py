"""MGSM: the harness's number extraction and exact match on constructed strings, its prompts,
the reader on tiny files in the real schema, batched generation, and the suite end to end."""

from __future__ import annotations

import json

import pytest

from xlt.errors import DataError

# (completion, what the harness's flexible-extract keeps), worked out by hand from its pattern
# (-?[$0-9.,]{2,})|(-?[0-9]+), last match, first non-empty group, stripped
EXTRACTIONS = [
    ("18", "18"),
    ("7", "7"),  # one digit: only the second alternative matches
    ("The answer is 42.", "42."),
    ("I paid $1,234.50 for 3 apples", "3"),  # the last match wins
    ("-5 degrees", "-5"),
    ("It costs -12 dollars", "-12"),
    ("1, 2, 3", "3"),
    ("no number here", "[invalid]"),
    ("", "[invalid]"),
    (",,", ",,"),
    ("Antwort: 1.000", "1.000"),
    ("x = 3.5. So", "3.5."),
]

# (completion, gold, exact_match after remove_whitespace, exact_match after flexible-extract)
SCORES = [
    ("18", "18", 1.0, 1.0),
    (" 18\t", "18", 1.0, 1.0),  # stripped
    ("18 eggs", "18", 0.0, 1.0),
    ("$1,234.", "1234", 1.0, 1.0),  # punctuation is ignored on both sides
    ("18.0", "18", 0.0, 0.0),  # "180" != "18", as in the harness
    ("She has 5 and then 18", "18", 0.0, 1.0),
    ("18 and then 5", "18", 0.0, 0.0),
    ("-3", "-3", 1.0, 1.0),
    ("3", "-3", 1.0, 1.0),  # "-" is punctuation: both become "3", so the harness counts it right
    ("nothing", "0", 0.0, 0.0),
]


def test_extract_number_follows_the_harness_rules():
    from xlt.eval.mgsm import extract_number

    for text, want in EXTRACTIONS:
        assert extract_number(text) == want, text


def test_scores_follow_the_harness_rules():
    from xlt.eval.mgsm import score_completion

    for completion, gold, strict, flexible in SCORES:
        got = score_completion(completion, gold)
        assert got == {"exact_match": strict, "exact_match_flexible": flexible}, completion


def test_extraction_and_match_equal_the_installed_harness():
    """The same strings through lm-evaluation-harness's own filters and metric, where installed."""
    extraction = pytest.importorskip("lm_eval.filters.extraction")
    metrics = pytest.importorskip("lm_eval.api.metrics")
    from xlt.eval.mgsm import extract_number, score_completion

    regex = extraction.RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
    texts = [text for text, _ in EXTRACTIONS]
    assert [extract_number(t) for t in texts] == [r[0] for r in regex.apply([[t] for t in texts], None)]
    strip = extraction.WhitespaceFilter()
    for completion, gold, _, _ in SCORES:
        theirs_strict = metrics.exact_match_hf_evaluate(strip.apply([[completion]], None)[0], [gold],
                                                        ignore_case=True, ignore_punctuation=True)["exact_match"]
        theirs_flexible = metrics.exact_match_hf_evaluate(regex.apply([[completion]], None)[0], [gold],
                                                          ignore_case=True, ignore_punctuation=True)["exact_match"]
        assert score_completion(completion, gold) == {"exact_match": theirs_strict,
                                                      "exact_match_flexible": theirs_flexible}, completion


def test_prompts_are_the_harness_mgsm_direct_prompts():
    """Each language's prompt equals the harness's mgsm_direct_<lang> doc_to_text on a test row
    (no 'answer'), read from its task files where the harness is installed."""
    import importlib.util
    import re
    from pathlib import Path

    import yaml

    from xlt.eval.mgsm import load_mgsm_task

    task = load_mgsm_task()
    assert task.prompt_for("de").render("Wie viel?") == "Frage: Wie viel?\nAntwort:"
    assert task.prompt_for("fr").render("Q") == "Question : Q\nRéponse :"
    assert task.prompt_for("sw").render("Q") == "Swali: Q\nAnswer:"
    assert task.dataset == {"path": "juletxara/mgsm", "split": "test"} and task.stop == ["\n\n", "\n"]
    spec = importlib.util.find_spec("lm_eval")
    if spec is None:
        pytest.skip("lm-evaluation-harness not installed")
    files = sorted((Path(spec.origin).parent / "tasks" / "mgsm" / "direct").glob("mgsm_direct_*.yaml"))
    assert len(files) == 11
    for path in files:
        lang = path.stem.rsplit("_", 1)[1]
        text = yaml.safe_load(path.read_text(encoding="utf-8"))["doc_to_text"]
        before, after = re.search(r'\{% else %\}\{\{"(.*?)"\+question\+"(.*?)"\}\}', text).groups()
        assert task.prompts[lang] == before + "{question}" + after.replace("\\n", "\n"), lang


MGSM_ROWS = [
    {"question": "Janet has 3 ducks and buys 2 more. How many ducks does she have?", "answer": None,
     "answer_number": 5, "equation_solution": None},
    {"question": "A box holds 12 eggs. How many eggs are in 2 boxes?", "answer": None, "answer_number": 24,
     "equation_solution": None},
    {"question": "Tom had 10 dollars and spent 4. How much is left?", "answer": None, "answer_number": 6,
     "equation_solution": None},
]


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reader_on_local_files_in_the_real_schema(tmp_path, monkeypatch):
    import datasets

    from xlt.eval.readers import get_reader

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    read = get_reader("mgsm")
    items = read(_write_jsonl(tmp_path / "en.jsonl", MGSM_ROWS))
    assert [it.label for it in items] == ["5", "24", "6"]
    assert items[1].fields["question"] == MGSM_ROWS[1]["question"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array([r[k] for r in MGSM_ROWS], type=pa.int32() if k == "answer_number" else pa.string())
                      for k in MGSM_ROWS[0]})
    pq.write_table(table, tmp_path / "de.parquet")
    assert [it.label for it in read(tmp_path / "de.parquet")] == ["5", "24", "6"]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [MGSM_ROWS[0], {k: v for k, v in MGSM_ROWS[1].items()
                                                                 if k != "answer_number"}])
    with pytest.raises(DataError, match="field 'answer_number': mgsm: missing"):
        read(bad)
    bad = _write_jsonl(tmp_path / "bad2.jsonl", [dict(MGSM_ROWS[0], answer_number=1.5)])
    with pytest.raises(DataError, match="answer_number 1.5 is not an integer"):
        read(bad)


@pytest.mark.slow
def test_batched_generation_equals_one_at_a_time(tiny_llama_dir):
    from xlt.eval.mgsm import evaluate_mgsm, load_mgsm_task, mgsm_items, score_completion
    from xlt.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_llama_dir, dtype="float32").eval(), load_tokenizer(tiny_llama_dir)
    task = load_mgsm_task()
    items = mgsm_items([({"path": "x", "item": k}, r) for k, r in enumerate(MGSM_ROWS, 1)])
    prompt = task.prompt_for("en")
    metrics, per_item, predictions = evaluate_mgsm(model, tokenizer, items, prompt=prompt, max_new_tokens=6,
                                                   batch_size=3)
    one = [evaluate_mgsm(model, tokenizer, [item], prompt=prompt, max_new_tokens=6, batch_size=1)[2][0]
           for item in items]
    assert [p["completion"] for p in predictions] == [p["completion"] for p in one]
    assert predictions[0]["prompt"] == "Question: " + MGSM_ROWS[0]["question"] + "\nAnswer:"
    assert all("\n" not in p["completion"] for p in predictions)  # cut at the stop strings
    want = [score_completion(p["completion"], p["target"]) for p in predictions]
    assert per_item["exact_match_flexible"] == [w["exact_match_flexible"] for w in want]
    assert metrics["n"] == 3 and metrics["exact_match"] == sum(w["exact_match"] for w in want) / 3
    assert len(set(per_item["key"])) == 3


@pytest.mark.slow
def test_suite_runs_mgsm_and_compare_pairs_it(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    import datasets

    from xlt.cli import main

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    for lang in ("en", "de"):
        _write_jsonl(tmp_path / "mgsm" / f"{lang}.jsonl", MGSM_ROWS)
    runs = []
    for name, extra in (("a", []), ("b", ["--batch-size", "1"])):
        runs.append(tmp_path / name)
        assert main(["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "mgsm", "--languages", "en,de",
                     "--data", f"mgsm={tmp_path}/mgsm/{{lang}}.jsonl", "--max-new-tokens", "5", "--out",
                     str(runs[-1]), "--device", "cpu", *extra]) == 0, capsys.readouterr().err
    report = json.loads((runs[0] / "results.json").read_text())
    assert report["tasks"]["mgsm"]["prompts"]["de"] == "Frage: {question}\nAntwort:"
    part = json.loads((runs[0] / "parts" / "mgsm.de.json").read_text())
    assert part["predictions"][0]["prompt"] == "Frage: " + MGSM_ROWS[0]["question"] + "\nAntwort:"
    assert part["settings"]["max_new_tokens"] == 5
    # the metrics are the harness's rules applied to the completions the part records
    from xlt.eval.mgsm import extract_number

    for lang in ("en", "de"):
        got = report["results"]["mgsm"][lang]
        preds = json.loads((runs[0] / "parts" / f"mgsm.{lang}.json").read_text())["predictions"]
        golds = [str(r["answer_number"]) for r in MGSM_ROWS]
        flexible = [extract_number(p["completion"]).replace(",", "").replace(".", "").replace("$", "") == g
                    for p, g in zip(preds, golds)]
        assert got == {"exact_match": sum(p["completion"].strip() == g for p, g in zip(preds, golds)) / 3,
                       "exact_match_flexible": sum(flexible) / 3, "n": 3}
    markdown = (runs[0] / "results.md").read_text()
    assert "| mgsm (flexible-extract) |" in markdown and "| mgsm (remove_whitespace) |" in markdown
    assert not (runs[0] / "heatmap.png").exists()
    # the batch size changes nothing: compare pairs the runs on exact_match_flexible, difference 0
    capsys.readouterr()
    assert main(["eval", "compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "c.md")]) == 0
    compared = json.loads((tmp_path / "c.json").read_text())
    assert compared["tasks"]["mgsm"]["metric"] == "exact_match_flexible"
    assert compared["tasks"]["mgsm"]["mean"]["differences"][str(runs[1])] == \
        {"difference": 0.0, "low": 0.0, "high": 0.0}
    # k-shot MGSM is refused before any work
    assert main(["eval", "suite", "--model", str(tmp_path / "no-model"), "--tasks", "mgsm", "--languages", "en",
                 "--shots", "2", "--data", f"mgsm={tmp_path}/mgsm/{{lang}}.jsonl", "--out", str(tmp_path / "k")]) == 2
    assert "mgsm: answered 0-shot" in capsys.readouterr().err and not (tmp_path / "k").exists()


def test_hub_default_reads_juletxara_mgsm_test_split_per_language(monkeypatch):
    """Without --data, the suite reads load_dataset('juletxara/mgsm', LANG, split='test')."""
    import xlt.eval.readers as readers
    from xlt.eval.cli import default_source, read_eval_split
    from xlt.eval.mgsm import load_mgsm_task

    calls = []

    def fake_hub_rows(dataset_id, config, split, *, task, cache_dir=None):
        calls.append((dataset_id, config, split, task))
        return [({"path": f"{dataset_id} ({config}, {split})", "item": k}, r) for k, r in enumerate(MGSM_ROWS, 1)]

    monkeypatch.setattr(readers, "hub_rows", fake_hub_rows)
    task = load_mgsm_task()
    source = default_source(task)
    assert source == "hf:juletxara/mgsm"
    items = read_eval_split(source, task, ["sw", "th"])
    assert calls == [("juletxara/mgsm", "sw", "test", "mgsm"), ("juletxara/mgsm", "th", "test", "mgsm")]
    assert [it.label for it in items["th"]] == ["5", "24", "6"] and items["sw"][0].lang == "sw"


@pytest.mark.slow
def test_completions_and_scores_equal_the_harness_mgsm_direct(tiny_llama_dir, tmp_path):
    """The harness's own mgsm_direct_de task file on the same local rows (8 new tokens at most):
    the same prompts, the same completions and the same scores under both filters."""
    lm_eval = pytest.importorskip("lm_eval")
    from pathlib import Path

    from xlt.eval.lm_eval_bridge import run_lm_eval
    from xlt.eval.mgsm import evaluate_mgsm, load_mgsm_task, mgsm_items
    from xlt.eval.readers import dataset_rows
    from xlt.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_llama_dir, dtype="float32").eval(), load_tokenizer(tiny_llama_dir)
    rows = MGSM_ROWS + [dict(r, question=r["question"] + " Think.", answer_number=7) for r in MGSM_ROWS]
    data = _write_jsonl(tmp_path / "de.jsonl", rows)
    include = Path(lm_eval.__file__).parent / "tasks" / "mgsm" / "direct" / "mgsm_direct_de.yaml"
    local = tmp_path / "tasks"
    local.mkdir()
    (local / "local.yaml").write_text(
        f"include: {include}\ntask: xlt_local_mgsm\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\ntraining_split: null\n"
        "generation_kwargs:\n  until: [\"\\n\\n\", \"\\n\"]\n  do_sample: false\n  temperature: 0.0\n"
        "  max_gen_toks: 8\n", encoding="utf-8")
    harness = run_lm_eval(model, tokenizer, ["xlt_local_mgsm"], include_path=[str(local)], log_samples=True,
                          batch_size=4)
    items = mgsm_items(dataset_rows(data))
    metrics, per_item, predictions = evaluate_mgsm(model, tokenizer, items, prompt=load_mgsm_task().prompt_for("de"),
                                                   max_new_tokens=8, batch_size=4)
    samples = {}
    for sample in harness["samples"]["xlt_local_mgsm"]:
        samples.setdefault(sample["doc_id"], {})[sample["filter"]] = sample
    assert len(samples) == len(rows)
    for k, prediction in enumerate(predictions):
        sample = samples[k]["flexible-extract"]
        assert prediction["prompt"] == sample["arguments"][0][0] and sample["target"] == prediction["target"]
        assert prediction["completion"] == sample["resps"][0][0]
        assert per_item["exact_match_flexible"][k] == samples[k]["flexible-extract"]["exact_match"]
        assert per_item["exact_match"][k] == samples[k]["remove_whitespace"]["exact_match"]
    results = harness["results"]["xlt_local_mgsm"]
    assert metrics["exact_match_flexible"] == pytest.approx(results["exact_match,flexible-extract"])
    assert metrics["exact_match"] == pytest.approx(results["exact_match,remove_whitespace"])


# --------------------------------------------------------------------------------------------
# chain of thought (the harness's mgsm_native_cot)

COT_TRAIN = [
    {"question": "Frage: Roger hat 5 Tennisbälle. Er kauft 2 Dosen mit je 3 Bällen. Wie viele hat er jetzt?",
     "answer": "Schritt-für-Schritt-Antwort: Roger hatte 5 Bälle. 2 Dosen mit je 3 sind 6. 5 + 6 = 11. "
               "Die Antwort lautet 11.", "answer_number": 11, "equation_solution": "5 + 6 = 11"},
    {"question": "Frage: Es gab 9 Computer. Jeden Tag kamen 5 dazu, 4 Tage lang. Wie viele sind es jetzt?",
     "answer": "Schritt-für-Schritt-Antwort: 4 Tage mal 5 sind 20. 9 + 20 = 29. Die Antwort lautet 29.",
     "answer_number": 29, "equation_solution": "9 + 20 = 29"},
    {"question": "Frage: Lea hatte 32 Pralinen, ihre Schwester 42. Sie aßen 35. Wie viele bleiben?",
     "answer": "Schritt-für-Schritt-Antwort: 32 + 42 = 74. 74 - 35 = 39. Die Antwort lautet 39.",
     "answer_number": 39, "equation_solution": "74 - 35 = 39"},
]

# (completion, what the strict-match filter keeps: the first "Die Antwort lautet N", group 1)
STRICT = [("Zuerst 3. Die Antwort lautet 1.234. Die Antwort lautet 7.", "1.234."),
          ("Die Antwort lautet -5", "-5"), ("Die Antwort ist 5.", "[invalid]"), ("", "[invalid]")]


def test_cot_prompt_exemplars_and_strict_match_are_the_harness_mgsm_native_cot_de():
    """The de prompt with two exemplars, rendered by the harness's own task file's templates
    (doc_to_text, target delimiter " ", doc_to_target, "\\n\\n"), and its strict-match filter."""
    import random
    from pathlib import Path

    import jinja2
    import yaml

    extraction = pytest.importorskip("lm_eval.filters.extraction")
    lm_eval = pytest.importorskip("lm_eval")
    from xlt.eval.icl import sample_demonstrations_per_item
    from xlt.eval.mgsm import load_mgsm_cot_task, mgsm_items

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    folder = Path(lm_eval.__file__).parent / "tasks" / "mgsm" / "native_cot"
    theirs = yaml.load((folder / "mgsm_native_cot_de.yaml").read_text(encoding="utf-8"), Loader=Loader)
    task = load_mgsm_cot_task()
    prompt = task.prompt_for("de")
    assert task.dataset == {"path": "juletxara/mgsm", "split": "test", "dev_split": "train"}
    assert prompt.stop == theirs["generation_kwargs"]["until"]
    to_text, to_target = (jinja2.Template(theirs[k]).render for k in ("doc_to_text", "doc_to_target"))
    train = mgsm_items([({"path": "t", "item": k}, r) for k, r in enumerate(COT_TRAIN, 1)])
    test = mgsm_items([({"path": "x", "item": k}, r) for k, r in enumerate(MGSM_ROWS, 1)])
    demos = sample_demonstrations_per_item(train, 2, test, 1234)
    rng = random.Random(1234)  # the harness's default sampler: rng.sample(train docs, k) per test doc
    for item, row, mine in zip(test, MGSM_ROWS, demos):
        chosen = rng.sample(COT_TRAIN, 2)
        assert [d.fields["question"] for d in mine] == [c["question"] for c in chosen]
        context = "".join(to_text(**c) + " " + to_target(**c) + "\n\n" for c in chosen) + to_text(**row)
        assert "".join(prompt.exemplar(d) for d in mine) + prompt.render(item.fields["question"]) == context
    strict = [f for f in theirs["filter_list"] if f["name"] == "strict-match"][0]["filter"][0]
    regex = extraction.RegexFilter(regex_pattern=strict["regex_pattern"])
    for completion, want in STRICT:
        assert prompt.strict(completion) == want == regex.apply([[completion]], None)[0][0], completion
    with pytest.raises(DataError, match="an exemplar needs its step-by-step 'answer'"):
        prompt.exemplar(test[0])


def test_every_cot_language_is_the_harness_task_file():
    """Question cue, answer cue, exemplar cut, strict pattern and stop strings of all 11 languages."""
    import re
    from pathlib import Path

    import yaml

    lm_eval = pytest.importorskip("lm_eval")
    from xlt.eval.mgsm import load_mgsm_cot_task

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    task = load_mgsm_cot_task()
    files = sorted((Path(lm_eval.__file__).parent / "tasks" / "mgsm" / "native_cot").glob("mgsm_native_cot_*.yaml"))
    assert len(files) == 11 == len(task.prompts)
    for path in files:
        lang = path.stem.rsplit("_", 1)[1]
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
        prompt = task.prompt_for(lang)
        cue, answer = re.search(r'\{% else %\}\{\{"(.*?)"\+question\+"\\n(.*?)"\}\}', spec["doc_to_text"]).groups()
        assert (prompt.question, prompt.answer) == (cue, answer), lang
        assert prompt.answer_start == int(re.search(r"answer\[(\d+):\]", spec["doc_to_target"]).group(1)), lang
        strict = [f for f in spec["filter_list"] if f["name"] == "strict-match"][0]["filter"][0]
        assert prompt.pattern == strict["regex_pattern"] and prompt.stop == spec["generation_kwargs"]["until"], lang


def test_suite_runs_mgsm_cot_few_shot(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    import random

    import datasets

    from xlt.cli import main
    from xlt.eval.mgsm import INVALID

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    _write_jsonl(tmp_path / "test" / "de.jsonl", MGSM_ROWS)
    _write_jsonl(tmp_path / "train" / "de.jsonl", COT_TRAIN)
    out = tmp_path / "cot"
    assert main(["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "mgsm_cot", "--languages", "de",
                 "--data", f"mgsm_cot={tmp_path}/test/{{lang}}.jsonl", "--dev", f"mgsm_cot={tmp_path}/train/{{lang}}.jsonl",
                 "--shots", "1", "--seed", "1234", "--max-new-tokens", "4", "--out", str(out), "--device", "cpu"]) == 0, \
        capsys.readouterr().err
    part = json.loads((out / "parts" / "mgsm_cot.de.json").read_text())
    rng = random.Random(1234)
    for row, pred in zip(MGSM_ROWS, part["predictions"]):
        [demo] = rng.sample(COT_TRAIN, 1)
        assert pred["prompt"] == (demo["question"] + "\nSchritt-für-Schritt-Antwort: " + demo["answer"][29:] + "\n\n"
                                  + "Frage: " + row["question"] + "\nSchritt-für-Schritt-Antwort:")
    assert part["metrics"]["n"] == 3 and part["settings"]["shots"] == 1
    strict = [p["strict"] for p in part["predictions"]]
    assert part["metrics"]["exact_match"] == sum(s != INVALID and s == p["target"]
                                                 for s, p in zip(strict, part["predictions"])) / 3
    markdown = (out / "results.md").read_text()
    assert "native chain-of-thought, 1-shot" in markdown
    # the reasoning's language: an independent call of the identifier on the same completions
    import py3langid

    wrong = sum(not p["completion"].strip() or py3langid.classify(p["completion"])[0] != "de"
                for p in part["predictions"]) / 3
    assert part["metrics"]["wrong_language_rate"] == pytest.approx(wrong)
    assert "chain-of-thought answers in the wrong language (%)" in markdown
