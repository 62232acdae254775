"""Fast paths: which were taken, and one warning whenever one is refused.

xlt picks a faster computation wherever it gives the same result: shared-prefix scoring in ICL
evaluation (an item's context and choices in one pass where the model takes a 4-D mask) and its shared-demonstration cache (one key/value cache of the demonstrations for
every item of a task and language, ``xlt.eval.scoring.SHARED_DEMONSTRATIONS``), early exit in :func:`xlt.align.layers.layer_states`, batched language routing in
LSLo layers, factor-space adapter merges. When a fast path cannot be taken (a model without a
usable key/value cache, an engine that must see the whole forward...), the code takes the plain
path and calls :func:`refuse`, which logs one warning on the ``xlt`` logger saying which path
was refused and why, once per process for each (path, reason). A slow path is never silent.

:func:`taken` and :func:`refused` count, per path name, how often each branch ran in this
process; :func:`counts` returns them (tests use it to prove a path is taken). Counting is a
dictionary increment per call, nothing more.
"""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger("xlt.fastpath")

SHARED_PREFIX = "shared-prefix scoring"
EARLY_EXIT = "early exit"
LSLO_BATCHED = "batched LSLo routing"
FACTOR_MERGE = "factor-space merge"
ONE_PASS_CHOICES = "one-pass choices"

_taken: Counter = Counter()
_refused: Counter = Counter()
_warned: set[tuple[str, str]] = set()


def taken(name: str, n: int = 1) -> None:
    """Record that fast path ``name`` ran ``n`` times."""
    _taken[name] += n


def refuse(name: str, reason: str, instead: str = "the plain path is used") -> None:
    """Record that fast path ``name`` was refused, and warn once per (name, reason); ``instead``
    says what runs in its place."""
    _refused[name] += 1
    key = (name, reason)
    if key not in _warned:
        _warned.add(key)
        logger.warning("xlt: %s is off: %s; %s (same results, slower)", name, reason, instead)


def counts() -> dict[str, dict[str, int]]:
    """``{"taken": {name: n}, "refused": {name: n}}`` since the process started (or :func:`reset`)."""
    return {"taken": dict(_taken), "refused": dict(_refused)}


def reset() -> None:
    """Forget the counts and the warnings already given (tests)."""
    _taken.clear()
    _refused.clear()
    _warned.clear()
