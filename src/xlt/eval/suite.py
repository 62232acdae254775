"""An evaluation suite: many multiple-choice tasks x many languages in one call, one result each.

``xlt eval suite`` reads the data, skips the (task, language) pairs an earlier run of the same
settings already finished, and calls :func:`evaluate_suite`, which scores each remaining pair with
:func:`xlt.eval.icl.evaluate_icl` (the batched, shared-prefix scorer) and hands each result to a
callback as soon as it is known (the command writes it to disk there, which makes a killed run
resumable). A :class:`PerplexityUnit` adds a language's bits per byte on a text (the task
``ppl``; :func:`xlt.eval.ppl.sliding_window_perplexity`). :func:`suite_markdown` and
:func:`plot_suite_heatmap` turn the results, ``{task: {language: {metric: value}}}``, into a
table and a task x language heat map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from xlt.eval.icl import evaluate_icl

Results = dict[str, dict[str, dict[str, Any]]]


@dataclass
class SuiteUnit:
    """One (task, language) to score: its template, test items and demonstration pool."""

    task: str
    language: str
    template: Any  # xlt.eval.templates.TaskTemplate
    test: list
    dev: list | None = None
    scoring: str = "lm-eval"


@dataclass
class PerplexityUnit:
    """One language's text (one document per line), scored in bits per byte with the sliding
    window of ``context`` tokens read and the last ``last_n`` scored (see :mod:`xlt.eval.ppl`)."""

    language: str
    texts: list[str]
    context: int = 512
    last_n: int = 128
    task: str = "ppl"


@dataclass
class MgsmUnit:
    """One language of MGSM: its test items (:func:`xlt.eval.mgsm.mgsm_items`), answered directly
    with the language's prompt (:class:`xlt.eval.mgsm.MgsmTask`), or with chain-of-thought after
    exemplars drawn from ``dev`` (:class:`xlt.eval.mgsm.MgsmCotTask`, task ``mgsm_cot``)."""

    language: str
    task_spec: Any  # xlt.eval.mgsm.MgsmTask or MgsmCotTask
    test: list
    max_new_tokens: int = 256
    task: str = "mgsm"
    dev: list | None = None


def perplexity_metrics(model, tokenizer, unit: PerplexityUnit, *, batch_size: int = 8) -> dict[str, Any]:
    """``{"bits_per_byte", "ppl", "n_bytes", "n_tokens"}`` of ``unit``'s text."""
    from xlt.eval.ppl import sliding_window_perplexity, token_stream

    ids, token_bytes = token_stream(unit.texts, tokenizer, with_bytes=True)
    out = sliding_window_perplexity(model, ids, context=unit.context, last_n=unit.last_n, batch_size=batch_size,
                                    token_bytes=token_bytes)
    return {key: out[key] for key in ("bits_per_byte", "ppl", "n_bytes", "n_tokens")}


def evaluate_suite(model, tokenizer, units: Sequence[Any], *, shots: int = 0,
                   seed: int = 0, batch_size: int = 16, share_prefix: bool = True,
                   on_result: Callable[[Any, dict[str, Any], dict[str, list] | None], None] | None = None,
                   progress: bool = False, mt_metrics: dict[str, Any] | None = None) -> Results:
    """Score every unit with ``shots`` demonstrations drawn from its ``dev`` items with ``seed``
    (the rule of :func:`xlt.eval.icl.select_demonstrations`). Returns ``{task: {language:
    {"acc", "acc_norm" (lm-eval rule), "n"}}}``; ``on_result(unit, metrics, items)`` is called
    after each, ``items`` being the per-item values of a task (:func:`item_values`; ``None`` for
    a :class:`PerplexityUnit`), what ``xlt eval compare`` pairs runs by. An :class:`MgsmUnit`
    reports ``{"exact_match", "exact_match_flexible", "n"}`` (:func:`xlt.eval.mgsm.evaluate_mgsm`, or
    :func:`~xlt.eval.mgsm.evaluate_mgsm_cot` after ``shots`` exemplars drawn per item with ``seed``)
    and its items carry the completions too (``predictions``). A :class:`xlt.eval.flores.FloresUnit`
    (one translation direction, its ``language`` being ``"SRC-TGT"``) reports the scores of
    ``mt_metrics`` (default BLEU and chrF++, :func:`xlt.eval.mt.make_metrics`), the
    ``wrong_language_rate`` and ``n`` (:func:`xlt.eval.flores.evaluate_flores`)."""
    from xlt.eval.flores import FloresUnit
    import sys

    from tqdm import tqdm

    results: Results = {}
    bar = tqdm(units, desc="suite", unit="task", file=sys.stderr, disable=None if progress else True, leave=False)
    for unit in bar:
        bar.set_postfix_str(f"{unit.task} {unit.language}")
        if isinstance(unit, MgsmUnit):
            from xlt.eval.mgsm import MgsmCotTask, evaluate_mgsm, evaluate_mgsm_cot

            if isinstance(unit.task_spec, MgsmCotTask):
                from xlt.eval.icl import sample_demonstrations_per_item

                exemplars = sample_demonstrations_per_item(unit.dev or [], shots, unit.test, seed) if shots else None
                metrics, per_item, predictions = evaluate_mgsm_cot(
                    model, tokenizer, unit.test, prompt=unit.task_spec.prompt_for(unit.language),
                    exemplars=exemplars, max_new_tokens=unit.max_new_tokens, batch_size=batch_size,
                    language=unit.language)
            else:
                metrics, per_item, predictions = evaluate_mgsm(
                    model, tokenizer, unit.test, prompt=unit.task_spec.prompt_for(unit.language),
                    stop=unit.task_spec.stop, max_new_tokens=unit.max_new_tokens, batch_size=batch_size)
            results.setdefault(unit.task, {})[unit.language] = metrics
            if on_result is not None:
                on_result(unit, metrics, dict(per_item, predictions=predictions))
            continue
        if isinstance(unit, FloresUnit):
            from xlt.eval.flores import evaluate_flores
            from xlt.eval.mt import make_metrics

            if mt_metrics is None:
                mt_metrics = make_metrics(chrf_word_order=2)
            metrics, per_item, predictions = evaluate_flores(model, tokenizer, unit, mt_metrics, batch_size=batch_size)
            results.setdefault(unit.task, {})[unit.language] = metrics
            if on_result is not None:
                on_result(unit, metrics, dict(per_item, predictions=predictions))
            continue
        if isinstance(unit, PerplexityUnit):
            metrics = perplexity_metrics(model, tokenizer, unit, batch_size=batch_size)
            results.setdefault(unit.task, {})[unit.language] = metrics
            if on_result is not None:
                on_result(unit, metrics, None)
            continue
        dev = {unit.language: unit.dev} if shots and unit.dev is not None else None
        table, item_results = evaluate_icl(model, tokenizer, template=unit.template, test={unit.language: unit.test},
                                dev=dev, shots=shots, seed=seed, scoring=unit.scoring, batch_size=batch_size,
                                share_prefix=share_prefix)
        metrics = table[unit.language]
        if getattr(unit.template, "report_by", None):
            metrics = {**metrics, **group_metrics(_kept(unit), item_results, unit.template.report_by)}
        results.setdefault(unit.task, {})[unit.language] = metrics
        if on_result is not None:
            on_result(unit, metrics, item_values(item_results))
    bar.close()
    return results


def _kept(unit: SuiteUnit) -> list:
    """The unit's test items that are scored (a template's ``drop_empty`` leaves some out)."""
    prompt = unit.template.prompt_for(unit.language)
    return [it for it in unit.test if prompt.keeps(it.fields)] if prompt.drop_empty else list(unit.test)


def group_metrics(items: Sequence, item_results: Sequence, by: str) -> dict[str, Any]:
    """Accuracy per value of the items' field ``by`` (Global-MMLU's cultural-sensitivity label):
    ``{"acc_<value>": share correct, "n_<value>": items}`` for every non-empty value other than
    "-" (rows without the label), values in sorted order. ``items`` and ``item_results`` are in
    the same order (as :func:`xlt.eval.icl.evaluate_icl` returns them)."""
    if len(items) != len(item_results):
        raise ValueError(f"{len(items)} items but {len(item_results)} results")
    groups: dict[str, list[float]] = {}
    for item, result in zip(items, item_results):
        value = str(item.fields.get(by) or "").strip()
        if value and value != "-":
            groups.setdefault(value, []).append(float(result.pred == result.gold))
    out: dict[str, Any] = {}
    for value in sorted(groups):
        out[f"acc_{value}"] = sum(groups[value]) / len(groups[value])
        out[f"n_{value}"] = len(groups[value])
    return out


def item_values(item_results) -> dict[str, list]:
    """Per-item values of scored items (:class:`xlt.eval.icl.ItemResult`), in order:
    ``{"key": [digest, ...], "acc": [0/1, ...], "acc_norm": [0/1, ...]}`` (no ``acc_norm``
    under the afp rule)."""
    out: dict[str, list] = {"key": [r.key for r in item_results],
                            "acc": [float(r.pred == r.gold) for r in item_results]}
    if item_results and all(r.pred_norm is not None for r in item_results):
        out["acc_norm"] = [float(r.pred_norm == r.gold) for r in item_results]
    return out


def _languages(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(lang for per_task in results.values() for lang in per_task))


def suite_markdown(results: Results, metric: str = "acc", *, percent: bool = True) -> str:
    """A markdown table of the tasks that report ``metric``: one row per task, one column per
    language, then the row's mean; values in percent (``percent``, one decimal) or as they are
    (three decimals); ``–`` where a task has no result for a language."""
    results = {task: per for task, per in results.items() if any(metric in m for m in per.values())}
    languages = _languages(results)

    def cell(value):
        return "–" if value is None else (f"{100 * value:.1f}" if percent else f"{value:.3f}")

    lines = ["| task | " + " | ".join(languages) + " | mean |", "|---|" + "---:|" * (len(languages) + 1)]
    for task, per_language in results.items():
        values = [per_language.get(lang, {}).get(metric) for lang in languages]
        known = [v for v in values if v is not None]
        mean = cell(sum(known) / len(known)) if known else "–"
        lines.append(f"| {task} | " + " | ".join(cell(v) for v in values) + f" | {mean} |")
    return "\n".join(lines)


def plot_suite_heatmap(results: Results, metric: str = "acc", *, title: str = ""):
    """A matplotlib figure: the tasks that report ``metric`` (rows) x languages (columns), in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = {task: per for task, per in results.items() if any(metric in m for m in per.values())}
    tasks, languages = list(results), _languages(results)
    grid = np.full((len(tasks), len(languages)), np.nan)
    for i, task in enumerate(tasks):
        for j, lang in enumerate(languages):
            value = results[task].get(lang, {}).get(metric)
            if value is not None:
                grid[i, j] = 100 * value
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(languages) + 2.5), max(2.5, 0.5 * len(tasks) + 1.5)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto", vmin=0, vmax=100)
    ax.set_xticks(range(len(languages)), languages, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    for i in range(len(tasks)):
        for j in range(len(languages)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < 50 else "black")
    ax.set_title(title or f"{metric} (%)", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig
