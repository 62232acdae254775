"""Property-based tests of the record readers and writers (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlt.errors import DataError
from xlt.formats import (MultipleChoiceItem, ParallelPair, TaskExample, read_records, write_jsonl)

CODES = st.sampled_from(["en", "de", "zh", "qaa", "deu_Latn", "zh-CN", "pt_BR"])
# any printable text including newlines, quotes and non-Latin scripts, with something visible in it
TEXT = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")

TASKS = st.builds(TaskExample, lang=CODES, prompt=TEXT, completion=TEXT)
PAIRS = st.builds(ParallelPair, src_lang=CODES, tgt_lang=CODES, src=TEXT, tgt=TEXT)
CHOICES = st.lists(TEXT, min_size=2, max_size=5).flatmap(
    lambda cs: st.builds(MultipleChoiceItem, lang=CODES, context=st.text(max_size=30),
                         choices=st.just(tuple(cs)), label=st.integers(0, len(cs) - 1)))

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(records=st.lists(TASKS, min_size=1, max_size=8), suffix=st.sampled_from([".jsonl", ".json", ".jsonl.gz"]))
def test_task_roundtrip(tmp_path_factory, records, suffix):
    path = tmp_path_factory.mktemp("p") / f"r{suffix}"
    write_jsonl(path, records)
    assert read_records(path, "task") == records


@FAST
@given(records=st.lists(PAIRS, min_size=1, max_size=8))
def test_pair_roundtrip(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("p") / "r.jsonl"
    write_jsonl(path, records)
    assert read_records(path, "parallel") == records


@FAST
@given(records=st.lists(CHOICES, min_size=1, max_size=6))
def test_choice_roundtrip(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("p") / "r.jsonl"
    write_jsonl(path, records)
    assert read_records(path, "choice") == records


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


@FAST
@given(good=st.lists(TASKS, min_size=0, max_size=4), bad=st.dictionaries(
    st.sampled_from(["lang", "prompt", "completion", "other"]), JSON_VALUES, max_size=4))
def test_any_row_is_either_a_record_or_a_located_error(tmp_path_factory, good, bad):
    """Whatever a line holds, reading yields valid records or a DataError that names its line."""
    path = tmp_path_factory.mktemp("p") / "r.jsonl"
    lines = [json.dumps(r.to_dict()) for r in good] + [json.dumps(bad)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        records = read_records(path, "task")
    except DataError as err:
        assert err.line == len(good) + 1
        assert str(err).startswith(f"{path}:{len(good) + 1}: ")
    else:
        assert len(records) == len(good) + 1
        last = records[-1]
        assert all(isinstance(getattr(last, f), str) and getattr(last, f).strip() for f in ("prompt", "completion"))


@FAST
@given(raw=st.binary(min_size=1, max_size=60))
def test_arbitrary_bytes_never_crash_the_reader(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("p") / "r.jsonl"
    path.write_bytes(raw)
    try:
        read_records(path, "task")
    except DataError as err:
        assert str(err).startswith(str(path))
