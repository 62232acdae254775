"""Token-based, length-bucketed batches: fairseq's ``--max-tokens`` for ``xlt train lslo``.

fairseq sizes a translation example by ``max(source length, target length)`` and counts a batch
as ``rows x the largest size in it`` (padding included); a batch holds as many examples as fit
under ``--max-tokens``. Examples are ordered by size (ties in random order) before being cut
into batches, so each batch holds examples of similar length, and the batches are then visited
in random order. ``--update-freq`` sums the gradients of that many batches per update, which is
the Trainer's ``gradient_accumulation_steps``.

:class:`TokenBatchSampler` does this over the rows a row sampler (the temperature sampler over
directions) draws for an epoch: every epoch redraws the rows, re-breaks the ties and reshuffles
the batches, from ``(seed, epoch)`` alone.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from xlt.errors import ConfigError


def row_size(row: dict) -> int:
    """fairseq's ``num_tokens`` of an encoded row: ``max(len(input_ids), len(labels))``.

    For a decoder-only row (prompt and target in one sequence) that is the sequence length.
    """
    return max(len(row["input_ids"]), len(row.get("labels") or ()))


def batch_by_tokens(indices: Sequence[int], sizes: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Cut ``indices`` (in the given order) into consecutive batches whose cost, ``len(batch) *
    max(sizes[i] for i in batch)``, stays at most ``max_tokens`` (fairseq's greedy rule)."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in indices:
        size = int(sizes[i])
        if size > max_tokens:
            raise ConfigError(f"max_tokens {max_tokens} is smaller than an example of {size} tokens "
                              "(raise --max_tokens or lower --max_source_length / --max_target_length)")
        grown = max(longest, size)
        if current and grown * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, grown = [], size
        current.append(int(i))
        longest = grown
    if current:
        batches.append(current)
    return batches


class TokenBatchSampler:
    """Batches of at most ``max_tokens`` tokens (padding counted), length-bucketed, for a
    ``DataLoader(batch_sampler=...)``.

    ``sizes[i]``: the size of dataset row ``i`` (:func:`row_size`). ``row_sampler``: draws the
    epoch's rows (anything with ``indices(epoch)`` and ``set_epoch``, e.g.
    :class:`~xlt.lslo.trainer.TemperatureSampler`); without one every row is used once per epoch.
    Epoch ``e``'s batches depend on ``(seed, e)`` only: the rows are taken in the row sampler's
    (random) order, stably sorted by size, cut by :func:`batch_by_tokens`, and the batches are
    shuffled.
    """

    def __init__(self, sizes: Sequence[int], max_tokens: int, *, seed: int, row_sampler=None):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be an integer >= 1, got {max_tokens}")
        self.sizes = [int(s) for s in sizes]
        self.max_tokens = max_tokens
        self.seed = int(seed)
        self.row_sampler = row_sampler
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch`` (0-based, as the Trainer counts) here and in the row sampler."""
        self.epoch = int(epoch)
        if self.row_sampler is not None and hasattr(self.row_sampler, "set_epoch"):
            self.row_sampler.set_epoch(epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches (lists of row indices) of ``epoch`` (default: the current one), in order."""
        import numpy as np

        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed % 2 ** 32, epoch % 2 ** 32, 1])
        if self.row_sampler is not None:
            rows = list(self.row_sampler.indices(epoch))
        else:
            rows = [int(i) for i in rng.permutation(len(self.sizes))]
        rows.sort(key=lambda i: self.sizes[i])  # stable: ties keep the random order
        batches = batch_by_tokens(rows, self.sizes, self.max_tokens)
        batches = [batches[int(k)] for k in rng.permutation(len(batches))]
        self._cache = (epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())
