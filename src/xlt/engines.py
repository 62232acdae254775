"""Which distributed engine a run is under, and reading full weights through it.

The Trainer runs a model as it is (one process), under DDP, FSDP2 or a DeepSpeed ZeRO engine.
Code that reads or writes weights directly (LSLo's pruning masks, saving, parameter counts) must
ask the engine for them: ZeRO-3 keeps each parameter as an empty placeholder outside its module's
forward (the full tensor lives in ``GatheredParameters``), FSDP2 keeps a ``DTensor`` shard
(``full_tensor()`` gathers it). This module names the engine (:func:`engine_record`, written
to ``train_config.json`` and the closing line of every training command) and gives the full
tensors (:func:`gathered`, :func:`full_tensor`, :func:`num_parameters`) and writes them
(:func:`assign_full`).

FSDP version 1 is refused (:func:`check_fsdp_version`): its root module must see the end of
every forward, which an early exit skips. accelerate's default FSDP config is version 1; set
``fsdp_version: 2`` (``--fsdp_config '{"fsdp_version": 2}'`` on the Trainer).

On a machine without an accelerator, accelerate counts one process under ``torchrun`` for a
DeepSpeed run. :func:`configure_cpu_deepspeed` builds the process state that the Trainer then
adopts through ``accelerator_config={"use_configured_state": True}`` (transformers' documented
hook for a pre-configured ``PartialState``); nothing installed is modified.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator

import torch

from xlt.errors import ConfigError

#: the key of the engine record in ``train_config.json`` (ignored when the file is read by ``--config``)
ENGINE_KEY = "xlt_engine"

#: names written under ``engine`` in ``train_config.json``
ENGINES = ("single", "ddp", "fsdp2", "deepspeed-zero1", "deepspeed-zero2", "deepspeed-zero2-offload",
           "deepspeed-zero3", "deepspeed-zero3-offload")

FSDP1_REFUSAL = ("FSDP version 1 is not supported (its root module must see the end of every "
                 "forward, and an early exit skips it): use FSDP version 2, e.g. "
                 "--fsdp_config '{\"fsdp_version\": 2}' or fsdp_version: 2 in the accelerate config")


def _deepspeed_config(accelerator) -> dict | None:
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    return None if plugin is None else plugin.deepspeed_config


def engine_record(trainer) -> dict:
    """``{"engine": name, "world_size": n}`` for the engine ``trainer`` actually ran under.

    ``name`` is one of :data:`ENGINES`: ``single`` (one process), ``ddp``, ``fsdp2``,
    ``deepspeed-zero<stage>`` with ``-offload`` when the optimizer or parameters live on the CPU.
    """
    accelerator = trainer.accelerator
    world = int(accelerator.num_processes)
    ds = _deepspeed_config(accelerator)
    if ds is not None:
        zero = ds.get("zero_optimization", {}) or {}
        stage = int(zero.get("stage", 0))
        offload = any((zero.get(key) or {}).get("device", "none") not in ("none", None)
                      for key in ("offload_optimizer", "offload_param"))
        name = f"deepspeed-zero{stage}" + ("-offload" if offload else "")
    elif getattr(trainer, "is_fsdp_enabled", False):
        version = getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1)
        name = "fsdp2" if version == 2 else f"fsdp{version}"
    elif world > 1:
        name = "ddp"
    else:
        name = "single"
    return {"engine": name, "world_size": world}


def describe(record: dict) -> str:
    """``"deepspeed-zero3 x 2 processes"``: the engine part of a command's closing line."""
    n = record["world_size"]
    return f"{record['engine']} x {n} process{'es' if n != 1 else ''}"


def check_fsdp_version(args) -> None:
    """Refuse FSDP version 1 before anything loads, with one line (``args``: the
    ``TrainingArguments``). ``--fsdp`` through the Trainer is version 2 unless its
    ``fsdp_config`` says ``version: 1``; ``accelerate launch`` with an FSDP config sets
    ``FSDP_VERSION`` (1 unless the config has ``fsdp_version: 2``)."""
    if getattr(args, "fsdp", None):
        config = getattr(args, "fsdp_config", None) or {}
        version = int(config.get("version", config.get("fsdp_version", 2)) or 2)
    elif os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        version = int(os.environ.get("FSDP_VERSION", "1") or 1)
    else:
        return
    if version != 2:
        raise ConfigError(FSDP1_REFUSAL)


def check_engine(trainer) -> dict:
    """The :func:`engine_record` of ``trainer``, after checking it is the engine the options ask
    for: FSDP version 1 is refused, and ``--fsdp`` or ``--deepspeed`` that accelerate did not set
    up (it runs FSDP only on GPUs / accelerators: on a CPU it silently runs DDP) is an error
    rather than an unsharded run that looks sharded."""
    record = engine_record(trainer)
    args = trainer.args
    if record["engine"].startswith("fsdp") and record["engine"] != "fsdp2":
        raise ConfigError(FSDP1_REFUSAL)
    if getattr(args, "fsdp", None) and record["engine"] != "fsdp2":
        raise ConfigError(f"--fsdp: accelerate set up {describe(record)} instead of FSDP2 "
                          "(it runs FSDP only on GPUs or other accelerators, not on a CPU); refusing to "
                          "train unsharded")
    if getattr(args, "deepspeed", None) and not record["engine"].startswith("deepspeed"):
        raise ConfigError(f"--deepspeed {args.deepspeed}: accelerate set up {describe(record)} instead of "
                          "DeepSpeed; refusing to train without it")
    return record


def is_zero3_param(p: torch.Tensor) -> bool:
    """True for a parameter partitioned by DeepSpeed ZeRO-3 (it carries ``ds_id``)."""
    return hasattr(p, "ds_id")


@contextlib.contextmanager
def gathered(params: Iterable[torch.Tensor], *, modify: bool = False) -> Iterator[None]:
    """Make ZeRO-3-partitioned ``params`` whole inside the block (a no-op for other tensors).

    With ``modify`` the values written inside the block are partitioned back on exit (rank 0's
    values, as ``deepspeed.zero.GatheredParameters(modifier_rank=0)`` does).
    """
    params = [p for p in params if is_zero3_param(p)]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None):
        yield


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole value of ``t``: an FSDP2 ``DTensor`` shard is gathered, a plain tensor (or a
    ZeRO-3 parameter inside :func:`gathered`) is returned as it is."""
    to_full = getattr(t, "full_tensor", None)
    return to_full() if callable(to_full) else t


def assign_full(p: torch.Tensor, value: torch.Tensor) -> None:
    """Write ``value``, the whole tensor, into parameter ``p`` under any engine (call it on every
    process with the same ``value``).

    An FSDP2 ``DTensor`` takes this process's shard of ``value``; a ZeRO-3 parameter must be inside
    ``gathered([p], modify=True)``. DeepSpeed's optimizer keeps its own fp32 copy of every
    trainable parameter (ZeRO-1/2/3, offloaded or not) and writes it back into the model at the
    next step, so that copy is set too: a write into the model alone would be undone.
    """
    with torch.no_grad():
        if _is_dtensor(p):
            from torch.distributed.tensor import distribute_tensor

            p.copy_(distribute_tensor(value.to(p.dtype), p.device_mesh, p.placements))
        else:
            p.copy_(value.to(p))
    if hasattr(p, "_hp_mapping") or hasattr(p, "_z3_optimizer"):
        from deepspeed.utils import safe_set_full_fp32_param

        safe_set_full_fp32_param(p, value.float().to(p.device))


def _is_dtensor(t: torch.Tensor) -> bool:
    return hasattr(t, "device_mesh") and hasattr(t, "placements")


def num_parameters(model: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """The number of parameters of ``model`` as a whole, under any engine (ZeRO-3's
    placeholders have ``numel() == 0``; their full size is ``ds_numel``; a DTensor's
    ``numel()`` is already the global size). Tied weights count once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += int(getattr(p, "ds_numel", p.numel()))
    return total


def full_state(model: torch.nn.Module, *, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """``{name: full CPU tensor}`` of ``model``'s (trainable) parameters, on every process."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
    out = {}
    with gathered([p for _, p in named]):
        for name, p in named:
            out[name] = full_tensor(p.detach()).float().cpu().clone()
    return out


def fill_missing_gradients(params: Iterable[torch.Tensor]) -> int:
    """Give every trainable tensor in ``params`` without a gradient a zero gradient; return how many.

    An optimizer step then moves every trainable parameter, reached by the window's loss or not
    (Adam's moments decay, its step count advances), as a DeepSpeed engine does: ZeRO keeps the
    gradients in flat partitions where an unreached parameter's slot is zero, not absent. With
    this, one process, DDP, FSDP2 and DeepSpeed take the same steps when a window reaches only
    part of the model (mid-align with an odd number of micro-batches per step: an alignment-only
    window never reaches the blocks after the alignment layer, the final norm or the head).
    """
    n = 0
    for p in params:
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
            n += 1
    return n


def missing_gradient_callback(trainer):
    """A ``TrainerCallback`` that runs :func:`fill_missing_gradients` on the optimizer's
    parameters before each optimizer step (after clipping). Under DeepSpeed it does nothing:
    the engine owns the gradients and already steps every parameter."""
    from transformers import TrainerCallback

    class MissingGradientCallback(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            if optimizer is None or getattr(trainer, "is_deepspeed_enabled", False):
                return control
            fill_missing_gradients(p for group in optimizer.param_groups for p in group["params"])
            return control

    return MissingGradientCallback()


def configure_cpu_deepspeed() -> None:
    """Under ``torchrun`` on a machine without an accelerator, set up the process state that a
    DeepSpeed run needs (gloo through DeepSpeed's CPU accelerator, every process counted).

    Call before the ``TrainingArguments`` are created, and create them with
    ``accelerator_config={"use_configured_state": True}``.
    """
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    if "LOCAL_RANK" not in os.environ:
        raise ConfigError("DeepSpeed on a CPU needs a launcher that sets LOCAL_RANK (torchrun)")
    AcceleratorState._reset_state(reset_partial_state=False)
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
