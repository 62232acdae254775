"""Atomic outputs: write into a temporary sibling, rename into place.

A reader never sees a half-written file or directory: either the old state or the new one.
An existing output is replaced only when ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from xlt.errors import OutputExistsError, XltError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ordinary_permissions(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create private entries (0600/0700); give outputs the usual mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Fail early (before any work) if ``path`` exists and may not be replaced."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path``.

    On an exception the temporary directory is removed and ``path`` is untouched.
    The old directory (if any) is moved aside first and removed only after the new one
    is in place, so a crash leaves either the old or the new state.
    """
    path = check_output(path, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    _ordinary_permissions(tmp, directory=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | Path, overwrite: bool = True, mode: str = "w",
                encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary sibling for writing; on success rename it onto ``path``."""
    path = check_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    _ordinary_permissions(Path(tmp), directory=False)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_file(path, overwrite=overwrite) as handle:
        json.dump(obj, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    return Path(path)


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file is a one-line :class:`XltError`."""
    path = Path(path)
    if not path.is_file():
        raise XltError(f"{path}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise XltError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise XltError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
