"""Hugging Face model directories as lazily read state dicts, and writing one back, shard by shard.

A model directory holds ``config.json`` and its weights as ``model.safetensors`` or as shards
listed in ``model.safetensors.index.json``. :class:`LazySafetensors` maps tensor names to tensors
read on access, so a merge over two 8B checkpoints holds a few tensors at a time, not two models.
:func:`write_model_dir` writes the result the way ``save_pretrained`` does (one file, or shards
plus an index) next to the task model's non-weight files (tokenizer, generation config), atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from xlt.errors import ModelError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: files of a model directory that are weights (never copied beside merged weights)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
DEFAULT_SHARD_BYTES = 5 * 1024 ** 3


class LazySafetensors(Mapping):
    """``{tensor name: tensor}`` over a model directory's safetensors files, read on access."""

    def __init__(self, files: Mapping[str, Path]):
        self._files = dict(files)  # key -> file
        self._handles: dict[Path, Any] = {}

    def _handle(self, path: Path):
        from safetensors import safe_open

        if path not in self._handles:
            self._handles[path] = safe_open(os.fspath(path), framework="pt")
        return self._handles[path]

    def __getitem__(self, key: str):
        return self._handle(self._files[key]).get_tensor(key)

    def shape_of(self, key: str) -> tuple:
        return tuple(self._handle(self._files[key]).get_slice(key).get_shape())

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def read_model_dir(path: str | os.PathLike) -> tuple[dict, LazySafetensors]:
    """``(config dict, lazy state dict)`` of a Hugging Face model directory with safetensors weights."""
    from safetensors import SafetensorError, safe_open

    from xlt.io import read_json

    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such model directory" + (" (it is a file)" if directory.exists() else ""))
    if (directory / "adapter_config.json").is_file() and not (directory / "config.json").is_file():
        raise ModelError(f"{directory}: is a PEFT adapter, not a model directory (give both experts as "
                         "adapters, or both as models)")
    if not (directory / "config.json").is_file():
        raise ModelError(f"{directory}: not a model directory (no config.json)")
    config = read_json(directory / "config.json", error=ModelError)
    if (directory / INDEX_FILE).is_file():
        index = read_json(directory / INDEX_FILE, error=ModelError)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelError(f"{directory / INDEX_FILE}: no 'weight_map'")
        files = {key: directory / name for key, name in weight_map.items()}
    elif (directory / SINGLE_FILE).is_file():
        files = {}
        try:
            with safe_open(os.fspath(directory / SINGLE_FILE), framework="pt") as handle:
                files = {key: directory / SINGLE_FILE for key in handle.keys()}
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{directory / SINGLE_FILE}: not a readable safetensors file ({exc})") from None
    else:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        hint = (f" (only pickle weights: {', '.join(pickles)}; convert them to safetensors)" if pickles else "")
        raise ModelError(f"{directory}: no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}){hint}")
    for file in set(files.values()):
        if not file.is_file():
            raise ModelError(f"{file}: listed in {INDEX_FILE} but missing")
    return config, LazySafetensors(files)


def _nbytes(tensor) -> int:
    return tensor.numel() * tensor.element_size()


def write_model_dir(out: str | os.PathLike, config: Mapping[str, Any], tensors: Iterable[tuple[str, Any]], *,
                    copy_from: str | os.PathLike | None = None, extra_files: Mapping[str, Any] | None = None,
                    max_shard_bytes: int = DEFAULT_SHARD_BYTES, overwrite: bool = False) -> Path:
    """Write ``(key, tensor)`` pairs as a Hugging Face model directory, atomically.

    One ``model.safetensors`` when everything fits in ``max_shard_bytes``, else shards
    ``model-0000i-of-0000n.safetensors`` and ``model.safetensors.index.json``; a shard is written
    as soon as it is full, so at most one shard is held in memory. ``copy_from``: a model
    directory whose non-weight files (tokenizer, generation config, chat template...) are copied;
    ``config.json`` is written from ``config``. ``extra_files``: name -> JSON object.
    """
    from safetensors.torch import save_file

    from xlt.io import atomic_dir

    with atomic_dir(out, overwrite=overwrite) as tmp:
        if copy_from is not None:
            for item in sorted(Path(copy_from).iterdir()):
                if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES) and item.name != INDEX_FILE:
                    shutil.copy2(item, tmp / item.name)
        shards: list[list[str]] = []
        weight_map: dict[str, int] = {}
        current: dict = {}
        size = total = 0

        def flush():
            nonlocal current, size
            if current:
                save_file({k: v.contiguous() for k, v in current.items()},
                          os.fspath(tmp / f".shard-{len(shards)}"), metadata={"format": "pt"})
                shards.append(list(current))
                current, size = {}, 0

        for key, tensor in tensors:
            nbytes = _nbytes(tensor)
            if current and size + nbytes > max_shard_bytes:
                flush()
            current[key] = tensor
            weight_map[key] = len(shards)
            size += nbytes
            total += nbytes
        flush()
        if len(shards) <= 1:
            if shards:
                os.replace(tmp / ".shard-0", tmp / SINGLE_FILE)
        else:
            names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
            for i, name in enumerate(names):
                os.replace(tmp / f".shard-{i}", tmp / name)
            index = {"metadata": {"total_size": total},
                     "weight_map": {key: names[i] for key, i in sorted(weight_map.items())}}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
        for name, obj in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(out)
