"""The hub loading path (``datasets.load_dataset(ID, LANG, split=...)``) on local copies of the
hubs' repositories, offline.

``load_dataset`` resolves a local directory as it resolves a hub repository: the YAML
``configs:`` of its README.md (``config_name``, ``data_files`` with ``split`` / ``path`` globs)
over JSON Lines or parquet files; a directory named ``NAME`` that holds ``NAME.py`` is a
loading script, which datasets 4 and later refuse. Each fixture below writes, in a temporary
directory named like the repository, that repository's layout (README configs, file paths,
column names and dtypes) with a few rows in two or three languages, and the tests give its
path where xlt expects a hub id (``hf:PATH``), so xlt's own readers (``read_hub_split``,
``hub_rows``, ``flores.read_sentences``) and ``xlt eval suite`` run the same ``load_dataset``
call they make on the hub. Every expected value is computed from the rows written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xlt.errors import DataError

# --------------------------------------------------------------------------------------------
# writing a repository


def _readme(repo: Path, configs: dict[str, list[tuple[str, str]]], features: pa.Schema | None = None) -> None:
    """README.md whose YAML header has ``configs:`` ``{config: [(split, path glob), ...]}`` and,
    given ``features``, a ``dataset_info`` entry per config declaring them (as the hub writes for
    a dataset uploaded in parquet)."""
    repo.mkdir(parents=True, exist_ok=True)
    lines = ["---"]
    if features is not None:
        dtypes = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.bool_(): "bool"}
        lines.append("dataset_info:")
        for name in configs:
            lines += [f"- config_name: {name}", "  features:"]
            for column in features:
                lines += [f"  - name: {column.name}", f"    dtype: {dtypes[column.type]}"]
    lines.append("configs:")
    for name, files in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, path in files:
            lines += [f"  - split: {split}", f"    path: {path}"]
    (repo / "README.md").write_text("\n".join(lines) + "\n---\n\n# Dataset card\n", encoding="utf-8")


def _parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _parquet_configs(repo: Path, langs, splits, rows, schema: pa.Schema, declare: bool = True) -> None:
    """The layout of a repository in parquet, one config per language: README ``configs:`` with
    ``{lang}/{split}-*`` globs (declaring ``schema`` when ``declare``) over
    ``{lang}/{split}-00000-of-00001.parquet`` holding ``rows(lang, split)``."""
    _readme(repo, {lang: [(split, f"{lang}/{split}-*") for split in splits] for lang in langs},
            schema if declare else None)
    for lang in langs:
        for split in splits:
            _parquet(repo / lang / f"{split}-00000-of-00001.parquet", rows(lang, split), schema)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Root of the local repositories; ``datasets``' cache goes to a temporary directory too."""
    import datasets

    root = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(root / ".cache"))
        yield root


# --------------------------------------------------------------------------------------------
# facebook/belebele

BELEBELE_LANGS = ("eng_Latn", "fra_Latn")


def _belebele_rows(lang: str) -> list[dict]:
    return [{"link": f"https://en.wikibooks.org/wiki/{k}", "question_number": k,
             "flores_passage": f"{lang} passage {k}.", "question": f" {lang} question {k}? ",
             "mc_answer1": f"a{k}", "mc_answer2": f"b{k}", "mc_answer3": f"c{k}", "mc_answer4": f"d{k}",
             "correct_answer_num": str(1 + (k + len(lang)) % 4), "dialect": lang, "ds": "2023-05-03"}
            for k in (1, 2)]


@pytest.fixture(scope="module")
def belebele_repo(hub):
    """``facebook/belebele`` as its README has it since commit 72d7d68 ("Modify config to enable
    downloading just one language/file at a time"): one config per language, split ``test``,
    path ``data/{lang}.jsonl``; the rows' fields as in its JSON Lines (``correct_answer_num`` a
    string "1".."4", ``question_number`` an integer, ``ds`` a date). The old loading script lies
    in ``unused/belebele.py``, where the loader does not look for one."""
    repo = hub / "facebook" / "belebele"
    _readme(repo, {lang: [("test", f"data/{lang}.jsonl")] for lang in BELEBELE_LANGS})
    for lang in BELEBELE_LANGS:
        _jsonl(repo / "data" / f"{lang}.jsonl", _belebele_rows(lang))
    (repo / "unused").mkdir()
    (repo / "unused" / "belebele.py").write_text('"""BELEBELE dataset."""\nimport datasets\n', encoding="utf-8")
    return repo


def test_belebele_reads_through_the_hub_path(belebele_repo):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.templates import load_template

    template = load_template("belebele")
    items = read_eval_split(f"hf:{belebele_repo}", template, list(BELEBELE_LANGS))
    assert list(items) == list(BELEBELE_LANGS)
    for lang in BELEBELE_LANGS:
        rows = _belebele_rows(lang)
        assert [it.label for it in items[lang]] == [int(r["correct_answer_num"]) for r in rows]
        assert [it.fields["question"] for it in items[lang]] == [r["question"].strip() for r in rows]
        assert [it.fields["mc_answer4"] for it in items[lang]] == [r["mc_answer4"] for r in rows]
        assert {it.lang for it in items[lang]} == {lang}
        assert items[lang][1].where == {"path": f"{belebele_repo} ({lang}, test)", "item": 2}


# --------------------------------------------------------------------------------------------
# Davlan/sib200

SIB_LANGS = ("eng_Latn", "fra_Latn")
SIB_SCHEMA = pa.schema([("index_id", pa.int64()), ("category", pa.string()), ("text", pa.string())])
SIB_SPLITS = {"train": ("science/technology", "travel", "politics"), "validation": ("sports", "health"),
              "test": ("entertainment", "geography", "travel")}


def _sib_rows(lang: str, split: str) -> list[dict]:
    return [{"index_id": 100 * len(split) + k, "category": category, "text": f"{lang} {split} text {k}"}
            for k, category in enumerate(SIB_SPLITS[split])]


@pytest.fixture(scope="module")
def sib200_repo(hub):
    """``Davlan/sib200`` in parquet: its loading script (``sib200.py``) gives one config per
    language with splits ``train``, ``validation`` and ``test`` and the columns ``index_id``
    (int64), ``category``, ``text``, which the hub's parquet export (branch
    ``refs/convert/parquet``, ``{lang}/{split}/0000.parquet``) keeps. The main branch holds the
    script (:func:`script_repos`), so it has no parquet layout of its own yet; this is the one
    the hub's conversion writes (``{lang}/{split}-00000-of-00001.parquet`` with README configs),
    as for MGSM."""
    repo = hub / "Davlan" / "sib200"
    _parquet_configs(repo, SIB_LANGS, list(SIB_SPLITS), _sib_rows, SIB_SCHEMA, declare=False)
    return repo


def test_sib200_reads_test_and_validation_splits_through_the_hub_path(sib200_repo):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.templates import load_template

    template = load_template("sib200")
    test = read_eval_split(f"hf:{sib200_repo}", template, list(SIB_LANGS))
    dev = read_eval_split(f"hf:{sib200_repo}", template, list(SIB_LANGS), dev=True)
    for lang in SIB_LANGS:
        assert [it.label for it in test[lang]] == list(SIB_SPLITS["test"])
        assert [it.fields["text"] for it in test[lang]] == [r["text"] for r in _sib_rows(lang, "test")]
        assert [it.fields["index_id"] for it in test[lang]] == [r["index_id"] for r in _sib_rows(lang, "test")]
        assert [it.label for it in dev[lang]] == list(SIB_SPLITS["validation"])  # the template's dev_split


# --------------------------------------------------------------------------------------------
# CohereLabs/Global-MMLU

MMLU_LANGS = ("en", "de", "te")  # 'de' and 'te' are also parts of the split names dev and test
MMLU_SCHEMA = pa.schema([(name, pa.bool_() if name == "is_annotated" else pa.string()) for name in (
    "sample_id", "subject", "subject_category", "question", "option_a", "option_b", "option_c", "option_d",
    "answer", "required_knowledge", "time_sensitive", "reference", "culture", "region", "country",
    "cultural_sensitivity_label", "is_annotated")])


def _mmlu_rows(lang: str, split: str) -> list[dict]:
    subjects = ("astronomy", "virology") if split == "test" else ("astronomy",)
    return [{"sample_id": f"{subject}/{split}/{k}", "subject": subject, "subject_category": "STEM",
             "question": f" {lang} {split} question {k} ", "option_a": "w", "option_b": "x", "option_c": "y",
             "option_d": "z", "answer": "ABCD"[(k + len(lang)) % 4], "required_knowledge": "[]",
             "time_sensitive": "[]", "reference": "[]", "culture": "[]", "region": "[]", "country": "[]",
             "cultural_sensitivity_label": ("CS", "CA")[k % 2], "is_annotated": True}
            for k, subject in enumerate(subjects)]


@pytest.fixture(scope="module")
def global_mmlu_repo(hub):
    """``CohereLabs/Global-MMLU`` as its README has it: one config per language code, splits
    ``test`` and ``dev`` at ``{lang}/test-*`` and ``{lang}/dev-*`` (files
    ``{lang}/test-00000-of-00001.parquet``), the 17 columns its ``dataset_info`` declares
    (strings, ``is_annotated`` a bool)."""
    repo = hub / "CohereLabs" / "Global-MMLU"
    _parquet_configs(repo, MMLU_LANGS, ("test", "dev"), _mmlu_rows, MMLU_SCHEMA)
    return repo


def test_global_mmlu_reads_test_and_dev_through_the_hub_path(global_mmlu_repo):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.templates import load_template

    template = load_template("global_mmlu")
    test = read_eval_split(f"hf:{global_mmlu_repo}", template, list(MMLU_LANGS))
    dev = read_eval_split(f"hf:{global_mmlu_repo}", template, list(MMLU_LANGS), dev=True)
    for lang in MMLU_LANGS:
        rows = _mmlu_rows(lang, "test")
        assert [it.label for it in test[lang]] == [r["answer"] for r in rows]
        assert [it.fields["question"] for it in test[lang]] == [r["question"].strip() for r in rows]
        assert [it.fields["cultural_sensitivity_label"] for it in test[lang]] == ["CS", "CA"]
        assert [it.fields["sample_id"] for it in dev[lang]] == [r["sample_id"] for r in _mmlu_rows(lang, "dev")]


# --------------------------------------------------------------------------------------------
# juletxara/mgsm

MGSM_LANGS = ("en", "de", "te")
MGSM_SCHEMA = pa.schema([("question", pa.string()), ("answer", pa.string()), ("answer_number", pa.int32()),
                         ("equation_solution", pa.string())])


def _mgsm_rows(lang: str, split: str) -> list[dict]:
    if split == "test":  # the test split has no worked answer
        return [{"question": f"{lang} problem {k}", "answer": None, "answer_number": 10 * k + len(lang),
                 "equation_solution": None} for k in (1, 2, 3)]
    return [{"question": f"{lang} exemplar {k}", "answer": f"{lang} step-by-step answer {k}",
             "answer_number": k, "equation_solution": f"{k} = {k}."} for k in (1, 2)]


@pytest.fixture(scope="module")
def mgsm_repo(hub):
    """``juletxara/mgsm`` after its conversion to parquet (lm-evaluation-harness PR #3810, closed
    on 2026-06-22 because the repository had been converted): the configs and columns of its
    former loading script (one config per language, splits ``train`` with the 8 exemplars and
    ``test``; ``question``, ``answer``, ``answer_number`` int32, ``equation_solution``, the last
    null in test, as in the parquet copy ``jbross-ibm-research/mgsm``). The converted file paths
    were not found; this is the layout the hub's conversion writes
    (``{lang}/{split}-00000-of-00001.parquet`` with README configs)."""
    repo = hub / "juletxara" / "mgsm"
    _parquet_configs(repo, MGSM_LANGS, ("train", "test"), _mgsm_rows, MGSM_SCHEMA)
    return repo


def test_mgsm_reads_test_and_train_through_the_hub_path(mgsm_repo):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.mgsm import load_mgsm_cot_task, load_mgsm_task

    test = read_eval_split(f"hf:{mgsm_repo}", load_mgsm_task(), list(MGSM_LANGS))
    exemplars = read_eval_split(f"hf:{mgsm_repo}", load_mgsm_cot_task(), list(MGSM_LANGS), dev=True)
    for lang in MGSM_LANGS:
        assert [it.label for it in test[lang]] == [str(r["answer_number"]) for r in _mgsm_rows(lang, "test")]
        assert [it.fields for it in test[lang]] == [{"question": r["question"]} for r in _mgsm_rows(lang, "test")]
        assert [it.fields["answer"] for it in exemplars[lang]] == [r["answer"] for r in _mgsm_rows(lang, "train")]


@pytest.fixture(scope="module")
def script_repos(hub):
    """Repositories that hold only a loading script, as ``juletxara/mgsm`` did (``mgsm.py``,
    ``exemplars.py``, ``mgsm_{lang}.tsv``) and ``Davlan/sib200`` does at its last revision known
    here (February 2024: ``sib200.py`` beside its TSV files). The loader refuses a directory
    ``NAME`` holding ``NAME.py`` before it reads anything else, so the data files here are only
    stand-ins."""
    root = hub / "scripts"
    mgsm = root / "juletxara" / "mgsm"
    mgsm.mkdir(parents=True)
    (mgsm / "mgsm.py").write_text('"""MGSM."""\nimport datasets\n', encoding="utf-8")
    (mgsm / "exemplars.py").write_text("MGSM_EXEMPLARS = {}\n", encoding="utf-8")
    (mgsm / "mgsm_en.tsv").write_text("Two plus two?\t4\n", encoding="utf-8")
    (mgsm / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n# MGSM\n", encoding="utf-8")
    sib = root / "Davlan" / "sib200"
    (sib / "data" / "eng_Latn").mkdir(parents=True)
    (sib / "sib200.py").write_text('"""SIB-200."""\nimport datasets\n', encoding="utf-8")
    for split in ("train", "dev", "test"):
        (sib / "data" / "eng_Latn" / f"{split}.tsv").write_text("index_id\tcategory\ttext\n1\ttravel\tGo.\n",
                                                                encoding="utf-8")
    return {"mgsm": mgsm, "sib200": sib}


def test_a_script_only_dataset_is_one_line_naming_the_task_dataset_and_the_way_out(script_repos):
    from xlt.eval.cli import read_eval_split
    from xlt.eval.mgsm import load_mgsm_task
    from xlt.eval.templates import load_template

    for task, template, lang in (("mgsm", load_mgsm_task(), "en"), ("sib200", load_template("sib200"), "eng_Latn")):
        repo = script_repos[task]
        with pytest.raises(DataError) as caught:
            read_eval_split(f"hf:{repo}", template, [lang])
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"{task}: {repo} ")
        assert f"{repo.name}.py" in message and "loading script" in message
        assert "JSON Lines or parquet" in message and "offline" not in message


# --------------------------------------------------------------------------------------------
# openlanguagedata/flores_plus

FLORES_LANGS = ("eng_Latn", "fra_Latn", "deu_Latn")
FLORES_SCHEMA = pa.schema([("id", pa.int64()), ("iso_639_3", pa.string()), ("iso_15924", pa.string()),
                           ("glottocode", pa.string()), ("text", pa.string()), ("url", pa.string()),
                           ("domain", pa.string()), ("topic", pa.string()), ("has_image", pa.bool_()),
                           ("has_hyperlink", pa.bool_()), ("last_updated", pa.string())])
GLOTTOCODES = {"eng_Latn": "stan1293", "fra_Latn": "stan1290", "deu_Latn": "stan1295"}


def _flores_rows(lang: str, split: str) -> list[dict]:
    ids = (0, 1, 2) if split == "dev" else (0, 1, 2, 3)
    return [{"id": k, "iso_639_3": lang[:3], "iso_15924": lang[4:], "glottocode": GLOTTOCODES[lang],
             "text": f"{lang} {split} sentence {k}.", "url": f"https://en.wikinews.org/wiki/{k}",
             "domain": "wikinews", "topic": "science", "has_image": k == 1, "has_hyperlink": False,
             "last_updated": "1.0"} for k in ids]


@pytest.fixture(scope="module")
def flores_repo(hub):
    """``openlanguagedata/flores_plus``: files ``dev/{lang}.parquet`` and ``devtest/{lang}.parquet``
    (the paths its users pass as ``data_files``), one config per language over them (and a
    ``default`` config of every language), columns ``id``, ``iso_639_3``, ``iso_15924``,
    ``glottocode``, ``text``, ``url``, ``domain``, ``topic``, ``has_image``, ``has_hyperlink``,
    ``last_updated``. The column names are those its users filter and read (``iso_639_3``,
    ``iso_15924``, ``id``, ``text``); the dtypes of the metadata columns are assumed."""
    repo = hub / "openlanguagedata" / "flores_plus"
    configs = {"default": [("dev", "dev/*.parquet"), ("devtest", "devtest/*.parquet")]}
    configs.update({lang: [("dev", f"dev/{lang}.parquet"), ("devtest", f"devtest/{lang}.parquet")]
                    for lang in FLORES_LANGS})
    _readme(repo, configs)
    for lang in FLORES_LANGS:
        for split in ("dev", "devtest"):
            _parquet(repo / split / f"{lang}.parquet", _flores_rows(lang, split), FLORES_SCHEMA)
    return repo


def test_flores_reads_devtest_and_dev_through_the_hub_path(flores_repo):
    from xlt.eval.flores import direction_items, read_sentences

    source = f"hf:{flores_repo}"
    for lang in FLORES_LANGS:
        for split in ("devtest", "dev"):
            expected = {str(r["id"]): r["text"] for r in _flores_rows(lang, split)}
            assert read_sentences(source, lang, split=split) == expected
    eng, fra = (read_sentences(source, lang) for lang in ("eng_Latn", "fra_Latn"))
    assert direction_items(eng, fra, "eng_Latn", "fra_Latn") == [
        (str(k), f"eng_Latn devtest sentence {k}.", f"fra_Latn devtest sentence {k}.") for k in range(4)]


# --------------------------------------------------------------------------------------------
# a language the dataset lacks, a split it lacks


def test_a_missing_language_is_one_line_naming_task_dataset_and_language(belebele_repo, flores_repo, global_mmlu_repo):
    from xlt.eval.flores import read_sentences
    from xlt.eval.readers import hub_rows

    cases = [(lambda: hub_rows(str(belebele_repo), "deu_Latn", "test", task="belebele"), "belebele",
              belebele_repo, "deu_Latn", ["eng_Latn", "fra_Latn"]),
             (lambda: read_sentences(f"hf:{flores_repo}", "swh_Latn"), "flores", flores_repo, "swh_Latn",
              ["default", *FLORES_LANGS]),
             (lambda: hub_rows(str(global_mmlu_repo), "fr", "test", task="global_mmlu"), "global_mmlu",
              global_mmlu_repo, "fr", list(MMLU_LANGS))]
    for call, task, repo, lang, configs in cases:
        with pytest.raises(DataError) as caught:
            call()
        assert str(caught.value) == f"{task}: the dataset {repo} has no language {lang!r} (it has {', '.join(configs)})"


def test_a_long_list_of_languages_is_cut_to_its_first_eight():
    from xlt.eval.readers import _names

    codes = [f"l{k:02d}_Latn" for k in range(205)]
    message = f"BuilderConfig 'xx' not found. Available: {codes!r}"
    assert _names(message, "Available:") == ", ".join(codes[:8]) + ", ... (205 in all)"
    assert _names("no list here", "Available:") is None


def test_a_missing_split_is_one_line_naming_the_split_not_a_missing_language(global_mmlu_repo, belebele_repo):
    """The split names of Global-MMLU (dev, test) hold the language codes de and te: a wrong
    split in those languages is still a wrong split."""
    from xlt.eval.readers import hub_rows

    for repo, lang, split, have in ((global_mmlu_repo, "de", "validation", "test, dev"),
                                    (global_mmlu_repo, "te", "train", "test, dev"),
                                    (belebele_repo, "eng_Latn", "validation", "test")):
        with pytest.raises(DataError) as caught:
            hub_rows(str(repo), lang, split, task="t")
        assert str(caught.value) == f"t: the dataset {repo} ({lang}) has no split {split!r} (its splits: {have})"


def test_a_missing_directory_is_not_called_offline(hub):
    from xlt.eval.readers import hub_rows

    missing = hub / "nowhere" / "facebook" / "belebele"
    with pytest.raises(DataError) as caught:
        hub_rows(str(missing), "eng_Latn", "test", task="belebele")
    assert str(caught.value) == (f"belebele: cannot load {missing} (eng_Latn, test) (FileNotFoundError: Couldn't "
                                 f"find any data file at {missing}.); give a local JSON Lines or parquet file in "
                                 "the same schema")


def test_a_gated_dataset_without_access_says_how_to_get_it(monkeypatch):
    """FLORES+ is gated on the hub; datasets 5 raises DatasetNotFoundError with this text when
    the terms are not accepted (no hub here, so the call is replaced by that error)."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    from xlt.eval.flores import read_sentences

    def gated(path, *args, **kwargs):
        raise DatasetNotFoundError(f"Dataset '{path}' is a gated dataset on the Hub. You must be authenticated "
                                   "to access it.")

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(DataError) as caught:
        read_sentences("hf:openlanguagedata/flores_plus", "eng_Latn")
    assert str(caught.value) == ("flores: openlanguagedata/flores_plus is a gated dataset: accept its terms on its "
                                 "hub page and log in (hf auth login, or HF_TOKEN), or give local JSON Lines or "
                                 "parquet files in its schema")


# --------------------------------------------------------------------------------------------
# the command line


def test_eval_suite_scores_hub_layout_directories(tiny_llama_dir, belebele_repo, sib200_repo, flores_repo,
                                                  global_mmlu_repo, mgsm_repo, tmp_path, capsys):
    """``xlt eval suite --data TASK=hf:DIR``: Belebele, SIB-200, FLORES+, Global-MMLU and MGSM
    read through ``load_dataset`` and scored, one part per (task, language)."""
    from xlt.cli import main

    out = tmp_path / "suite"
    assert main(["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "belebele,sib200,flores",
                 "--languages", "eng_Latn,fra_Latn", "--data", f"belebele=hf:{belebele_repo}",
                 f"sib200=hf:{sib200_repo}", f"flores=hf:{flores_repo}", "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["tasks"]["belebele"]["data"] == f"hf:{belebele_repo}"
    for lang in ("eng_Latn", "fra_Latn"):
        assert report["results"]["belebele"][lang]["n"] == len(_belebele_rows(lang))
        assert report["results"]["sib200"][lang]["n"] == len(SIB_SPLITS["test"])
    assert report["results"]["flores"]["eng_Latn-fra_Latn"]["n"] == len(_flores_rows("eng_Latn", "devtest"))
    # Global-MMLU and MGSM (language codes en, de)
    out = tmp_path / "suite-en-de"
    assert main(["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "global_mmlu,mgsm", "--languages", "en,de",
                 "--data", f"global_mmlu=hf:{global_mmlu_repo}", f"mgsm=hf:{mgsm_repo}", "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    for lang in ("en", "de"):
        assert report["results"]["global_mmlu"][lang]["n"] == len(_mmlu_rows(lang, "test"))
        assert report["results"]["mgsm"][lang]["n"] == len(_mgsm_rows(lang, "test"))
        targets = [p["target"] for p in json.loads((out / "parts" / f"mgsm.{lang}.json").read_text())["predictions"]]
        assert targets == [str(r["answer_number"]) for r in _mgsm_rows(lang, "test")]
    capsys.readouterr()


def test_eval_suite_on_a_script_only_dataset_fails_in_one_line(xlt_cli, script_repos, tmp_path):
    repo = script_repos["mgsm"]
    result = xlt_cli("eval", "suite", "--model", str(tmp_path / "no-model"), "--tasks", "mgsm", "--languages", "en",
                     "--data", f"mgsm=hf:{repo}", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"xlt: error: mgsm: {repo} ")
    assert "mgsm.py" in lines[0]
    assert not (tmp_path / "out").exists()
