"""Layer swapping (Bandarkar et al., ICLR 2025): a task expert with a language expert's outer blocks.

Two experts fine-tuned from one base model: a *task expert* (e.g. math in English) and a
*language expert* (generic instructions in the target language). The merged model keeps the task
expert's blocks except the bottom ``J`` and the top ``K``, which come from the language expert.
Optional *transition zones* (the paper's remedy for the abrupt seam) blend ``N`` blocks on the
task side of each seam: ``W_i = (1 - w) * W_task,i + w * W_language,i``.

Per block ``i`` (0-based, L blocks) the weight of the language expert is::

    1      for i < J  or  i >= L - K                     (swapped)
    blend  for J <= i < J + N (when J > 0), and for L - K - N <= i < L - K (when K > 0)
    0      otherwise                                       (the task expert's block)

Tensors outside the blocks (embeddings, final norm, LM head, ``modules_to_save`` copies) follow
``outer``: ``"adjacent"`` (default) — input-side tensors (token / position embeddings and their
norms) come from the expert that owns block 0, output-side tensors (final norm, LM head) from the
expert that owns the last block; ``"task"`` or ``"language"`` — all from that expert. With J = K = 0
the result is the task expert, with J = L (or K = L) the language expert, tensor for tensor.

Everything here is a pure function on state dicts (``Mapping[str, Tensor]``, lazily read ones
included); :mod:`xlt.merge.cli` reads and writes model and adapter directories.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterator, Mapping, Sequence

from xlt.errors import ConfigError, ModelError

OUTER_RULES = ("adjacent", "task", "language")

#: key fragments of input-side tensors outside the blocks (everything else there is output side)
INPUT_SIDE = ("embed", "wte", "wpe", "word_embeddings")

_BLOCK_RE = re.compile(r"^(?P<prefix>.*?)\.(?P<index>\d+)\.(?P<rest>.+)$")


def language_weights(num_layers: int, bottom: int, top: int, *, transition: int = 0,
                     blend: float = 0.5) -> list[float]:
    """Weight of the language expert for each of the ``num_layers`` blocks (see the module doc)."""
    for name, value in (("bottom", bottom), ("top", top), ("transition", transition)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"--{name} must be an integer >= 0, got {value!r}")
    if not isinstance(blend, (int, float)) or not math.isfinite(blend) or not 0 <= blend <= 1:
        raise ConfigError(f"--blend must be a number in [0, 1], got {blend!r}")
    zones = transition * ((bottom > 0) + (top > 0))
    if bottom + top + zones > num_layers:
        raise ConfigError(f"--bottom {bottom} + --top {top}"
                          + (f" + transition zones of {transition} block(s) at {zones // transition} seam(s)"
                             if zones else "")
                          + f" exceed the model's {num_layers} blocks")
    weights = [0.0] * num_layers
    for i in range(bottom):
        weights[i] = 1.0
    for i in range(num_layers - top, num_layers):
        weights[i] = 1.0
    if bottom > 0:
        for i in range(bottom, bottom + transition):
            weights[i] = float(blend)
    if top > 0:
        for i in range(num_layers - top - transition, num_layers - top):
            weights[i] = float(blend)
    return weights


def block_index(key: str) -> tuple[str, int] | None:
    """``model.layers.3.mlp.up_proj.weight`` -> ``("model.layers", 3)``; None outside numbered blocks."""
    match = _BLOCK_RE.match(key)
    return (match.group("prefix"), int(match.group("index"))) if match else None


def find_blocks(keys: Sequence[str], num_layers: int | None = None) -> tuple[str | None, int]:
    """The prefix of the numbered blocks among ``keys`` and their number.

    ``num_layers``: the model's block count (from its config); it must match the keys. Several
    numbered lists (an encoder and a decoder) are refused: only decoder-only models are swapped.
    """
    found: dict[str, set[int]] = {}
    for key in keys:
        hit = block_index(key)
        if hit is not None:
            found.setdefault(hit[0], set()).add(hit[1])
    if len(found) > 1:
        raise ModelError(f"several numbered block lists ({', '.join(sorted(found))}); layer swapping "
                         "handles decoder-only models with one list of blocks")
    if not found:
        if num_layers:
            raise ModelError(f"no numbered blocks found among {len(keys)} tensors (expected {num_layers})")
        return None, 0
    prefix, indices = next(iter(found.items()))
    count = max(indices) + 1
    if num_layers is not None:
        if count > num_layers:
            raise ModelError(f"tensors of block {count - 1} but the model has {num_layers} blocks")
        count = num_layers
    return prefix, count


def outer_side(key: str) -> str:
    """``"input"`` for embeddings (and their norms), ``"output"`` for anything else outside the blocks."""
    name = key.lower()
    return "input" if any(fragment in name for fragment in INPUT_SIDE) else "output"


def outer_weights(weights: Sequence[float], outer: str) -> dict[str, float]:
    """Weight of the language expert for input-side and output-side tensors outside the blocks."""
    if outer not in OUTER_RULES:
        raise ConfigError(f"unknown --outer rule {outer!r} (expected one of {', '.join(OUTER_RULES)})")
    if outer == "task":
        return {"input": 0.0, "output": 0.0}
    if outer == "language":
        return {"input": 1.0, "output": 1.0}
    return {"input": weights[0] if weights else 0.0, "output": weights[-1] if weights else 0.0}


def check_same_architecture(task: Mapping[str, Any], language: Mapping[str, Any], *,
                            task_name: str = "task expert", language_name: str = "language expert") -> None:
    """Refuse two state dicts that differ in their tensor names or shapes (one line, first difference)."""
    only_task = sorted(set(task) - set(language))
    only_language = sorted(set(language) - set(task))
    if only_task or only_language:
        detail = []
        if only_task:
            detail.append(f"{len(only_task)} only in the {task_name} (e.g. {only_task[0]})")
        if only_language:
            detail.append(f"{len(only_language)} only in the {language_name} (e.g. {only_language[0]})")
        raise ModelError(f"the experts have different tensors: {'; '.join(detail)} — they must be "
                         "fine-tuned from one base model")
    for key in task:
        a, b = _shape(task, key), _shape(language, key)
        if a != b:
            raise ModelError(f"shapes differ for {key}: {a} in the {task_name}, {b} in the "
                             f"{language_name} — they must be fine-tuned from one base model")


def _shape(tensors: Mapping[str, Any], key: str) -> tuple:
    shape_of = getattr(tensors, "shape_of", None)
    return tuple(shape_of(key)) if shape_of else tuple(tensors[key].shape)


def mix(task_tensor, language_tensor, weight: float):
    """``(1 - w) * task + w * language`` in at least float32, cast back to the task tensor's dtype;
    ``w = 0`` / ``1`` return that expert's tensor itself (bit for bit; a language tensor of
    another dtype is cast to the task tensor's, so the result has one dtype throughout)."""
    import torch

    if weight == 0.0:
        return task_tensor
    if weight == 1.0:
        return language_tensor if language_tensor.dtype == task_tensor.dtype else language_tensor.to(task_tensor.dtype)
    if not task_tensor.is_floating_point():
        if not torch.equal(task_tensor, language_tensor):
            raise ModelError("a non-floating-point tensor differs between the experts and cannot be blended")
        return task_tensor
    work = torch.float64 if task_tensor.dtype == torch.float64 else torch.float32
    mixed = (1.0 - weight) * task_tensor.to(work) + weight * language_tensor.to(work)
    return mixed.to(task_tensor.dtype)


def weight_of(key: str, weights: Sequence[float], outer: Mapping[str, float], prefix: str | None) -> float:
    """The language expert's weight for tensor ``key``."""
    hit = block_index(key)
    if hit is not None and hit[0] == prefix:
        return weights[hit[1]]
    return outer[outer_side(key)]


def iter_layer_swap(task: Mapping[str, Any], language: Mapping[str, Any], *, bottom: int, top: int,
                    num_layers: int | None = None, transition: int = 0, blend: float = 0.5,
                    outer: str = "adjacent") -> Iterator[tuple[str, Any]]:
    """Yield ``(key, tensor)`` of the swapped model one tensor at a time (bounded memory with lazy
    inputs), in the task expert's key order. See :func:`layer_swap`."""
    check_same_architecture(task, language)
    prefix, count = find_blocks(list(task), num_layers)
    weights = language_weights(count, bottom, top, transition=transition, blend=blend)
    sides = outer_weights(weights, outer)
    for key in task:
        yield key, mix(task[key], language[key], weight_of(key, weights, sides, prefix))


def layer_swap(task: Mapping[str, Any], language: Mapping[str, Any], *, bottom: int, top: int,
               num_layers: int | None = None, transition: int = 0, blend: float = 0.5,
               outer: str = "adjacent") -> dict:
    """The layer-swapped state dict of two experts' state dicts (same keys and shapes).

    ``bottom`` / ``top``: blocks taken from the language expert at each end; ``transition``: blocks
    blended with weight ``blend`` on the task side of each seam; ``outer``: the rule for tensors
    outside the blocks (module doc). ``num_layers``: the block count (default: from the keys).
    """
    return dict(iter_layer_swap(task, language, bottom=bottom, top=top, num_layers=num_layers,
                                transition=transition, blend=blend, outer=outer))


def swap_report(keys: Sequence[str], *, bottom: int, top: int, num_layers: int | None = None,
                transition: int = 0, blend: float = 0.5, outer: str = "adjacent") -> dict:
    """What came from where: per block the language expert's weight, and the outer tensors' sources."""
    prefix, count = find_blocks(list(keys), num_layers)
    weights = language_weights(count, bottom, top, transition=transition, blend=blend)
    sides = outer_weights(weights, outer)

    def source(w: float) -> str:
        return "task" if w == 0 else "language" if w == 1 else f"blend {w:g}"

    outer_keys = {key: source(sides[outer_side(key)]) for key in keys
                  if (block_index(key) or (None,))[0] != prefix}
    return {"method": "layer_swap", "num_layers": count, "bottom": bottom, "top": top,
            "transition": transition, "blend": float(blend), "outer": outer,
            "blocks": [source(w) for w in weights], "language_weights": weights,
            "outer_tensors": dict(sorted(outer_keys.items()))}


# --------------------------------------------------------------------------------------------
# Adapters


def layer_swap_adapters(task: Any, language: Any, *, bottom: int, top: int, num_layers: int | None = None,
                        transition: int = 0, blend: float = 0.5, outer: str = "adjacent",
                        dtype=None, allow_pickle: bool = False, allow_base_mismatch: bool = False):
    """Layer swapping on two PEFT adapters of one base model (LoRA or (IA)^3).

    LoRA, per module: a swapped or kept module is that expert's update ``s * B @ A`` (scaling folded
    into A, so the written config has ``lora_alpha = r`` per module); a blended module is the exact
    ``(1 - w) dW_task + w dW_language`` as one LoRA of rank ``r_task + r_language`` (factor
    concatenation, no dense matrix). (IA)^3 vectors and other tensors are mixed tensor by tensor.
    ``num_layers``: the base model's block count (default: one more than the highest block an
    adapter touches — pass it when the adapters skip the top blocks). Returns a
    :class:`~xlt.merge.adamergex.MergeResult`.
    """
    from xlt.merge.adamergex import MergeResult, _delta_rank_config, _out_dtype, concat_updates
    from xlt.merge.adapters import (AdapterState, as_adapter_state, check_compatible, lora_modules,
                                    other_tensors)

    states = [as_adapter_state(x, source=role, allow_pickle=allow_pickle)
              for x, role in ((task, "task expert"), (language, "language expert"))]
    check_compatible(states, allow_base_mismatch=allow_base_mismatch)
    prefix, count = find_blocks(list(states[0].tensors), num_layers)
    weights = language_weights(count, bottom, top, transition=transition, blend=blend)
    sides = outer_weights(weights, outer)
    report = swap_report(list(states[0].tensors), bottom=bottom, top=top, num_layers=count,
                         transition=transition, blend=blend, outer=outer)
    out_dtype = _out_dtype(states, dtype)
    tensors: dict = {}
    config = dict(states[0].config, inference_mode=True)
    if states[0].peft_type == "LORA":
        task_modules, language_modules = (lora_modules(s) for s in states)
        ranks: dict[str, int] = {}
        for name, first in task_modules.items():
            w = weight_of(first.key_A, weights, sides, prefix)
            pair = [first, language_modules[name]]
            kept = [(f, x) for f, x in zip(pair, (1.0 - w, w)) if x != 0.0]
            merged = concat_updates([f for f, _ in kept], [x for _, x in kept], dtype=out_dtype)
            tensors[first.key_A], tensors[first.key_B] = merged.A, merged.B
            ranks[name] = merged.rank
        config.update(_delta_rank_config(ranks))
        extras = [other_tensors(s) for s in states]
    else:
        extras = [dict(s.tensors) for s in states]
    for key in extras[0]:
        merged = mix(extras[0][key], extras[1][key], weight_of(key, weights, sides, prefix))
        tensors[key] = merged if out_dtype is None else merged.to(out_dtype)
    report.update(peft_type=states[0].peft_type, inputs=[s.source for s in states])
    report.pop("outer_tensors")
    return MergeResult(AdapterState(config=config, tensors=tensors, source="layer-swap"), report)


# --------------------------------------------------------------------------------------------
# Directories


_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "decoder_layers")


def config_layers(config: Mapping[str, Any]) -> int | None:
    """The block count a Hugging Face ``config.json`` declares (None if it names none)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    for key in _LAYER_COUNT_KEYS:
        if isinstance(text.get(key), int):
            return text[key]
    return None


def _has_separate_head(keys: Sequence[str]) -> bool:
    """Whether the checkpoint stores an output head of its own (an untied ``lm_head``)."""
    return any(block_index(k) is None and ("lm_head" in k or "embed_out" in k) for k in keys)


def layer_swap_directories(task_dir, language_dir, out, *, bottom: int, top: int, transition: int = 0,
                           blend: float = 0.5, outer: str = "adjacent", num_layers: int | None = None,
                           overwrite: bool = False, allow_pickle: bool = False,
                           allow_base_mismatch: bool = False, max_shard_bytes: int | None = None) -> dict:
    """Layer-swap two expert directories into ``out``; returns the report (also written as
    ``merge_report.json``).

    Both are Hugging Face model directories (the output is one, with the task expert's config,
    tokenizer and generation config; tensors stream shard by shard) or both PEFT adapter
    directories (the output is an adapter, see :func:`layer_swap_adapters`).
    """
    from pathlib import Path

    from xlt.merge.adapters import read_adapter, write_adapter
    from xlt.merge.checkpoints import DEFAULT_SHARD_BYTES, read_model_dir, write_model_dir

    paths = [Path(task_dir), Path(language_dir)]
    kinds = []
    for path, role in zip(paths, ("--task-expert", "--language-expert")):
        if not path.is_dir():
            raise ModelError(f"{role} {path}: no such directory")
        if (path / "config.json").is_file():
            kinds.append("model")
        elif (path / "adapter_config.json").is_file():
            kinds.append("adapter")
        else:
            raise ModelError(f"{role} {path}: neither a model directory (config.json) nor a PEFT adapter "
                             "(adapter_config.json)")
    if kinds[0] != kinds[1]:
        what = {"model": "a model directory", "adapter": "a PEFT adapter"}
        raise ModelError(f"the task expert {paths[0]} is {what[kinds[0]]} and the language expert {paths[1]} "
                         f"is {what[kinds[1]]}: give two models or two adapters")
    options = dict(bottom=bottom, top=top, transition=transition, blend=blend, outer=outer)
    if kinds[0] == "adapter":
        states = [read_adapter(p, allow_pickle=allow_pickle) for p in paths]
        result = layer_swap_adapters(*states, num_layers=num_layers, allow_base_mismatch=allow_base_mismatch,
                                     **options)
        write_adapter(result.adapter, out, overwrite=overwrite,
                      extra_files={"merge_report.json": result.report})
        return result.report
    (task_config, task), (language_config, language) = (read_model_dir(p) for p in paths)
    for key in ("model_type",):
        if task_config.get(key) != language_config.get(key):
            raise ModelError(f"architectures differ: {paths[0]} is {task_config.get(key)!r}, {paths[1]} is "
                             f"{language_config.get(key)!r} — the experts must be fine-tuned from one base model")
    if task_config.get("is_encoder_decoder"):
        raise ModelError(f"{paths[0]}: an encoder-decoder model; layer swapping handles decoder-only models")
    counts = [config_layers(c) for c in (task_config, language_config)]
    if counts[0] != counts[1]:
        raise ModelError(f"block counts differ: {paths[0]} has {counts[0]}, {paths[1]} has {counts[1]}")
    layers = num_layers or counts[0]
    check_same_architecture(task, language, task_name=f"task expert {paths[0]}",
                            language_name=f"language expert {paths[1]}")
    report = swap_report(list(task), num_layers=layers, **options)
    sides = outer_weights(report["language_weights"], outer)
    if sides["input"] != sides["output"] and not _has_separate_head(list(task)):
        report["note"] = ("tied embeddings: the one matrix serves as input embedding and output head, "
                          f"and is taken by the input-side rule ({'language' if sides['input'] else 'task'} expert)")
    report["inputs"] = [str(p) for p in paths]
    write_model_dir(out, task_config, iter_layer_swap(task, language, num_layers=layers, **options),
                    copy_from=paths[0], extra_files={"merge_report.json": report},
                    max_shard_bytes=max_shard_bytes or DEFAULT_SHARD_BYTES, overwrite=overwrite)
    return report
