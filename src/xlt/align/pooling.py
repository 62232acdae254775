"""Sentence vectors from token states: masked mean, last real token, first real token."""

from __future__ import annotations

import torch

from xlt.errors import ConfigError

#: ``mean``: mid-align's default (every non-pad token, BOS included, mid-align.md §1.2);
#: ``last``: AFP's ``last-k`` pooler (afp.md §1.2); ``first``: mid-align's ``bos`` option.
POOLING_METHODS = ("mean", "last", "first")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, method: str = "mean") -> torch.Tensor:
    """Pool ``hidden`` ``(batch, seq, dim)`` over the positions where ``attention_mask`` is 1.

    * ``mean``: ``Σ_t m_t h_t / Σ_t m_t``; pad positions get exactly zero gradient.
    * ``last``: the state of the last position whose mask is 1; correct under left *and* right
      padding (the reference's ``sum(mask) - 1`` index is right only for right padding).
    * ``first``: the state of the first position whose mask is 1.

    Returns ``(batch, dim)`` in the dtype of ``hidden``. A row without any real token is an error.
    """
    if method not in POOLING_METHODS:
        raise ConfigError(f"unknown pooling method {method!r} (expected one of {', '.join(POOLING_METHODS)})")
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (batch, seq, dim), got shape {tuple(hidden.shape)}")
    batch, seq, _ = hidden.shape
    if attention_mask is None:
        attention_mask = torch.ones(batch, seq, dtype=torch.long, device=hidden.device)
    mask = attention_mask.to(hidden.device)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("a row of attention_mask has no real token to pool")
    if method == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)
    positions = torch.arange(seq, device=hidden.device).expand(batch, seq)
    real = mask.bool()
    if method == "last":
        index = torch.where(real, positions, torch.full_like(positions, -1)).max(dim=1).values
    else:
        index = torch.where(real, positions, torch.full_like(positions, seq)).min(dim=1).values
    return hidden[torch.arange(batch, device=hidden.device), index]
