"""A small registry of merge methods (name -> function), in the manner of mergekit.

Every method takes a list of adapters (directories, :class:`~xlt.merge.adapters.AdapterState`
objects or ``(config, state_dict)`` pairs), numbers, and keyword options, and returns a
:class:`~xlt.merge.adamergex.MergeResult`. LoRA adapters are combined exactly in update space
(factor concatenation, :func:`~xlt.merge.adamergex.concat_updates`); (IA)^3 adapters by a
weighted sum of their vectors.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from xlt.errors import ConfigError
from xlt.merge.adamergex import MergeResult, adamergex, merge_ia3_linear, merge_lora
from xlt.merge.adapters import as_adapter_state

MERGE_METHODS: dict[str, Callable[..., MergeResult]] = {}


def register_merge_method(name: str):
    """Decorator: make ``fn`` available as ``get_merge_method(name)``."""
    def wrap(fn):
        MERGE_METHODS[name] = fn
        return fn
    return wrap


def get_merge_method(name: str) -> Callable[..., MergeResult]:
    """The merge function registered under ``name`` (``-`` and ``_`` are interchangeable)."""
    key = name.replace("-", "_")
    if key not in MERGE_METHODS:
        raise ConfigError(f"unknown merge method {name!r} (expected one of {', '.join(sorted(MERGE_METHODS))})")
    return MERGE_METHODS[key]


def _states(adapters: Sequence[Any], allow_pickle: bool):
    if len(adapters) < 1:
        raise ConfigError("no adapters to merge")
    return [as_adapter_state(a, source=f"adapter {k + 1}", allow_pickle=allow_pickle)
            for k, a in enumerate(adapters)]


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ConfigError(f"{n} adapters but {len(weights)} weights")
    if not all(math.isfinite(w) for w in weights):
        raise ConfigError(f"weights must be finite numbers, got {weights}")
    return weights


def _combine(states, weights, rank, dtype, allow_base_mismatch) -> MergeResult:
    if states[0].peft_type == "IA3":
        if rank is not None:
            raise ConfigError("--rank applies to LoRA adapters only")
        return merge_ia3_linear(states, weights, dtype=dtype, allow_base_mismatch=allow_base_mismatch)
    return merge_lora(states, weights, mode="delta", rank=rank, dtype=dtype,
                      allow_base_mismatch=allow_base_mismatch)


@register_merge_method("linear")
def linear(adapters: Sequence[Any], weights: Sequence[float] | None = None, *, normalize: bool = True,
           rank: int | None = None, dtype=None, allow_pickle: bool = False,
           allow_base_mismatch: bool = False) -> MergeResult:
    """Weighted average of adapter updates: ``sum_i w_i dW_i / sum_i w_i`` (mergekit ``linear``).

    Equal weights by default; ``normalize=False`` skips the division. Exact for LoRA (rank
    ``sum_i r_i``, or ``rank`` by truncated SVD); (IA)^3 vectors are averaged the same way.
    """
    states = _states(adapters, allow_pickle)
    weights = _check_weights(weights, len(states))
    if normalize:
        total = sum(weights)
        if total == 0:
            raise ConfigError("the weights sum to 0 and cannot be normalised (use --no-normalize)")
        weights = [w / total for w in weights]
    result = _combine(states, weights, rank, dtype, allow_base_mismatch)
    result.report.update(method="linear", normalize=normalize)
    return result


@register_merge_method("task_arithmetic")
def task_arithmetic(adapters: Sequence[Any], weights: Sequence[float] | None = None, *,
                    scale: float = 1.0, rank: int | None = None, dtype=None,
                    allow_pickle: bool = False, allow_base_mismatch: bool = False) -> MergeResult:
    """Task arithmetic on adapter updates: ``scale * sum_i w_i dW_i`` (no normalisation).

    Each LoRA update is already a task vector (the difference from the base model), so negative
    weights subtract ("forget") a task. ``scale`` is mergekit's ``lambda``.
    """
    states = _states(adapters, allow_pickle)
    weights = [scale * w for w in _check_weights(weights, len(states))]
    result = _combine(states, weights, rank, dtype, allow_base_mismatch)
    result.report.update(method="task_arithmetic", scale=scale)
    return result


register_merge_method("adamergex")(adamergex)


@register_merge_method("language_arithmetic")
def language_arithmetic(task: Any, target_language: Any, source_language: Any, lam: float = 1.0, *,
                        rank: int | None = None, dtype=None, allow_pickle: bool = False,
                        allow_base_mismatch: bool = False) -> MergeResult:
    """Language arithmetic (Chronopoulou et al., 2023): ``task + lam * (target_language - source_language)``.

    ``task``: a task adapter trained in the source language; ``target_language`` /
    ``source_language``: language adapters (e.g. causal LM on plain text) in the two languages.
    LoRA: applied to each module's update, exactly, ``dW_task + lam (dW_tgt - dW_src)`` as one LoRA
    of rank r1 + r2 + r3 (or ``rank`` by truncated SVD); (IA)^3: to the vectors,
    ``l_task + lam (l_tgt - l_src)``. The same update as AdaMergeX's LoRA ``delta`` mode with
    ``t = lam``.
    """
    if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam):
        raise ConfigError(f"lambda must be a finite number, got {lam!r}")
    states = [as_adapter_state(x, source=role, allow_pickle=allow_pickle)
              for x, role in ((task, "task"), (target_language, "target_language"),
                              (source_language, "source_language"))]
    result = _combine(states, [1.0, float(lam), -float(lam)], rank, dtype, allow_base_mismatch)
    result.report.update(method="language_arithmetic", **{"lambda": float(lam)})
    return result
