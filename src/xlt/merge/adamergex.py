"""AdaMergeX and exact adapter arithmetic: pure functions on tensors and adapter state dicts.

AdaMergeX (Zhao et al., NAACL 2025) estimates a target-language task adapter without
target-language task data::

    A_tgt,task = A_src,task (+) t * (A_tgt,ref (-) A_src,ref)

with (+)/(-) matching how the adapter enters the network:

* LoRA adds ``s * B @ A`` to a weight, so (+) = + and (-) = -. Mode ``"delta"`` (default)
  computes the exact update ``dW_task + t * (dW_ref_tgt - dW_ref_src)`` and writes it as one LoRA
  of rank r1 + r2 + r3 by concatenating factors with the scalings folded into A — no dense
  matrix is formed (the same result as PEFT's ``add_weighted_adapter(..., [1, t, -t], "cat")``).
  Mode ``"factorwise"`` is the reference implementation's rule, applied to each factor
  separately: ``A' = A1 + t (A2 - A3)``, ``B' = B1 + t (B2 - B3)`` with the task adapter's
  config; it is close to ``"delta"`` only when the three adapters share their LoRA-A init.
  Mode ``"as-released"`` reproduces the released script, whose subtraction never runs:
  ``A' = A1 + t A2``, ``B' = B1 + t B2`` (``t = 0`` there, i.e. the plain task adapter).
* (IA)^3 rescales activations elementwise, so (+) = (*) and (-) = (/):
  ``l' = l_task * (t * (l_ref_tgt / l_ref_src - 1) + 1)``, with ``|l_ref_src|`` clamped to
  ``eps`` (sign kept, exact zeros -> +eps) and the number of clamped entries reported.

Everything here works on tensors already in memory; :mod:`xlt.merge.adapters` reads and writes
adapter directories.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from xlt.errors import ConfigError, ModelError
from xlt.merge.adapters import (AdapterState, LoraFactors, as_adapter_state, check_compatible,
                                ia3_vectors, lora_modules, module_name, other_tensors)

#: Default clamp on |l_ref_src| for the (IA)^3 quotient. Trained (IA)^3 vectors start at 1;
#: an entry this close to zero is degenerate and would turn the quotient into inf/NaN.
IA3_EPS = 1e-6

LORA_MODES = ("delta", "factorwise", "as-released")


@dataclass
class MergeResult:
    """A merged adapter and what happened: ``report`` is JSON-serialisable."""

    adapter: AdapterState
    report: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Tensor-level rules


@contextlib.contextmanager
def single_threaded():
    """Run torch CPU ops on one thread, restoring the setting afterwards.

    The per-module work of a merge is a few small matmuls and (r, r) decompositions; intra-op
    threads only add synchronisation there (on a busy 2-core machine a (11008, 24) Gram product
    took 45 ms with 2 threads and 0.5 ms with 1).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _work_dtype(tensor):
    import torch

    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def lora_delta(factors: LoraFactors, dtype=None):
    """Dense update ``scaling * B @ A``: (out, in). For tests and merging into a base model."""
    import torch

    dtype = dtype or torch.float32
    return factors.scaling * (factors.B.to(dtype) @ factors.A.to(dtype))


def concat_updates(factors: Sequence[LoraFactors], weights: Sequence[float], *,
                   dtype=None) -> LoraFactors:
    """Exact weighted sum of LoRA updates as one LoRA: ``sum_i w_i s_i B_i A_i = B_cat @ A_cat``.

    ``A_cat = [w_1 s_1 A_1; ...; w_n s_n A_n]`` (sum r_i, in), ``B_cat = [B_1 | ... | B_n]``
    (out, sum r_i), scaling 1. Ranks may differ. An adapter with weight 0 keeps its (zeroed)
    rows, so the output rank does not depend on the weights.
    """
    import torch

    dtype = dtype or factors[0].A.dtype
    work = _work_dtype(factors[0].A)
    kept = list(zip(factors, weights))
    A = torch.cat([(f.A.to(work) * (w * f.scaling)).to(dtype) for f, w in kept], dim=0)
    B = torch.cat([f.B.to(dtype) for f, _ in kept], dim=1)
    return LoraFactors(A=A, B=B, scaling=1.0, key_A=factors[0].key_A, key_B=factors[0].key_B)


def combine_factors(factors: Sequence[LoraFactors], weights: Sequence[float], *,
                    dtype=None) -> LoraFactors:
    """The factor-wise rule: ``A' = sum_i w_i A_i``, ``B' = sum_i w_i B_i``, first adapter's scaling.

    AdaMergeX's reference code uses weights ``[1, t, -t]``. The effective update
    ``s (B1 + t dB)(A1 + t dA)`` contains cross terms; it is *not* the sum of the updates.
    """
    import torch

    dtype = dtype or factors[0].A.dtype
    work = _work_dtype(factors[0].A)
    if len(factors) == 3 and weights[0] == 1 and weights[2] == -weights[1]:
        # AdaMergeX's weights [1, t, -t]: the reference's order of operations, X1 + t (X2 - X3),
        # so float32 results agree with it bit for bit
        t = weights[1]
        A = factors[0].A.to(work) + t * (factors[1].A.to(work) - factors[2].A.to(work))
        B = factors[0].B.to(work) + t * (factors[1].B.to(work) - factors[2].B.to(work))
    else:
        A = sum(w * f.A.to(work) for f, w in zip(factors, weights))
        B = sum(w * f.B.to(work) for f, w in zip(factors, weights))
    return LoraFactors(A=torch.as_tensor(A).to(dtype), B=torch.as_tensor(B).to(dtype),
                       scaling=factors[0].scaling, key_A=factors[0].key_A, key_B=factors[0].key_B)


def _orthonormal_factor(gram, tol: float = 1e-12):
    """Eigendecomposition ``gram = V diag(lam) V^T`` of a small (r, r) Gram matrix, keeping the
    eigenvalues above ``tol * max``: returns ``(V_p, sqrt(lam_p))``, p = numerical rank."""
    import torch

    lam, vec = torch.linalg.eigh(gram)
    keep = lam > tol * max(float(lam.max()), 0.0) if float(lam.max()) > 0 else lam > 0
    return vec[:, keep], torch.sqrt(lam[keep])


def truncate_rank(factors: LoraFactors, rank: int, *, dtype=None) -> tuple[LoraFactors, float]:
    """Best rank-``rank`` approximation of ``scaling * B @ A`` without forming it.

    Orthonormal bases of B's column space and A's row space come from the eigendecompositions
    of the small Gram matrices ``B^T B`` and ``A A^T`` (a Cholesky-QR that tolerates rank
    deficiency: ``B = Q_B S_B V_B^T`` with ``Q_B = B V_B S_B^-1``, likewise for A); the SVD of
    the small core ``S_B V_B^T V_A S_A = U S W^T`` then gives ``B' = Q_B U_k S_k`` (out, k) and
    ``A' = W_k^T Q_A^T`` (k, in), scaling 1 — everything in float64, nothing larger than
    (out, r) or (r, in). Returns the new factors and the relative Frobenius error
    ``sqrt(sum_{i>k} s_i^2) / sqrt(sum_i s_i^2)`` (0 for a zero update). A ``rank`` at or above
    the numerical rank re-expresses the update exactly (error 0, rank = numerical rank).
    """
    import torch

    if rank < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}")
    dtype = dtype or factors.A.dtype
    A = factors.A.to(torch.float64)
    B = factors.B.to(torch.float64) * factors.scaling
    v_b, s_b = _orthonormal_factor(B.T @ B)          # (r, p_b), (p_b,)
    v_a, s_a = _orthonormal_factor(A @ A.T)          # (r, p_a), (p_a,)
    if s_b.numel() == 0 or s_a.numel() == 0:         # a zero update
        k = min(rank, A.shape[0])
        zero_A = torch.zeros(k, A.shape[1], dtype=dtype)
        zero_B = torch.zeros(B.shape[0], k, dtype=dtype)
        return LoraFactors(zero_A, zero_B, 1.0, factors.key_A, factors.key_B), 0.0
    core = (s_b[:, None] * (v_b.T @ v_a)) * s_a[None, :]  # (p_b, p_a)
    u, s, wh = torch.linalg.svd(core, full_matrices=False)
    k = min(rank, s.numel())
    total = float(torch.sum(s * s))
    error = math.sqrt(max(float(torch.sum(s[k:] * s[k:])), 0.0) / total) if total > 0 else 0.0
    # B' = Q_B U_k S_k with Q_B = B V_B S_B^-1;  A' = W_k^T Q_A^T with Q_A^T = S_A^-1 V_A^T A
    new_B = B @ (v_b @ ((u[:, :k] * s[:k]) / s_b[:, None]))
    new_A = ((wh[:k] / s_a[None, :]) @ v_a.T) @ A
    return (LoraFactors(A=new_A.to(dtype).contiguous(), B=new_B.to(dtype).contiguous(), scaling=1.0,
                        key_A=factors.key_A, key_B=factors.key_B), error)


def guarded_denominator(vector, eps: float = IA3_EPS):
    """``vector`` with entries of magnitude below ``eps`` replaced by ``eps * sign`` (0 -> +eps).

    Returns ``(denominator, number_of_entries_replaced)``. ``eps = 0`` leaves it unchanged.
    """
    import torch

    if eps <= 0:
        return vector, 0
    small = vector.abs() < eps
    sign = torch.sign(vector + (vector == 0).to(vector.dtype))
    return torch.where(small, eps * sign, vector), int(small.sum())


def ia3_adamergex(l_task, l_ref_target, l_ref_source, t: float, *, eps: float = IA3_EPS):
    """AdaMergeX for (IA)^3: ``l_task * (t * (l_ref_target / l_ref_source - 1) + 1)``.

    The three vectors have the same shape ((out, 1) or (1, in) in PEFT's layout). Returns
    ``(merged, entries_clamped)``; at ``t = 1`` this is ``l_task * l_ref_target / l_ref_source``,
    at ``t = 0`` it is ``l_task``.
    """
    work = _work_dtype(l_task)
    denominator, touched = guarded_denominator(l_ref_source.to(work), eps)
    merged = l_task.to(work) * (t * (l_ref_target.to(work) / denominator - 1) + 1)
    return merged.to(l_task.dtype), touched


def weighted_sum(tensors: Sequence[Any], weights: Sequence[float]):
    """``sum_i w_i x_i`` in at least float32, cast back to the first tensor's dtype."""
    work = _work_dtype(tensors[0])
    if len(tensors) == 3 and weights[0] == 1 and weights[2] == -weights[1]:  # x1 + t (x2 - x3)
        total = tensors[0].to(work) + weights[1] * (tensors[1].to(work) - tensors[2].to(work))
    else:
        total = sum(w * x.to(work) for x, w in zip(tensors, weights))
    return total.to(tensors[0].dtype)


# --------------------------------------------------------------------------------------------
# Adapter-level merges


def _out_dtype(states: Sequence[AdapterState], dtype):
    import torch

    if dtype is not None:
        if isinstance(dtype, str):
            from xlt.models import parse_dtype

            dtype = parse_dtype(dtype)
            if dtype == "auto":
                return None
        return dtype
    dtypes = {t.dtype for s in states for t in s.tensors.values()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def merge_lora(states: Sequence[AdapterState], weights: Sequence[float], *, mode: str = "delta",
               rank: int | None = None, dtype=None, allow_base_mismatch: bool = False) -> MergeResult:
    """Combine LoRA adapters with ``weights``.

    ``mode="delta"``: exact ``sum_i w_i dW_i`` as a LoRA of rank ``sum_i r_i`` (``rank`` re-factorises
    to at most that rank by truncated SVD; the per-module relative error is reported).
    ``mode="factorwise"``: ``sum_i w_i A_i`` and ``sum_i w_i B_i`` with the first adapter's config
    (needs equal ranks and scalings). Non-factor tensors (e.g. ``modules_to_save`` copies) are
    combined as ``sum_i w_i x_i`` in both modes. ``dtype``: output dtype (default: the inputs').
    """
    if mode not in ("delta", "factorwise"):
        raise ConfigError(f"unknown LoRA merge mode {mode!r} (expected delta or factorwise)")
    if len(states) != len(weights):
        raise ConfigError(f"{len(states)} adapters but {len(weights)} weights")
    if not states:
        raise ConfigError("no adapters to merge")
    if mode == "factorwise" and rank is not None:
        raise ConfigError("--rank applies to mode delta only (the factor-wise rule keeps the task rank)")
    check_compatible(states, same_rank=(mode == "factorwise"), allow_base_mismatch=allow_base_mismatch)
    if states[0].peft_type != "LORA":
        raise ModelError(f"{states[0].source}: expected a LoRA adapter, got {states[0].peft_type}")
    out_dtype = _out_dtype(states, dtype)
    per_adapter = [lora_modules(s) for s in states]
    tensors: dict = {}
    ranks: dict[str, int] = {}
    errors: dict[str, float] = {}
    with single_threaded():
        for name, first in per_adapter[0].items():
            factors = [m[name] for m in per_adapter]
            if mode == "delta":
                merged = concat_updates(factors, weights, dtype=out_dtype)
                if rank is not None:
                    merged, errors[name] = truncate_rank(merged, rank, dtype=out_dtype)
            else:
                merged = combine_factors(factors, weights, dtype=out_dtype)
            tensors[first.key_A] = merged.A
            tensors[first.key_B] = merged.B
            ranks[name] = merged.rank
    extras = [other_tensors(s) for s in states]
    for key in extras[0]:
        tensors[key] = weighted_sum([e[key] for e in extras], weights)
        if out_dtype is not None:
            tensors[key] = tensors[key].to(out_dtype)
    config = dict(states[0].config)
    config["inference_mode"] = True
    if mode == "delta":
        config.update(_delta_rank_config(ranks))
    report: dict[str, Any] = {"peft_type": "LORA", "mode": mode, "weights": list(map(float, weights)),
                              "modules": len(ranks), "rank": config["r"],
                              "inputs": [s.source for s in states]}
    if errors:
        report["relative_error"] = errors
        report["max_relative_error"] = max(errors.values())
    if mode == "factorwise" and len(states) >= 3:
        report["ref_A_disagreement"] = _a_disagreement(per_adapter[1], per_adapter[2])
    return MergeResult(AdapterState(config=config, tensors=tensors, source="merged"), report)


def _delta_rank_config(ranks: dict[str, int]) -> dict:
    """r = alpha = the most common rank (scaling 1), with patterns for modules that differ."""
    counts: dict[int, int] = {}
    for r in ranks.values():
        counts[r] = counts.get(r, 0) + 1
    default = max(counts, key=lambda r: (counts[r], r))
    pattern = {name: r for name, r in ranks.items() if r != default}
    return {"r": default, "lora_alpha": default, "use_rslora": False,
            "rank_pattern": dict(pattern), "alpha_pattern": dict(pattern)}


def _a_disagreement(mod_a: dict[str, LoraFactors], mod_b: dict[str, LoraFactors]) -> float:
    """``||A_a - A_b||_F / ||A_b||_F`` over all modules: near 0 when both share their LoRA-A init,
    about sqrt(2) for independent random inits (then the factor-wise rule adds init noise)."""
    import torch

    num = den = 0.0
    for name, fa in mod_a.items():
        a, b = fa.A.to(torch.float64), mod_b[name].A.to(torch.float64)
        num += float(torch.sum((a - b) ** 2))
        den += float(torch.sum(b ** 2))
    return math.sqrt(num / den) if den > 0 else 0.0


def merge_ia3_linear(states: Sequence[AdapterState], weights: Sequence[float], *, dtype=None,
                     allow_base_mismatch: bool = False) -> MergeResult:
    """``sum_i w_i l_i`` for (IA)^3 adapters (what PEFT's IA3 ``add_weighted_adapter`` does)."""
    check_compatible(states, allow_base_mismatch=allow_base_mismatch)
    out_dtype = _out_dtype(states, dtype)
    tensors = {}
    for key in states[0].tensors:
        tensors[key] = weighted_sum([s.tensors[key] for s in states], weights)
        if out_dtype is not None:
            tensors[key] = tensors[key].to(out_dtype)
    config = dict(states[0].config, inference_mode=True)
    report = {"peft_type": "IA3", "mode": "linear", "weights": list(map(float, weights)),
              "modules": len(ia3_vectors(states[0])), "inputs": [s.source for s in states]}
    return MergeResult(AdapterState(config=config, tensors=tensors, source="merged"), report)


def adamergex(task: Any, ref_target: Any, ref_source: Any, t: float, *, mode: str = "delta",
              rank: int | None = None, eps: float = IA3_EPS, dtype=None, allow_pickle: bool = False,
              allow_base_mismatch: bool = False) -> MergeResult:
    """AdaMergeX: the task adapter plus ``t`` times the reference adapters' language difference.

    ``task`` (source-language task adapter), ``ref_target`` and ``ref_source`` (reference-task
    adapters, e.g. causal LM on plain text, in the target and the source language) are adapter
    directories, :class:`AdapterState` objects or ``(config, state_dict)`` pairs with PEFT's
    on-disk key names. The adapter type (LoRA or IA3) is read from them.

    LoRA: ``mode`` is ``"delta"`` (exact ``dW_task + t (dW_ref_tgt - dW_ref_src)``, rank
    r1 + r2 + r3, or ``rank`` by truncated SVD), ``"factorwise"`` (the reference code's rule) or
    ``"as-released"`` (the released script: ``A1 + t A2``, ``B1 + t B2``; ref_source unused).
    (IA)^3: ``l_task * (t (l_ref_tgt / l_ref_src - 1) + 1)``, ``|l_ref_src|`` clamped to ``eps``
    (``eps = 0``: no clamp, and a non-finite result raises). The paper tunes ``t`` on a
    target-language dev set; ``t = 1`` is the un-tuned reference point.
    """
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
        raise ConfigError(f"t must be a finite number, got {t!r}")
    states = [as_adapter_state(x, source=role, allow_pickle=allow_pickle)
              for x, role in ((task, "task"), (ref_target, "ref_target"), (ref_source, "ref_source"))]
    kind = states[0].peft_type
    if kind == "LORA":
        if mode not in LORA_MODES:
            raise ConfigError(f"unknown mode {mode!r} (expected one of {', '.join(LORA_MODES)})")
        if mode == "as-released":
            check_compatible(states, same_rank=True, allow_base_mismatch=allow_base_mismatch)
            result = merge_lora(states[:2], [1.0, t], mode="factorwise", dtype=dtype,
                                allow_base_mismatch=allow_base_mismatch)
            result.report["mode"] = "as-released"
            result.report["inputs"] = [s.source for s in states]
        else:
            result = merge_lora(states, [1.0, t, -t], mode=mode, rank=rank, dtype=dtype,
                                allow_base_mismatch=allow_base_mismatch)
    elif kind == "IA3":
        if rank is not None:
            raise ConfigError("--rank applies to LoRA adapters only")
        result = _ia3_adamergex_states(states, t, eps=eps, dtype=dtype,
                                       allow_base_mismatch=allow_base_mismatch)
    else:  # validate_adapter already refused other types
        raise ModelError(f"{states[0].source}: unsupported adapter type {kind}")
    result.report.update(method="adamergex", t=float(t))
    return result


def _ia3_adamergex_states(states, t, *, eps, dtype, allow_base_mismatch) -> MergeResult:
    import torch

    check_compatible(states, allow_base_mismatch=allow_base_mismatch)
    out_dtype = _out_dtype(states, dtype)
    task, tgt, src = states
    tensors, clamped = {}, {}
    for key, l_task in task.tensors.items():
        if key in ia3_vectors(task):
            merged, touched = ia3_adamergex(l_task, tgt.tensors[key], src.tensors[key], t, eps=eps)
            if touched:
                clamped[module_name(key)] = touched
            if not bool(torch.isfinite(merged).all()):
                bad = int((~torch.isfinite(merged)).sum())
                raise ModelError(f"{module_name(key)}: {bad} non-finite merged (IA)^3 entries "
                                 f"(ref_source has entries at or near zero; use eps > 0)")
        else:  # modules_to_save and the like: task + t (tgt - src)
            merged = weighted_sum([l_task, tgt.tensors[key], src.tensors[key]], [1.0, t, -t])
        tensors[key] = merged if out_dtype is None else merged.to(out_dtype)
    config = dict(task.config, inference_mode=True)
    report = {"peft_type": "IA3", "mode": "multiplicative", "eps": eps,
              "modules": len(ia3_vectors(task)), "clamped_entries": sum(clamped.values()),
              "clamped_by_module": clamped, "inputs": [s.source for s in states]}
    return MergeResult(AdapterState(config=config, tensors=tensors, source="merged"), report)
