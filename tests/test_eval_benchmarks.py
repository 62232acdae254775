"""Belebele and SIB-200: readers on tiny files in the real schema (loaded through ``datasets``),
prompts equal to lm-evaluation-harness's, the hub path, schema errors, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xlt.errors import ConfigError, DataError

BELEBELE_ROWS = [
    {"link": "https://en.wikibooks.org/wiki/A", "question_number": 1, "dialect": "eng_Latn", "ds": "2023-05-03",
     "flores_passage": "The museum opened in 1901. It holds paintings from four centuries.",
     "question": "When did the museum open? ", "mc_answer1": "In 1801", "mc_answer2": "In 1901",
     "mc_answer3": "In 1910", "mc_answer4": "In 2001", "correct_answer_num": "2"},
    {"link": "https://en.wikibooks.org/wiki/B", "question_number": 2, "dialect": "eng_Latn", "ds": "2023-05-03",
     "flores_passage": "Rain fell all week, so the river rose above the bridge.",
     "question": "Why did the river rise?", "mc_answer1": "Because of the rain", "mc_answer2": "Because of snow",
     "mc_answer3": "Because of a dam", "mc_answer4": "Because of the tide", "correct_answer_num": "1"},
    {"link": "https://en.wikibooks.org/wiki/C", "question_number": 1, "dialect": "eng_Latn", "ds": "2023-05-03",
     "flores_passage": "The team trained every morning before the final match.",
     "question": "When did the team train?", "mc_answer1": "At night", "mc_answer2": "Never",
     "mc_answer3": "Every evening", "mc_answer4": "Every morning", "correct_answer_num": "4"},
]
SIB_ROWS = [
    {"index_id": 1523, "category": "science/technology", "text": "The new telescope can see distant galaxies."},
    {"index_id": 97, "category": "sports", "text": "The team won the cup after extra time."},
    {"index_id": 660, "category": "health", "text": "Doctors recommend washing hands often."},
    {"index_id": 12, "category": "travel", "text": "Visitors should book hotels early in summer."},
]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep ``datasets``' Arrow cache inside the test's folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def test_local_files_load_through_datasets(tmp_path):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.templates import load_template

    belebele = load_template("belebele")
    write_jsonl(tmp_path / "belebele" / "eng_Latn.jsonl", BELEBELE_ROWS)
    write_parquet(tmp_path / "belebele" / "fra_Latn.parquet",
                  [dict(r, dialect="fra_Latn") for r in BELEBELE_ROWS[:2]])
    en = read_eval_split(str(tmp_path / "belebele" / "{lang}.jsonl"), belebele, ["eng_Latn"])["eng_Latn"]
    fr = read_eval_split(str(tmp_path / "belebele" / "{lang}.parquet"), belebele, ["fra_Latn"])["fra_Latn"]
    assert [it.label for it in en] == [2, 1, 4] and [it.label for it in fr] == [2, 1]
    assert en[0].fields["question"] == "When did the museum open?"  # stripped, as the harness does
    assert en[0].fields["mc_answer2"] == "In 1901" and en[2].where["item"] == 3
    sib = load_template("sib200")
    write_jsonl(tmp_path / "sib" / "deu_Latn" / "test.jsonl", SIB_ROWS)
    items = read_eval_split(str(tmp_path / "sib" / "{lang}" / "test.jsonl"), sib, ["deu_Latn"])["deu_Latn"]
    assert [it.label for it in items] == ["science/technology", "sports", "health", "travel"]
    assert [sib.label_index(it.label, it.where) for it in items] == [0, 3, 4, 1]


def _harness_template(*parts: str) -> dict:
    import yaml

    lm_eval = pytest.importorskip("lm_eval")
    path = Path(lm_eval.__file__).parent / "tasks" / Path(*parts)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !function tags
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)


def _harness_requests(doc_to_text: str, doc: dict, demos: list[tuple[dict, str]], choices) -> list[tuple[str, str]]:
    """The harness's multiple-choice requests: demonstrations as text + ' ' + gold, joined and
    followed by '\\n\\n'; the item's text as context; ' ' + choice as continuation."""
    import jinja2

    render = jinja2.Template(doc_to_text, keep_trailing_newline=True).render
    prefix = "".join(render(**d) + " " + gold + "\n\n" for d, gold in demos)
    return [(prefix + render(**doc), " " + choice) for choice in choices]


def _row_tokens(tokenizer, pairs):
    from xlt.eval.scoring import encode_requests

    return [(r.input_ids, r.start) for r in encode_requests(tokenizer, pairs, "lm-eval")]


def test_belebele_prompt_is_the_harness(tmp_path, bpe_tokenizer):
    from xlt.eval.icl import prepare_template_items
    from xlt.eval.readers import belebele_items, dataset_rows
    from xlt.eval.templates import load_template

    harness = _harness_template("belebele", "_default_template_yaml")
    template = load_template("belebele")
    items = belebele_items(dataset_rows(write_jsonl(tmp_path / "b.jsonl", BELEBELE_ROWS)))
    demos = items[1:]
    [prepared] = prepare_template_items(template, items[:1], demos, lang="eng_Latn")
    letters = ["A", "B", "C", "D"]
    theirs = _harness_requests(harness["doc_to_text"], BELEBELE_ROWS[0],
                               [(row, letters[int(row["correct_answer_num"]) - 1]) for row in BELEBELE_ROWS[1:]],
                               harness["doc_to_choice"])
    # the same text, and after the harness's move of trailing spaces the same tokens
    assert [c + k for c, k in prepared.requests] == [c + k for c, k in theirs]
    assert _row_tokens(bpe_tokenizer, prepared.requests) == _row_tokens(bpe_tokenizer, theirs)
    assert prepared.gold == 1 and theirs[0][0].endswith("D: In 2001\nAnswer:")


def test_sib200_prompt_is_the_harness_afrobench_prompt_1(tmp_path, bpe_tokenizer):
    from xlt.eval.icl import prepare_template_items
    from xlt.eval.readers import SIB200_CATEGORIES, dataset_rows, sib200_items
    from xlt.eval.templates import load_template

    task = _harness_template("afrobench", "sib", "prompt_1", "sib_afr.yaml")
    base = _harness_template("afrobench", "sib", "prompt_1", "sib")
    assert tuple(base["doc_to_choice"]) == SIB200_CATEGORIES
    template = load_template("sib200")
    items = sib200_items(dataset_rows(write_jsonl(tmp_path / "s.jsonl", SIB_ROWS)))
    for shots in (0, 2):
        [prepared] = prepare_template_items(template, items[:1], items[1:1 + shots], lang="afr_Latn")
        theirs = _harness_requests(task["doc_to_text"], SIB_ROWS[0],
                                   [(row, row["category"]) for row in SIB_ROWS[1:1 + shots]], SIB200_CATEGORIES)
        assert [c + k for c, k in prepared.requests] == [c + k for c, k in theirs]
        assert _row_tokens(bpe_tokenizer, prepared.requests) == _row_tokens(bpe_tokenizer, theirs)
        assert prepared.gold == 0 and prepared.norm_lengths == [len(c) for c in SIB200_CATEGORIES]


def test_hub_datasets_are_loaded_by_id_and_language(monkeypatch):
    import datasets

    from xlt.eval.cli import default_source, read_eval_split
    from xlt.eval.templates import load_template

    calls = []

    def load_dataset(path, name=None, split=None, cache_dir=None):
        calls.append((path, name, split))
        if name == "xxx_Latn":
            raise ValueError(f"BuilderConfig 'xxx_Latn' not found. Available: ['eng_Latn', 'fra_Latn']")
        return datasets.Dataset.from_list(SIB_ROWS if "sib" in path else BELEBELE_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    sib = load_template("sib200")
    assert default_source(sib) == "hf:Davlan/sib200" and default_source(sib, dev=True) == "hf:Davlan/sib200"
    test = read_eval_split("hf:Davlan/sib200", sib, ["eng_Latn", "fra_Latn"])
    dev = read_eval_split("hf:Davlan/sib200", sib, ["eng_Latn"], dev=True)
    assert calls == [("Davlan/sib200", "eng_Latn", "test"), ("Davlan/sib200", "fra_Latn", "test"),
                     ("Davlan/sib200", "eng_Latn", "validation")]
    assert {lang: len(v) for lang, v in test.items()} == {"eng_Latn": 4, "fra_Latn": 4} and len(dev["eng_Latn"]) == 4
    belebele = load_template("belebele")
    assert read_eval_split("hf:facebook/belebele", belebele, ["eng_Latn"])["eng_Latn"][0].label == 2
    assert default_source(belebele, dev=True) is None  # Belebele has a test split only
    with pytest.raises(ConfigError, match="belebele: facebook/belebele has no split for demonstrations"):
        read_eval_split("hf:facebook/belebele", belebele, ["eng_Latn"], dev=True)
    with pytest.raises(DataError, match="sib200: the dataset Davlan/sib200 has no language 'xxx_Latn'") as info:
        read_eval_split("hf:Davlan/sib200", sib, ["xxx_Latn"])
    assert "\n" not in str(info.value)

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Davlan/sib200' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"sib200: cannot load Davlan/sib200 \(eng_Latn, test\).*local JSON Lines"):
        read_eval_split("hf:Davlan/sib200", sib, ["eng_Latn"])


@pytest.mark.parametrize("task,rows,change,message", [
    ("belebele", BELEBELE_ROWS, {"mc_answer3": None},
     r"item 2: field 'mc_answer3': belebele: missing \(expected fields flores_passage"),
    ("belebele", BELEBELE_ROWS, {"correct_answer_num": "5"},
     r"item 2: field 'correct_answer_num': belebele: answer number '5' is outside the options"),
    ("sib200", SIB_ROWS, {"category": "weather"},
     r"item 2: field 'category': sib200: category 'weather' is not one of the 7 topics"),
    ("sib200", SIB_ROWS, {"text": None}, r"item 2: field 'text': sib200: missing"),
])
def test_schema_mismatches_name_task_file_and_field(tmp_path, task, rows, change, message):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.templates import load_template

    bad = [dict(rows[0]), {k: v for k, v in {**rows[1], **change}.items() if v is not None}, dict(rows[2])]
    path = write_jsonl(tmp_path / "eng_Latn.jsonl", bad)
    with pytest.raises(DataError, match=str(path).replace("\\", "\\\\") + " " + message):
        read_eval_split(str(path), load_template(task), ["eng_Latn"])


def test_languages_a_dataset_lacks(tmp_path):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.templates import load_template

    belebele = load_template("belebele")
    write_jsonl(tmp_path / "eng_Latn.jsonl", BELEBELE_ROWS)
    with pytest.raises(DataError, match=r"deu_Latn\.jsonl: no such file"):
        read_eval_split(str(tmp_path / "{lang}.jsonl"), belebele, ["deu_Latn"])
    # one file of several languages (Belebele rows carry their 'dialect')
    mixed = write_jsonl(tmp_path / "all.jsonl", BELEBELE_ROWS + [dict(BELEBELE_ROWS[0], dialect="fra_Latn")])
    assert {k: len(v) for k, v in read_eval_split(str(mixed), belebele, ["eng_Latn", "fra_Latn"]).items()} == \
        {"eng_Latn": 3, "fra_Latn": 1}
    with pytest.raises(DataError, match=r"all.jsonl: unknown language code 'deu_Latn': no items in it "
                                        r"\(languages present: eng_Latn, fra_Latn\)"):
        read_eval_split(str(mixed), belebele, ["deu_Latn"])
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.jsonl: not a JSON Lines file the datasets library can read"):
        read_eval_split(str(broken), belebele, ["eng_Latn"])


@pytest.mark.slow
def test_icl_cli_belebele_and_sib200(tiny_llama_dir, tmp_path, xlt_cli):
    env = {"HF_DATASETS_CACHE": str(tmp_path / "hf-cache"), "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    write_jsonl(tmp_path / "belebele" / "eng_Latn.jsonl", BELEBELE_ROWS)
    write_parquet(tmp_path / "belebele" / "fra_Latn.parquet", [dict(r, dialect="fra_Latn") for r in BELEBELE_ROWS])
    out = tmp_path / "belebele.json"
    proc = xlt_cli("eval", "icl", "--model", tiny_llama_dir, "--task", "belebele", "--languages", "eng_Latn",
                   "--test", f"{tmp_path}/belebele/{{lang}}.jsonl", "--output", out, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["scoring"] == "lm-eval" and report["runs"][0]["results"]["eng_Latn"]["n"] == 3
    assert "acc_norm" in report["runs"][0]["results"]["eng_Latn"]
    write_jsonl(tmp_path / "sib" / "test.jsonl", SIB_ROWS)
    write_jsonl(tmp_path / "sib" / "dev.jsonl", SIB_ROWS[::-1])
    proc = xlt_cli("eval", "icl", "--model", tiny_llama_dir, "--task", "sib200", "--languages", "eng_Latn",
                   "--test", tmp_path / "sib" / "test.jsonl", "--dev", tmp_path / "sib" / "dev.jsonl",
                   "--shots", "0", "2", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sib200  2-shot  seed 0  scoring lm-eval" in proc.stdout
    # a schema mismatch: one line naming file, item and field; nothing written
    write_jsonl(tmp_path / "bad" / "eng_Latn.jsonl",
                [BELEBELE_ROWS[0], dict(BELEBELE_ROWS[1], correct_answer_num="0")])
    proc = xlt_cli("eval", "icl", "--model", tiny_llama_dir, "--task", "belebele", "--languages", "eng_Latn",
                   "--test", f"{tmp_path}/bad/{{lang}}.jsonl", "--output", tmp_path / "bad.json", env=env)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "eng_Latn.jsonl item 2: field 'correct_answer_num': belebele: answer number '0'" in proc.stderr
    assert not (tmp_path / "bad.json").exists()


def test_cli_reads_the_tasks_hub_dataset_by_default_and_says_so_offline(tmp_path, xlt_cli):
    env = {"HF_DATASETS_CACHE": str(tmp_path / "hf-cache"), "HF_HOME": str(tmp_path / "hf-home"),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = xlt_cli("eval", "icl", "--model", tmp_path / "no-model", "--task", "sib200", "--languages", "eng_Latn",
                   env=env)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "sib200: cannot load Davlan/sib200 (eng_Latn, test)" in proc.stderr
    assert "give a local JSON Lines or parquet file" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", ["belebele", "sib200"])
def test_loglikelihoods_equal_the_harness_on_its_own_task(task, tiny_llama_dir, tmp_path):
    """The harness's own task file (its belebele template; AfroBench's SIB prompt 1) on the same
    local rows: every per-choice log-likelihood within 1e-4 and the same accuracy."""
    lm_eval = pytest.importorskip("lm_eval")
    from xlt.eval.icl import evaluate_icl
    from xlt.eval.lm_eval_bridge import run_lm_eval
    from xlt.eval.readers import belebele_items, dataset_rows, sib200_items
    from xlt.eval.templates import load_template
    from xlt.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_llama_dir, dtype="float32").eval(), load_tokenizer(tiny_llama_dir)
    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    rows = BELEBELE_ROWS if task == "belebele" else SIB_ROWS
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    include = (tasks_dir / "belebele" / "_default_template_yaml" if task == "belebele"
               else tasks_dir / "afrobench" / "sib" / "prompt_1" / "sib_afr.yaml")
    local = tmp_path / "tasks"
    local.mkdir()
    (local / "local.yaml").write_text(
        f"include: {include}\ntask: xlt_local_{task}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\nfewshot_split: test\n"
        "validation_split: null\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n", encoding="utf-8")
    harness = run_lm_eval(model, tokenizer, [f"xlt_local_{task}"], include_path=[str(local)], log_samples=True,
                          batch_size=4)
    items = (belebele_items if task == "belebele" else sib200_items)(dataset_rows(data))
    table, results = evaluate_icl(model, tokenizer, template=load_template(task), test={"eng_Latn": items},
                                  scoring="lm-eval", batch_size=4)
    samples = sorted(harness["samples"][f"xlt_local_{task}"], key=lambda s: s["doc_id"])
    assert len(samples) == len(results) == len(rows)
    for sample, result in zip(samples, results):
        assert result.loglikelihoods == pytest.approx([r[0][0] for r in sample["resps"]], abs=1e-4)
    assert table["eng_Latn"]["acc"] == pytest.approx(harness["results"][f"xlt_local_{task}"]["acc,none"])


# --------------------------------------------------------------------------------------------
# Global-MMLU

def _gmmlu(sample_id, subject, question, options, answer, label="-"):
    return {"sample_id": sample_id, "subject": subject, "subject_category": "STEM" if subject != "world_religions"
            else "Humanities", "question": question, "option_a": options[0], "option_b": options[1],
            "option_c": options[2], "option_d": options[3], "answer": answer, "required_knowledge": "[]",
            "time_sensitive": "[]", "reference": "[]", "culture": "[]", "region": "[]", "country": "[]",
            "cultural_sensitivity_label": label, "is_annotated": label != "-"}


GMMLU_TEST = [
    _gmmlu("astronomy/test/0", "astronomy", "What is the closest star to Earth? ", ["Sirius", "The Sun", "Vega", "Polaris"],
           "B", "CA"),
    _gmmlu("world_religions/test/0", "world_religions", "Which city is holy in three religions?",
           ["Jerusalem", "Paris", "Lima", "Oslo"], "A", "CS"),
    _gmmlu("astronomy/test/1", "astronomy", "How many planets orbit the Sun?", ["7", "8", "9", "10"], "B", "CA"),
    _gmmlu("world_religions/test/1", "world_religions", "Which book is sacred in Islam?",
           ["The Vedas", "The Torah", "The Quran", "The Avesta"], "C"),
]
GMMLU_DEV = [
    _gmmlu("world_religions/dev/0", "world_religions", "Who founded Buddhism?", ["Laozi", "Siddhartha", "Moses", "Mani"],
           "B"),
    _gmmlu("astronomy/dev/0", "astronomy", "What is a light-year?", ["A time", "A distance", "A mass", "A speed"], "B"),
    _gmmlu("astronomy/dev/1", "astronomy", "Which planet is red?", ["Mars", "Venus", "Jupiter", "Saturn"], "A"),
    _gmmlu("world_religions/dev/1", "world_religions", "Where is Mecca?", ["Iran", "Egypt", "Saudi Arabia", "Iraq"],
           "C"),
    _gmmlu("astronomy/dev/2", "astronomy", "What orbits a planet?", ["A moon", "A star", "A comet", "A galaxy"], "A"),
]


def test_global_mmlu_prompt_and_per_subject_demonstrations_are_the_harness(tmp_path, bpe_tokenizer):
    """The harness's global_mmlu_full template, and its demonstrations: one task per subject, the
    first k dev items of that subject (first_n sampler), joined by a blank line."""
    from xlt.eval.cli import default_source
    from xlt.eval.icl import prepare_icl_items
    from xlt.eval.readers import dataset_rows, global_mmlu_items
    from xlt.eval.templates import load_template

    harness = _harness_template("global_mmlu", "full", "en", "_en_template_yaml")
    assert harness["fewshot_config"]["sampler"] == "first_n" and harness["fewshot_split"] == "dev"
    template = load_template("global_mmlu")
    assert template.dataset == {"path": "CohereLabs/Global-MMLU", "split": "test", "dev_split": "dev"}
    assert default_source(template) == default_source(template, dev=True) == "hf:CohereLabs/Global-MMLU"
    test = global_mmlu_items(dataset_rows(write_jsonl(tmp_path / "t.jsonl", GMMLU_TEST)))
    dev = global_mmlu_items(dataset_rows(write_parquet(tmp_path / "d.parquet", GMMLU_DEV)))
    assert [it.label for it in test] == ["B", "A", "B", "C"]
    assert test[0].fields["question"] == "What is the closest star to Earth?"  # stripped, as the harness does
    for shots in (0, 2):
        prepared = prepare_icl_items(template=template, test={"en": test}, dev={"en": dev}, shots=shots)
        for row, item in zip(GMMLU_TEST, prepared):
            same_subject = [d for d in GMMLU_DEV if d["subject"] == row["subject"]][:shots]
            theirs = _harness_requests(harness["doc_to_text"], row, [(d, d["answer"]) for d in same_subject],
                                       harness["doc_to_choice"])
            assert [c + k for c, k in item.requests] == [c + k for c, k in theirs]
            assert _row_tokens(bpe_tokenizer, item.requests) == _row_tokens(bpe_tokenizer, theirs)
            assert item.gold == "ABCD".index(row["answer"])
    with pytest.raises(DataError, match=r"3 demonstrations requested but the dev split has only 2 items with "
                                        r"subject = 'world_religions'"):
        prepare_icl_items(template=template, test={"en": test}, dev={"en": dev}, shots=3)


def test_global_mmlu_accuracy_per_cultural_sensitivity_label(tiny_llama_dir, tmp_path):
    """acc_CA / acc_CS (rows labelled "-" are in neither) against the per-item results grouped by hand."""
    from xlt.eval.icl import evaluate_icl
    from xlt.eval.readers import dataset_rows, global_mmlu_items
    from xlt.eval.suite import SuiteUnit, evaluate_suite
    from xlt.eval.templates import load_template
    from xlt.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_llama_dir, kind="causal"), load_tokenizer(tiny_llama_dir)
    template = load_template("global_mmlu")
    rows = GMMLU_TEST * 3
    test = global_mmlu_items(dataset_rows(write_jsonl(tmp_path / "t.jsonl", rows)))
    results = evaluate_suite(model, tokenizer, [SuiteUnit("global_mmlu", "en", template, test)])["global_mmlu"]["en"]
    _, items = evaluate_icl(model, tokenizer, template=template, test={"en": test}, scoring="lm-eval")
    by_label: dict = {}
    for row, item in zip(rows, items):
        by_label.setdefault(row["cultural_sensitivity_label"], []).append(item.pred == item.gold)
    for label in ("CA", "CS"):
        assert results[f"acc_{label}"] == pytest.approx(sum(by_label[label]) / len(by_label[label]))
        assert results[f"n_{label}"] == len(by_label[label])
    assert results["n"] == 12 and "acc_-" not in results and results["n_CA"] == 6 and results["n_CS"] == 3


@pytest.mark.parametrize("change,message", [
    ({"option_c": None}, r"item 2: field 'option_c': global_mmlu: missing \(expected fields question, option_a"),
    ({"answer": "E"}, r"item 2: field 'answer': global_mmlu: answer 'E' is outside the options \(expected A, B, C or D\)"),
])
def test_global_mmlu_schema_mismatches(tmp_path, change, message):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.templates import load_template

    bad = [GMMLU_TEST[0], {k: v for k, v in {**GMMLU_TEST[1], **change}.items() if v is not None}]
    path = write_jsonl(tmp_path / "en.jsonl", bad)
    with pytest.raises(DataError, match=str(path).replace("\\", "\\\\") + " " + message):
        read_eval_split(str(path), load_template("global_mmlu"), ["en"])


def test_template_grouping_fields_must_exist(tmp_path):
    from xlt.eval.templates import parse_template

    data = {"reader": "belebele", "labels": [1, 2, 3, 4], "report_by": "topic",
            "prompts": {"default": {"template": "{question} {choice}", "choices": ["A", "B", "C", "D"]}}}
    with pytest.raises(ConfigError, match=r"t.yaml: report_by names field 'topic', which reader 'belebele' does not"):
        parse_template(data, "t.yaml")
    data.pop("report_by")
    with pytest.raises(ConfigError, match=r"demonstrations must be one of fixed, per_item, per_item_excluding_item, "
                                          r"first_n, got 'last_n'"):
        parse_template({**data, "demonstrations": "last_n"}, "t.yaml")
