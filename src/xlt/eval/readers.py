"""Readers for the public files of the multilingual multiple-choice benchmarks.

Each reader turns one file into :class:`RawItem` records: the fields a template refers to
(``{sentence1}``, ``{premise}``, ...), the raw gold label (mapped to a choice index by the
template's ``labels``) and the place it came from (``file:line``) for error messages.

========== ==================================================================================
reader     accepted layouts
========== ==================================================================================
pawsx      TSV with header ``id sentence1 sentence2 label`` (the official ``x-final`` files);
           JSON Lines ``id, sentence1, sentence2, label`` (the hub's rows)
xnli       TSV without header ``premise hypothesis label-word`` (the reference's); the
           official XNLI TSV (header with ``gold_label``, ``sentence1``, ``sentence2`` and
           ``language``); JSON Lines ``premise, hypothesis, label`` (0/1/2 or a word)
xcopa      JSON Lines ``premise, choice1, choice2, question, label`` (label 0/1)
xstorycloze TSV with header (id, four sentences, two endings, answer 1/2); JSON Lines
           ``input_sentence_1..4, sentence_quiz1, sentence_quiz2, answer_right_ending``
xwinograd  JSON Lines ``sentence_part1, sentence_part2, option1, option2, answer`` (the
           reference's split) or ``sentence`` with a ``_`` blank, ``option1, option2, answer``
jsonl      any JSON Lines / JSON array: every key is a field, ``label_field`` is the label
belebele   Belebele (``facebook/belebele``) rows: ``flores_passage, question, mc_answer1..4,
           correct_answer_num`` (1-4), ``dialect`` (the language); JSON Lines, JSON or parquet
sib200     SIB-200 (``Davlan/sib200``) rows: ``index_id, text, category`` (one of the 7
           topics); JSON Lines, JSON or parquet
global_mmlu Global-MMLU (``CohereLabs/Global-MMLU``) rows: ``question, option_a..option_d,
           answer`` (A-D), ``subject, subject_category, cultural_sensitivity_label, sample_id``
========== ==================================================================================

The last three read their files through the ``datasets`` library (the ``json`` and ``parquet``
builders), the same code that loads them from the hub (:func:`hub_rows`), and name the task in
every error.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from xlt.errors import DataError

XNLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass
class RawItem:
    """One benchmark item before templating: fields, raw label, language and origin."""

    fields: dict[str, Any]
    label: Any
    lang: str | None = None
    where: dict[str, Any] = field(default_factory=dict)  # {"path", "line"} for DataError


def _open(path: Path):
    if not path.is_file():
        raise DataError("no such file" + (" (it is a directory)" if path.is_dir() else ""), path=path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, columns) of a TSV file; quotes are not special (as in the benchmarks)."""
    try:
        with _open(path) as handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                yield number, line.split("\t")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path) from None


def _json_rows(path: Path) -> Iterator[tuple[dict, Any]]:
    try:
        with _open(path) as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path) from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from None
        for k, row in enumerate(rows, 1):
            yield {"path": path, "item": k}, row
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=number) from None
        if not isinstance(row, dict):
            raise DataError("expected a JSON object", path=path, line=number)
        yield {"path": path, "line": number}, row


def _require(row: dict, names: tuple[str, ...], where: dict) -> None:
    for name in names:
        if name not in row or row[name] is None:
            raise DataError(f"missing (expected fields {', '.join(names)})", field=name, **where)


def _int_label(value: Any, where: dict, name: str = "label") -> int:
    if isinstance(value, bool):
        raise DataError(f"expected an integer label, got {value}", field=name, **where)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise DataError(f"expected an integer label, got {value!r}", field=name, **where)


def _check_columns(cols: list[str], expected: int, names: str, path: Path, number: int) -> None:
    if len(cols) < expected:
        raise DataError(f"expected {expected} tab-separated columns ({names}), got {len(cols)}",
                        path=path, line=number)


def read_pawsx(path: Path) -> list[RawItem]:
    items = []
    if _is_json(path):  # the hub's rows (google-research-datasets/paws-x): id, sentence1, sentence2, label
        for where, row in _json_rows(path):
            _require(row, ("sentence1", "sentence2", "label"), where)
            items.append(RawItem({"sentence1": row["sentence1"], "sentence2": row["sentence2"],
                                  "id": row.get("id")}, _int_label(row["label"], where), where=where))
        return items
    header = None
    for number, cols in _tsv_rows(path):
        if header is None:
            header = [c.strip() for c in cols]
            if header[:1] == ["id"] or "sentence1" in header:
                if not {"sentence1", "sentence2", "label"} <= set(header):
                    raise DataError("header must name sentence1, sentence2 and label", path=path, line=number)
                continue
            header = ["id", "sentence1", "sentence2", "label"]
        _check_columns(cols, len(header), " ".join(header), path, number)
        row = dict(zip(header, cols))
        where = {"path": path, "line": number}
        items.append(RawItem({"sentence1": row["sentence1"], "sentence2": row["sentence2"], "id": row.get("id")},
                             _int_label(row["label"], where), where=where))
    return items


def read_xnli(path: Path) -> list[RawItem]:
    if _is_json(path):
        items = []
        for where, row in _json_rows(path):
            _require(row, ("premise", "hypothesis", "label"), where)
            label = row["label"]
            if not isinstance(label, str):
                index = _int_label(label, where)
                if not 0 <= index < 3:
                    raise DataError(f"label {index} is outside the 3 XNLI classes (0, 1, 2)",
                                    field="label", **where)
                label = XNLI_LABELS[index]
            items.append(RawItem({"premise": row["premise"], "hypothesis": row["hypothesis"]}, label,
                                 lang=row.get("language") or row.get("lang"), where=where))
        return items
    items = []
    header = None
    for number, cols in _tsv_rows(path):
        where = {"path": path, "line": number}
        if header is None:
            names = [c.strip() for c in cols]
            if "gold_label" in names and "sentence1" in names:
                header = names
                continue
            header = ["premise", "hypothesis", "label"]
        _check_columns(cols, len(header) if header[0] != "premise" else 3,
                       " ".join(header), path, number)
        row = dict(zip(header, cols))
        if "gold_label" in row:
            items.append(RawItem({"premise": row["sentence1"], "hypothesis": row["sentence2"]},
                                 row["gold_label"].strip(), lang=row.get("language"), where=where))
        else:
            items.append(RawItem({"premise": row["premise"], "hypothesis": row["hypothesis"]},
                                 row["label"].strip(), where=where))
    return items


def read_xcopa(path: Path) -> list[RawItem]:
    items = []
    for where, row in _json_rows(path):
        _require(row, ("premise", "choice1", "choice2", "question", "label"), where)
        # the reference needs integer labels; strings of digits are accepted here
        items.append(RawItem({k: row[k] for k in ("premise", "choice1", "choice2", "question")},
                             _int_label(row["label"], where), where=where))
    return items


STORY_JSON = ("input_sentence_1", "input_sentence_2", "input_sentence_3", "input_sentence_4",
              "sentence_quiz1", "sentence_quiz2", "answer_right_ending")


def read_xstorycloze(path: Path) -> list[RawItem]:
    items = []
    names = ("s1", "s2", "s3", "s4", "ending1", "ending2")
    if _is_json(path):
        for where, row in _json_rows(path):
            _require(row, STORY_JSON, where)
            items.append(RawItem(dict(zip(names, (row[k] for k in STORY_JSON[:6]))),
                                 _int_label(row["answer_right_ending"], where, "answer_right_ending"),
                                 where=where))
        return items
    first = True
    for number, cols in _tsv_rows(path):
        if first:
            first = False
            if not cols[-1].strip().isdigit():  # a header line
                continue
        _check_columns(cols, 8, "id, 4 sentences, 2 endings, answer", path, number)
        where = {"path": path, "line": number}
        items.append(RawItem(dict(zip(names, cols[1:7])), _int_label(cols[7], where, "answer"), where=where))
    return items


def read_xwinograd(path: Path) -> list[RawItem]:
    items = []
    for where, row in _json_rows(path):
        if "sentence" in row and "sentence_part1" not in row:
            _require(row, ("sentence", "option1", "option2", "answer"), where)
            if "_" not in row["sentence"]:
                raise DataError("no '_' blank in the sentence", field="sentence", **where)
            part1, part2 = row["sentence"].split("_", 1)
        else:
            _require(row, ("sentence_part1", "sentence_part2", "option1", "option2", "answer"), where)
            part1, part2 = row["sentence_part1"], row["sentence_part2"]
        items.append(RawItem({"part1": part1, "part2": part2, "option1": row["option1"],
                              "option2": row["option2"]},
                             _int_label(row["answer"], where, "answer"), lang=row.get("lang"), where=where))
    return items


def make_jsonl_reader(label_field: str = "label") -> Callable[[Path], list[RawItem]]:
    """A reader for any JSON Lines file: every key is a template field."""

    def read(path: Path) -> list[RawItem]:
        items = []
        for where, row in _json_rows(path):
            if not isinstance(row, dict):
                raise DataError("expected a JSON object", **where)
            _require(row, (label_field,), where)
            fields = {k: v for k, v in row.items() if k != label_field}
            items.append(RawItem(fields, row[label_field], lang=row.get("lang"), where=where))
        return items

    return read


# --------------------------------------------------------------------------------------------
# Datasets in a hub schema (Belebele, SIB-200): local files or the hub, through ``datasets``

BELEBELE_FIELDS = ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4",
                   "correct_answer_num")
#: SIB-200's seven topics, in the order lm-evaluation-harness lists them
SIB200_CATEGORIES = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
SIB200_FIELDS = ("text", "category")


def _quiet_datasets():
    """A context manager that hides ``datasets``' progress bars and restores them after."""
    import contextlib

    import datasets
    from datasets.utils import logging as ds_logging

    @contextlib.contextmanager
    def quiet():
        was_disabled = datasets.are_progress_bars_disabled()
        verbosity = ds_logging.get_verbosity()
        datasets.disable_progress_bars()
        ds_logging.set_verbosity_error()
        try:
            yield
        finally:
            ds_logging.set_verbosity(verbosity)
            if not was_disabled:
                datasets.enable_progress_bars()

    return quiet()


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__ or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__


def dataset_rows(path: Path, *, cache_dir: str | None = None) -> list[tuple[dict, dict]]:
    """``(where, row)`` of a local JSON Lines / JSON / parquet file, read by ``datasets``.

    ``where`` is ``{"path", "item"}`` (rows numbered from 1) for error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file" + (" (it is a directory)" if path.is_dir() else ""), path=path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".xz")]
    kind = "parquet" if suffixes and suffixes[-1] == ".parquet" else "json"
    import datasets

    with _quiet_datasets():
        try:
            table = datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=cache_dir)
        except Exception as exc:  # datasets wraps every parse error in its own exception types
            raise DataError(f"not a {'parquet' if kind == 'parquet' else 'JSON Lines'} file the datasets "
                            f"library can read ({_reason(exc)})", path=path) from None
    return [({"path": path, "item": k}, row) for k, row in enumerate(table, 1)]


def hub_rows(dataset_id: str, config: str, split: str, *, task: str,
             cache_dir: str | None = None) -> list[tuple[dict, dict]]:
    """``(where, row)`` of ``load_dataset(dataset_id, config, split=split)`` (``config`` is the
    language, as Belebele and SIB-200 name theirs). ``dataset_id`` is a hub id or a local
    directory laid out as a hub repository (README ``configs:`` over data files). A language the
    dataset lacks, a split it lacks, a repository that holds only a loading script (which
    ``datasets`` 4 and later refuse to run), a gated dataset without access or a hub that cannot
    be reached is one :class:`DataError` naming the task and the dataset."""
    import datasets

    source = f"{dataset_id} ({config}, {split})"
    with _quiet_datasets():
        try:
            table = datasets.load_dataset(dataset_id, config, split=split, cache_dir=cache_dir)
        except Exception as exc:  # the types vary by version: ValueError, RuntimeError, ConnectionError...
            raise _hub_error(exc, dataset_id, config, split, task) from None
    return [({"path": source, "item": k}, row) for k, row in enumerate(table, 1)]


def _names(message: str, after: str, show: int = 8) -> str | None:
    """The quoted names of the list that follows ``after`` in a ``datasets`` message, the first
    ``show`` of them (``"eng_Latn, fra_Latn"``), or None when there is no such list."""
    import re

    found = re.search(re.escape(after) + r"\s*\[([^\]]*)\]", message)
    if found is None:
        return None
    names = re.findall(r"'([^']*)'", found.group(1))
    more = f", ... ({len(names)} in all)" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def _hub_error(exc: Exception, dataset_id: str, config: str, split: str, task: str) -> DataError:
    """``load_dataset``'s error as one line. The kinds are told apart by datasets' own wording
    (5.x): ``BuilderConfig 'X' not found. Available: [...]``, ``Unknown split "X". Should be one
    of [...]``, ``Dataset scripts are no longer supported, but found NAME.py``, ``Dataset 'ID' is a
    gated dataset on the Hub. ...``."""
    message = _reason(exc)
    lower = message.lower()
    if isinstance(exc, ValueError) and "config" in lower and "not found" in lower:
        has = _names(message, "Available:")
        return DataError(f"{task}: the dataset {dataset_id} has no language {config!r} "
                         f"({f'it has {has}' if has is not None else message})")
    if isinstance(exc, ValueError) and "unknown split" in lower:
        has = _names(message, "Should be one of")
        return DataError(f"{task}: the dataset {dataset_id} ({config}) has no split {split!r} "
                         f"({f'its splits: {has}' if has is not None else message})")
    if "scripts are no longer supported" in lower:
        script = message.rsplit(" ", 1)[-1]
        return DataError(f"{task}: {dataset_id} holds a loading script ({script}), which the datasets library "
                         "no longer runs (since 4.0); give local JSON Lines or parquet files in the "
                         "dataset's schema, or hf:ID of a copy in parquet")
    if "is a gated dataset" in str(exc).lower():  # FLORES+ is: its terms are accepted on its page
        return DataError(f"{task}: {dataset_id} is a gated dataset: accept its terms on its hub page and log in "
                         "(hf auth login, or HF_TOKEN), or give local JSON Lines or parquet files in its schema")
    if isinstance(exc, ValueError):
        return DataError(f"{task}: cannot load {dataset_id} ({config}, {split}): {message}")
    offline = "offline, " if isinstance(exc, ConnectionError) else ""  # not for a missing directory
    return DataError(f"{task}: cannot load {dataset_id} ({config}, {split}) ({type(exc).__name__}: {message}); "
                     f"{offline}give a local JSON Lines or parquet file in the same schema")


def _require_task(row: dict, names: tuple[str, ...], where: dict, task: str) -> None:
    for name in names:
        if row.get(name) is None:
            raise DataError(f"{task}: missing (expected fields {', '.join(names)})", field=name, **where)


def belebele_items(rows: list[tuple[dict, dict]], task: str = "belebele") -> list[RawItem]:
    """Belebele rows -> RawItems: the passage, the question (stripped, as the harness does), the
    four answers; label: ``correct_answer_num`` as an integer 1-4; language: ``dialect``."""
    items = []
    for where, row in rows:
        _require_task(row, BELEBELE_FIELDS, where, task)
        answer = str(row["correct_answer_num"]).strip()
        if answer not in ("1", "2", "3", "4"):
            raise DataError(f"{task}: answer number {row['correct_answer_num']!r} is outside the options "
                            "(expected 1, 2, 3 or 4)", field="correct_answer_num", **where)
        fields = {name: str(row[name]) for name in BELEBELE_FIELDS[:-1]}
        fields["question"] = fields["question"].strip()
        items.append(RawItem(fields, int(answer), lang=row.get("dialect"), where=where))
    return items


def sib200_items(rows: list[tuple[dict, dict]], task: str = "sib200") -> list[RawItem]:
    """SIB-200 rows -> RawItems: ``text``; label: ``category``, one of :data:`SIB200_CATEGORIES`."""
    items = []
    for where, row in rows:
        _require_task(row, SIB200_FIELDS, where, task)
        if row["category"] not in SIB200_CATEGORIES:
            raise DataError(f"{task}: category {row['category']!r} is not one of the 7 topics "
                            f"({', '.join(SIB200_CATEGORIES)})", field="category", **where)
        items.append(RawItem({"text": str(row["text"]), "index_id": row.get("index_id")}, row["category"],
                             where=where))
    return items


GLOBAL_MMLU_FIELDS = ("question", "option_a", "option_b", "option_c", "option_d", "answer")
#: Global-MMLU's optional fields, kept on each item (the subject groups demonstrations; the
#: cultural-sensitivity label, CS or CA where annotated, splits the accuracy)
GLOBAL_MMLU_EXTRA = ("subject", "subject_category", "cultural_sensitivity_label", "sample_id")


def global_mmlu_items(rows: list[tuple[dict, dict]], task: str = "global_mmlu") -> list[RawItem]:
    """Global-MMLU rows (``CohereLabs/Global-MMLU``, also Global-MMLU-Lite) -> RawItems: the
    question (stripped, as the harness does), the four options; label: ``answer``, a letter A-D;
    ``subject``, ``subject_category``, ``cultural_sensitivity_label`` and ``sample_id`` kept as
    fields ("" where absent)."""
    items = []
    for where, row in rows:
        _require_task(row, GLOBAL_MMLU_FIELDS, where, task)
        answer = str(row["answer"]).strip()
        if answer not in ("A", "B", "C", "D"):
            raise DataError(f"{task}: answer {row['answer']!r} is outside the options (expected A, B, C or D)",
                            field="answer", **where)
        fields = {name: str(row[name]) for name in GLOBAL_MMLU_FIELDS[:-1]}
        fields["question"] = fields["question"].strip()
        fields.update({name: "" if row.get(name) is None else str(row[name]) for name in GLOBAL_MMLU_EXTRA})
        items.append(RawItem(fields, answer, where=where))
    return items


def mgsm_items(rows: list[tuple[dict, dict]], task: str = "mgsm") -> list[RawItem]:
    """MGSM rows -> RawItems (:func:`xlt.eval.mgsm.mgsm_items`)."""
    from xlt.eval.mgsm import mgsm_items as read

    return read(rows, task)


#: readers of rows already loaded (from the hub), by reader name
ROW_READERS: dict[str, Callable[[list[tuple[dict, dict]]], list[RawItem]]] = {
    "belebele": belebele_items,
    "sib200": sib200_items,
    "global_mmlu": global_mmlu_items,
    "mgsm": mgsm_items,
}


def _is_json(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return bool(suffixes) and suffixes[-1] in (".jsonl", ".json", ".ndjson")


READERS: dict[str, Callable[[Path], list[RawItem]]] = {
    "pawsx": read_pawsx,
    "xnli": read_xnli,
    "xcopa": read_xcopa,
    "xstorycloze": read_xstorycloze,
    "xwinograd": read_xwinograd,
    "belebele": lambda path: belebele_items(dataset_rows(path)),
    "sib200": lambda path: sib200_items(dataset_rows(path)),
    "global_mmlu": lambda path: global_mmlu_items(dataset_rows(path)),
    "mgsm": lambda path: mgsm_items(dataset_rows(path)),
}


def get_reader(name: str, label_field: str = "label") -> Callable[[Path], list[RawItem]]:
    if name == "jsonl":
        return make_jsonl_reader(label_field)
    if name not in READERS:
        raise DataError(f"unknown reader {name!r} (expected one of {', '.join([*READERS, 'jsonl'])})")
    return READERS[name]
