"""The toolkit's error hierarchy.

Errors are raised where the fact is known, carry the place (file, line, field) they concern,
and are turned into one line by the CLI. Anything that is not an :class:`XltError` is a bug
and is reported as such.
"""

from __future__ import annotations

from pathlib import Path


class XltError(Exception):
    """Base class of every error a user can act on."""


class DataError(XltError, ValueError):
    """A data file or record is malformed.

    The message reads ``FILE:LINE: field 'F': what is wrong`` (``FILE item N`` for records of
    a JSON array or a parquet table, numbered from 1) with whatever of file, line and field is
    known.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None, item: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.item = item
        self.field = field
        self.reason = message
        where = ""
        if line is not None:
            loc = f":{line}"
        elif item is not None:
            loc = f" item {item}"
        else:
            loc = ""
        if self.path is not None:
            where = f"{self.path}{loc}: "
        elif loc:
            where = f"{loc.strip(' :')}: " if line is None else f"line {line}: "
        what = f"field '{field}': " if field is not None else ""
        super().__init__(f"{where}{what}{message}")


class ConfigError(XltError, ValueError):
    """An option, configuration key or combination of them is invalid."""


class ModelError(XltError):
    """A model, tokenizer or adapter cannot be loaded or does not fit the request."""


class OutputExistsError(XltError, FileExistsError):
    """The output path exists and ``--overwrite`` was not given."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        super().__init__(f"{path}: output already exists (pass --overwrite to replace it)")
