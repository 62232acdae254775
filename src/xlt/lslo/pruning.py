"""Gradual magnitude pruning of the LSLo B matrices (the reference's cubic schedule).

Schedule (Zhu & Gupta 2017, evaluated once per 1-based epoch ``e``)::

    p(e) = P - P * (1 - (e - t1) / t2) ** 3     for t1 <= e <= t1 + t2
    p(e) = P                                     for e > t1 + t2
    no pruning                                   for e < t1

``p(e)`` is the fraction of *all* entries of a pool that are zero after the step. Pools:

* ``"language"`` (reference ``--cross-language False``): for each language, the B entries of
  that language in every LSLo layer;
* ``"layer"`` (``--cross-language True``): for each layer index of each stack (encoder /
  decoder), the B entries of every module of that layer and every language.

In a pool of ``N`` entries the ``round(p * N)`` smallest ``|B|`` are masked (Python rounding,
as ``torch.nn.utils.prune``). Masks act in the forward (``B * mask``) while training, are
recomputed from scratch at each epoch start (already-zero entries go first, so the pruned set
only grows) and are made permanent (B zeroed, mask dropped) at the end of each epoch and in
saved files. Only B is pruned; A stays dense.

Under an engine that partitions the weights (DeepSpeed ZeRO-3, FSDP2) every function here reads
and writes whole tensors through :mod:`xlt.engines` (so every process must call it, with the same
masks as result), and making a mask permanent also sets DeepSpeed's fp32 copy of B.
"""

from __future__ import annotations

from typing import Any

import torch

from xlt.errors import ConfigError

POOLS = ("language", "layer")


def pruning_ratio(epoch: int, t1: int, t2: int, target: float) -> float | None:
    """The fraction of each pool pruned at 1-based ``epoch``; ``None`` before ``t1``.

    >>> pruning_ratio(3, 2, 10, 0.9)
    0.2438999999999999
    """
    if t2 <= 0:
        raise ConfigError(f"pruning t2 must be >= 1 epoch, got {t2}")
    if not 0.0 <= target <= 1.0:
        raise ConfigError(f"target pruning ratio must be in [0, 1], got {target}")
    if epoch < t1:
        return None
    if epoch > t1 + t2:
        return target
    return target - target * (1 - (epoch - t1) / t2) ** 3


def _pools(model, pool: str) -> dict[Any, list[tuple[Any, slice]]]:
    """``{pool key: [(layer, row slice of lora_b), ...]}`` in sorted module-path order."""
    if pool not in POOLS:
        raise ConfigError(f"unknown pruning pool {pool!r} (expected one of {', '.join(POOLS)})")
    names = model.subspace_names()
    pools: dict[Any, list] = {}
    for path, layer in sorted(model.lslo_layers.items()):
        side, index = model.layer_of[path]
        for l, name in enumerate(names):
            rows = slice(layer.offsets[l], layer.offsets[l + 1])
            key = name if pool == "language" else (side, index)
            pools.setdefault(key, []).append((layer, rows))
    return pools


def pool_sizes(model, pool: str = "language") -> dict[str, int]:
    """``{pool key: number of B entries}`` (keys: language names, or ``"encoder/K"``)."""
    return {("/".join(map(str, key)) if isinstance(key, tuple) else str(key)):
            sum((rows.stop - rows.start) * layer.out_width for layer, rows in members)
            for key, members in _pools(model, pool).items()}


@torch.no_grad()
def prune_step(model, ratio: float, pool: str = "language") -> dict[str, int]:
    """Set the B masks of ``model`` so that ``round(ratio * N)`` entries of every pool are masked.

    Importance is ``|B * current mask|``, as in ``torch.nn.utils.prune.global_unstructured``.
    Returns ``{pool key (str): number masked}``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"pruning ratio must be in [0, 1], got {ratio}")
    from xlt.engines import gathered

    layers = model.lslo_layers
    with gathered([layer.lora_b for layer in layers.values()]):
        full_b = {id(layer): layer.effective_b().detach().clone() for layer in layers.values()}
    masks = {path: torch.ones_like(full_b[id(layer)], dtype=torch.bool) for path, layer in layers.items()}
    path_of = {id(layer): path for path, layer in layers.items()}
    counts: dict[str, int] = {}
    for key, members in _pools(model, pool).items():
        scores = torch.cat([full_b[id(layer)][rows].abs().reshape(-1) for layer, rows in members])
        n = round(ratio * scores.numel())
        counts["/".join(map(str, key)) if isinstance(key, tuple) else str(key)] = n
        if n == 0:
            continue
        flat = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
        flat[torch.topk(scores, n, largest=False).indices] = False
        start = 0
        for layer, rows in members:
            size = (rows.stop - rows.start) * layer.out_width
            masks[path_of[id(layer)]][rows] = flat[start:start + size].view(rows.stop - rows.start, -1)
            start += size
    for path, layer in layers.items():
        layer.lora_b_mask = masks[path]
    return counts


@torch.no_grad()
def make_pruning_permanent(model) -> None:
    """Zero the masked B entries and drop the masks (the reference's ``prune.remove``)."""
    from xlt.engines import assign_full, gathered

    for layer in model.lslo_layers.values():
        if layer.lora_b_mask is not None:
            with gathered([layer.lora_b], modify=True):
                assign_full(layer.lora_b, layer.effective_b().detach().clone())
            layer.lora_b_mask = None


@torch.no_grad()
def pruning_report(model) -> dict[str, Any]:
    """Surviving (non-zero) B entries per language and layer, and totals (A is never pruned).

    Returns ``{"languages", "layers", "surviving": [[per layer] per language], "total": same
    shape, "surviving_fraction", "per_language": {lang: {"surviving", "total"}},
    "a_parameters", "b_parameters", "b_surviving"}``. Layers are named ``encoder.K`` /
    ``decoder.K``.
    """
    names = model.subspace_names()
    layer_keys = sorted({v for v in model.layer_of.values()}, key=lambda k: (k[0] != "encoder", k[1]))
    col = {k: j for j, k in enumerate(layer_keys)}
    surviving = [[0] * len(layer_keys) for _ in names]
    total = [[0] * len(layer_keys) for _ in names]
    a_count = 0
    from xlt.engines import gathered

    layers = model.lslo_layers
    with gathered([layer.lora_b for layer in layers.values()]):
        full_b = {path: layer.effective_b().detach().clone() for path, layer in layers.items()}
    for path, layer in layers.items():
        j = col[model.layer_of[path]]
        b = full_b[path]
        a_count += layer.in_width * sum(layer.ranks)
        for l in range(len(names)):
            block = b[layer.offsets[l]:layer.offsets[l + 1]]
            surviving[l][j] += int((block != 0).sum())
            total[l][j] += block.numel()
    b_total = sum(map(sum, total))
    b_surv = sum(map(sum, surviving))
    return {"languages": names,
            "layers": [f"{side}.{index}" for side, index in layer_keys],
            "surviving": surviving, "total": total,
            "per_language": {name: {"surviving": sum(surviving[l]), "total": sum(total[l])}
                             for l, name in enumerate(names)},
            "a_parameters": a_count, "b_parameters": b_total, "b_surviving": b_surv,
            "surviving_fraction": b_surv / b_total if b_total else 0.0}


def plot_pruning_report(report: dict[str, Any], title: str = "LSLo: surviving B parameters"):
    """A matplotlib figure: languages x layers heat map of the surviving fraction of B."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    surv = np.asarray(report["surviving"], dtype=float)
    tot = np.maximum(np.asarray(report["total"], dtype=float), 1)
    frac = surv / tot
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * frac.shape[1] + 2), max(2.5, 0.4 * frac.shape[0] + 1.5)))
    image = ax.imshow(frac, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(report["layers"])), report["layers"], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(report["languages"])), report["languages"], fontsize=8)
    for i in range(frac.shape[0]):
        for j in range(frac.shape[1]):
            ax.text(j, i, f"{int(surv[i, j])}", ha="center", va="center", fontsize=6,
                    color="white" if frac[i, j] < 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="surviving fraction")
    fig.tight_layout()
    return fig


class PruningSchedule:
    """The reference's mask lifecycle, driven by 1-based epochs.

    ``begin_epoch(e)`` computes masks with ``pruning_ratio(e, ...)`` (nothing before ``t1``);
    ``end_epoch()`` makes them permanent.
    """

    def __init__(self, t1: int = 2, t2: int = 10, target: float = 0.9, pool: str = "language"):
        if pool not in POOLS:
            raise ConfigError(f"unknown pruning pool {pool!r} (expected one of {', '.join(POOLS)})")
        pruning_ratio(t1, t1, t2, target)  # validates
        self.t1, self.t2, self.target, self.pool = t1, t2, target, pool
        self.history: list[dict[str, Any]] = []

    def shortfall(self, epochs: int) -> str | None:
        """A one-line warning when a run of ``epochs`` epochs ends before the target ratio, else None."""
        final = pruning_ratio(epochs, self.t1, self.t2, self.target)
        if final is not None and final >= self.target:
            return None
        reached = "pruning never starts" if final is None else f"the final sparsity of B is {final:.3f}"
        return (f"pruning reaches its target ratio {self.target:g} at epoch t1 + t2 = {self.t1 + self.t2}, "
                f"but the run has {epochs} epoch(s): {reached}, not {self.target:g}")

    def begin_epoch(self, model, epoch: int) -> float | None:
        ratio = pruning_ratio(epoch, self.t1, self.t2, self.target)
        if ratio is not None:
            counts = prune_step(model, ratio, self.pool)
            self.history.append({"epoch": epoch, "ratio": ratio, "masked": sum(counts.values())})
        return ratio

    def end_epoch(self, model) -> None:
        make_pruning_permanent(model)
