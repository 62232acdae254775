"""Record types shared across the toolkit, their readers, writers and validation.

Three record kinds, one JSON object per record (``docs/data-formats.md``):

* :class:`TaskExample` — ``{"lang", "prompt", "completion"}``: a task instance; the model is
  trained to produce ``completion`` after ``prompt``.
* :class:`ParallelPair` — ``{"src_lang", "tgt_lang", "src", "tgt"}``: a sentence and its
  translation; used for alignment losses and as translation data.
* :class:`MultipleChoiceItem` — ``{"lang", "context", "choices", "label"}``: an item scored by
  comparing the likelihood of each choice after the context.

Readers accept local ``.jsonl``, ``.json`` (a JSON array, or JSON Lines), ``.parquet``, any of
them gzipped (``.jsonl.gz``), or a ``datasets`` hub id (``owner/name`` or ``owner/name:split``)
when the hub is reachable. Every problem is a :class:`~xlt.errors.DataError` naming the file,
the line (or item) and the field.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

from xlt.errors import DataError
from xlt.io import atomic_file

#: Language codes: ISO 639-1/3 (``en``, ``deu``), optionally with a script (``deu_Latn``,
#: as in FLORES/NLLB) or a region (``zh-CN``, ``pt_BR``).
LANG_CODE_RE = re.compile(r"^[a-z]{2,3}(?:[_-][A-Z][a-z]{3})?(?:[_-](?:[A-Z]{2}|[0-9]{3}))?$")

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.\[\]%:-]+)?$")


def check_language(code: Any, *, languages: Iterable[str] | None = None, path=None, line=None,
                   item=None, field: str = "lang") -> str:
    """Validate a language code; with ``languages`` it must also be one of them."""
    if not isinstance(code, str) or not code:
        raise DataError(f"expected a language code string, got {_describe(code)}", path=path,
                        line=line, item=item, field=field)
    if languages is not None:
        allowed = list(languages)
        if code not in allowed:
            raise DataError(f"unknown language code {code!r} (expected one of {', '.join(allowed)})",
                            path=path, line=line, item=item, field=field)
    elif not LANG_CODE_RE.match(code):
        raise DataError(f"{code!r} is not a language code (expected e.g. 'en', 'deu_Latn', 'zh-CN')",
                        path=path, line=line, item=item, field=field)
    return code


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "an empty string" if not value else f"string {value[:30]!r}"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Record types


@dataclass(frozen=True)
class Record:
    """Base of the record types: a frozen dataclass with validated construction from a dict."""

    #: field name -> kind: "text" (non-empty str), "text?" (str, may be empty), "lang",
    #: "choices" (list of >= 2 non-empty str), "label" (int index into choices)
    FIELDS: ClassVar[dict[str, str]] = {}
    KIND: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, row: Any, *, path=None, line=None, item=None,
                  languages: Iterable[str] | None = None):
        """Validate ``row`` and build a record; extra keys are ignored."""
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object with fields {', '.join(cls.FIELDS)}, "
                            f"got {_describe(row)}", path=path, line=line, item=item)
        values = {}
        for name, kind in cls.FIELDS.items():
            where = dict(path=path, line=line, item=item, field=name)
            if name not in row or row[name] is None:
                raise DataError("missing (required for a " + cls.KIND + " record)", **where)
            value = row[name]
            if kind == "lang":
                value = check_language(value, languages=languages, **where)
            elif kind in ("text", "text?"):
                if not isinstance(value, str):
                    raise DataError(f"expected a string, got {_describe(value)}", **where)
                if kind == "text" and not value.strip():
                    raise DataError("empty text", **where)
            elif kind == "choices":
                if not isinstance(value, (list, tuple)) or len(value) < 2:
                    raise DataError(f"expected a list of at least 2 strings, got {_describe(value)}"
                                    + (f" of length {len(value)}" if isinstance(value, (list, tuple)) else ""),
                                    **where)
                for k, choice in enumerate(value):
                    if not isinstance(choice, str) or not choice.strip():
                        raise DataError(f"choice {k} must be a non-empty string, got {_describe(choice)}",
                                        **where)
                value = tuple(value)
            elif kind == "label":
                if isinstance(value, bool) or not isinstance(value, int):
                    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                        value = int(value)
                    else:
                        raise DataError(f"expected an integer index into 'choices', got {_describe(value)}",
                                        **where)
            values[name] = value
        record = cls(**values)
        record._check(path=path, line=line, item=item)
        return record

    def _check(self, **where) -> None:  # cross-field checks
        pass

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class TaskExample(Record):
    """A task instance: the model learns to produce ``completion`` after ``prompt``."""

    lang: str
    prompt: str
    completion: str
    FIELDS: ClassVar[dict[str, str]] = {"lang": "lang", "prompt": "text", "completion": "text"}
    KIND: ClassVar[str] = "task"


@dataclass(frozen=True)
class ParallelPair(Record):
    """A sentence ``src`` in ``src_lang`` and its translation ``tgt`` in ``tgt_lang``."""

    src_lang: str
    tgt_lang: str
    src: str
    tgt: str
    FIELDS: ClassVar[dict[str, str]] = {"src_lang": "lang", "tgt_lang": "lang", "src": "text", "tgt": "text"}
    KIND: ClassVar[str] = "parallel"


@dataclass(frozen=True)
class MultipleChoiceItem(Record):
    """An item scored by the likelihood of each choice after ``context`` (which may be empty)."""

    lang: str
    context: str
    choices: tuple[str, ...]
    label: int
    FIELDS: ClassVar[dict[str, str]] = {"lang": "lang", "context": "text?", "choices": "choices",
                                        "label": "label"}
    KIND: ClassVar[str] = "choice"

    def _check(self, **where) -> None:
        if not 0 <= self.label < len(self.choices):
            raise DataError(f"label {self.label} is outside the {len(self.choices)} choices "
                            f"(expected 0..{len(self.choices) - 1})", field="label", **where)


RECORD_TYPES: dict[str, type[Record]] = {
    "task": TaskExample,
    "parallel": ParallelPair,
    "choice": MultipleChoiceItem,
}


# --------------------------------------------------------------------------------------------
# Raw rows


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline=None)


def _inner_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def is_hub_id(source: str) -> bool:
    """Whether ``source`` looks like a ``datasets`` hub id rather than a local path."""
    return bool(_HUB_ID_RE.match(source)) and not source.startswith((".", "/")) and not Path(source).suffix


def iter_rows(source: str | os.PathLike) -> Iterator[tuple[dict[str, int], Any]]:
    """Yield ``(location, row)`` for every record of a file or hub dataset.

    ``location`` is ``{"line": n}`` for JSON Lines and ``{"item": n}`` for JSON arrays,
    parquet tables and hub datasets (both 1-based), ready to pass to :class:`DataError`.
    """
    path = Path(source)
    if not path.exists():
        text = os.fspath(source)
        if is_hub_id(text):
            yield from _iter_hub_rows(text)
            return
        raise DataError("no such file", path=path)
    if path.is_dir():
        raise DataError("is a directory, expected a data file (.jsonl, .json, .parquet, optionally .gz)",
                        path=path)
    suffix = _inner_suffix(path)
    if suffix == ".parquet":
        yield from _iter_parquet_rows(path)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        yield from _iter_json_rows(path, may_be_array=suffix == ".json")
    else:
        raise DataError(f"unsupported file type {suffix or '(none)'!r} "
                        "(expected .jsonl, .json, .parquet, optionally .gz)", path=path)


def _iter_json_rows(path: Path, may_be_array: bool) -> Iterator[tuple[dict[str, int], Any]]:
    try:
        with _open_text(path) as handle:
            # A .json file may hold one array or be JSON Lines; peek at the first character.
            head = handle.read(4096)
            stripped = head.lstrip()
            if may_be_array and stripped.startswith("["):
                text = head + handle.read()
                try:
                    rows = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path,
                                    line=exc.lineno) from None
                for k, row in enumerate(rows, 1):
                    yield {"item": k}, row
                return
            lines = _lines(head, handle)
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path,
                                    line=number) from None
                yield {"line": number}, row
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path,
                        line=_line_of_byte(path, exc)) from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read: {exc}", path=path) from None


def _lines(head: str, handle) -> Iterator[str]:
    """Lines of ``head`` followed by the rest of ``handle``, read in 1 MiB chunks."""
    buffered = head
    while True:
        *complete, buffered = buffered.split("\n")
        yield from complete
        chunk = handle.read(1 << 20)
        if not chunk:
            break
        buffered += chunk
    if buffered:
        yield buffered


def _line_of_byte(path: Path, exc: UnicodeDecodeError) -> int | None:
    """Best effort: the line holding the first undecodable byte (plain files only)."""
    if path.suffix == ".gz":
        return None
    with open(path, "rb") as handle:
        data = handle.read()
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return None


def _iter_parquet_rows(path: Path) -> Iterator[tuple[dict[str, int], Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with datasets
        raise DataError(f"reading parquet needs pyarrow ({exc})", path=path) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"not a readable parquet file ({type(exc).__name__}: {exc})", path=path) from None
    for k, row in enumerate(table.to_pylist(), 1):
        yield {"item": k}, row


def _iter_hub_rows(source: str) -> Iterator[tuple[dict[str, int], Any]]:
    name, _, split = source.partition(":")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DataError("no such file, and the hub is offline (HF_HUB_OFFLINE=1) so it cannot be "
                        "loaded as a dataset id", path=source)
    try:
        import datasets
        data = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:
        raise DataError(f"cannot load hub dataset ({type(exc).__name__}: {exc})".splitlines()[0],
                        path=source) from None
    for k, row in enumerate(data, 1):
        yield {"item": k}, row


# --------------------------------------------------------------------------------------------
# Typed readers and writers


def read_records(source: str | os.PathLike, kind: str | type[Record], *,
                 languages: Iterable[str] | None = None, allow_empty: bool = False,
                 convert: Callable[[Any], Any] | None = None) -> list:
    """Read and validate every record of ``source`` as ``kind`` ("task", "parallel", "choice").

    ``languages`` restricts language codes to a known set. ``convert`` maps a raw row to the
    toolkit's layout first (used to read the reference repositories' own formats).
    An empty file is an error unless ``allow_empty``.
    """
    cls = RECORD_TYPES[kind] if isinstance(kind, str) else kind
    allowed = list(languages) if languages is not None else None
    records = []
    for where, row in iter_rows(source):
        if convert is not None:
            try:
                row = convert(row)
            except DataError as exc:
                raise DataError(exc.reason, path=source, field=exc.field, **where) from None
        records.append(cls.from_dict(row, path=source, languages=allowed, **where))
    if not records and not allow_empty:
        raise DataError(f"no {cls.KIND} records (the file is empty)", path=source)
    return records


def read_task_examples(source, *, languages=None) -> list[TaskExample]:
    return read_records(source, TaskExample, languages=languages)


def read_parallel_pairs(source, *, languages=None) -> list[ParallelPair]:
    return read_records(source, ParallelPair, languages=languages)


def read_multiple_choice(source, *, languages=None) -> list[MultipleChoiceItem]:
    return read_records(source, MultipleChoiceItem, languages=languages)


def write_jsonl(path: str | os.PathLike, records: Iterable[Record | dict], *,
                overwrite: bool = True) -> Path:
    """Write records as JSON Lines (UTF-8, one object per line, keys in field order), atomically.

    A ``.gz`` suffix writes gzip with a fixed mtime, so the bytes depend on the records only.
    """
    path = Path(path)
    if path.suffix == ".gz":
        with atomic_file(path, overwrite=overwrite, mode="wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                for record in records:
                    gz.write(_dump_line(record).encode("utf-8"))
        return path
    with atomic_file(path, overwrite=overwrite) as handle:
        for record in records:
            handle.write(_dump_line(record))
    return path


def _dump_line(record: Record | dict) -> str:
    row = record.to_dict() if isinstance(record, Record) else record
    return json.dumps(row, ensure_ascii=False) + "\n"


def languages_of(records: Sequence[Record]) -> list[str]:
    """The language codes present in ``records``, in order of first appearance."""
    seen: dict[str, None] = {}
    for record in records:
        for name, kind in record.FIELDS.items():
            if kind == "lang":
                seen.setdefault(getattr(record, name), None)
    return list(seen)
