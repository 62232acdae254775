"""Applying LSLo to a Hugging Face model, routing by language, saving, loading and folding.

:func:`apply_lslo` freezes the base model, wraps its target linears in
:class:`~xlt.lslo.layer.LSLoLinear` and returns an :class:`LSLoModel`, a thin wrapper (like
PEFT's ``PeftModel``) whose ``forward`` and ``generate`` take two extra keyword arguments::

    out = lslo(input_ids=..., attention_mask=..., labels=...,
               src_lang_ids=torch.tensor([0, 3, 1]), tgt_lang_ids=torch.tensor([2, 0, 0]))
    gen = lslo.generate(input_ids=..., src_lang_ids=..., tgt_lang_ids=..., num_beams=5)

The ids (LongTensor ``(batch,)``, indices into ``config.languages``; a list of language codes
is accepted too) are held by a route object the layers read during the call, so Hugging Face
forward signatures, the KV cache and beam search are untouched. A batch may mix any
directions; every example's output is what it would be alone in the batch.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from xlt.errors import ConfigError, ModelError
from xlt.io import read_json
from xlt.lslo.config import (CAUSAL_TARGET_MODULES, M2M100_TARGET_MODULES, LSLoConfig,
                             default_directions)
from xlt.lslo.layer import LSLoLinear, LSLoRoute

CONFIG_NAME = "lslo_config.json"
WEIGHTS_NAME = "lslo_model.safetensors"

_SEQ2SEQ_TYPES = {"m2m_100", "nllb_moe"}
_CAUSAL_DEFAULTS = {"llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text"}


class LSLoModel(nn.Module):
    """A base model with LSLo layers and a language route; attribute access falls through to it.

    Attributes: ``base_model`` (the wrapped ``PreTrainedModel``), ``lslo_config``,
    ``lslo_layers`` (``{module path: LSLoLinear}``), ``layer_of`` (``{path: (side, index)}``,
    side ``"encoder"`` or ``"decoder"``).
    """

    def __init__(self, base_model, config: LSLoConfig, route: LSLoRoute,
                 layers: dict[str, LSLoLinear], layer_of: dict[str, tuple[str, int]]):
        super().__init__()
        self.base_model = base_model
        self.lslo_config = config
        self._route = route
        self._layer_paths = list(layers)
        self.layer_of = dict(layer_of)

    # attribute fall-through, as PeftModel does -------------------------------------------------
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    @property
    def lslo_layers(self) -> dict[str, LSLoLinear]:
        modules = dict(self.base_model.named_modules())
        return {path: modules[path] for path in self._layer_paths}

    # routing -------------------------------------------------------------------------------
    def language_ids(self, value: Any, *, name: str, device=None) -> torch.Tensor | None:
        """Validate ``value`` (LongTensor / list of ints / list of codes) -> LongTensor ``(batch,)``."""
        if value is None:
            return None
        languages = self.lslo_config.languages
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
            value = [self.lslo_config.language_index(v) for v in value]
        ids = torch.as_tensor(value)
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise ConfigError(f"{name}: expected integer language ids, got {ids.dtype}")
        ids = ids.long()
        if ids.dim() != 1:
            raise ConfigError(f"{name}: expected shape (batch,), got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(languages)):
            bad = int(ids.max()) if int(ids.max()) >= len(languages) else int(ids.min())
            raise ConfigError(f"{name}: language id {bad} is outside the adapter's {len(languages)} "
                              f"languages ({', '.join(languages)})")
        if self.lslo_config.shared:
            ids = torch.zeros_like(ids)
        return ids.to(device) if device is not None else ids

    def set_route(self, src_lang_ids=None, tgt_lang_ids=None) -> None:
        """Set the per-example language ids every LSLo layer reads from now on.

        ``forward`` and ``generate`` call this with their ids and leave them set after
        returning, so that gradient checkpointing, which re-runs the layers during
        ``backward()``, routes the recomputation the same way. A call without ids clears them
        (the layers then raise instead of reusing stale ids).
        """
        device = self._device()
        self._route.src = self.language_ids(src_lang_ids, name="src_lang_ids", device=device)
        self._route.tgt = self.language_ids(tgt_lang_ids, name="tgt_lang_ids", device=device)

    @contextlib.contextmanager
    def route(self, src_lang_ids=None, tgt_lang_ids=None) -> Iterator[None]:
        """Set the ids for the calls inside the block (the base model called directly), then restore."""
        old = (self._route.src, self._route.tgt)
        self.set_route(src_lang_ids, tgt_lang_ids)
        try:
            yield
        finally:
            self._route.src, self._route.tgt = old

    def _device(self):
        for p in self.base_model.parameters():
            return p.device
        return None

    def forward(self, *args, src_lang_ids=None, tgt_lang_ids=None, **kwargs):
        """The base model's forward, with every LSLo layer routed by the given ids."""
        self.set_route(src_lang_ids, tgt_lang_ids)
        return self.base_model(*args, **kwargs)

    def generate(self, *args, src_lang_ids=None, tgt_lang_ids=None, **kwargs):
        """The base model's ``generate`` (greedy, beam, sampling, KV cache), routed by the ids."""
        self.set_route(src_lang_ids, tgt_lang_ids)
        return self.base_model.generate(*args, **kwargs)

    # introspection ------------------------------------------------------------------------
    def num_lslo_parameters(self) -> int:
        """Number of LSLo parameters (A and B of every subspace of every layer)."""
        return sum(layer.in_width * sum(layer.ranks) + sum(layer.ranks) * layer.out_width
                   for layer in self.lslo_layers.values())

    def subspace_names(self) -> list[str]:
        return [name for name, _ in self.lslo_config.subspaces()]

    # files ---------------------------------------------------------------------------------
    def lslo_state_dict(self) -> dict[str, torch.Tensor]:
        """``{"<path>.lora_a.<subspace>": (d_in, r), "<path>.lora_b.<subspace>": (r, d_out)}``.

        B is saved with the pruning mask applied (pruning becomes permanent in the file). Under
        DeepSpeed ZeRO-3 or FSDP2 the whole tensors are gathered: every process must call.
        """
        from xlt.engines import full_tensor, gathered

        names = self.subspace_names()
        out: dict[str, torch.Tensor] = {}
        layers = sorted(self.lslo_layers.items())
        with gathered([p for _, layer in layers for p in (layer.lora_a, layer.lora_b)]):
            for path, layer in layers:
                a = full_tensor(layer.lora_a.detach())
                b = layer.effective_b().detach()
                for l, name in enumerate(names):
                    lo, hi = layer.offsets[l], layer.offsets[l + 1]
                    out[f"{path}.lora_a.{name}"] = a[:, lo:hi].contiguous().cpu().clone()
                    out[f"{path}.lora_b.{name}"] = b[lo:hi].contiguous().cpu().clone()
        return out

    def load_lslo_state_dict(self, state: dict[str, torch.Tensor], *, source: str = "adapter") -> None:
        names = self.subspace_names()
        layers = self.lslo_layers
        expected = {f"{p}.lora_{m}.{n}" for p in layers for m in "ab" for n in names}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
            raise ModelError(f"{source}: weights do not match the adapter config ({what}; "
                             f"{len(missing)} missing, {len(unexpected)} unexpected)")
        with torch.no_grad():
            for path, layer in layers.items():
                for l, name in enumerate(names):
                    lo, hi = layer.offsets[l], layer.offsets[l + 1]
                    a, b = state[f"{path}.lora_a.{name}"], state[f"{path}.lora_b.{name}"]
                    if tuple(a.shape) != (layer.in_width, hi - lo) or tuple(b.shape) != (hi - lo, layer.out_width):
                        raise ModelError(f"{source}: {path} subspace {name!r} has shapes {tuple(a.shape)}/"
                                         f"{tuple(b.shape)}, expected {(layer.in_width, hi - lo)}/"
                                         f"{(hi - lo, layer.out_width)}")
                    layer.lora_a[:, lo:hi] = a.to(layer.lora_a)
                    layer.lora_b[lo:hi] = b.to(layer.lora_b)
                layer.lora_b_mask = None

    def save_pretrained(self, directory: str | os.PathLike, *, is_main_process: bool = True,
                        **extra_metadata: Any) -> Path:
        """Write ``lslo_config.json`` and ``lslo_model.safetensors`` into ``directory``.

        Under an engine that partitions the weights (DeepSpeed ZeRO-3, FSDP2) every process must
        call (the weights are gathered) and only the one with ``is_main_process`` writes.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        meta = {"format": "xlt-lslo", "version": 1, "config": self.lslo_config.to_dict(),
                "base": base_fingerprint(self.base_model, self._layer_paths)}
        meta.update(extra_metadata)
        state = self.lslo_state_dict()
        if not is_main_process:
            return directory
        directory.mkdir(parents=True, exist_ok=True)
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                             encoding="utf-8")
        return directory


# --------------------------------------------------------------------------------------------
# Building


def model_sides(model) -> tuple[bool, list[tuple[str, nn.ModuleList]]]:
    """``(is_seq2seq, [(side, blocks), ...])`` for a Hugging Face model."""
    from xlt.models import decoder_blocks, encoder_blocks, unwrap_model

    base = unwrap_model(model)
    if getattr(base.config, "is_encoder_decoder", False):
        return True, [("encoder", encoder_blocks(base)), ("decoder", decoder_blocks(base))]
    return False, [("decoder", decoder_blocks(base))]


def default_target_modules_for(model) -> list[str]:
    from xlt.models import default_target_modules, unwrap_model

    base = unwrap_model(model)
    model_type = getattr(base.config, "model_type", "")
    if model_type in _SEQ2SEQ_TYPES or getattr(base.config, "is_encoder_decoder", False):
        return list(M2M100_TARGET_MODULES)
    if model_type in _CAUSAL_DEFAULTS:
        return list(CAUSAL_TARGET_MODULES)
    return [t for t in default_target_modules(base) if t not in ("o_proj", "out_proj")]


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def apply_lslo(model, config: LSLoConfig) -> LSLoModel:
    """Freeze ``model`` and wrap its target linears with LSLo layers; return an :class:`LSLoModel`.

    Works on ``M2M100ForConditionalGeneration`` (NLLB checkpoints use the same class), with
    cross-attention k/v reading the encoder output but routed by their decoder layer's
    direction, and on decoder-only models (``decoder_directions`` per layer). A fresh model
    computes exactly what the base computes (B = 0).

    Raises :class:`ConfigError` for a direction list whose length differs from the number of
    layers, :class:`ModelError` for a target module the model does not have.
    """
    from xlt.models import unwrap_model

    base = unwrap_model(model)
    if isinstance(model, LSLoModel) or any(isinstance(m, LSLoLinear) for m in base.modules()):
        raise ModelError("LSLo is already applied to this model")
    seq2seq, sides = model_sides(base)
    config = copy.deepcopy(config)
    directions: dict[str, list[str]] = {}
    for side, blocks in sides:
        given = config.encoder_directions if side == "encoder" else config.decoder_directions
        if given is None:
            given = ["tgt"] * len(blocks) if (seq2seq and side == "decoder") else default_directions(len(blocks))
        if len(given) != len(blocks):
            raise ConfigError(f"LSLo: {side}_directions has {len(given)} entries but the model has "
                              f"{len(blocks)} {side} layers (expected one 'src'/'tgt' per layer)")
        directions[side] = list(given)
        if side == "encoder":
            config.encoder_directions = list(given)
        else:
            config.decoder_directions = list(given)
    if not seq2seq and config.encoder_directions:
        raise ConfigError(f"LSLo: encoder_directions given, but {type(base).__name__} is decoder-only "
                          "(use decoder_directions)")
    targets = list(config.target_modules or default_target_modules_for(base))
    config.target_modules = targets
    dim = config.dim
    if dim == "model":
        dim = getattr(base.config, "d_model", None) or getattr(base.config, "hidden_size", None)
        if dim is None:
            raise ConfigError("LSLo: dim='model' but the model config has no d_model / hidden_size")
    ranks = [r for _, r in config.subspaces()]

    for p in base.parameters():
        p.requires_grad_(False)
    route = LSLoRoute()
    layers: dict[str, LSLoLinear] = {}
    layer_of: dict[str, tuple[str, int]] = {}
    found = {t: 0 for t in targets}
    block_paths = {id(m): n for n, m in base.named_modules()}
    chosen: dict[str, set[int]] = {}
    for side, blocks in sides:
        wanted = config.encoder_layers if side == "encoder" else config.decoder_layers
        if wanted is not None and max(wanted) >= len(blocks):
            raise ConfigError(f"LSLo: {side}_layers names layer {max(wanted)} but the model has "
                              f"{len(blocks)} {side} layers (0..{len(blocks) - 1})")
        chosen[side] = set(range(len(blocks))) if wanted is None else set(wanted)
    if not seq2seq and config.encoder_layers is not None:
        raise ConfigError(f"LSLo: encoder_layers given, but {type(base).__name__} is decoder-only "
                          "(use decoder_layers)")
    for side, blocks in sides:
        prefix = block_paths[id(blocks)]
        for index, block in enumerate(blocks):
            if index not in chosen[side]:
                continue  # a plain layer (reference --encoder-lora-layer / --decoder-lora-layer)
            for name, module in list(block.named_modules()):
                hits = [t for t in targets if _matches(name, t)]
                if not hits:
                    continue
                for t in hits:
                    found[t] += 1
                if not isinstance(module, nn.Linear):
                    raise ModelError(f"LSLo: {prefix}.{index}.{name} is a {type(module).__name__}, "
                                     "not an nn.Linear")
                wrapped = LSLoLinear(module, ranks, directions[side][index], route, dim=dim,
                                     start_idx=config.start_idx)
                parent_name, _, child = name.rpartition(".")
                parent = block.get_submodule(parent_name) if parent_name else block
                setattr(parent, child, wrapped)
                path = f"{prefix}.{index}.{name}"
                layers[path] = wrapped
                layer_of[path] = (side, index)
    missing = [t for t, n in found.items() if n == 0]
    if missing:
        available = sorted({n for _, blocks in sides for n, m in blocks[0].named_modules()
                            if isinstance(m, nn.Linear)})
        raise ModelError(f"LSLo: target module {missing[0]!r} not found in {type(base).__name__} "
                         f"(linear layers of a block: {', '.join(available)})")
    return LSLoModel(base, config, route, layers, layer_of)


# --------------------------------------------------------------------------------------------
# Base-model identity, saving and loading


def base_fingerprint(model, paths: Sequence[str] | None = None) -> dict[str, Any]:
    """What identifies the base an adapter belongs to: architecture, shapes and a weight checksum.

    The checksum reads the whole weights of the first four layers under any engine (gathered
    under DeepSpeed ZeRO-3 and FSDP2: every process must call)."""
    from xlt.engines import full_tensor, gathered
    from xlt.models import unwrap_model

    base = unwrap_model(model)
    if paths is None:
        paths = sorted(n for n, m in base.named_modules() if isinstance(m, LSLoLinear))
    modules = dict(base.named_modules())
    lines = []
    checksum = 0.0
    linears = [(path, modules[path].base if isinstance(modules[path], LSLoLinear) else modules[path])
               for path in sorted(paths)]
    for path, linear in linears:
        lines.append(f"{path}:{linear.out_features}x{linear.in_features}")
    summed = [linear.weight for _, linear in linears[:4] if linear.weight.device.type != "meta"]
    with gathered(summed):
        for weight in summed:
            checksum += float(full_tensor(weight.detach()).double().abs().sum())
    return {"model_type": getattr(base.config, "model_type", None),
            "name_or_path": getattr(base.config, "_name_or_path", None) or getattr(base, "name_or_path", None),
            "vocab_size": getattr(base.config, "vocab_size", None),
            "structure": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16],
            "weight_checksum": checksum}


def check_base(saved: dict[str, Any], model, paths: Sequence[str], *, source: str) -> None:
    """Raise :class:`ModelError` if ``model`` is not the base the adapter was saved for."""
    current = base_fingerprint(model, paths)
    name = saved.get("name_or_path") or "another model"
    for key in ("model_type", "vocab_size", "structure"):
        if saved.get(key) != current.get(key):
            what = {"structure": "layer shapes"}.get(key, key)
            raise ModelError(f"{source}: adapter was saved for another base model ({name}; its {what} "
                             f"differ from this model's: {saved.get(key)} vs {current.get(key)})")
    a, b = float(saved.get("weight_checksum") or 0.0), float(current["weight_checksum"])
    if a and abs(a - b) > 1e-2 * max(abs(a), abs(b)):
        raise ModelError(f"{source}: adapter was saved for another base model ({name}; same shapes "
                         f"but different weights: checksum {a:.6g} vs {b:.6g})")


def read_lslo_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a saved LSLo adapter directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such LSLo adapter directory")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise ModelError(f"{directory}: not an LSLo adapter directory (no {CONFIG_NAME})")
    meta = read_json(path, error=ModelError)
    if not isinstance(meta, dict) or meta.get("format") != "xlt-lslo" or "config" not in meta:
        raise ModelError(f"{path}: not an xlt LSLo adapter config")
    return meta


def base_model_of(adapter: str | os.PathLike, given: str | None) -> str:
    """The base model path: ``given``, else the one recorded in the adapter."""
    if given:
        return given
    meta = read_lslo_metadata(adapter)
    base = meta.get("base_model_path") or (meta.get("base") or {}).get("name_or_path")
    if not base:
        raise ConfigError(f"{adapter}: the adapter does not record its base model; pass --model")
    return str(base)


def is_lslo_dir(directory: str | os.PathLike) -> bool:
    return (Path(directory) / CONFIG_NAME).is_file()


def load_lslo(model, directory: str | os.PathLike) -> LSLoModel:
    """Apply the saved adapter in ``directory`` to ``model``; refuse an adapter for another base."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_lslo_metadata(directory)
    config = LSLoConfig.from_dict(meta["config"])
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelError(f"{directory}: no adapter weights ({WEIGHTS_NAME})")
    try:
        lslo = apply_lslo(model, config)
    except (ModelError, ConfigError) as exc:
        raise ModelError(f"{directory}: adapter was saved for another base model ({exc})") from None
    check_base(meta.get("base", {}), lslo.base_model, lslo._layer_paths, source=str(directory))
    lslo.load_lslo_state_dict(load_file(str(weights)), source=str(weights))
    return lslo


# --------------------------------------------------------------------------------------------
# Folding one direction into the base weights


def merge_direction(model: LSLoModel, src_lang: str, tgt_lang: str, *, inplace: bool = False):
    """Fold the subspaces of ``src_lang -> tgt_lang`` into the base weights.

    Every LSLo layer picks the language of its direction (src or tgt) and its weight becomes
    ``W + (A_l B_l)^T`` (inside the feature slice); the result is the plain base model class,
    which computes for that direction what the LSLo model computes.
    """
    config = model.lslo_config
    src = model.language_ids([config.language_index(src_lang)], name="src")[0].item()
    tgt = model.language_ids([config.language_index(tgt_lang)], name="tgt")[0].item()
    if not inplace:
        model = copy.deepcopy(model)
    base = model.base_model
    for path, layer in model.lslo_layers.items():
        l = src if layer.direction == "src" else tgt
        linear = layer.base
        with torch.no_grad():
            linear.weight += layer.delta_weight(l).to(linear.weight.dtype)
        parent_name, _, child = path.rpartition(".")
        setattr(base.get_submodule(parent_name), child, linear)
    return base


def merged_model_metadata(model: LSLoModel, src_lang: str, tgt_lang: str) -> dict[str, Any]:
    return {"lslo_merged_direction": f"{src_lang}-{tgt_lang}",
            "lslo_languages": list(model.lslo_config.languages)}

