"""PNG plots of layer-wise similarity (matplotlib, Agg backend)."""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_similarity_by_layer(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike,
                             *, title: str = "Similarity of parallel inputs by layer") -> None:
    """One panel per metric (token cosine, pooled cosine, CKA), one line per model.

    ``curves``: model label -> ``{"hidden_cos": [...], "hidden_cos_std": [...], "pooled_cos":
    [...], "cka": [...]}`` indexed by layer (0 = block input).
    """
    plt = _pyplot()
    metrics = [("hidden_cos", "token cosine"), ("pooled_cos", "mean-pooled cosine"), ("cka", "linear CKA")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics):
        for model_label, values in curves.items():
            ys = list(values.get(key, []))
            xs = list(range(len(ys)))
            line, = ax.plot(xs, ys, marker="o", markersize=3, label=model_label)
            if key == "hidden_cos" and values.get("hidden_cos_std"):
                std = values["hidden_cos_std"]
                ax.fill_between(xs, [y - s for y, s in zip(ys, std)], [y + s for y, s in zip(ys, std)],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.axhline(0.0, color="grey", linewidth=0.5)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gradient_heatmap(types: Sequence[str], matrix: Sequence[Sequence[float]], path: str | os.PathLike,
                          *, title: str = "Gradient cosine by layer and parameter type") -> None:
    """Heat map of the mean gradient cosine: parameter types (rows) x blocks (columns)."""
    import numpy as np

    plt = _pyplot()
    data = np.array(matrix, dtype=float) if len(matrix) else np.zeros((0, 0))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * (data.shape[1] if data.size else 1) + 3),
                                    max(3.0, 0.32 * len(types) + 1.5)))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="coolwarm", vmin=-1.0, vmax=1.0,
                      aspect="auto")
    ax.set_yticks(range(len(types)))
    ax.set_yticklabels(types, fontsize=7)
    ax.set_xticks(range(data.shape[1] if data.size else 0))
    ax.set_xlabel("block")
    finite = data[np.isfinite(data)]
    mean = float(finite.mean()) if finite.size else math.nan
    ax.set_title(f"{title}\nmean {mean:.3f}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_lens(layers: Sequence[int], summary: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike,
              *, target_label: str = "target", pivot_label: str = "pivot",
              title: str = "Logit lens: latent language by layer") -> None:
    """Two panels: p_target and p_pivot by layer (left), entropy (right), each mean with its 95 % band.

    ``summary``: metric -> ``{"mean", "low", "high"}`` per layer (see ``LensResult.summary``).
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    for ax, metrics in ((left, (("p_target", target_label), ("p_pivot", pivot_label))),
                        (right, (("entropy", "entropy (nats)"),))):
        for key, label in metrics:
            values = summary[key]
            line, = ax.plot(layers, values["mean"], marker="o", markersize=3, label=label)
            ax.fill_between(layers, values["low"], values["high"], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("probability")
    left.set_ylim(bottom=0)
    right.set_ylabel("entropy (nats)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_neuron_counts(counts: Mapping[str, Sequence[int]], path: str | os.PathLike,
                       *, title: str = "Language-specific neurons per layer") -> None:
    """One line per language: how many of its selected neurons lie in each layer (0-based blocks).

    ``counts``: language -> per-layer counts (see ``NeuronSelection.counts_per_layer``).
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for language, values in counts.items():
        ax.plot(range(len(values)), list(values), marker="o", markersize=3, label=f"{language} ({sum(values)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (block, from 0)")
    ax.set_ylabel("neurons")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if counts:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
