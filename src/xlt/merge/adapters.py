"""PEFT adapter directories: reading, validating, writing — without loading a base model.

An adapter is held as an :class:`AdapterState`: its ``adapter_config.json`` as a dict and its
tensors under their on-disk names (PEFT drops the adapter name when saving), e.g.
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` (r, in),
``...q_proj.lora_B.weight`` (out, r) or ``...k_proj.ia3_l`` ((out, 1), or (1, in) for
feed-forward modules).

Safety: weights are read from ``adapter_model.safetensors``. A directory holding only the
pickle file ``adapter_model.bin`` is refused unless ``allow_pickle=True`` — unpickling can run
arbitrary code — and even then it is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from xlt.errors import ConfigError, ModelError
from xlt.io import atomic_dir, read_json

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
PREFIX = "base_model.model."

#: factor suffix -> role; LoRA on linear layers and on embeddings
_LORA_SUFFIXES = {
    ".lora_A.weight": "A", ".lora_B.weight": "B",
    ".lora_embedding_A": "A", ".lora_embedding_B": "B",
}
_IA3_SUFFIX = ".ia3_l"
SUPPORTED_TYPES = ("LORA", "IA3")


@dataclass
class AdapterState:
    """One PEFT adapter in memory: ``config`` (adapter_config.json) and ``tensors`` (on-disk keys).

    ``source`` names it in error messages (a directory, or a role such as ``"ref_target"``).
    """

    config: dict
    tensors: dict
    source: str = "adapter"
    extra: dict = field(default_factory=dict)

    @property
    def peft_type(self) -> str:
        return str(self.config.get("peft_type", "")).upper()


@dataclass
class LoraFactors:
    """The LoRA factors of one module: update = ``scaling * B @ A``.

    ``A``: (r, in) — for embeddings (r, vocab); ``B``: (out, r). ``key_A`` / ``key_B`` are the
    on-disk tensor names they came from (and are written back under).
    """

    A: Any
    B: Any
    scaling: float
    key_A: str = ""
    key_B: str = ""

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


# --------------------------------------------------------------------------------------------
# Reading and writing


def read_adapter(path: str | os.PathLike, *, allow_pickle: bool = False,
                 source: str | None = None) -> AdapterState:
    """Read a PEFT adapter directory (config + weights) into an :class:`AdapterState`.

    Raises :class:`~xlt.errors.ModelError` for a missing directory, config or weights file, an
    unreadable file, or pickle-only weights without ``allow_pickle``.
    """
    path = Path(path)
    label = source or str(path)
    if not path.is_dir():
        raise ModelError(f"{path}: no such adapter directory" + (" (it is a file)" if path.exists() else ""))
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise ModelError(f"{path}: not a PEFT adapter directory (no {CONFIG_NAME})")
    config = read_json(config_path, error=ModelError)
    if not isinstance(config, dict) or "peft_type" not in config:
        raise ModelError(f"{config_path}: not a PEFT adapter config (no 'peft_type')")
    weights = path / WEIGHTS_NAME
    pickle_weights = path / PICKLE_WEIGHTS_NAME
    if weights.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(os.fspath(weights))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{weights}: not a readable safetensors file ({exc})") from None
    elif pickle_weights.is_file():
        if not allow_pickle:
            raise ModelError(f"{path}: adapter weights are only in pickle format ({PICKLE_WEIGHTS_NAME}), "
                             "which can run arbitrary code when loaded; convert them to safetensors "
                             "or pass --allow-pickle if you trust the file")
        from xlt.io import load_plain_tensors

        try:
            tensors = load_plain_tensors(pickle_weights)
        except ValueError as exc:
            raise ModelError(f"{pickle_weights}: cannot load as plain tensors ({exc}); only tensors are "
                             "unpickled, even with --allow-pickle") from None
        if not isinstance(tensors, dict):
            raise ModelError(f"{pickle_weights}: expected a dict of tensors, got {type(tensors).__name__}")
    else:
        raise ModelError(f"{path}: no adapter weights ({WEIGHTS_NAME})")
    state = AdapterState(config=config, tensors=dict(tensors), source=label)
    validate_adapter(state)
    return state


def write_adapter(state: AdapterState, out_dir: str | os.PathLike, *, overwrite: bool = False,
                  extra_files: Mapping[str, Any] | None = None) -> Path:
    """Write ``state`` as a PEFT adapter directory (``PeftModel.from_pretrained`` loads it).

    ``extra_files``: name -> JSON-serialisable object written beside the adapter (e.g. a merge
    report). The directory appears atomically: on any error nothing is left behind. A base
    model that is a local directory is recorded by its absolute path (a hub id stays as it is),
    so the adapter loads from any working directory.
    """
    from safetensors.torch import save_file

    from xlt.models import recorded_base

    config = dict(state.config)
    if config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = recorded_base(config["base_model_name_or_path"])
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        tensors = {k: v.contiguous() for k, v in state.tensors.items()}
        save_file(tensors, os.fspath(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
        for name, obj in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(out_dir)


def as_adapter_state(value: Any, *, source: str, allow_pickle: bool = False) -> AdapterState:
    """An :class:`AdapterState` from a directory path, an ``AdapterState`` or ``(config, tensors)``."""
    if isinstance(value, AdapterState):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_adapter(value, allow_pickle=allow_pickle)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Mapping):
        state = AdapterState(config=dict(value[0]), tensors=dict(value[1]), source=source)
        validate_adapter(state)
        return state
    raise ConfigError(f"{source}: expected an adapter directory, an AdapterState or a "
                      f"(config, state_dict) pair, got {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Structure


def module_name(key: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` -> ``model.layers.0.self_attn.q_proj``."""
    name = key[len(PREFIX):] if key.startswith(PREFIX) else key
    for suffix in tuple(_LORA_SUFFIXES) + (_IA3_SUFFIX,):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _pattern_value(patterns: Mapping[str, Any] | None, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup (a key matches a dotted suffix of the module)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scaling(config: Mapping[str, Any], module: str) -> tuple[int, float]:
    """``(r, scaling)`` of ``module`` under a LoRA config: alpha / r, or alpha / sqrt(r) (rsLoRA)."""
    r = int(_pattern_value(config.get("rank_pattern"), module, config.get("r", 8)))
    alpha = float(_pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8)))
    if r <= 0:
        raise ModelError(f"rank {r} of module {module} is not positive")
    return r, alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def lora_modules(state: AdapterState) -> dict[str, LoraFactors]:
    """Module name -> :class:`LoraFactors` of a LoRA adapter, in the file's key order."""
    pairs: dict[str, dict[str, str]] = {}
    for key in state.tensors:
        for suffix, role in _LORA_SUFFIXES.items():
            if key.endswith(suffix):
                pairs.setdefault(module_name(key), {})[role] = key
                break
    modules = {}
    for name, keys in pairs.items():
        if set(keys) != {"A", "B"}:
            missing = "lora_B" if "A" in keys else "lora_A"
            raise ModelError(f"{state.source}: module {name} has no {missing} tensor")
        A, B = state.tensors[keys["A"]], state.tensors[keys["B"]]
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise ModelError(f"{state.source}: module {name}: lora_A {tuple(A.shape)} and lora_B "
                             f"{tuple(B.shape)} are not (r, in) and (out, r)")
        r, scaling = lora_scaling(state.config, name)
        if A.shape[0] != r:
            raise ModelError(f"{state.source}: module {name} has rank {A.shape[0]} but its config "
                             f"says r = {r}")
        modules[name] = LoraFactors(A=A, B=B, scaling=scaling, key_A=keys["A"], key_B=keys["B"])
    return modules


def other_tensors(state: AdapterState) -> dict:
    """Tensors that are neither LoRA factors nor (IA)^3 vectors (e.g. ``modules_to_save`` copies)."""
    known = tuple(_LORA_SUFFIXES) + (_IA3_SUFFIX,)
    return {k: v for k, v in state.tensors.items() if not k.endswith(known)}


def ia3_vectors(state: AdapterState) -> dict[str, Any]:
    """On-disk key -> (IA)^3 scaling vector tensor."""
    return {k: v for k, v in state.tensors.items() if k.endswith(_IA3_SUFFIX)}


def validate_adapter(state: AdapterState) -> None:
    """Check that ``state`` is an adapter this package can merge exactly; raise ModelError if not."""
    kind = state.peft_type
    if kind not in SUPPORTED_TYPES:
        raise ModelError(f"{state.source}: adapter type {kind or '(none)'} is not supported "
                         f"(expected one of {', '.join(SUPPORTED_TYPES)})")
    if not state.tensors:
        raise ModelError(f"{state.source}: the adapter has no tensors")
    for key, tensor in state.tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            bad = int((~tensor.isfinite()).sum())
            raise ModelError(f"{state.source}: tensor {key} has {bad} NaN or infinite value(s); "
                             "a merge would spread them to every output")
    if kind == "LORA":
        for flag, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA bias terms")):
            if state.config.get(flag):
                raise ModelError(f"{state.source}: {what} ({flag}=true) is not a linear weight "
                                 "update and cannot be merged exactly")
        if not lora_modules(state):
            raise ModelError(f"{state.source}: a LoRA config but no lora_A/lora_B tensors")
    else:
        if not ia3_vectors(state):
            raise ModelError(f"{state.source}: an IA3 config but no ia3_l tensors")


def _normalise_base(name: Any) -> str | None:
    if not name:
        return None
    text = os.fspath(name)
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    return text.rstrip("/")


def check_compatible(states: Sequence[AdapterState], *, same_rank: bool = False,
                     allow_base_mismatch: bool = False) -> None:
    """Refuse adapters that cannot be combined: different types, base models, modules or shapes.

    ``same_rank``: also require equal ranks and scalings per module (the factor-wise rule adds
    factors elementwise). Messages name both adapters and the first differing module.
    """
    first = states[0]
    for other in states[1:]:
        pair = f"{first.source} and {other.source}"
        if first.peft_type != other.peft_type:
            raise ModelError(f"adapter types differ: {first.source} is {first.peft_type}, "
                             f"{other.source} is {other.peft_type}")
        a, b = first.config.get("task_type"), other.config.get("task_type")
        if a and b and a != b:
            raise ModelError(f"task types differ: {first.source} is {a}, {other.source} is {b}")
        base_a = _normalise_base(first.config.get("base_model_name_or_path"))
        base_b = _normalise_base(other.config.get("base_model_name_or_path"))
        if base_a and base_b and base_a != base_b and not allow_base_mismatch:
            raise ModelError(f"base models differ: {first.source} was trained on {base_a}, "
                             f"{other.source} on {base_b} (pass --allow-base-mismatch if they are "
                             "the same model under two names)")
        if first.peft_type == "LORA":
            _check_lora_pair(first, other, pair, same_rank)
        else:
            _check_ia3_pair(first, other, pair)
        extra_a, extra_b = other_tensors(first), other_tensors(other)
        if set(extra_a) != set(extra_b):
            diff = sorted(set(extra_a) ^ set(extra_b))[0]
            raise ModelError(f"{pair} differ in their extra (non-factor) tensors, e.g. {diff}")
        for key in extra_a:
            if tuple(extra_a[key].shape) != tuple(extra_b[key].shape):
                raise ModelError(f"shapes differ for {key}: {tuple(extra_a[key].shape)} in "
                                 f"{first.source}, {tuple(extra_b[key].shape)} in {other.source}")


def _module_set_error(names_a: Iterable[str], names_b: Iterable[str], first, other) -> ModelError:
    a, b = set(names_a), set(names_b)
    only_a, only_b = sorted(a - b), sorted(b - a)
    detail = []
    if only_a:
        detail.append(f"{len(only_a)} only in {first.source} (e.g. {only_a[0]})")
    if only_b:
        detail.append(f"{len(only_b)} only in {other.source} (e.g. {only_b[0]})")
    return ModelError(f"target modules differ: {'; '.join(detail)}")


def _check_lora_pair(first, other, pair, same_rank):
    ma, mb = lora_modules(first), lora_modules(other)
    if set(ma) != set(mb):
        raise _module_set_error(ma, mb, first, other)
    for name, fa in ma.items():
        fb = mb[name]
        if fa.A.shape[1] != fb.A.shape[1] or fa.B.shape[0] != fb.B.shape[0]:
            raise ModelError(f"shapes differ for module {name}: (out, in) = ({fa.B.shape[0]}, "
                             f"{fa.A.shape[1]}) in {first.source}, ({fb.B.shape[0]}, {fb.A.shape[1]}) "
                             f"in {other.source}")
        if same_rank and (fa.rank != fb.rank or not math.isclose(fa.scaling, fb.scaling)):
            raise ModelError(f"the factor-wise rule needs equal ranks and scalings: module {name} "
                             f"has r={fa.rank}, scaling={fa.scaling:g} in {first.source} and "
                             f"r={fb.rank}, scaling={fb.scaling:g} in {other.source} (use --mode delta)")


def _check_ia3_pair(first, other, pair):
    va, vb = ia3_vectors(first), ia3_vectors(other)
    if set(va) != set(vb):
        raise _module_set_error([module_name(k) for k in va], [module_name(k) for k in vb], first, other)
    for key, vec in va.items():
        if tuple(vec.shape) != tuple(vb[key].shape):
            raise ModelError(f"shapes differ for {module_name(key)}: {tuple(vec.shape)} in "
                             f"{first.source}, {tuple(vb[key].shape)} in {other.source}")
    ff_a, ff_b = _as_set(first.config.get("feedforward_modules")), _as_set(other.config.get("feedforward_modules"))
    if ff_a != ff_b:
        raise ModelError(f"feed-forward modules differ: {sorted(ff_a)} in {first.source}, "
                         f"{sorted(ff_b)} in {other.source}")


def _as_set(value) -> set:
    if value is None:
        return set()
    return {value} if isinstance(value, str) else set(value)


def adapter_nbytes(state: AdapterState) -> int:
    """Total size of the tensors in bytes."""
    return sum(t.numel() * t.element_size() for t in state.tensors.values())
