"""The LSLo layer: a frozen ``nn.Linear`` plus one low-rank pair per language, chosen per example.

For an example routed to language ``l`` (row vectors, every token ``t`` of that example)::

    y_t = W x_t + b
    y_t[s : s+d_out] += x_t[s : s+d_in] @ A_l @ B_l

with ``A_l: (d_in, r_l)``, ``B_l: (r_l, d_out)``, no alpha/r scaling and no dropout (the
reference implementation's layer). With the reference's feature slice ``dim`` the adapter is
square, ``d_in = d_out = dim``, on features ``[s, s + dim)``; without it ``d_in``/``d_out`` are
the full input/output widths.

Storage: the per-language matrices of a layer are concatenated along the rank axis into one
``lora_a: (d_in, sum r_l)`` and one ``lora_b: (sum r_l, d_out)`` parameter, so parameter counts
and pruning pools hold exactly ``sum_l r_l (d_in + d_out)`` entries. The forward gathers each
example's columns of A and rows of B (padded with zeros to the largest rank) and runs two
batched matmuls: no Python loop over examples or languages.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from xlt.errors import ModelError


class LSLoRoute:
    """Per-example subspace ids shared by every LSLo layer of one model.

    ``src`` / ``tgt``: LongTensors ``(batch,)``. A layer that sees ``k * batch`` rows (beam
    search, or the decoder of ``generate`` with ``num_return_sequences``) repeats each id ``k``
    times, matching Hugging Face's ``repeat_interleave`` expansion of the batch.
    """

    def __init__(self):
        self.src: torch.Tensor | None = None
        self.tgt: torch.Tensor | None = None

    def ids(self, direction: str, rows: int, device: torch.device) -> torch.Tensor:
        ids = self.src if direction == "src" else self.tgt
        if ids is None:
            raise ModelError(f"LSLo layer routed by the {direction} language was called without "
                             f"{direction}_lang_ids (pass src_lang_ids= and tgt_lang_ids= to the "
                             "model's forward or generate)")
        n = ids.shape[0]
        if rows != n:
            if n == 0 or rows % n:
                raise ModelError(f"LSLo: got {n} {direction}_lang_ids for a batch of {rows} rows "
                                 "(expected one id per example)")
            ids = ids.repeat_interleave(rows // n)
        return ids.to(device)


class LSLoLinear(nn.Module):
    """A frozen ``nn.Linear`` with per-language low-rank subspaces.

    Args:
        base: the linear layer to wrap (kept, frozen).
        ranks: rank of each subspace, in subspace order (one per language, or one if shared).
        direction: ``"src"`` or ``"tgt"``: which language of the example picks the subspace.
        route: the model's shared :class:`LSLoRoute`.
        dim: side of the square adapter on the feature slice (the reference's ``--dim``);
            ``None`` for rectangular adapters over the whole matrix.
        start_idx: first feature of the slice (the reference's ``--start-idx``).

    Parameters: ``lora_a: (d_in, sum(ranks))``, ``lora_b: (sum(ranks), d_out)``. A is
    initialised per subspace with ``kaiming_uniform_(a=sqrt(5))`` on its ``(d_in, r)`` block,
    i.e. U(-1/sqrt(r), 1/sqrt(r)) as in the reference (not PEFT's 1/sqrt(in)); B is zero.
    """

    def __init__(self, base: nn.Linear, ranks: Sequence[int], direction: str, route: LSLoRoute,
                 *, dim: int | None = None, start_idx: int = 0):
        super().__init__()
        if direction not in ("src", "tgt"):
            raise ValueError(f"direction must be 'src' or 'tgt', got {direction!r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.direction = direction
        self.route = route
        self.ranks = [int(r) for r in ranks]
        self.window = dim is not None
        self.start_idx = int(start_idx)
        if self.window:
            if start_idx + dim > base.in_features or start_idx + dim > base.out_features:
                raise ModelError(f"LSLo: feature slice [{start_idx}, {start_idx + dim}) does not fit a "
                                 f"linear layer of {base.in_features} -> {base.out_features} features "
                                 "(use a smaller dim, or dim=None for rectangular adapters)")
            self.in_width = self.out_width = int(dim)
        else:
            self.in_width, self.out_width = base.in_features, base.out_features
        total = sum(self.ranks)
        factory = dict(device=base.weight.device, dtype=torch.float32 if base.weight.dtype not in
                       (torch.float32, torch.float64) else base.weight.dtype)
        self.lora_a = nn.Parameter(torch.empty(self.in_width, total, **factory))
        self.lora_b = nn.Parameter(torch.zeros(total, self.out_width, **factory))
        offsets = [0]
        for r in self.ranks:
            offsets.append(offsets[-1] + r)
        self.offsets = offsets
        r_max = max(self.ranks)
        # gather_index[l] = the columns of lora_a (rows of lora_b) of subspace l, padded with the
        # index `total`, which points at an appended zero column (row).
        index = torch.full((len(self.ranks), r_max), total, dtype=torch.long)
        for l, r in enumerate(self.ranks):
            index[l, :r] = torch.arange(offsets[l], offsets[l] + r)
        self.register_buffer("gather_index", index.to(base.weight.device), persistent=False)
        self.register_buffer("lora_b_mask", None, persistent=False)
        self.reset_parameters()

    # ----------------------------------------------------------------------------------------
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """A_l ~ U(-1/sqrt(r_l), 1/sqrt(r_l)) per subspace (kaiming_uniform_, a=sqrt(5)); B = 0."""
        if self.lora_a.device.type == "meta":
            return
        with torch.no_grad():
            for l, r in enumerate(self.ranks):
                block = torch.empty(self.in_width, r, dtype=self.lora_a.dtype)
                if generator is None:
                    nn.init.kaiming_uniform_(block, a=math.sqrt(5))
                else:
                    nn.init.kaiming_uniform_(block, a=math.sqrt(5), generator=generator)
                self.lora_a[:, self.offsets[l]:self.offsets[l + 1]] = block.to(self.lora_a.device)
            self.lora_b.zero_()
        self.lora_b_mask = None

    @property
    def num_subspaces(self) -> int:
        return len(self.ranks)

    def pair(self, l: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``(A_l: (d_in, r_l), B_l: (r_l, d_out))`` of subspace ``l`` (B unmasked)."""
        lo, hi = self.offsets[l], self.offsets[l + 1]
        return self.lora_a[:, lo:hi], self.lora_b[lo:hi]

    def effective_b(self) -> torch.Tensor:
        """``lora_b: (sum r_l, d_out)``, times the pruning mask while one is set.

        Whole under every engine: inside the forward the engine has gathered it; outside, an
        FSDP2 shard is gathered here (every process must call) and a ZeRO-3 parameter must be
        inside :func:`xlt.engines.gathered`.
        """
        from xlt.engines import full_tensor

        b = full_tensor(self.lora_b)
        if self.lora_b_mask is None:
            return b
        return b * self.lora_b_mask.to(b.dtype)

    def delta_weight(self, l: int) -> torch.Tensor:
        """``(A_l B_l)^T`` placed into a ``(out, in)`` zero matrix: what folding adds to W."""
        a, _ = self.pair(l)
        b = self.effective_b()[self.offsets[l]:self.offsets[l + 1]]
        block = (a @ b).t()
        if not self.window:
            return block
        out = torch.zeros(self.base.out_features, self.base.in_features, dtype=block.dtype,
                          device=block.device)
        s, d = self.start_idx, self.in_width
        out[s:s + d, s:s + d] = block
        return out

    # ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (batch, ..., in_features)`` -> ``(batch, ..., out_features)``."""
        y = self.base(x)
        ids = self.route.ids(self.direction, x.shape[0], x.device)
        if self.window:
            s, d = self.start_idx, self.in_width
            xs = x[..., s:s + d]
        else:
            xs = x
        delta = self._delta(xs, ids).to(y.dtype)
        if not self.window or (self.start_idx == 0 and self.out_width == self.base.out_features):
            return y + delta
        s, d = self.start_idx, self.out_width
        return torch.cat([y[..., :s], y[..., s:s + d] + delta, y[..., s + d:]], dim=-1)

    def _delta(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        flat = x.reshape(batch, -1, self.in_width).to(self.lora_a.dtype)
        lora_b = self.effective_b()
        if self.num_subspaces == 1:
            delta = (flat @ self.lora_a) @ lora_b
        else:
            index = self.gather_index[ids]                                  # (batch, r_max)
            a_ext = F.pad(self.lora_a, (0, 1))                              # (d_in, R + 1)
            b_ext = F.pad(lora_b, (0, 0, 0, 1))                             # (R + 1, d_out)
            a_batch = a_ext[:, index].permute(1, 0, 2)                      # (batch, d_in, r_max)
            b_batch = b_ext[index]                                          # (batch, r_max, d_out)
            delta = torch.bmm(torch.bmm(flat, a_batch), b_batch)            # (batch, T, d_out)
        return delta.reshape(*x.shape[:-1], self.out_width)

    def extra_repr(self) -> str:
        window = (f"slice=[{self.start_idx}, {self.start_idx + self.in_width})" if self.window
                  else "rectangular")
        return (f"in={self.base.in_features}, out={self.base.out_features}, {window}, "
                f"direction={self.direction}, ranks={self.ranks}")
