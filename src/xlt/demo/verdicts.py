"""Effects, intervals and verdicts of the demo's reproduction experiments, and their reading.

Pure functions (numpy only). A reproduction compares a *method* with a *baseline* on one metric:
the effect is method − baseline; the paper predicts its direction (``"increase"`` or
``"decrease"``); a 95 % interval decides the verdict:

* ``"invalid"``: a precondition failed (e.g. the baseline did not learn its source task), so the
  comparison means nothing, whatever the interval;
* ``"reproduced"``: the interval lies wholly on the predicted side of 0;
* ``"not reproduced"``: the interval lies wholly on the other side of 0;
* ``"inconclusive"``: anything else (the interval contains or touches 0, is unbounded, or could
  not be computed).

:func:`reading` turns reproductions into sentences computed from their numbers only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple, Sequence

import numpy as np

from xlt.errors import DataError

PREDICTIONS = ("increase", "decrease")
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "invalid")

#: bootstrap resamples of :func:`paired_interval` (the percentile bounds move by well under a
#: tenth of a point between generator seeds at this count for 0/1 scores on a few hundred items)
N_BOOT = 4000

#: how far above the majority-class rate a source score must be for "learned the source task"
LEARNED_MARGIN = 0.10

# at most this many resampled indices are held in memory at once
_CHUNK = 4_000_000


class Interval(NamedTuple):
    """An effect and its interval: ``effect, low, high = interval``."""

    effect: float
    low: float
    high: float


# ---------------------------------------------------------------------------------------------
# intervals

def _check_level(level: float) -> None:
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise DataError(f"must be strictly between 0 and 1, got {level!r}", field="level")


def _paired_diffs(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Per-seed arrays of b − a, shape (items_s,) each; every mismatch is a DataError (a ValueError)."""
    for name, arm in (("a", a), ("b", b)):
        if not hasattr(arm, "__len__") or isinstance(arm, (str, bytes)):
            raise DataError("expected a list of per-seed lists of per-item scores, shape (seeds, items)",
                            field=name)
    n_a, n_b = len(a), len(b)
    if n_a != n_b:
        raise DataError(f"a has {n_a} seed(s), b has {n_b}: both arms need the same seeds", field="b")
    if n_a == 0:
        raise DataError("no seeds: expected shape (seeds, items) with at least one seed", field="a")
    diffs = []
    for s, (row_a, row_b) in enumerate(zip(a, b)):
        arrays = []
        for name, row in (("a", row_a), ("b", row_b)):
            arr = np.asarray(row, dtype=float)
            if arr.ndim != 1:
                raise DataError(f"seed {s}: expected a flat list of per-item scores, got shape {arr.shape}",
                                field=name)
            if arr.size == 0:
                raise DataError(f"seed {s}: no items", field=name)
            if not np.all(np.isfinite(arr)):
                raise DataError(f"seed {s}: a score is not a finite number", field=name)
            arrays.append(arr)
        if arrays[0].size != arrays[1].size:
            raise DataError(f"seed {s}: a has {arrays[0].size} items, b has {arrays[1].size}: the arms must "
                            "score the same items in the same order", field="b")
        diffs.append(arrays[1] - arrays[0])
    return diffs


def paired_interval(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, level: float = 0.95,
                    n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Effect of b over a and its two-level paired bootstrap percentile interval.

    ``a``, ``b``: per-seed lists of per-item scores, shape (seeds, items_s) — 0/1 correctness or
    any per-item metric — with the same items in the same order in both arms within a seed
    (seeds may have different item counts). The effect is the mean over seeds of the per-seed
    mean of ``b - a``. Each of ``n_boot`` resamples draws the seeds with replacement, then, for
    every drawn seed, its items with replacement (the same item indices for both arms, so the
    pairing is kept) and takes the mean over drawn seeds of the per-seed mean difference; the
    interval is the (1 − level)/2 and (1 + level)/2 quantiles of those resamples. So it carries
    both seed and item variance; with one seed it is the item bootstrap. Deterministic given
    ``seed``. Returns ``Interval(effect, low, high)``.
    """
    _check_level(level)
    if not isinstance(n_boot, int) or n_boot < 1:
        raise DataError(f"must be a positive integer, got {n_boot!r}", field="n_boot")
    diffs = _paired_diffs(a, b)
    effect = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    n_seeds = len(diffs)
    picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))  # (n_boot, seeds): which seed each slot draws
    means = np.empty((n_boot, n_seeds))
    for s, d in enumerate(diffs):
        where = np.nonzero(picks == s)
        count = where[0].size
        rows = max(1, _CHUNK // d.size)
        values = np.empty(count)
        for start in range(0, count, rows):
            stop = min(count, start + rows)
            idx = rng.integers(0, d.size, size=(stop - start, d.size))  # (resamples, items): paired indices
            values[start:stop] = d[idx].mean(axis=1)
        means[where] = values
    boot = means.mean(axis=1)
    alpha = 1.0 - level
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Interval(effect, float(low), float(high))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for coef in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                     -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + coef * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coef / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise DataError(f"degrees of freedom must be positive, got {df!r}", field="df")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (closed forms for df 1
    and 2, else bisection on :func:`t_cdf` to about 1e-12)."""
    if not 0.0 < p < 1.0:
        raise DataError(f"must be strictly between 0 and 1, got {p!r}", field="p")
    if df <= 0:
        raise DataError(f"degrees of freedom must be positive, got {df!r}", field="df")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def seed_interval(diffs: Sequence[float], *, level: float = 0.95) -> Interval:
    """Mean of per-seed paired differences, shape (seeds,), and its Student t interval.

    mean ± t_{(1+level)/2, n−1} · s / √n with s the sample standard deviation (ddof = 1). One seed
    gives no estimate of the spread: the interval is (−inf, inf). Returns ``Interval(effect, low, high)``.
    """
    _check_level(level)
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise DataError(f"expected a flat, non-empty list of per-seed differences, got shape {d.shape}",
                        field="diffs")
    if not np.all(np.isfinite(d)):
        raise DataError("a per-seed difference is not a finite number", field="diffs")
    mean = float(d.mean())
    if d.size == 1:
        return Interval(mean, -math.inf, math.inf)
    half = t_quantile((1 + level) / 2, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return Interval(mean, mean - half, mean + half)


def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof = 1); None for fewer than two values."""
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1)) if v.size > 1 else None


def majority_rate(labels: Sequence) -> float:
    """The share of the most frequent label: the score of always giving the same (best) answer."""
    labels = list(labels)
    if not labels:
        raise DataError("no labels: the majority-class rate of an empty set is undefined", field="labels")
    counts: dict = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return max(counts.values()) / len(labels)


# ---------------------------------------------------------------------------------------------
# verdicts

def verdict(prediction: str, ci_low: float, ci_high: float, precondition_met: bool) -> str:
    """The verdict of an interval for method − baseline, given the paper's predicted direction.

    ``"invalid"`` if the precondition failed (checked first); else ``"reproduced"`` if the
    interval lies strictly on the predicted side of 0 (``ci_low > 0`` for ``"increase"``,
    ``ci_high < 0`` for ``"decrease"``), ``"not reproduced"`` if it lies strictly on the other
    side, and ``"inconclusive"`` otherwise: an interval that touches 0 (a bound equal to 0,
    including the zero-width interval at 0 of two arms that score alike) does not exclude it, an
    infinite bound counts as any other bound (so (−inf, inf) is inconclusive), and a NaN bound
    means no interval could be computed (inconclusive). ``ci_low > ci_high`` is an error.
    """
    if prediction not in PREDICTIONS:
        raise DataError(f"must be one of {', '.join(PREDICTIONS)}, got {prediction!r}", field="prediction")
    if not precondition_met:
        return "invalid"
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "inconclusive"
    if ci_low > ci_high:
        raise DataError(f"the interval's low bound {ci_low} is above its high bound {ci_high}", field="ci_low")
    above, below = ci_low > 0, ci_high < 0
    if (above and prediction == "increase") or (below and prediction == "decrease"):
        return "reproduced"
    if above or below:
        return "not reproduced"
    return "inconclusive"


@dataclass(frozen=True)
class Precondition:
    """A condition that makes a comparison meaningful: ``value`` must be above ``threshold``
    (``higher_is_better``) or below it; ``text`` says what is measured, for the reading.
    ``scale``/``unit`` format value and threshold (100 and "%" for shares)."""

    name: str
    value: float
    threshold: float
    met: bool
    text: str
    higher_is_better: bool = True
    scale: float = 100.0
    unit: str = "%"

    def to_dict(self) -> dict:
        return {k: _jsonable(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Precondition:
        return cls(**{**d, "value": _nan_if_none(d.get("value")), "threshold": _nan_if_none(d.get("threshold"))})


def precondition(name: str, value: float, threshold: float, *, text: str, higher_is_better: bool = True,
                 scale: float = 100.0, unit: str = "%") -> Precondition:
    """A :class:`Precondition`, met iff ``value > threshold`` (``value < threshold`` when lower is
    better); a NaN value or threshold is not met."""
    met = bool(value > threshold) if higher_is_better else bool(value < threshold)
    return Precondition(name, float(value), float(threshold), met, text, higher_is_better, scale, unit)


def learned_source_task(score: float, labels: Sequence, *, margin: float = LEARNED_MARGIN,
                        name: str = "baseline learned the source task", who: str = "the baseline") -> Precondition:
    """Met iff ``score`` (a share) is above the majority-class rate of ``labels`` (the gold labels
    of the items it was scored on) plus ``margin``: a constant answer scores the majority rate."""
    rate = majority_rate(labels)
    text = (f"{who}'s source score must exceed the majority-class rate of its {len(labels)} test items "
            f"({100 * rate:.1f} %) by {100 * margin:.0f} points")
    return precondition(name, score, rate + margin, text=text)


@dataclass
class Reproduction:
    """One experiment's outcome: ``method`` against ``baseline`` on ``metric``; effect = method −
    baseline with its interval (``level``, ``interval`` says which kind); ``seeds`` = number of
    seeds; ``scale``/``unit`` format the effect (100 and "points" for shares), with ``digits``
    decimals (1 for points; a cosine needs 3)."""

    method: str
    baseline: str
    metric: str
    prediction: str
    effect: float
    ci_low: float
    ci_high: float
    seeds: int
    precondition_met: bool
    preconditions: list[Precondition]
    verdict: str
    settings_chosen: str = ""
    level: float = 0.95
    interval: str = "paired bootstrap over seeds and items"
    scale: float = 100.0
    unit: str = "points"
    digits: int = 1

    def to_dict(self) -> dict:
        """JSON-ready: non-finite numbers become None (``from_dict`` reads None bounds as ∓inf)."""
        d = {k: _jsonable(v) for k, v in asdict(self).items() if k != "preconditions"}
        d["preconditions"] = [p.to_dict() for p in self.preconditions]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Reproduction:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["preconditions"] = [Precondition.from_dict(p) for p in d.get("preconditions", [])]
        kwargs["effect"] = _nan_if_none(d.get("effect"))
        kwargs["ci_low"] = -math.inf if d.get("ci_low") is None else float(d["ci_low"])
        kwargs["ci_high"] = math.inf if d.get("ci_high") is None else float(d["ci_high"])
        return cls(**kwargs)


def reproduce(*, method: str, baseline: str, metric: str, prediction: str, a: Sequence[Sequence[float]],
              b: Sequence[Sequence[float]], preconditions: Sequence[Precondition] = (), settings_chosen: str = "",
              level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0, scale: float = 100.0,
              unit: str = "points", digits: int = 1) -> Reproduction:
    """A :class:`Reproduction` from per-item scores: ``a`` the baseline's, ``b`` the method's,
    shape (seeds, items_s), paired by item (see :func:`paired_interval`). The precondition is met
    iff every one of ``preconditions`` is."""
    effect, low, high = paired_interval(a, b, level=level, n_boot=n_boot, seed=seed)
    met = all(p.met for p in preconditions)
    return Reproduction(method=method, baseline=baseline, metric=metric, prediction=prediction, effect=effect,
                        ci_low=low, ci_high=high, seeds=len(a), precondition_met=met,
                        preconditions=list(preconditions), verdict=verdict(prediction, low, high, met),
                        settings_chosen=settings_chosen, level=level, scale=scale, unit=unit, digits=digits)


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


def _nan_if_none(v) -> float:
    return math.nan if v is None else float(v)


# ---------------------------------------------------------------------------------------------
# the reading

def signed(value: float, scale: float = 100.0, digits: int = 1) -> str:
    """``value * scale`` with its sign ("+17.2", "-3.0", "0.0" when it rounds to zero, "-inf")."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    x = round(value * scale, digits)
    return f"{0.0:.{digits}f}" if x == 0 else f"{x:+.{digits}f}"


def compare_phrase(effect: float, method: str, baseline: str, *, scale: float = 100.0, digits: int = 1) -> str:
    """"M above B" / "M below B" / "M level with B" from the effect as displayed (so a gain that
    rounds to 0.0 is said as level)."""
    if math.isnan(effect):
        return f"no effect computed for {method} against {baseline}"
    x = round(effect * scale, digits)
    return f"{method} {'above' if x > 0 else 'below' if x < 0 else 'level with'} {baseline}"


def interval_phrase(low: float, high: float, *, level: float = 0.95, scale: float = 100.0, digits: int = 1) -> str:
    """"95 % CI +12.1 to +22.0", or "no interval" for (−inf, inf)."""
    if math.isinf(low) and math.isinf(high):
        return "no interval"
    return f"{100 * level:g} % CI {signed(low, scale, digits)} to {signed(high, scale, digits)}"


def _interval_words(low: float, high: float, seeds: int) -> str:
    """How the interval stands to 0, for an inconclusive verdict."""
    if math.isnan(low) or math.isnan(high):
        return "no interval could be computed"
    if math.isinf(low) and math.isinf(high):
        return "one seed gives no interval over seeds" if seeds == 1 else "the interval is unbounded"
    if low == 0 == high:
        return "no difference: the interval is the single point 0 (both arms scored alike in every resample)"
    if low == 0 or high == 0:
        return "the interval touches 0"
    return "the interval includes 0"


def fmt_value(value: float, scale: float, unit: str) -> str:
    """``value * scale`` with its unit ("58.5 %", "12.00 ppl")."""
    if math.isnan(value):
        return "nan"
    return f"{value * scale:.1f} %" if unit == "%" else f"{value * scale:.2f} {unit}".rstrip()


def reproduction_sentence(r: Reproduction) -> str:
    """One sentence for one reproduction, computed from its numbers and interval only."""
    head = (f"{r.method} vs {r.baseline} on {r.metric}: {signed(r.effect, r.scale, r.digits)} {r.unit}, "
            f"{compare_phrase(r.effect, r.method, r.baseline, scale=r.scale, digits=r.digits)} "
            f"({interval_phrase(r.ci_low, r.ci_high, level=r.level, scale=r.scale, digits=r.digits)}, "
            f"{r.seeds} seed{'s' if r.seeds != 1 else ''})")
    other = "decrease" if r.prediction == "increase" else "increase"
    side = "above" if r.prediction == "increase" else "below"
    if r.verdict == "invalid":
        failed = [p for p in r.preconditions if not p.met]
        if failed:
            why = "; ".join(
                f"precondition '{p.name}' failed: {fmt_value(p.value, p.scale, p.unit)} against a threshold of "
                f"{fmt_value(p.threshold, p.scale, p.unit)} ({p.text})" for p in failed)
        else:
            why = "a precondition failed"
        return f"{head}: invalid — {why}; the effect is not interpreted."
    if r.verdict == "reproduced":
        return f"{head}: reproduced — the interval lies wholly {side} 0, the paper's predicted {r.prediction}."
    if r.verdict == "not reproduced":
        return (f"{head}: not reproduced — the interval lies wholly {'below' if side == 'above' else 'above'} 0, "
                f"a {other} where the paper predicts an {r.prediction}.")
    return f"{head}: inconclusive — {_interval_words(r.ci_low, r.ci_high, r.seeds)}."


def reading(reproductions: dict[str, Reproduction]) -> list[str]:
    """The report's sentences on ``{key: Reproduction}``, in the dict's order, then one summary
    line by verdict. Computed only from each reproduction's effect, interval, seeds and
    preconditions: no sentence is fixed in advance."""
    lines = [reproduction_sentence(r) for r in reproductions.values()]
    if reproductions:
        groups = {v: [k for k, r in reproductions.items() if r.verdict == v] for v in VERDICTS}
        parts = [f"{v}: {', '.join(keys)}" for v, keys in groups.items() if keys]
        lines.append(f"Of {len(reproductions)} experiment{'s' if len(reproductions) != 1 else ''} — "
                     + "; ".join(parts) + ".")
    return lines
