"""InfoNCE with in-batch negatives, as used by mid-align and AFP, and retrieval accuracy."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from xlt.align.pooling import pool
from xlt.errors import ConfigError

_warned_single_pair = False


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 \
            or temperature != temperature or temperature == float("inf"):
        raise ConfigError(f"alignment temperature must be a finite number > 0, got {temperature}")


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def _gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All rows of every process, the local slice keeping its gradient (the SimCSE/AFP trick).

    Returns the ``(world * batch, dim)`` tensor and the offset of the local rows in it.
    """
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([local.shape[0]], device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    if len(set(sizes)) != 1:
        raise ConfigError(f"gathering alignment pairs across processes needs the same number of pairs "
                          f"on every process, got {sizes} (set dataloader_drop_last)")
    parts = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts, dim=0), rank * local.shape[0]


def _gather_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info_nce(anchors: torch.Tensor, candidates: torch.Tensor, temperature: float,
             symmetric: bool = False, gather: bool = False) -> torch.Tensor:
    """InfoNCE over cosine similarities with in-batch negatives.

    ``S[i, j] = cos(anchors[i], candidates[j]) / temperature`` and the loss is the mean over
    anchors of ``cross_entropy(S[i], i)``: the matching candidate is the target, the other
    candidates of the batch are the negatives. This is the one-directional form both papers use
    (mid-align.md §1.2: side 0 anchors, τ = 0.1; afp.md §1.2: sent0 anchors, τ = 0.05).

    Args:
        anchors: ``(batch, dim)``.
        candidates: ``(batch, dim)``; row ``i`` is the translation of ``anchors[i]``.
        temperature: τ > 0.
        symmetric: average the anchor→candidate and candidate→anchor losses (CLIP style; not
            what either paper does).
        gather: under ``torch.distributed``, use the rows of every process as candidates (and
            anchors), as AFP does. Every process then computes the same global loss, but its
            gradient covers its own rows only, so a DDP average yields ``1/world`` of the
            full-batch gradient (:class:`~xlt.align.AlignTrainer` multiplies by the world size).

    Computed in float32 at least (float64 inputs stay float64). A batch of one pair gives the constant 0 (no
    negatives); that is warned about once per process.
    """
    _check_temperature(temperature)
    if anchors.dim() != 2 or anchors.shape != candidates.shape:
        raise ValueError(f"anchors and candidates must both be (batch, dim), got {tuple(anchors.shape)} "
                         f"and {tuple(candidates.shape)}")
    anchors, candidates = _at_least_fp32(anchors), _at_least_fp32(candidates)
    if gather and _gather_active():
        anchors, _ = _gather_with_grad(anchors)
        candidates, _ = _gather_with_grad(candidates)
    n = anchors.shape[0]
    if n == 1:
        global _warned_single_pair
        if not _warned_single_pair:
            _warned_single_pair = True
            warnings.warn("InfoNCE on a batch of one pair has no negatives: the alignment loss is the "
                          "constant 0 and trains nothing (use a larger per-device batch, or "
                          "dataloader_drop_last to avoid a final batch of one)", stacklevel=2)
    a = F.normalize(anchors, dim=-1, eps=1e-8)
    c = F.normalize(candidates, dim=-1, eps=1e-8)
    scores = a @ c.T / temperature
    targets = torch.arange(n, device=scores.device)
    loss = F.cross_entropy(scores, targets)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(scores.T, targets))
    return loss


def alignment_loss(hidden0: torch.Tensor, mask0: torch.Tensor, hidden1: torch.Tensor, mask1: torch.Tensor,
                   *, temperature: float, pooling: str = "mean", symmetric: bool = False,
                   gather: bool = False, detach_candidates: bool = False) -> torch.Tensor:
    """Pool both sides of a batch of pairs and return :func:`info_nce` (side 0 = anchors).

    ``hidden0``: ``(batch, seq0, dim)`` with ``mask0`` ``(batch, seq0)``; likewise side 1.
    ``detach_candidates`` stops the gradient into side 1 (mid-align's
    ``unidirectional_contrastive_loss``; off by default, as in the paper).
    Pooling runs in float32 (the reference pools in the model dtype, bf16 in the paper).
    """
    z0 = pool(_at_least_fp32(hidden0), mask0, pooling)
    z1 = pool(_at_least_fp32(hidden1), mask1, pooling)
    if detach_candidates:
        z1 = z1.detach()
    return info_nce(z0, z1, temperature, symmetric=symmetric, gather=gather)


def retrieval_accuracy(anchors: torch.Tensor, candidates: torch.Tensor) -> float:
    """Fraction of anchors whose most cosine-similar candidate is their own translation.

    ``anchors``, ``candidates``: ``(n, dim)``, row ``i`` of one the translation of row ``i`` of the
    other; ties resolve to the lowest index.
    """
    a = F.normalize(anchors.float(), dim=-1, eps=1e-8)
    c = F.normalize(candidates.float(), dim=-1, eps=1e-8)
    best = (a @ c.T).argmax(dim=1)
    return float((best == torch.arange(len(best), device=best.device)).float().mean().item())
