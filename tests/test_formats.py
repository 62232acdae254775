"""Record formats: readers for every container, validation errors naming file, line and field."""

from __future__ import annotations

import gzip
import json

import pytest

from xlt.errors import DataError
from xlt.formats import (MultipleChoiceItem, ParallelPair, TaskExample, check_language, is_hub_id,
                         languages_of, read_multiple_choice, read_parallel_pairs, read_records,
                         read_task_examples, write_jsonl)

TASKS = [
    {"lang": "en", "prompt": "Is the sky blue?", "completion": "yes"},
    {"lang": "de", "prompt": "Ist der Himmel grün?", "completion": "nein"},
]


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_roundtrip_preserves_records(tmp_path):
    records = [TaskExample(**row) for row in TASKS]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    assert read_task_examples(path) == records
    # one object per line, non-ASCII kept as is
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "grün" in lines[1]


def test_all_containers_read_the_same_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = [TaskExample(**row) for row in TASKS]
    as_array = tmp_path / "a.json"
    as_array.write_text(json.dumps(TASKS), encoding="utf-8")
    jsonl_in_json = _write_lines(tmp_path / "b.json", [json.dumps(r) for r in TASKS])
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in TASKS))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(TASKS), parquet)
    for path in (as_array, jsonl_in_json, gz, parquet):
        assert read_task_examples(path) == expected, path.name


def test_gzip_writer_is_byte_deterministic(tmp_path):
    records = [TaskExample(**row) for row in TASKS]
    a = write_jsonl(tmp_path / "a.jsonl.gz", records).read_bytes()
    b = write_jsonl(tmp_path / "b.jsonl.gz", records).read_bytes()
    assert a == b
    assert read_task_examples(tmp_path / "a.jsonl.gz") == records


def test_parallel_and_choice_records(tmp_path):
    pairs = _write_lines(tmp_path / "p.jsonl", [
        json.dumps({"src_lang": "en", "tgt_lang": "de", "src": "Hello.", "tgt": "Hallo.", "id": 7})])
    (pair,) = read_parallel_pairs(pairs)
    assert pair == ParallelPair("en", "de", "Hello.", "Hallo.")  # extra keys ignored
    items = _write_lines(tmp_path / "c.jsonl", [
        json.dumps({"lang": "en", "context": "", "choices": ["yes", "no"], "label": 1})])
    (item,) = read_multiple_choice(items)
    assert item == MultipleChoiceItem("en", "", ("yes", "no"), 1)
    assert item.to_dict()["choices"] == ["yes", "no"]


@pytest.mark.parametrize("line, field, fragment", [
    ('{"lang": "en", "prompt": "p"}', "completion", "missing"),
    ('{"lang": "en", "prompt": "p", "completion": ""}', "completion", "empty text"),
    ('{"lang": "en", "prompt": "   ", "completion": "c"}', "prompt", "empty text"),
    ('{"lang": "en", "prompt": 3, "completion": "c"}', "prompt", "expected a string, got number 3"),
    ('{"lang": "English", "prompt": "p", "completion": "c"}', "lang", "not a language code"),
    ('{"lang": null, "prompt": "p", "completion": "c"}', "lang", "missing"),
])
def test_task_errors_name_file_line_and_field(tmp_path, line, field, fragment):
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps(TASKS[0]), line])
    with pytest.raises(DataError) as info:
        read_task_examples(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 2, field)
    assert fragment in str(err)
    assert str(err).startswith(f"{path}:2: field '{field}': ")


def test_malformed_json_names_the_line(tmp_path):
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps(TASKS[0]), json.dumps(TASKS[1]), "{oops"])
    with pytest.raises(DataError, match=r"bad\.jsonl:3: invalid JSON"):
        read_task_examples(path)


def test_not_an_object(tmp_path):
    path = _write_lines(tmp_path / "bad.jsonl", ["[1, 2]"])
    with pytest.raises(DataError, match=r":1: expected a JSON object"):
        read_task_examples(path)


def test_array_items_are_numbered(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([TASKS[0], {"lang": "en", "prompt": "p"}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json item 2: field 'completion': missing"):
        read_task_examples(path)


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(TASKS[0]).encode() + b"\n" + b'{"lang": "en", "prompt": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not UTF-8"):
        read_task_examples(path)


def test_label_outside_choices(tmp_path):
    path = _write_lines(tmp_path / "c.jsonl", [
        json.dumps({"lang": "en", "context": "c", "choices": ["a", "b"], "label": 2})])
    with pytest.raises(DataError, match=r"c\.jsonl:1: field 'label': label 2 is outside the 2 choices"):
        read_multiple_choice(path)


@pytest.mark.parametrize("row, fragment", [
    ({"lang": "en", "context": "c", "choices": ["a"], "label": 0}, "at least 2"),
    ({"lang": "en", "context": "c", "choices": ["a", ""], "label": 0}, "choice 1"),
    ({"lang": "en", "context": "c", "choices": ["a", "b"], "label": "0"}, "integer index"),
    ({"lang": "en", "context": "c", "choices": ["a", "b"], "label": True}, "integer index"),
])
def test_choice_field_errors(tmp_path, row, fragment):
    path = _write_lines(tmp_path / "c.jsonl", [json.dumps(row)])
    with pytest.raises(DataError, match=fragment):
        read_multiple_choice(path)


def test_languages_restrict_codes(tmp_path):
    path = _write_lines(tmp_path / "t.jsonl", [json.dumps(r) for r in TASKS])
    assert len(read_records(path, "task", languages=["en", "de"])) == 2
    with pytest.raises(DataError, match=r"t\.jsonl:2: field 'lang': unknown language code 'de' "
                                        r"\(expected one of en, fr\)"):
        read_records(path, "task", languages=["en", "fr"])


@pytest.mark.parametrize("code, ok", [("en", True), ("deu_Latn", True), ("zh-CN", True), ("qaa", True),
                                      ("EN", False), ("english", False), ("e", False), ("", False)])
def test_language_code_shapes(code, ok):
    if ok:
        assert check_language(code) == code
    else:
        with pytest.raises(DataError):
            check_language(code)


def test_missing_empty_directory_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        read_task_examples(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        read_task_examples(tmp_path)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        read_task_examples(tmp_path / "x.csv")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no task records"):
        read_task_examples(tmp_path / "empty.jsonl")


def test_hub_ids_are_refused_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_hub_id("MBZUAI/Bactrian-X") and is_hub_id("owner/name:validation")
    assert not is_hub_id("data/train.jsonl") and not is_hub_id("./a/b")
    with pytest.raises(DataError, match="hub is offline"):
        read_task_examples("someone/some-dataset")


def test_convert_reads_foreign_layouts(tmp_path):
    path = _write_lines(tmp_path / "ref.jsonl", [json.dumps({"prompt": "p", "completion": "c"})])
    records = read_records(path, "task", convert=lambda row: {"lang": "en", **row})
    assert records == [TaskExample("en", "p", "c")]


def test_languages_of_keeps_first_appearance_order():
    pairs = [ParallelPair("fr", "en", "a", "b"), ParallelPair("en", "de", "c", "d")]
    assert languages_of(pairs) == ["fr", "en", "de"]
