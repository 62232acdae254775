"""Atomic outputs: write into a temporary sibling, rename into place.

A reader never sees a half-written file or directory: either the old state or the new one.
An existing output is replaced only when ``overwrite=True``.

Temporaries are hidden siblings named ``.NAME.tmp-PID-XXXX`` (PID: the writing process); a
replaced directory is moved aside to ``.NAME.old-PID`` until the new one is in place. A process
killed mid-write (SIGKILL, power loss) leaves them behind; the next write of the same NAME
removes those whose process is gone, and puts ``.NAME.old-PID`` back in place if the kill fell
between the two renames (so NAME shows its old state, never nothing and never a mix).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale(path: str | Path) -> list[Path]:
    """Remove the temporaries of writers of ``path`` that were killed; return what was removed.

    ``.NAME.tmp-PID-*`` of a dead PID are deleted. ``.NAME.old-PID`` of a dead PID is moved
    back to NAME when NAME is missing (a kill between the two renames of :func:`atomic_dir`),
    deleted otherwise. Temporaries of live processes (a concurrent writer) are left alone.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(r"\." + re.escape(path.name) + r"\.(tmp|old)-(\d+)(?:-.*)?")
    removed = []
    for sibling in sorted(parent.iterdir()):
        match = pattern.fullmatch(sibling.name)
        if not match or _alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not os.path.lexists(path):
            os.replace(sibling, path)
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Fail early (before any work) if ``path`` exists and may not be replaced.

    Creates nothing: the writers (:func:`atomic_dir`, :func:`atomic_file`) make missing parent
    directories when they write, and remove them again if the write fails.
    """
    path = Path(path)
    clean_stale(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    return path


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parents of ``path``; return them, outermost first."""
    missing = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(directories: list[Path]) -> None:
    """Remove directories made by :func:`_make_parents` that are still empty, innermost first."""
    for directory in reversed(directories):
        try:
            directory.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path``.

    On an exception the temporary directory is removed and ``path`` is untouched.
    The old directory (if any) is moved aside first and removed only after the new one
    is in place, so a crash leaves either the old or the new state.
    """
    path = check_output(path, overwrite)
    made = _make_parents(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    _ordinary_permissions(tmp, directory=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
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
    made = _make_parents(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
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
        _remove_empty(made)
        raise


def write_json(path: str | Path, obj: Any, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_file(path, overwrite=overwrite) as handle:
        json.dump(obj, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    return Path(path)


def read_json(path: str | Path, error: type[XltError] = XltError) -> Any:
    """Read a JSON file; a missing or malformed file is a one-line ``error`` (an
    :class:`XltError` subclass, e.g. ``ModelError`` for a model's or adapter's config)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def move_entries(tmp: str | Path, out: str | Path, *, last: str | None = None) -> None:
    """Move every entry of ``tmp`` into ``out`` with an atomic rename each (a folder of the same
    name is replaced), ``last`` after the others (the file that marks a finished output), then
    remove ``tmp``."""
    tmp, out = Path(tmp), Path(out)
    for item in sorted(tmp.iterdir(), key=lambda p: (p.name == last, p.name)):
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    shutil.rmtree(tmp, ignore_errors=True)


def summary_line(prog: str, what: str, *written: str | os.PathLike | None) -> str:
    """The one line every command ends with: what was done and where it was written,
    ``"xlt eval icl: ... -> runs/icl.json"`` (``"... (no file written)"`` when nothing was)."""
    paths = [os.fspath(p) for p in written if p]
    return f"{prog}: {what} -> {', '.join(paths)}" if paths else f"{prog}: {what} (no file written)"


def load_plain_tensors(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with its warnings silenced: only plain
    tensors and containers are unpickled, never code. Anything else raises :class:`ValueError`
    whose message is ``"<exception type>: <its first sentence>"``, for the caller's own error."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # an UnpicklingError for anything but plain tensors
        reason = (str(exc).splitlines() or [""])[0].split(". ")[0]
        raise ValueError(f"{type(exc).__name__}: {reason}") from None
