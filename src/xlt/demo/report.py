"""The demo's report: DIR/report.md, DIR/results.json and PNG plots, from the step results."""

from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path

from xlt.io import atomic_file, write_json
from xlt.provenance import VERSIONS_KEY, package_versions

METHOD_NAMES = {"sft": "SFT (baseline)", "mid-align": "mid-align", "afp": "AFP"}


def mean_spread(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else None)


def fmt(mean: float | None, spread: float | None, pct: bool = True) -> str:
    if mean is None:
        return "—"
    if pct:
        return f"{100 * mean:.1f}" + (f" ± {100 * spread:.1f}" if spread is not None else "")
    return f"{mean:.2f}" + (f" ± {spread:.2f}" if spread is not None else "")


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


def _plot_transfer(path: Path, transfer: dict, langs: list[str], metric: str, title: str) -> bool:
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
    if metric == "accuracy":
        ax.axhline(50, color="grey", lw=0.8, ls="--")
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


def write_report(out: Path, settings: dict, results: dict, failed: dict, *, wall_seconds: float, device: str) -> None:
    world = json.loads((out / "world" / "world.json").read_text(encoding="utf-8")) \
        if (out / "world" / "world.json").is_file() else None
    source = world["source_language"] if world else "qaa"
    langs = [l["code"] for l in world["languages"]] if world else []
    targets = [l for l in langs if l != source]
    seeds = settings["seeds"]
    doc: dict = {"source_language": source, "languages": langs, "targets": targets, "seeds": seeds,
                 "world_languages": [{"code": l["code"], "word_order": l["word_order"]} for l in world["languages"]]
                 if world else [],
                 "settings": settings, "device": device, "missing": failed}
    md: list[str] = []
    add = md.append
    add("# xlt demo: cross-lingual transfer in a synthetic world\n")
    add(f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); device {device}; "
        f"{'quick run' if settings.get('quick') else 'default run'}. Every number below was computed "
        "in this run; mean ± standard deviation over seeds (population). Scores are percentages.\n")
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
    if transfer:
        add("## Task transfer: fine-tuned on the source language only, evaluated zero-shot\n")
        sft = transfer.get("sft", {})
        if sft and "accuracy" in sft.get(source, {}):
            gap = sft[source]["accuracy"] - sft.get("targets_mean", {}).get("accuracy", float("nan"))
            add(f"**The baseline's transfer gap first.** Plain SFT reaches "
                f"{100 * sft[source]['accuracy']:.1f}% `polarity` accuracy on the source `{source}` and "
                f"{100 * sft['targets_mean']['accuracy']:.1f}% on average over the targets "
                f"({', '.join('`%s` %.1f%%' % (t, 100 * sft[t]['accuracy']) for t in targets if t in sft)}): "
                f"a gap of {100 * gap:.1f} points (chance is 50%).\n")
        add(f"`polarity` accuracy (%, test, {settings['transfer']['test_limit']} items per language; "
            "log-likelihood of the two label words):\n")
        header = "| method | " + " | ".join(f"`{l}`" + (" (source)" if l == source else "") for l in langs) + \
                 " | targets mean |"
        add(header)
        add("|---|" + "---:|" * (len(langs) + 1))
        if be:
            add("| base model, no fine-tuning | " + " | ".join(
                f"{100 * be[l]['accuracy']:.1f}" if "accuracy" in be.get(l, {}) else "—" for l in langs) +
                " | " + (f"{100 * statistics.fmean(be[t]['accuracy'] for t in targets):.1f}" if targets else "—") + " |")
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
        if "sft" in transfer and "mid-align" in transfer:
            diffs = []
            for seed in seeds:
                a = transfer["mid-align"].get("targets_mean", {}).get("accuracy_per_seed", {}).get(str(seed))
                b = transfer["sft"].get("targets_mean", {}).get("accuracy_per_seed", {}).get(str(seed))
                if a is not None and b is not None:
                    diffs.append(a - b)
            if diffs:
                wins = sum(d > 0 for d in diffs)
                doc["mid_align_minus_sft_target_accuracy"] = {"per_seed": diffs, "mean": statistics.fmean(diffs),
                                                              "seeds_better": wins}
                add(f"Mid-align minus SFT, target-mean `polarity` accuracy, per seed: "
                    f"{', '.join(f'{100 * d:+.1f}' for d in diffs)} points (mid-align better in {wins} of "
                    f"{len(diffs)} seeds).\n")
                dev_diffs = []
                for seed in seeds:
                    a = transfer_dev.get("mid-align", {}).get("targets_mean", {}).get("accuracy_per_seed", {}).get(str(seed))
                    b = transfer_dev.get("sft", {}).get("targets_mean", {}).get("accuracy_per_seed", {}).get(str(seed))
                    if a is not None and b is not None:
                        dev_diffs.append(a - b)
                if dev_diffs:
                    doc["mid_align_minus_sft_target_accuracy_dev"] = {"per_seed": dev_diffs,
                                                                      "mean": statistics.fmean(dev_diffs)}
                    add(f"The same on the dev split (200 other meanings per language): "
                        f"{', '.join(f'{100 * d:+.1f}' for d in dev_diffs)} points.\n")
        if _plot_transfer(out / "transfer_accuracy.png", transfer, langs, "accuracy",
                          "polarity accuracy by language (source-only fine-tuning)"):
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
        add(f"chrF per direction (test, {settings['lslo']['test_per_direction']} sentences per direction, "
            f"{len(ls)} seed(s)). `base` = the tiny M2M-100 trained on the source-centric directions only; "
            "`shared` and `lslo` continue from it on every direction with the same steps:\n")
        add("| system | " + " | ".join(f"{d}" for d in directions) + " | mean |")
        add("|---|" + "---:|" * (len(directions) + 1))
        for name, row in table.items():
            means = [row[d]["mean"] for d in directions if row[d]["mean"] is not None]
            add(f"| {name} | " + " | ".join(fmt(row[d]["mean"], row[d]["std"], pct=False) for d in directions) +
                f" | **{statistics.fmean(means):.2f}** |" if means else " | — |")
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
            runs = [v for k, v in cl.items() if k.startswith(f"cloned-{tag}-")]
            if not runs:
                continue
            p1 = mean_spread([r["perplexity"]["L1"] for r in runs])
            p2 = mean_spread([r["perplexity"]["L2"] for r in runs])
            n = len(runs[0]["similarity_by_layer"])
            sim = [statistics.fmean(r["similarity_by_layer"][i] for r in runs) for i in range(n)]
            curves[tag.replace("-", "/")] = sim
            doc["cloned"][tag] = {"perplexity": {"L1": p1[0], "L2": p2[0], "L1_std": p1[1], "L2_std": p2[1]},
                                  "similarity_by_layer": sim, "seeds": len(runs)}
            add(f"| {tag.replace('-', '/')} | {fmt(*p1, pct=False)} | {fmt(*p2, pct=False)} | "
                + ", ".join(f"{v:.2f}" for v in sim) + " |")
        add("")
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
    timings = {k: v.get("seconds") for k, v in results.items()}
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


def reading(doc: dict, source: str, targets: list[str]) -> list[str]:
    """A short plain-language reading, generated from the numbers (so it cannot contradict them)."""
    lines = []
    t = doc.get("transfer", {})
    sft, mid, afp = t.get("sft", {}), t.get("mid-align", {}), t.get("afp", {})
    acc = lambda row, key="targets_mean": row.get(key, {}).get("accuracy")  # noqa: E731
    if acc(sft, source) is not None and acc(sft) is not None:
        how = ("does not transfer at all" if abs(acc(sft) - 0.5) < 0.03 else "transfers only partly")
        lines.append(f"Plain SFT learns the task in the source ({100 * acc(sft, source):.0f}%) but {how}: "
                     f"{100 * acc(sft):.0f}% on the targets on average, where 50% is chance. The pre-trained "
                     "model has not tied the targets' words to the source's, so what SFT learns about source "
                     "verbs does not reach target verbs.")
    if acc(mid) is not None and acc(sft) is not None:
        d = doc.get("mid_align_minus_sft_target_accuracy", {})
        diff = acc(mid) - acc(sft)
        if diff > 0 and d.get("seeds_better") == len(d.get("per_seed", [])):
            lines.append(f"Mid-align (contrastive alignment of a middle layer on source–target pairs) raises "
                         f"target accuracy by {100 * diff:.1f} points over SFT, in every seed: the direction of "
                         "the paper's effect appears here. "
                         + ("It is large against the seed spread, " if diff >= 0.08 else "It is small, ")
                         + f"but the targets stay below the source ({100 * acc(mid):.0f}% against "
                         f"{100 * acc(mid, source):.0f}%).")
        elif diff > 0:
            lines.append(f"Mid-align is above SFT on target accuracy on average (+{100 * diff:.1f} points) but not "
                         f"in every seed ({d.get('seeds_better')} of {len(d.get('per_seed', []))}): the effect "
                         "is not clearly separated from seed noise at this scale.")
        else:
            lines.append(f"Mid-align does not beat SFT here ({100 * diff:+.1f} points): the expected effect did "
                         "not appear with these settings.")
        if acc(mid, source) is not None and acc(sft, source) is not None and acc(mid, source) < acc(sft, source) - 0.02:
            lines.append(f"Mid-align's own source accuracy is lower than SFT's ({100 * acc(mid, source):.0f}% "
                         f"against {100 * acc(sft, source):.0f}%): with the same task steps, half of each step's "
                         "loss is the alignment objective.")
    if acc(afp) is not None and acc(sft) is not None:
        diff = acc(afp) - acc(sft)
        word = "above" if diff > 0.005 else "below" if diff < -0.005 else "level with"
        line = (f"AFP (alignment of the first layer's last-token state, joint with the task loss) is {word} "
                f"SFT on the targets ({100 * diff:+.1f} points)")
        if acc(afp, source) is not None and acc(afp, source) < 0.65:
            line += (f", but it did not learn the task in the source either ({100 * acc(afp, source):.0f}%): the "
                     "joint early-layer InfoNCE (τ = 0.05) dominated the task loss in this budget, so the "
                     "expected AFP effect could not be measured")
        lines.append(line + ".")
    if mid and sft:
        per = []
        for lang in targets:
            if "accuracy" in mid.get(lang, {}) and "accuracy" in sft.get(lang, {}):
                per.append(f"`{lang}` {100 * (mid[lang]['accuracy'] - sft[lang]['accuracy']):+.1f}")
        if per:
            lines.append("Mid-align minus SFT by target: " + ", ".join(per) + " points.")
            gains = {lang: mid[lang]["accuracy"] - sft[lang]["accuracy"] for lang in targets
                     if "accuracy" in mid.get(lang, {}) and "accuracy" in sft.get(lang, {})}
            if len(gains) > 1:
                low = min(gains, key=gains.get)
                order = {l["code"]: l.get("word_order") for l in doc.get("world_languages", [])}
                lines.append(f"The smallest gain is on `{low}`" + (f" ({order[low]})" if order.get(low) else "")
                             + ": alignment on parallel sentences helps least where the word order is "
                               "furthest from the source's." if order.get(low) not in (None, order.get(source))
                             else f"The smallest gain is on `{low}`.")
    em_src = sft.get(source, {}).get("exact_match")
    em_tgt = sft.get("targets_mean", {}).get("exact_match")
    if em_src is not None and em_tgt is not None:
        line = (f"On the extraction task (`roles`) SFT reaches {100 * em_src:.0f}% exact match in the source and "
                f"{100 * em_tgt:.0f}% on the targets")
        if mid.get("targets_mean", {}).get("exact_match") is not None:
            line += f" (mid-align {100 * mid['targets_mean']['exact_match']:.0f}%)"
        lines.append(line + ": no method transfers the extraction task at this scale (finding the span of a "
                     "role in a sentence with other words and another word order).")
    am = doc.get("adamergex")
    if am:
        alone = [am["accuracy"]["task adapter alone"][l]["mean"] for l in targets]
        merged = [am["accuracy"]["AdaMergeX"][l]["mean"] for l in targets]
        src = am.get("task_adapter_source_accuracy")
        if src is not None and src < 0.65:
            lines.append(f"AdaMergeX: the task LoRA itself barely learned the task in the source "
                         f"({100 * src:.0f}%; a LoRA on this 4 x 64 model learns little in the budget), so there "
                         "is nothing to transfer and the merged adapters stay near chance: the expected effect "
                         "could not be measured here.")
        elif None not in alone and None not in merged:
            diff = statistics.fmean(merged) - statistics.fmean(alone)
            ts = am["best_t_per_seed"]
            if all(t == 0 for t in ts):
                lines.append("AdaMergeX: the dev set chose t = 0 in every seed, i.e. the merge did not help on "
                             "the tuning language; the merged adapter is then the task adapter itself.")
            else:
                lines.append(f"AdaMergeX changes target accuracy by {100 * diff:+.1f} points on average over the "
                             f"task adapter alone (chosen t: {', '.join(f'{t:g}' for t in ts)}).")
    lo = doc.get("lslo")
    if lo:
        def avg(name):
            vals = [v["mean"] for v in lo["chrf"].get(name, {}).values() if v["mean"] is not None]
            return statistics.fmean(vals) if vals else None
        a, b = avg("lslo"), avg("shared")
        if a is not None and b is not None:
            lines.append(f"Translation: LSLo averages {a:.1f} chrF against {b:.1f} for one shared LoRA with the "
                         f"same number of parameters ({a - b:+.1f})" +
                         (" — language-specific subspaces help here." if a > b + 0.5 else
                          " — no clear advantage at this tiny scale and step budget."))
    cl = doc.get("cloned")
    if cl and "50-50" in cl and "90-10" in cl:
        r5, r9 = cl["50-50"], cl["90-10"]
        lines.append(f"Cloned languages: at 90/10 the minority clone's perplexity is "
                     f"{r9['perplexity']['L2']:.2f} against {r9['perplexity']['L1']:.2f} for the majority language "
                     f"(50/50: {r5['perplexity']['L2']:.2f} / {r5['perplexity']['L1']:.2f}).")
        m5 = statistics.fmean(r5["similarity_by_layer"][1:]) if len(r5["similarity_by_layer"]) > 1 else None
        m9 = statistics.fmean(r9["similarity_by_layer"][1:]) if len(r9["similarity_by_layer"]) > 1 else None
        if m5 is not None and m9 is not None and max(m5, m9) < 0.15:
            lines.append(f"The hidden states of a sentence and its clone are nearly orthogonal at every layer in "
                         f"both settings (mean cosine {m5:.2f} at 50/50, {m9:.2f} at 90/10): in this budget the "
                         "model has not begun to share representations between the two vocabularies, so the "
                         "paper's finding (imbalance boosts sharing) can be neither confirmed nor refuted here.")
        elif m5 is not None and m9 is not None:
            lines.append(f"Hidden states of a sentence and its clone are {'more' if m9 > m5 else 'less'} similar "
                         f"at 90/10 than at 50/50 (mean cosine over layers {m9:.2f} vs {m5:.2f})" +
                         ("; the paper's finding that imbalance boosts sharing shows." if m9 > m5 else
                          "; the paper's finding that imbalance boosts sharing did not appear at this scale."))
    if doc.get("missing"):
        lines.append("Missing from this run: " + ", ".join(sorted(doc["missing"])) + " (see above).")
    return lines
