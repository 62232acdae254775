"""Runs of ``xlt eval suite`` side by side, with paired bootstrap intervals over items.

A :class:`SuiteRun` is what one suite directory holds: its settings, each task's prompts and
scoring rule, and per (task, language) the items' keys and per-item values (0/1 correctness).
:func:`compare_runs` checks that the runs scored the same items the same way (same tasks,
languages, shots, seed, limit, scoring rule, prompts and item keys: any difference is refused
with one line naming the run and what differs), then reports per task and language each run's
score and, for each run against the baseline, the difference (run - baseline) with a paired
bootstrap interval: each resample draws the items with replacement, the same indices for both
runs. The per-task mean over languages is the unweighted mean of the languages' scores (as the
suite's table reports it); its interval resamples the items within each language independently
(a stratified bootstrap) and takes the mean over languages of the per-language mean differences.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from xlt.errors import ConfigError, DataError

#: bootstrap resamples by default
N_BOOT = 2000
_CHUNK = 4_000_000  # index draws held in memory at once


@dataclass
class SuiteRun:
    """One ``xlt eval suite`` directory, read.

    ``items``: ``{task: {language: {"key": [...], "acc": [...], ...}}}`` (per-item values in the
    suite's order); ``tasks``: ``{task: {"scoring", "prompts": {lang: template}}}``;
    ``settings``: ``{"shots", "seed", "limit"}``; ``label``: how tables name the run.
    """

    label: str
    model: str
    settings: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    items: dict[str, dict[str, dict[str, list]]] = field(default_factory=dict)


def bootstrap_difference(base: Sequence[Sequence[float]], other: Sequence[Sequence[float]], *,
                         level: float = 0.95, n_boot: int = N_BOOT,
                         rng: np.random.Generator | int = 0) -> tuple[float, float, float]:
    """Mean over strata (languages) of the per-stratum mean of ``other - base``, and its paired,
    stratified bootstrap percentile interval.

    ``base``, ``other``: per-stratum per-item values, shape (strata, items_s), paired item by item
    (strata may differ in size). Each of ``n_boot`` resamples draws every stratum's items with
    replacement (the same indices in both runs) and takes the mean over strata of the mean
    difference; the interval is the (1 - level)/2 and (1 + level)/2 quantiles (numpy's linear
    rule). With one stratum this is the plain paired item bootstrap. Deterministic given ``rng``
    (a seed or a numpy Generator). Returns ``(difference, low, high)``.
    """
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ConfigError(f"bootstrap resamples must be >= 1, got {n_boot}")
    if len(base) != len(other) or not len(base):
        raise DataError(f"paired bootstrap needs the same non-zero number of strata, got {len(base)} and {len(other)}")
    diffs = []
    for s, (a, b) in enumerate(zip(base, other)):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1 or not a.size:
            raise DataError(f"paired bootstrap: stratum {s} has {a.size} and {b.size} items (expected equal, > 0)")
        diffs.append(b - a)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    difference = float(np.mean([d.mean() for d in diffs]))
    boot = np.zeros(n_boot)
    for d in diffs:
        rows = max(1, _CHUNK // d.size)
        for start in range(0, n_boot, rows):
            stop = min(n_boot, start + rows)
            idx = rng.integers(0, d.size, size=(stop - start, d.size))  # (resamples, items): paired draws
            boot[start:stop] += d[idx].mean(axis=1)
    boot /= len(diffs)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return difference, float(low), float(high)


def _stream(seed: int, *names: str) -> np.random.Generator:
    """A generator for one comparison cell, the same whatever other cells are computed."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode("utf-8")) for name in names)])


#: the per-item value compared when none is named: the first of these a task has
DEFAULT_METRICS = ("acc", "exact_match_flexible", "exact_match", "chrf++")
#: per-item metrics already on a 0-100 scale (FLORES's sentence-level chrF++), shown as they are
POINTS_METRICS = ("chrf++",)


def task_metric(per_language: dict[str, dict[str, list]], metric: str | None) -> str | None:
    """``metric``, or the first of :data:`DEFAULT_METRICS` the task's items carry."""
    if metric is not None:
        return metric
    first = next(iter(per_language.values()), {})
    return next((name for name in DEFAULT_METRICS if name in first), None)


def check_comparable(runs: Sequence[SuiteRun], baseline: int, metric: str | None) -> None:
    """Raise a one-line :class:`ConfigError` naming the first run that differs from the baseline
    in settings, tasks, languages (in any order), scoring rule, prompts or items (in order), and
    what differs."""
    base = runs[baseline]
    for run in runs:
        if run is base:
            continue
        for key in ("shots", "seed", "limit"):
            if run.settings.get(key) != base.settings.get(key):
                raise ConfigError(f"{run.label}: {key} {run.settings.get(key)!r} differs from the baseline "
                                  f"{base.label}'s {base.settings.get(key)!r}")
        if set(run.items) != set(base.items):
            raise ConfigError(f"{run.label}: tasks {', '.join(run.items) or '(none)'} differ from the baseline "
                              f"{base.label}'s {', '.join(base.items) or '(none)'}")
        for task, per_language in base.items.items():
            theirs = run.items[task]
            if set(theirs) != set(per_language):
                raise ConfigError(f"{run.label}: {task} languages {', '.join(theirs)} differ from the baseline "
                                  f"{base.label}'s {', '.join(per_language)}")
            for key in ("scoring",):
                if run.tasks.get(task, {}).get(key) != base.tasks.get(task, {}).get(key):
                    raise ConfigError(f"{run.label}: {task} {key} {run.tasks[task].get(key)!r} differs from the "
                                      f"baseline {base.label}'s {base.tasks[task].get(key)!r}")
            for lang, values in per_language.items():
                prompt = (run.tasks.get(task, {}).get("prompts") or {}).get(lang)
                if prompt != (base.tasks.get(task, {}).get("prompts") or {}).get(lang):
                    raise ConfigError(f"{run.label}: {task} {lang} prompt differs from the baseline {base.label}'s")
                mine = theirs[lang]
                if len(mine["key"]) != len(values["key"]):
                    raise ConfigError(f"{run.label}: {task} {lang} has {len(mine['key'])} items, the baseline "
                                      f"{base.label} {len(values['key'])}")
                for i, (a, b) in enumerate(zip(values["key"], mine["key"])):
                    if a != b:
                        raise ConfigError(f"{run.label}: {task} {lang} item {i} differs from the baseline "
                                          f"{base.label}'s (other text or demonstrations)")
    for run in runs:
        for task, per_language in run.items.items():
            name = task_metric(base.items[task], metric)
            for lang, values in per_language.items():
                if name not in values:
                    raise ConfigError(f"{run.label}: {task} {lang} has no per-item {name!r} "
                                      f"(it has {', '.join(k for k in values if k != 'key')})")


def compare_runs(runs: Sequence[SuiteRun], *, baseline: int = 0, metric: str | None = None, level: float = 0.95,
                 n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Each run's ``metric`` (default: per task, the first of :data:`DEFAULT_METRICS` it has:
    ``acc`` for multiple choice, ``exact_match_flexible`` for MGSM, ``chrf++`` for FLORES) per task
    and language, and
    each run's difference from
    ``runs[baseline]`` with its paired bootstrap interval (:func:`bootstrap_difference`), per
    language and for the task's mean over languages.

    Returns ``{"metric", "level", "n_boot", "seed", "baseline": label, "runs": [labels],
    "models": [...], "tasks": {task: {"metric", "languages": {lang: ROW}, "mean": ROW}}}`` where ROW is
    ``{"n": items, "scores": {label: value}, "differences": {label: {"difference", "low",
    "high"}}}`` (no entry for the baseline itself). Refuses runs that are not comparable
    (:func:`check_comparable`).
    """
    if len(runs) < 2:
        raise ConfigError(f"compare needs at least two runs, got {len(runs)}")
    if not 0 <= baseline < len(runs):
        raise ConfigError(f"baseline index {baseline} is out of range for {len(runs)} runs")
    labels = [run.label for run in runs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two runs have the same name: {', '.join(labels)}")
    check_comparable(runs, baseline, metric)
    base = runs[baseline]
    if not any(base.items.values()):
        raise ConfigError(f"{base.label}: no task with per-item values to compare (bits per byte are not compared)")
    out: dict[str, Any] = {"metric": metric, "level": level, "n_boot": n_boot, "seed": seed,
                           "baseline": base.label, "runs": labels, "models": [run.model for run in runs],
                           "tasks": {}}
    for task, per_language in base.items.items():
        name = task_metric(per_language, metric)
        rows = {}
        for lang in per_language:
            values = {run.label: np.asarray(run.items[task][lang][name], dtype=np.float64) for run in runs}
            row = {"n": int(values[base.label].size),
                   "scores": {label: float(v.mean()) for label, v in values.items()}, "differences": {}}
            for run in runs:
                if run is not base:
                    d, low, high = bootstrap_difference([values[base.label]], [values[run.label]], level=level,
                                                        n_boot=n_boot, rng=_stream(seed, task, lang, run.label))
                    row["differences"][run.label] = {"difference": d, "low": low, "high": high}
            rows[lang] = row
        mean = {"n": sum(row["n"] for row in rows.values()),
                "scores": {label: float(np.mean([row["scores"][label] for row in rows.values()])) for label in labels},
                "differences": {}}
        for run in runs:
            if run is not base:
                strata = [(base.items[task][lang][name], run.items[task][lang][name]) for lang in per_language]
                d, low, high = bootstrap_difference([a for a, _ in strata], [b for _, b in strata], level=level,
                                                    n_boot=n_boot, rng=_stream(seed, task, "mean", run.label))
                mean["differences"][run.label] = {"difference": d, "low": low, "high": high}
        out["tasks"][task] = {"metric": name, "languages": rows, "mean": mean}
    return out


def comparison_markdown(comparison: dict[str, Any], *, percent: bool = True) -> str:
    """A markdown table: one row per (task, language) and one per task mean, with the metric
    compared; a column per run's
    score, then one per other run with its difference from the baseline and the interval, all in
    percentage points (``percent``, one decimal) or as they are (three decimals); a metric of
    :data:`POINTS_METRICS` is already in points and shown with one decimal."""
    base, labels = comparison["baseline"], comparison["runs"]
    others = [label for label in labels if label != base]

    def number(value, signed=False, points=False):
        if points:
            return f"{value:+.1f}" if signed else f"{value:.1f}"
        value = 100 * value if percent else value
        return f"{value:+.1f}" if signed and percent else f"{value:+.3f}" if signed else \
            f"{value:.1f}" if percent else f"{value:.3f}"

    level = f"{100 * comparison['level']:g} %"
    head = ["task", "metric", "language", "n", *labels, *(f"{label} − {base} [{level} CI]" for label in others)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for task, entry in comparison["tasks"].items():
        points = entry["metric"] in POINTS_METRICS
        for lang, row in [*entry["languages"].items(), ("mean", entry["mean"])]:
            cells = [task, entry["metric"], f"**{lang}**" if lang == "mean" else lang, str(row["n"]),
                     *(number(row["scores"][label], points=points) for label in labels)]
            for label in others:
                d = row["differences"][label]
                cells.append(f"{number(d['difference'], True, points)} [{number(d['low'], True, points)}, "
                             f"{number(d['high'], True, points)}]")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
