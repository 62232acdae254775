"""The demo's report: DIR/report.md, DIR/results.json and PNG plots, from the step results.

Every sentence of the report is computed from the numbers it prints (:mod:`xlt.demo.verdicts`):
spreads are sample standard deviations, differences between methods come with an interval, and
the score of a constant answer (the majority-class rate of the items scored) is printed where a
score is read against it.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path

from xlt.demo.verdicts import (LEARNED_MARGIN, Reproduction, compare_phrase, fmt_value, interval_phrase,
                               majority_rate, precondition, sample_std, seed_interval, signed)
from xlt.demo.verdicts import reading as verdict_reading
from xlt.io import atomic_file, write_json
from xlt.provenance import VERSIONS_KEY, package_versions

METHOD_NAMES = {"sft": "SFT (baseline)", "mid-align": "mid-align", "afp": "AFP"}
SHORT_NAMES = {"sft": "SFT", "mid-align": "mid-align", "afp": "AFP"}
#: the reproduction experiments, in the order of the verdict table
REPRODUCTIONS = ("mid-align", "afp", "adamergex", "lslo", "cloned")


def mean_spread(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None for one value) of the non-missing values."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return statistics.fmean(values), sample_std(values)


def fmt(mean: float | None, spread: float | None, pct: bool = True) -> str:
    if mean is None:
        return "—"
    if pct:
        return f"{100 * mean:.1f}" + (f" ± {100 * spread:.1f}" if spread is not None else "")
    return f"{mean:.2f}" + (f" ± {spread:.2f}" if spread is not None else "")


def task_labels(world_dir: Path, task: str, split: str, limit: int) -> dict[str, list[int]]:
    """Gold labels of the first ``limit`` items per language of ``task``'s ``split`` choice file
    (the items the demo scores), ``{lang: [label, ...]}``; {} when the file is absent."""
    from xlt.formats import read_records

    path = Path(world_dir) / "tasks" / task / f"{split}.choice.jsonl"
    if not path.is_file():
        return {}
    out: dict[str, list[int]] = {}
    for item in read_records(path, "choice"):
        if len(out.setdefault(item.lang, [])) < limit:
            out[item.lang].append(item.label)
    return out


def _transfer(settings: dict, results: dict, source: str, langs: list[str], split: str) -> dict:
    out: dict = {}
    for method in settings["transfer"]["methods"]:
        per_lang: dict = {}
        for lang in langs:
            entry: dict = {}
            for metric in ("accuracy", "exact_match"):
                per_seed = {}
                for seed in settings["seeds"]:
                    # classification from the polarity runs, extraction from the roles runs
                    key = f"transfer-{method}-s{seed}" if metric == "accuracy" else f"transfer-roles-{method}-s{seed}"
                    r = results.get(key)
                    if r is None:
                        continue
                    value = r["scores"][split].get(lang, {}).get(metric)
                    if value is not None:
                        per_seed[str(seed)] = value
                if per_seed:
                    m, sd = mean_spread(list(per_seed.values()))
                    entry[metric] = m
                    entry[f"{metric}_std"] = sd
                    entry[f"{metric}_per_seed"] = per_seed
            if entry:
                per_lang[lang] = entry
        if per_lang:
            targets = [l for l in langs if l != source]
            for metric in ("accuracy", "exact_match"):
                seed_means = []
                for seed in settings["seeds"]:
                    vals = [per_lang[l][f"{metric}_per_seed"].get(str(seed)) for l in targets
                            if f"{metric}_per_seed" in per_lang.get(l, {})]
                    if vals and None not in vals:
                        seed_means.append(statistics.fmean(vals))
                if seed_means:
                    m, sd = mean_spread(seed_means)
                    per_lang.setdefault("targets_mean", {})[metric] = m
                    per_lang["targets_mean"][f"{metric}_std"] = sd
                    per_lang["targets_mean"][f"{metric}_per_seed"] = dict(zip(map(str, settings["seeds"]), seed_means))
            out[method] = per_lang
    return out


def _plot_transfer(path: Path, transfer: dict, langs: list[str], metric: str, title: str,
                   constant: float | None = None) -> bool:
    """Bars per language and method (error bars: sample std over seeds); ``constant``: the score
    of a constant answer, drawn as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in transfer if any(metric in transfer[m].get(l, {}) for l in langs)]
    if not methods:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(langs))]
        ys = [100 * (transfer[method].get(l, {}).get(metric) or 0) for l in langs]
        es = [100 * (transfer[method].get(l, {}).get(f"{metric}_std") or 0) for l in langs]
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=METHOD_NAMES.get(method, method))
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.set_ylim(0, 100)
    if constant is not None:
        ax.axhline(100 * constant, color="grey", lw=0.8, ls="--", label="constant answer")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_similarity(path: Path, curves: dict) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, values in curves.items():
        ax.plot(range(len(values)), values, marker="o", label=name)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("cosine, sentence vs its clone")
    ax.set_title("hidden-state similarity by layer", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_mt(path: Path, chrf: dict, langs: list[str]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in ("lslo", "shared") if s in chrf]
    if not systems:
        return False
    fig, axes = plt.subplots(1, len(systems), figsize=(4.2 * len(systems), 3.6))
    axes = [axes] if len(systems) == 1 else list(axes)
    for ax, name in zip(axes, systems):
        grid = [[chrf[name].get(f"{a}-{b}", float("nan")) if a != b else float("nan") for b in langs] for a in langs]
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis")
        for i in range(len(langs)):
            for j in range(len(langs)):
                if i != j and not math.isnan(grid[i][j]):
                    ax.text(j, i, f"{grid[i][j]:.0f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(langs)), langs)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_xlabel("target")
        if ax is axes[0]:
            ax.set_ylabel("source")
        ax.set_title(f"{'LSLo' if name == 'lslo' else 'shared LoRA'}: chrF", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _per_seed_diffs(a: dict, b: dict) -> list[float]:
    """b − a for the seeds both ``{seed: value}`` dicts have, in seed order."""
    return [b[k] - a[k] for k in sorted(a, key=lambda k: int(k) if str(k).isdigit() else str(k))
            if k in b and a[k] is not None and b[k] is not None]


def _difference(per_seed: list[float]) -> dict:
    """Per-seed differences with their mean, Student t interval over seeds and the count of positive ones."""
    effect, low, high = seed_interval(per_seed)
    return {"per_seed": per_seed, "mean": effect, "ci_low": None if math.isinf(low) else low,
            "ci_high": None if math.isinf(high) else high, "seeds": len(per_seed),
            "seeds_better": sum(d > 0 for d in per_seed)}


def _verdict_table(reproductions: dict[str, Reproduction]) -> list[str]:
    rows = ["| experiment | claim (metric) | prediction | effect | 95 % CI | seeds | precondition | verdict |",
            "|---|---|---|---:|---|---:|---|---|"]
    for key, r in reproductions.items():
        ci = interval_phrase(r.ci_low, r.ci_high, level=r.level, scale=r.scale,
                             digits=r.digits).replace(f"{100 * r.level:g} % CI ", "")
        pre = "; ".join(
            f"{p.name}: {fmt_value(p.value, p.scale, p.unit)} (needs {'>' if p.higher_is_better else '<'} "
            f"{fmt_value(p.threshold, p.scale, p.unit)}): {'met' if p.met else '**failed**'}"
            for p in r.preconditions) or "—"
        rows.append(f"| `{key}` | {r.method} vs {r.baseline}, {r.metric} | {r.prediction} | "
                    f"{signed(r.effect, r.scale, r.digits)} {r.unit} | {ci} | {r.seeds} | {pre} | **{r.verdict}** |")
    return rows


def _layer_swap_section(add, doc: dict, settings: dict, results: dict) -> None:
    """The full demo's layer-swap table (:func:`xlt.demo.full_layer_swap.layer_swap_table`), if it ran."""
    fs = settings.get("full") or {}
    if "layer_swap" not in fs:
        return
    from xlt.demo.full_layer_swap import layer_swap_table

    table = layer_swap_table(fs, results)
    if not table:
        return
    doc["full_layer_swap"] = table
    langs = sorted({lang for row in table.values() for lang in row})
    runs = sorted({run for row in table.values() for v in row.values() for run in v["per_run"]})
    add(f"### Layer-swap reproduction: target test accuracy per arm ({len(runs)} runs: {', '.join(runs)})\n")
    add("Mean ± sample standard deviation over runs; in brackets the mean share of the arm's most frequent "
        "answer (100 %: one answer to every item, which scores the majority-class rate).\n")
    add("| arm | " + " | ".join(f"`{lang}`" for lang in langs) + " |")
    add("|---|" + "---:|" * len(langs))
    for arm, row in table.items():
        add(f"| {arm} | " + " | ".join(f"{fmt(row[lang]['mean'], row[lang]['std'])} ({100 * row[lang]['one_answer']:.0f} %)"
                                     if lang in row else "—" for lang in langs) + " |")
    add("")


def write_report(out: Path, settings: dict, results: dict, failed: dict, *, wall_seconds: float, device: str) -> None:
    world = json.loads((out / "world" / "world.json").read_text(encoding="utf-8")) \
        if (out / "world" / "world.json").is_file() else None
    source = world["source_language"] if world else "qaa"
    langs = [l["code"] for l in world["languages"]] if world else []
    targets = [l for l in langs if l != source]
    seeds = settings["seeds"]
    limit = settings["transfer"]["test_limit"]
    labels = {split: task_labels(out / "world", "polarity", split, limit) for split in ("test", "dev")}
    majority = {split: {lang: {"rate": majority_rate(v), "items": len(v),
                               "shares": {str(c): v.count(c) / len(v) for c in sorted(set(v))}}
                        for lang, v in by_lang.items() if v}
                for split, by_lang in labels.items()}
    doc: dict = {"source_language": source, "languages": langs, "targets": targets, "seeds": seeds,
                 "world_languages": [{"code": l["code"], "word_order": l["word_order"]} for l in world["languages"]]
                 if world else [],
                 "settings": settings, "device": device, "missing": failed, "majority_rate": majority}
    if "adamergex" in settings:
        am_labels = task_labels(out / "world", "polarity", "test", settings["adamergex"]["test_limit"])
        doc["adamergex_source_labels_majority"] = (
            {"rate": majority_rate(am_labels[source]), "items": len(am_labels[source])}
            if am_labels.get(source) else None)
    md: list[str] = []
    add = md.append
    add("# xlt demo: cross-lingual transfer in a synthetic world\n")

    # verdicts first
    raw = results.get("reproduction") or {}
    reproductions = {}
    for key in [k for k in REPRODUCTIONS if k in raw] + [k for k in raw if k not in REPRODUCTIONS]:
        r = raw[key]
        reproductions[key] = r if isinstance(r, Reproduction) else Reproduction.from_dict(r)
    if reproductions:
        doc["reproduction"] = {k: r.to_dict() for k, r in reproductions.items()}
        add("## Verdicts\n")
        add("Effect = method − baseline on the metric; 95 % interval from a paired bootstrap over seeds and "
            "items; **reproduced** if the interval lies wholly on the paper's predicted side of 0, **not "
            "reproduced** if wholly on the other side, **inconclusive** otherwise, **invalid** if a precondition "
            "failed.\n")
        md.extend(_verdict_table(reproductions))
        add("")
        for line in verdict_reading(reproductions):
            add(f"- {line}")
        add("")
        chosen: dict[str, list[str]] = {}
        for key, r in reproductions.items():
            if r.settings_chosen:
                chosen.setdefault(r.settings_chosen, []).append(f"`{key}`")
        for text, keys in chosen.items():
            add(f"Settings of {', '.join(keys)}: {text}\n")
        add("")
    checks = {k: v for k, v in results.items() if k.startswith("full-world-checks-") and isinstance(v, dict)}
    if checks:
        doc["world_checks"] = {k: {name: {"passed": v[name]["passed"], "expected": v[name]["expected"]}
                                   for name in ("lens", "neurons") if name in v} for k, v in checks.items()}
        add("### The analysis tools in the world (answers known)\n")
        add("| step | check | expected | result |")
        add("|---|---|---|---|")
        for key, v in sorted(checks.items()):
            for name in ("lens", "neurons"):
                if name in v:
                    add(f"| `{key}` | {name} | {v[name]['expected']} | {'passed' if v[name]['passed'] else '**failed**'} |")
        add("")
    full_table = results.get("full_mid_align")
    if full_table:
        doc["full_mid_align"] = full_table
        langs_full = sorted({lang for arm in full_table.values() for lang in arm})
        runs = sorted({run for arm in full_table.values() for row in arm.values() for run in row["per_run"]})
        add(f"### Mid-align reproduction: test accuracy per arm ({len(runs)} runs: {', '.join(runs)})\n")
        add("Mean ± sample standard deviation over runs (each run: its own world, base model and seed); every "
            "arm saw the same task micro-batches in the same order.\n")
        add("| arm | " + " | ".join(f"`{lang}`" for lang in langs_full) + " |")
        add("|---|" + "---:|" * len(langs_full))
        for arm, row in full_table.items():
            add(f"| {arm} | " + " | ".join(fmt(row[lang]["mean"], row[lang]["std"]) if lang in row else "—"
                                         for lang in langs_full) + " |")
        add("")
        bars = {arm: {lang: {"accuracy": v["mean"], "accuracy_std": v["std"]} for lang, v in row.items()}
                for arm, row in full_table.items()}
        if _plot_transfer(out / "full_mid_align.png", bars, langs_full, "accuracy",
                          "mid-align reproduction: polarity accuracy by arm (error bars: sd over runs)"):
            add("![mid-align reproduction: accuracy per arm and language](full_mid_align.png)\n")
    _layer_swap_section(add, doc, settings, results)
    from xlt.demo.full import experiment_reports

    for key, lines, summary in experiment_reports(out, settings, results):
        doc[f"full_{key}"] = summary
        md.extend(lines)
        add("")

    add(f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); device {device}; "
        f"{'quick run' if settings.get('quick') else 'default run'}. Every number below was computed "
        "in this run; mean ± sample standard deviation over seeds (no spread for one seed). Scores are "
        "percentages.\n")
    if failed:
        add("**Missing:** " + "; ".join(f"`{k}` ({v})" for k, v in failed.items()) + "\n")

    # world
    add("## The world\n")
    if world:
        add("| code | name | word order | role |\n|---|---|---|---|")
        for l in world["languages"]:
            role = "source" if l["code"] == source else ("close target (same grammar, own words)"
                                                        if l["word_order"] == world["languages"][0]["word_order"]
                                                        else "far target")
            add(f"| `{l['code']}` | {l['name']} | {l['word_order']} | {role} |")
        add("")
        ws = world.get("settings", {})
        add("World settings: " + ", ".join(f"`{k}`={v}" for k, v in sorted(ws.items())) + "\n")

    # base
    base = results.get("base")
    if base:
        m = settings["base"]["model"]
        add("## The base model\n")
        add(f"A {m['layers']}-layer Llama (hidden {m['hidden']}, {m['heads']} heads, MLP {m['mlp']}; "
            f"{base['parameters']:,} parameters) pre-trained from scratch with `xlt.pretrain` on the corpus of "
            f"every language: {base['steps']} steps, {base['tokens_seen']:,} tokens, mean training loss "
            f"{base['train_loss']:.3f}.\n")
        doc["base"] = base
    be = results.get("base-eval")
    if be:
        doc["base_model_scores"] = be

    # transfer
    transfer = _transfer(settings, results, source, langs, "test")
    transfer_dev = _transfer(settings, results, source, langs, "dev")
    doc["transfer"] = transfer
    doc["transfer_dev"] = transfer_dev
    rates = sorted({round(v["rate"], 6) for v in majority["test"].values()})
    constant = rates[0] if len(rates) == 1 else None
    if transfer:
        add("## Task transfer: fine-tuned on the source language only, evaluated zero-shot\n")
        sft = transfer.get("sft", {})
        if sft and "accuracy" in sft.get(source, {}) and "accuracy" in sft.get("targets_mean", {}):
            gap = sft[source]["accuracy"] - sft["targets_mean"]["accuracy"]
            maj = majority["test"]
            add(f"**The baseline's transfer gap first.** Plain SFT reaches "
                f"{100 * sft[source]['accuracy']:.1f}% `polarity` accuracy on the source `{source}` and "
                f"{100 * sft['targets_mean']['accuracy']:.1f}% on average over the targets "
                f"({', '.join('`%s` %.1f%%' % (t, 100 * sft[t]['accuracy']) for t in targets if t in sft)}): "
                f"a gap of {100 * gap:.1f} points. "
                + ((f"A constant answer scores {100 * constant:.1f}% in every language" if constant is not None
                    else "A constant answer scores " + ", ".join(
                        f"`{l}` {100 * maj[l]['rate']:.1f}%" for l in langs if l in maj))
                   + " (the majority-class rate of the items scored)." if maj else
                   "The majority-class rate of the items is unknown (no world files).") + "\n")
        add(f"`polarity` accuracy (%, test, the first {limit} items per language; "
            "log-likelihood of the two label words):\n")
        header = "| method | " + " | ".join(f"`{l}`" + (" (source)" if l == source else "") for l in langs) + \
                 " | targets mean |"
        add(header)
        add("|---|" + "---:|" * (len(langs) + 1))
        if majority["test"]:
            maj = majority["test"]
            add("| constant answer (majority class) | " + " | ".join(
                f"{100 * maj[l]['rate']:.1f}" if l in maj else "—" for l in langs) + " | " +
                (f"{100 * statistics.fmean(maj[t]['rate'] for t in targets if t in maj):.1f}"
                 if any(t in maj for t in targets) else "—") + " |")
        if be:
            add("| base model, no fine-tuning | " + " | ".join(
                f"{100 * be[l]['accuracy']:.1f}" if "accuracy" in be.get(l, {}) else "—" for l in langs) +
                " | " + (f"{100 * statistics.fmean(be[t]['accuracy'] for t in targets):.1f}"
                         if targets and all("accuracy" in be.get(t, {}) for t in targets) else "—") + " |")
        for method, row in transfer.items():
            add(f"| {METHOD_NAMES.get(method, method)} | " + " | ".join(
                fmt(row.get(l, {}).get("accuracy"), row.get(l, {}).get("accuracy_std")) for l in langs) +
                f" | **{fmt(row.get('targets_mean', {}).get('accuracy'), row.get('targets_mean', {}).get('accuracy_std'))}** |")
        add("")
        if any("exact_match" in row.get(source, {}) for row in transfer.values()):
            nr = len(settings.get("transfer_roles", {}).get("seeds", []) or [])
            add(f"`roles` exact match (%, test; greedy generation; separate runs on the source's `roles` data, "
                f"same budget, {nr} seed(s)):\n")
            add(header)
            add("|---|" + "---:|" * (len(langs) + 1))
            for method, row in transfer.items():
                add(f"| {METHOD_NAMES.get(method, method)} | " + " | ".join(
                    fmt(row.get(l, {}).get("exact_match"), row.get(l, {}).get("exact_match_std")) for l in langs) +
                    f" | {fmt(row.get('targets_mean', {}).get('exact_match'), row.get('targets_mean', {}).get('exact_match_std'))} |")
            add("")
        versus = {}
        for method in [m for m in transfer if m != "sft"]:
            for split, tab in (("test", transfer), ("dev", transfer_dev)):
                for where in ["targets_mean"] + targets:
                    a = tab.get("sft", {}).get(where, {}).get("accuracy_per_seed", {})
                    b = tab.get(method, {}).get(where, {}).get("accuracy_per_seed", {})
                    diffs = _per_seed_diffs(a, b)
                    if diffs:
                        versus.setdefault(split, {}).setdefault(method, {})[where] = _difference(diffs)
        doc["transfer_minus_sft"] = versus
        mid = versus.get("test", {}).get("mid-align", {}).get("targets_mean")
        if mid:
            doc["mid_align_minus_sft_target_accuracy"] = mid
            dev_mid = versus.get("dev", {}).get("mid-align", {}).get("targets_mean")
            if dev_mid:
                doc["mid_align_minus_sft_target_accuracy_dev"] = dev_mid
        for method, rows in versus.get("test", {}).items():
            d = rows.get("targets_mean")
            if not d:
                continue
            name = SHORT_NAMES.get(method, method)
            dev = versus.get("dev", {}).get(method, {}).get("targets_mean")
            add(f"{name} minus SFT, target-mean `polarity` accuracy, per seed: "
                f"{', '.join(signed(x) for x in d['per_seed'])} points ({name} better in {d['seeds_better']} of "
                f"{d['seeds']} seeds; mean {signed(d['mean'])}, "
                f"{interval_phrase(*_bounds(d))} over seeds, Student t)"
                + (f"; on the dev split (the first {limit} items per language): "
                   f"{', '.join(signed(x) for x in dev['per_seed'])}." if dev else ".") + "\n")
        if _plot_transfer(out / "transfer_accuracy.png", transfer, langs, "accuracy",
                          "polarity accuracy by language (source-only fine-tuning)", constant):
            add("![polarity accuracy per language and method](transfer_accuracy.png)\n")
        if _plot_transfer(out / "transfer_roles.png", transfer, langs, "exact_match", "roles exact match by language"):
            add("![roles exact match per language and method](transfer_roles.png)\n")

    # adamergex
    am = {seed: results.get(f"adamergex-s{seed}") for seed in seeds if results.get(f"adamergex-s{seed}")}
    if am:
        add("## AdaMergeX: task adapter + t · (reference target − reference source)\n")
        rows = {}
        for name in ("task adapter alone", "AdaMergeX"):
            rows[name] = {}
            for lang in targets:
                vals = [r["accuracy"][name][lang] for r in am.values() if lang in r["accuracy"].get(name, {})]
                rows[name][lang] = dict(zip(("mean", "std"), mean_spread(vals)))
                rows[name][lang]["per_seed"] = vals
        ts = [r["best_t"] for r in am.values()]
        doc["adamergex"] = {"accuracy": rows, "best_t_per_seed": ts,
                            "t_curves": {str(s): r["t_curve"] for s, r in am.items()}}
        per_seed = []
        for r in am.values():
            alone = [r["accuracy"]["task adapter alone"].get(l) for l in targets]
            merged = [r["accuracy"]["AdaMergeX"].get(l) for l in targets]
            if targets and None not in alone and None not in merged:
                per_seed.append(statistics.fmean(merged) - statistics.fmean(alone))
        if per_seed:
            doc["adamergex"]["merged_minus_alone_targets_mean"] = _difference(per_seed)
        src_acc = [r.get("source_accuracy") for r in am.values() if r.get("source_accuracy") is not None]
        if src_acc:
            doc["adamergex"]["task_adapter_source_accuracy"] = statistics.fmean(src_acc)
            add(f"The task LoRA (trained on `polarity` in `{source}` only) reaches "
                f"{100 * statistics.fmean(src_acc):.1f}% on the source test set.\n")
        add(f"`polarity` accuracy (%, test) of the task LoRA alone and merged "
            f"with reference LoRAs (causal LM on each language's corpus); t chosen from "
            f"{settings['adamergex']['t_grid']} on the `{settings['adamergex']['tune_language']}` dev set "
            f"(chosen t per seed: {', '.join(f'{t:g}' for t in ts)}):\n")
        add("| adapter | " + " | ".join(f"`{l}`" for l in targets) + " |")
        add("|---|" + "---:|" * len(targets))
        for name, row in rows.items():
            add(f"| {name} | " + " | ".join(fmt(row[l]["mean"], row[l]["std"]) for l in targets) + " |")
        add("")

    # lslo
    ls = {seed: results.get(f"lslo-s{seed}") for seed in seeds if results.get(f"lslo-s{seed}")}
    if ls:
        add("## LSLo against one shared LoRA of the same parameter count (translation)\n")
        directions = sorted({d for r in ls.values() for d in r["chrf"].get("lslo", {})})
        table = {}
        for name in ("base", "shared", "lslo"):
            table[name] = {}
            for d in directions:
                vals = [r["chrf"][name][d] for r in ls.values() if d in r["chrf"].get(name, {})]
                table[name][d] = dict(zip(("mean", "std"), mean_spread(vals)))
        doc["lslo"] = {"chrf": table, "seeds": list(ls)}
        per_seed = []
        for r in ls.values():
            common = [d for d in directions if d in r["chrf"].get("lslo", {}) and d in r["chrf"].get("shared", {})]
            if common:
                per_seed.append(statistics.fmean(r["chrf"]["lslo"][d] for d in common)
                                - statistics.fmean(r["chrf"]["shared"][d] for d in common))
        if per_seed:
            doc["lslo"]["lslo_minus_shared_mean_chrf"] = _difference(per_seed)
        add(f"chrF per direction (test, {settings['lslo']['test_per_direction']} sentences per direction, "
            f"{len(ls)} seed(s)). `base` = the tiny M2M-100 trained on the source-centric directions only; "
            "`shared` and `lslo` continue from it on every direction with the same steps:\n")
        add("| system | " + " | ".join(f"{d}" for d in directions) + " | mean |")
        add("|---|" + "---:|" * (len(directions) + 1))
        for name, row in table.items():
            means = [row[d]["mean"] for d in directions if row[d]["mean"] is not None]
            add(f"| {name} | " + " | ".join(fmt(row[d]["mean"], row[d]["std"], pct=False) for d in directions) +
                (f" | **{statistics.fmean(means):.2f}** |" if means else " | — |"))
        add("")
        heat = {name: {d: row[d]["mean"] for d in directions if row[d]["mean"] is not None} for name, row in table.items()}
        if _plot_mt(out / "mt_heatmap.png", heat, langs):
            add("![chrF heat map, LSLo and shared LoRA](mt_heatmap.png)\n")

    # cloned
    cl = {k: v for k, v in results.items() if k.startswith("cloned-")}
    if cl:
        add("## Language imbalance: a cloned language at 50/50 and 90/10\n")
        add("Pre-training on the source corpus where a share of the sequences is written in a *clone* of the "
            "language (the same text with a disjoint copy of the vocabulary, so nothing is shared on the surface). "
            "Perplexity on held-out text in each language, and the cosine of hidden states of a sentence and "
            "its clone, layer by layer:\n")
        add("| setting (L1/L2) | ppl L1 | ppl L2 | similarity at each layer (0 = embeddings) |")
        add("|---|---:|---:|---|")
        curves = {}
        doc["cloned"] = {}
        for share in settings["cloned"]["shares"]:
            tag = f"{round(share * 100)}-{round((1 - share) * 100)}"
            runs = {k.rsplit("-s", 1)[-1]: v for k, v in cl.items() if k.startswith(f"cloned-{tag}-")}
            if not runs:
                continue
            p1 = mean_spread([r["perplexity"]["L1"] for r in runs.values()])
            p2 = mean_spread([r["perplexity"]["L2"] for r in runs.values()])
            n = len(next(iter(runs.values()))["similarity_by_layer"])
            sim = [statistics.fmean(r["similarity_by_layer"][i] for r in runs.values()) for i in range(n)]
            curves[tag.replace("-", "/")] = sim
            doc["cloned"][tag] = {"perplexity": {"L1": p1[0], "L2": p2[0], "L1_std": p1[1], "L2_std": p2[1]},
                                  "similarity_by_layer": sim, "seeds": len(runs),
                                  "mean_similarity_per_seed": {
                                      s: statistics.fmean(r["similarity_by_layer"][1:])
                                      for s, r in runs.items() if len(r["similarity_by_layer"]) > 1}}
            add(f"| {tag.replace('-', '/')} | {fmt(*p1, pct=False)} | {fmt(*p2, pct=False)} | "
                + ", ".join(f"{v:.2f}" for v in sim) + " |")
        add("")
        if "50-50" in doc["cloned"] and "90-10" in doc["cloned"]:
            diffs = _per_seed_diffs(doc["cloned"]["50-50"]["mean_similarity_per_seed"],
                                    doc["cloned"]["90-10"]["mean_similarity_per_seed"])
            if diffs:
                doc["cloned"]["similarity_90_10_minus_50_50"] = _difference(diffs)
        if _plot_similarity(out / "similarity_by_layer.png", curves):
            add("![similarity by layer](similarity_by_layer.png)\n")

    # reading
    add("## What the numbers show\n")
    for line in reading(doc, source, targets):
        add(f"- {line}")
    add("")

    # settings
    add("## Every setting\n")
    add("```json\n" + json.dumps(settings, indent=1, sort_keys=True) + "\n```\n")
    timings = {k: v.get("seconds") for k, v in results.items() if isinstance(v, dict) and k not in ("reproduction", "full_mid_align")}
    add("Step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items() if v is not None) +
        f"; sum {sum(v for v in timings.values() if v is not None):.0f} s. "
        f"Wall time of this invocation: {wall_seconds:.0f} s on {platform.machine()} "
        f"({device}).\n")
    doc["step_seconds"] = timings
    doc["step_seconds_total"] = round(sum(v for v in timings.values() if v is not None), 1)
    doc["wall_seconds_this_run"] = round(wall_seconds, 1)
    doc[VERSIONS_KEY] = package_versions()
    with atomic_file(out / "report.md") as handle:
        handle.write("\n".join(md) + "\n")
    write_json(out / "results.json", doc)


# ---------------------------------------------------------------------------------------------
# the reading of the per-step numbers (today's steps, without per-item scores)

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _bounds(d: dict) -> tuple[float, float]:
    """A :func:`_difference` dict's interval, None bounds read as unbounded."""
    return (-math.inf if d.get("ci_low") is None else d["ci_low"], math.inf if d.get("ci_high") is None else d["ci_high"])


def _versus(d: dict, name: str, baseline: str, what: str, *, scale: float = 100.0, unit: str = "points",
            digits: int = 1) -> str:
    """"name minus baseline on what: +x unit, name above baseline (95 % CI ..., n seeds, Student t
    over seeds): the interval lies above 0 / includes 0 / ..." from a :func:`_difference` dict."""
    low, high = _bounds(d)
    n = d["seeds"]
    if math.isinf(low) and math.isinf(high):
        where = "one seed gives no interval, so it cannot be told from seed noise"
    elif low > 0:
        where = "the interval lies above 0"
    elif high < 0:
        where = "the interval lies below 0"
    elif low == 0 == high:
        where = "no difference in any seed"
    else:
        where = "the interval includes 0"
    how = (f"{interval_phrase(low, high, scale=scale, digits=digits)}, {n} seeds, Student t over seeds; item "
           f"noise not included; {name} higher in {d['seeds_better']} of {n} seeds" if n > 1 else "1 seed")
    return (f"{name} minus {baseline} on {what}: {signed(d['mean'], scale, digits)}{' ' + unit if unit else ''}, "
            f"{compare_phrase(d['mean'], name, baseline, scale=scale, digits=digits)} ({how}): {where}.")


def reading(doc: dict, source: str, targets: list[str]) -> list[str]:
    """The report's plain-language reading of the per-step numbers in ``doc`` (results.json's
    content). Every sentence is conditional on, and states, the numbers it rests on: scores are read
    against the majority-class rate of the items scored (``doc["majority_rate"]``), differences
    against their Student t interval over seeds (``doc["transfer_minus_sft"]`` etc.)."""
    lines: list[str] = []
    t = doc.get("transfer", {})
    sft = t.get("sft", {})
    maj = doc.get("majority_rate", {}).get("test", {})
    acc = lambda row, key="targets_mean": row.get(key, {}).get("accuracy")  # noqa: E731

    # every arm the same score everywhere: nothing can be compared
    values = [v for row in t.values() for lang in [source] + targets
              for v in row.get(lang, {}).get("accuracy_per_seed", {}).values()]
    values += [row["accuracy"] for row in doc.get("base_model_scores", {}).values()
               if isinstance(row, dict) and "accuracy" in row]
    degenerate = len(values) > 1 and len({round(v, 9) for v in values}) == 1
    if degenerate:
        # a constant answer scores the share of its class among the items
        constant = bool(maj) and all(any(round(share, 9) == round(values[0], 9) for share in v.get("shares", {}).values())
                                     for v in maj.values())
        lines.append(f"Every model{', the untrained base included,' if doc.get('base_model_scores') else ''} "
                     f"scores {_pct(values[0])} `polarity` accuracy in every language and seed"
                     + (", the share of one class among the items scored, which a constant answer scores: no "
                        "model learned the task" if constant else "") + ". No method can be compared with another.")

    learned = None
    if acc(sft, source) is not None and not degenerate:
        if source in maj:
            n = maj[source]["items"]
            labels_rate = maj[source]["rate"]
            check = precondition("SFT learned the source task", acc(sft, source), labels_rate + LEARNED_MARGIN,
                                 text="")
            learned = check.met
            lines.append(
                f"SFT {'learned' if learned else 'did not learn'} the task in the source: {_pct(acc(sft, source))} "
                f"against a majority-class rate of {_pct(labels_rate)} for its {n} test items (threshold "
                f"{_pct(check.threshold)}, the rate plus {100 * LEARNED_MARGIN:.0f} points)"
                + ("." if learned else ": no transfer can be measured, and the comparisons with SFT below are not "
                   "interpreted."))
        else:
            lines.append(f"SFT scores {_pct(acc(sft, source))} in the source; the majority-class rate of its test "
                         "items is unknown (no world files), so whether it learned the task is not judged.")
        if acc(sft) is not None:
            tmaj = [maj[l]["rate"] for l in targets if l in maj]
            ref = statistics.fmean(tmaj) if tmaj else None
            line = (f"On the targets SFT scores {_pct(acc(sft))} on average, a transfer gap of "
                    f"{100 * (acc(sft, source) - acc(sft)):.1f} points to the source")
            if ref is not None:
                x = round(100 * (acc(sft) - ref), 1)
                line += (f"; a constant answer scores {_pct(ref)} there (SFT "
                         + ("level with it" if x == 0 else f"{abs(x):.1f} points {'above' if x > 0 else 'below'} it")
                         + ")")
            lines.append(line + ".")

    versus = doc.get("transfer_minus_sft", {}).get("test", {})
    order = {l["code"]: l.get("word_order") for l in doc.get("world_languages", [])}
    for method, rows in versus.items():
        if degenerate:
            break
        name = SHORT_NAMES.get(method, method)
        if "targets_mean" in rows:
            line = _versus(rows["targets_mean"], name, "SFT", "target-mean `polarity` accuracy")
            if learned is False:
                line = line[:-1] + " (not interpreted: SFT did not learn the source task)."
            lines.append(line)
        per = {l: rows[l] for l in targets if l in rows}
        if per:
            parts = []
            for l, d in per.items():
                lo, hi = d.get("ci_low"), d.get("ci_high")
                parts.append(f"`{l}`" + (f" ({order[l]})" if order.get(l) else "") + f" {signed(d['mean'])}"
                             + (f" [{signed(lo)}, {signed(hi)}]" if lo is not None and hi is not None else ""))
            line = f"{name} minus SFT by target (points, 95 % t interval over seeds): " + ", ".join(parts) + "."
            shown = {l: round(100 * d["mean"], 1) for l, d in per.items()}
            low = min(shown.values())
            lowest = [l for l, v in shown.items() if v == low]
            if len(per) > 1 and len(lowest) == 1:
                line += f" Smallest on `{lowest[0]}`"
                others = [d for l, d in per.items() if l != lowest[0]]
                d0 = per[lowest[0]]
                if d0.get("ci_high") is not None and all(o.get("ci_low") is not None and o["ci_low"] > d0["ci_high"]
                                                         for o in others):
                    line += ", with its interval below every other target's."
                else:
                    line += ", but its interval overlaps another target's: the order is not established."
            elif len(per) > 1:
                line += f" Tied smallest: {', '.join(f'`{l}`' for l in lowest)}."
            lines.append(line)
        src_m, src_s = acc(t.get(method, {}), source), acc(sft, source)
        if src_m is not None and src_s is not None and round(100 * src_m, 1) != round(100 * src_s, 1):
            lines.append(f"{name}'s own source accuracy is {_pct(src_m)}, SFT's {_pct(src_s)}.")

    em_src = sft.get(source, {}).get("exact_match")
    em_tgt = sft.get("targets_mean", {}).get("exact_match")
    if em_src is not None and em_tgt is not None:
        others = [f"{SHORT_NAMES.get(m, m)} {_pct(row['targets_mean']['exact_match'])}"
                  + (f" ({signed(row['targets_mean']['exact_match'] - em_tgt)} points)")
                  for m, row in t.items() if m != "sft" and row.get("targets_mean", {}).get("exact_match") is not None]
        n = len(sft["targets_mean"].get("exact_match_per_seed", {}))
        lines.append(f"On the extraction task (`roles`) SFT reaches {_pct(em_src)} exact match in the source and "
                     f"{_pct(em_tgt)} on the targets (a gap of {100 * (em_src - em_tgt):.1f} points)"
                     + (f"; on the targets {', '.join(others)}" if others else "")
                     + f"; {n} seed{'s' if n != 1 else ''}"
                     + (": no interval." if n < 2 else "."))

    am = doc.get("adamergex")
    if am:
        src = am.get("task_adapter_source_accuracy")
        am_maj = doc.get("adamergex_source_labels_majority")
        ok = None
        if src is not None and am_maj:
            n = am_maj["items"]
            check = precondition("the task adapter learned the source task", src, am_maj["rate"] + LEARNED_MARGIN,
                                 text="")
            ok = check.met
            lines.append(f"AdaMergeX: the task adapter {'learned' if ok else 'did not learn'} the task in the source "
                         f"({_pct(src)} against a majority-class rate of {_pct(am_maj['rate'])} for its {n} test "
                         f"items; threshold {_pct(check.threshold)})"
                         + ("." if ok else ": there is nothing to transfer, and the merge is not interpreted."))
        ts = am.get("best_t_per_seed", [])
        if ts and all(x == 0 for x in ts):
            lines.append("AdaMergeX: the dev set chose t = 0 in every seed, so the merged adapter is the task "
                         "adapter itself.")
        elif am.get("merged_minus_alone_targets_mean"):
            line = _versus(am["merged_minus_alone_targets_mean"], "AdaMergeX", "the task adapter alone",
                           "target-mean `polarity` accuracy")
            if ok is False:
                line = line[:-1] + " (not interpreted: the task adapter did not learn the source task)."
            lines.append(line + f" Chosen t: {', '.join(f'{x:g}' for x in ts)}.")

    lo = doc.get("lslo")
    if lo:
        def avg(name):
            vals = [v["mean"] for v in lo["chrf"].get(name, {}).values() if v["mean"] is not None]
            return statistics.fmean(vals) if vals else None
        a, b = avg("lslo"), avg("shared")
        if a is not None and b is not None:
            lines.append(f"Translation: LSLo averages {a:.1f} chrF over the directions against {b:.1f} for one "
                         "shared LoRA with the same number of parameters.")
        if lo.get("lslo_minus_shared_mean_chrf"):
            lines.append(_versus(lo["lslo_minus_shared_mean_chrf"], "LSLo", "the shared LoRA", "mean chrF",
                                 scale=1.0, unit="chrF"))

    cl = doc.get("cloned")
    if cl and "50-50" in cl and "90-10" in cl:
        r5, r9 = cl["50-50"], cl["90-10"]
        lines.append(f"Cloned languages: at 90/10 the minority clone's perplexity is "
                     f"{r9['perplexity']['L2']:.2f} against {r9['perplexity']['L1']:.2f} for the majority language "
                     f"(50/50: {r5['perplexity']['L2']:.2f} / {r5['perplexity']['L1']:.2f}).")
        if cl.get("similarity_90_10_minus_50_50"):
            d = cl["similarity_90_10_minus_50_50"]
            m5 = statistics.fmean(r5["similarity_by_layer"][1:])
            m9 = statistics.fmean(r9["similarity_by_layer"][1:])
            lines.append(f"Mean cosine of a sentence and its clone over layers 1 to {len(r5['similarity_by_layer']) - 1}: "
                         f"{m9:.2f} at 90/10, {m5:.2f} at 50/50. "
                         + _versus(d, "90/10", "50/50", "that mean cosine", scale=1.0, unit="", digits=2))
    if doc.get("missing"):
        lines.append("Missing from this run: " + ", ".join(sorted(doc["missing"])) + " (see above).")
    return lines
