"""``xlt demo --full``'s LSLo experiment (Cao et al. 2024, specs/lslo.md): many languages of
unequal resources, every direction trained at once.

Per reported world seed, an 8-language world of its own (``xlt.synth`` with 8 languages; the
generator is unchanged) in three resource tiers: the source ``qaa`` and ``qab``, ``qac`` high,
``qad``-``qaf`` mid, ``qag``, ``qah`` low. A direction's parallel data is as large as its poorer
language's tier allows (``tier_share``: 1 : 0.3 : 0.1 of ``pairs_high``), the first pairs of the
direction in file order, so a low language's sentences are the same few meanings in each of its
directions; its base-model pre-training pairs (source-centric directions only, disjoint meanings)
are cut by the same shares. Test items per direction are equal.

Per run (:func:`~xlt.demo.full.units`: world, base-model and fine-tuning seed), step
``full-lslo-base-<run>`` trains a tiny M2M-100 on the source-centric pairs (so it translates at
all) and scores it; then one step per arm fine-tunes it on every direction at once, from the same
rows in the same order (the same seeded temperature sampler), and scores the same test items:

* ``lslo``: LSLo with the paper's tier ranks (high 2, med 2, low 8), no pruning;
* ``lslo-pruned``: the same with the paper's gradual magnitude pruning of B (target 0.9, one pool
  per language), its epoch schedule compressed to the run's epochs;
* ``shared``: one LoRA shared by every language, of rank the sum of LSLo's ranks: the same
  trainable parameter count (both counted from the saved adapters);
* ``full``: full fine-tuning.

The item score is sentence-level chrF (sacrebleu); a direction's table entry is corpus chrF.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

KEY = "lslo"
ARMS = ("lslo", "lslo-pruned", "shared", "full")
TIERS = ("high", "med", "low")


def settings(quick: bool) -> dict:
    """The experiment's settings (``fs["lslo"]``); ``quick``: seconds-long runs for tests."""
    s = {
        # the 8-language world (xlt.synth.WorldConfig fields): two far word orders in every tier
        "world": {"languages": 8, "word_orders": ["SVO", "SVO", "SOV", "SVO", "VSO", "SOV", "SVO", "VSO"],
                  "anchor_share": 0.25, "corpus_lines": 12000, "task_train": 20, "task_dev": 10,
                  "task_test": 10, "parallel_train": 10, "translation_dev": 10,
                  "translation_train": 1400, "translation_test": 8},
        "tiers": {"qaa": "high", "qab": "high", "qac": "high", "qad": "med", "qae": "med", "qaf": "med",
                  "qag": "low", "qah": "low"},
        "tier_share": {"high": 1.0, "med": 0.3, "low": 0.1},
        "tier_ranks": {"high": 2, "med": 2, "low": 8},
        # fine-tuning pairs of a high-high direction; base pre-training pairs of a source-high one
        "pairs_high": 200, "base_pairs_high": 1200,
        "model": {"hidden": 64, "layers": 4},
        # 800 base steps: 400 failed both preconditions in the reported worlds (a set-up bug; see "chosen")
        "base_steps": 800, "base_lr": 3e-3,
        "epochs": 4, "lr": 3e-3, "full_lr": 3e-3, "batch_size": 32,
        # the paper's pruning: target 0.9, pool per language, t1 = 2; t2 shrunk to the run's epochs
        "pruning": "language", "pruning_t1": 1, "pruning_t2": 2, "target_pruning_ratio": 0.9,
        "test_per_direction": 8, "num_beams": 1, "max_new_tokens": 40,
        "units_per_world": 2,
        # the baseline must beat copying the source by this many chrF points on the low tier
        "precondition_margin": 10.0,
        "chosen": ("world: 8 languages (the source and 2 more high, 3 mid, 2 low; word orders SVO, SOV, VSO spread "
                   "over the tiers), fine-tuning pairs per direction 1 : 0.3 : 0.1 of 200 by the poorer language's "
                   "tier, base pre-training pairs (source-centric) 1 : 0.3 : 0.1 of 1,200, 8 test items per "
                   "direction, fixed before any run; ranks 2/2/8, pruning target 0.9 with one pool per language, "
                   "sampling temperature 5, label smoothing 0.2 and lr 3e-3: the paper's; a constant lr (xlt demo's "
                   "LSLo setting), 4 epochs, pruning t1 = 1 and t2 = 2 (the target reached at epoch 3 of 4, as the "
                   "paper's at epoch 12 of 15), a base of 2 + 2 layers of width 64, 2 runs per "
                   "world, greedy decoding: sized to the budget on world 0 (one run: base 16 s, an adapter arm "
                   "25-30 s of CPU time); tried on world 0: the adapters at lr 1e-2 (shared LoRA 18.9, LSLo 19.9 "
                   "low-tier sentence chrF, against 33.8 and 23.7 at 3e-3), so 3e-3 was kept; the precondition "
                   "margin (10 chrF over copying the source) fixed before any run. Base steps: first 400, chosen on "
                   "world 0 (base +14.5, shared LoRA +14.6 chrF over copying there); a first full run found both "
                   "preconditions failed in the reported worlds (worst run: base 24.6 against 26.5 needed, shared "
                   "LoRA 26.9 against 27.3), a base too weak to adapt, not a result; re-chosen on world 0 only as "
                   "the smallest of 400, 800 and 1,600 steps whose two world-0 runs clear both preconditions by "
                   "5 chrF more than the margin (criterion fixed before these runs): 800 steps, base +25.1 and "
                   "+25.9, shared LoRA on the low tier +27.8 and +28.8 chrF over copying (1,600 steps, seed 0: "
                   "the base translates its source-centric directions almost perfectly, 99.3 chrF, leaving the "
                   "adapters nothing to compare); the threshold itself unchanged"),
    }
    if quick:
        s["world"].update(corpus_lines=2400, translation_train=60, translation_test=2)
        s.update(pairs_high=10, base_pairs_high=40, model={"hidden": 16, "layers": 1}, base_steps=4,
                 epochs=2, pruning_t2=1, test_per_direction=1, max_new_tokens=8, units_per_world=2)
    return copy.deepcopy(s)


# --------------------------------------------------------------------------------------------
# data: tiers, per-direction sizes, the test items


def world_path(root: Path, w: int) -> Path:
    """The experiment's own 8-language world ``w`` (``root``: the full demo's ``out / "full"``)."""
    return root / "lslo" / f"world-w{w}"


def base_path(root: Path, name: str) -> Path:
    """The translation base model of run ``name``."""
    return root / "lslo" / f"base-{name}"


def direction_size(src: str, tgt: str, s: dict, *, total: int) -> int:
    """Pairs of direction ``src``-``tgt``: ``total`` times the smaller tier share of its two
    languages (a direction is as rich as its poorer side), rounded, at least 1."""
    share = min(s["tier_share"][s["tiers"][src]], s["tier_share"][s["tiers"][tgt]])
    return max(1, round(total * share))


def split_pairs(train: list, test: list, s: dict, source: str) -> dict:
    """The experiment's data from a world's translation records (every direction, meanings in
    the same order in every direction).

    Returns ``{"finetune": [...], "base": [...], "test": [...]}``: ``finetune``, per direction the
    first :func:`direction_size` (``pairs_high``) records; ``base``, per source-centric direction
    the next :func:`direction_size` (``base_pairs_high``) records, after the first ``pairs_high``
    (meanings disjoint from every fine-tuning pair); ``test``, the first ``test_per_direction``
    records of every direction.
    """
    from xlt.errors import ConfigError

    groups: dict = {}
    for p in train:
        groups.setdefault((p.src_lang, p.tgt_lang), []).append(p)
    finetune, base = [], []
    for (a, b), rows in groups.items():
        n = direction_size(a, b, s, total=s["pairs_high"])
        finetune += rows[:n]
        if source in (a, b):
            m = direction_size(a, b, s, total=s["base_pairs_high"])
            if len(rows) < s["pairs_high"] + m:
                raise ConfigError(f"lslo: direction {a}-{b} has {len(rows)} training pairs, fewer than "
                                  f"pairs_high + base pairs = {s['pairs_high'] + m} (raise world.translation_train)")
            base += rows[s["pairs_high"]:s["pairs_high"] + m]
    kept: dict = {}
    for p in test:
        rows = kept.setdefault((p.src_lang, p.tgt_lang), [])
        if len(rows) < s["test_per_direction"]:
            rows.append(p)
    return {"finetune": finetune, "base": base, "test": [p for rows in kept.values() for p in rows]}


def sentence_chrf(hypotheses: list[str], references: list[str]) -> list[float]:
    """sacrebleu's sentence-level chrF (0-100) of each hypothesis against its reference."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return [float(metric.sentence_score(h, [r]).score) for h, r in zip(hypotheses, references)]


def copy_scores(test: list) -> dict:
    """The copy-the-source baseline: ``{"src-tgt": [sentence chrF of the source as hypothesis]}``."""
    out: dict = {}
    for p in test:
        out.setdefault(f"{p.src_lang}-{p.tgt_lang}", []).append(sentence_chrf([p.src], [p.tgt])[0])
    return out


# --------------------------------------------------------------------------------------------
# the steps' work


def _data(world_dir: Path, s: dict) -> tuple[str, list[str], dict]:
    from xlt.demo.transfer import world_info
    from xlt.formats import read_records

    info = world_info(world_dir)
    source = info["source_language"]
    langs = [l["code"] for l in info["languages"]]
    data = split_pairs(read_records(world_dir / "translation" / "train.jsonl", "parallel"),
                       read_records(world_dir / "translation" / "test.jsonl", "parallel"), s, source)
    return source, langs, data


def _common(s: dict, seed: int, device: str) -> dict:
    return dict(disable_tqdm=True, logging_steps=50.0, save_strategy="no", report_to="none",
                per_device_train_batch_size=s["batch_size"], max_source_length=48, max_target_length=48,
                seed=seed, use_cpu=device == "cpu")


def _score(model_dir: Path, test: list, s: dict, device: str) -> dict:
    """Corpus chrF per direction and sentence chrF per item (``{"src-tgt": [...]}``, test order)."""
    from sacrebleu.metrics import CHRF

    from xlt.eval.mt import evaluate

    evaluation = evaluate(test, {"system": model_dir}, metrics={"chrf": CHRF()}, tiers=s["tiers"], device=device,
                          num_beams=s["num_beams"], max_new_tokens=s["max_new_tokens"], batch_size=64,
                          progress=False, wrong_language="off")  # artificial languages: no identifier knows them
    chrf = {f"{a}-{b}": v for (a, b), v in sorted(evaluation.scores("chrf")["system"].items())}
    items: dict = {}
    rows = evaluation.hypotheses["system"]
    for row, value in zip(rows, sentence_chrf([r["hyp"] for r in rows], [r["ref"] for r in rows])):
        items.setdefault(f"{row['src_lang']}-{row['tgt_lang']}", []).append(value)
    return {"chrf": chrf, "items": items}


def base_run(world_dir: Path, out: Path, s: dict, *, seed: int, device: str) -> dict:
    """A tiny M2M-100 (an NLLB-style tokenizer over the world's corpus) trained with full
    fine-tuning on the source-centric base pairs, saved to ``out`` and scored on the test items."""
    import time

    from xlt.demo.experiments import _train_lslo
    from xlt.formats import write_jsonl
    from xlt.lslo import LSLoDataArguments
    from xlt.lslo.trainer import LSLoTrainingConfig
    from xlt.testing import save_tiny_model, train_nllb_tokenizer

    start, cpu = time.perf_counter(), time.process_time()
    source, langs, data = _data(world_dir, s)
    work = out.parent / f".{out.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = []
    for lang in langs:
        corpus += (world_dir / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:1500]
    tokenizer = train_nllb_tokenizer(langs, corpus, vocab_size=1000)
    save_tiny_model("m2m100", work / "random", tokenizer=tokenizer, hidden_size=s["model"]["hidden"],
                    num_layers=s["model"]["layers"], intermediate_size=2 * s["model"]["hidden"], max_positions=128,
                    seed=seed)
    write_jsonl(work / "base.jsonl", data["base"], overwrite=True)
    _train_lslo(LSLoTrainingConfig(output_dir=str(out), full_finetune=True, max_steps=s["base_steps"],
                                   learning_rate=s["base_lr"], lr_scheduler_type="linear",
                                   warmup_steps=float(min(20, s["base_steps"] // 5)),
                                   **_common(s, seed, device)),
                LSLoDataArguments(model=str(work / "random"), train_file=str(work / "base.jsonl"), overwrite=True))
    shutil.rmtree(work, ignore_errors=True)
    return {"source": source, "languages": langs, "base_pairs": len(data["base"]),
            "finetune_pairs": len(data["finetune"]), "test": _score(out, data["test"], s, device),
            "copy": copy_scores(data["test"]), "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu}


def adapter_parameters(directory: Path) -> int:
    """Parameters stored in an LSLo adapter (``lslo_model.safetensors``) or a model directory."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for name in handle.keys():
                total += _numel(handle.get_slice(name).get_shape())
    return total


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def arm_config(arm: str, out: Path, s: dict, *, seed: int, device: str):
    """The :class:`~xlt.lslo.trainer.LSLoTrainingConfig` of one arm: the same seed, data order,
    epochs and optimizer for every arm (the trainer's defaults: the paper's Adam betas, label
    smoothing and sampling temperature); the arms differ only in what trains."""
    from xlt.lslo.trainer import LSLoTrainingConfig

    options = dict(tiers=[f"{l}={t}" for l, t in s["tiers"].items()],
                   tier_ranks=[f"{t}={r}" for t, r in s["tier_ranks"].items()],
                   num_train_epochs=float(s["epochs"]), learning_rate=s["lr"], lr_scheduler_type="constant",
                   warmup_steps=0.0, **_common(s, seed, device))
    if arm == "full":
        options.update(full_finetune=True, learning_rate=s["full_lr"])
        for key in ("tiers", "tier_ranks"):
            options.pop(key)
    elif arm == "shared":
        options.update(shared=True)
    elif arm == "lslo-pruned":
        options.update(pruning=s["pruning"], pruning_t1=s["pruning_t1"], pruning_t2=s["pruning_t2"],
                       target_pruning_ratio=s["target_pruning_ratio"])
    return LSLoTrainingConfig(output_dir=str(out), **options)


def arm_run(arm: str, base_dir: Path, world_dir: Path, out: Path, s: dict, *, seed: int, device: str) -> dict:
    """Fine-tune the base model with one arm on every direction at once (the same rows in the
    same order for every arm: one seeded sampler), score it on the test items, delete it."""
    import time

    from xlt.demo.experiments import _train_lslo
    from xlt.errors import ConfigError
    from xlt.formats import write_jsonl
    from xlt.lslo import LSLoDataArguments

    if arm not in ARMS:
        raise ConfigError(f"unknown LSLo arm {arm!r} (arms: {', '.join(ARMS)})")
    start, cpu = time.perf_counter(), time.process_time()
    _, _, data = _data(world_dir, s)
    work = out.parent / f".{out.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_jsonl(work / "finetune.jsonl", data["finetune"], overwrite=True)
    _train_lslo(arm_config(arm, out, s, seed=seed, device=device),
                LSLoDataArguments(model=str(base_dir), train_file=str(work / "finetune.jsonl"), overwrite=True))
    trainable = adapter_parameters(out)
    if arm == "full":
        from xlt.models import load_model

        model = load_model(out, kind="auto", dtype="float32", device="cpu")
        trainable = sum(p.numel() for p in model.parameters())
    pruning = None
    if arm == "lslo-pruned":  # surviving B entries per language and layer, and the schedule as it ran
        from xlt.io import read_json

        pruning = read_json(out / "pruning_report.json")
    test = _score(out, data["test"], s, device)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return {"arm": arm, "trainable_parameters": trainable, "pruning": pruning, "test": test,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu}


# --------------------------------------------------------------------------------------------
# the experiment module's contract (xlt.demo.full.EXPERIMENT_MODULES)


def runs(fs: dict) -> list[dict]:
    """The runs of this experiment: the full demo's :func:`~xlt.demo.full.units`, the first
    ``units_per_world`` of each world (world, base-model and fine-tuning seeds all vary)."""
    from xlt.demo.full import units

    return [u for u in units(fs) if u["base"] < fs[KEY]["units_per_world"]]


def steps(root: Path, fs: dict, *, device: str, step_class) -> list:
    """``full-lslo-world-w<W>`` (the 8-language world), ``full-lslo-base-<run>`` (the base
    model, scored), ``full-lslo-<arm>-<run>`` (one arm fine-tuned and scored)."""
    from xlt.demo.transfer import make_world

    s = fs[KEY]
    out = [step_class(f"full-lslo-world-w{w}", f"LSLo experiment: 8-language world {w}",
                      lambda w=w: make_world(world_path(root, w), {**s["world"], "seed": w}))
           for w in fs["world_seeds"]]
    for u in runs(fs):
        out.append(step_class(
            f"full-lslo-base-{u['name']}", f"LSLo experiment: base model, {u['name']}",
            lambda u=u: base_run(world_path(root, u["world"]), base_path(root, u["name"]), s, seed=u["base"],
                                 device=device),
            needs=(f"full-lslo-world-w{u['world']}",)))
        for arm in ARMS:
            out.append(step_class(
                f"full-lslo-{arm}-{u['name']}", f"LSLo experiment: {arm}, {u['name']}",
                lambda u=u, arm=arm: arm_run(arm, base_path(root, u["name"]), world_path(root, u["world"]),
                                             root / "lslo" / f"{arm}-{u['name']}", s, seed=u["seed"],
                                             device=device),
                needs=(f"full-lslo-base-{u['name']}",)))
    return out


def tier_items(items: dict, tiers: dict, tier: str | None) -> list[float]:
    """Per-item scores of the directions *into* a language of ``tier`` (None: every direction),
    directions in sorted order, items in test order: one run's paired unit."""
    return [v for d in sorted(items) if tier is None or tiers[d.split("-")[1]] == tier for v in items[d]]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def reproduction(fs: dict, results: dict) -> dict | None:
    """``lslo`` (LSLo against the shared LoRA on the low tier's sentence chrF), ``lslo (pruned)``
    (the same with pruning) and ``lslo vs full fine-tuning`` (pruned LSLo against full
    fine-tuning on every direction, the abstract's headline); None while a step is missing."""
    from xlt.demo.verdicts import precondition, reproduce

    s = fs[KEY]
    rs = runs(fs)
    arms = {(arm, u["name"]): results.get(f"full-lslo-{arm}-{u['name']}") for u in rs for arm in ARMS}
    bases = {u["name"]: results.get(f"full-lslo-base-{u['name']}") for u in rs}
    if not rs or any(v is None for v in [*arms.values(), *bases.values()]):
        return None
    tiers, margin = s["tiers"], s["precondition_margin"]

    def over_copy(who: str, tier: str | None, what: str, directions=None):
        """The worst run's margin of ``who``'s mean sentence chrF over copying the source."""
        gaps = []
        for u in rs:
            step = bases[u["name"]] if who == "base" else arms[(who, u["name"])]
            items = {d: v for d, v in step["test"]["items"].items() if directions is None or directions(d)}
            copy = {d: v for d, v in bases[u["name"]]["copy"].items() if d in items}
            gaps.append((_mean(tier_items(items, tiers, tier)), _mean(tier_items(copy, tiers, tier)), u["name"]))
        value, copy, name = min(gaps, key=lambda g: g[0] - g[1])
        return precondition(f"{what} beats copying the source", value, copy + margin, scale=1.0, unit="chrF",
                            text=(f"mean sentence chrF of {what} (worst run, {name}) must exceed that of the "
                                  f"source sentence copied as the translation by {margin:g} chrF"))

    source = bases[rs[0]["name"]]["source"]
    base_ok = over_copy("base", None, "the base model on its source-centric directions",
                        directions=lambda d: source in d.split("-"))

    def compare(method: str, baseline: str, tier: str | None, claim: str, baseline_ok):
        where = f"the directions into the {tier} tier's languages" if tier else "every direction"
        return reproduce(method=method, baseline=baseline, metric=f"sentence chrF on {where} ({claim})",
                         prediction="increase",
                         a=[tier_items(arms[(baseline, u["name"])]["test"]["items"], tiers, tier) for u in rs],
                         b=[tier_items(arms[(method, u["name"])]["test"]["items"], tiers, tier) for u in rs],
                         preconditions=[baseline_ok, base_ok], settings_chosen=s["chosen"], scale=1.0, unit="chrF")

    shared_ok = over_copy("shared", "low", "the shared LoRA on the low tier")
    full_ok = over_copy("full", None, "full fine-tuning on every direction")
    return {"lslo": compare("lslo", "shared", "low", "the paper's claim", shared_ok),
            "lslo (pruned)": compare("lslo-pruned", "shared", "low", "with the paper's pruning", shared_ok),
            "lslo vs full fine-tuning": compare("lslo-pruned", "full", None, "the abstract's headline", full_ok)}


def summary(fs: dict, results: dict) -> dict:
    """Per arm (and the base model and the copy baseline): corpus chrF per direction and its
    means by target tier, over the runs that finished (mean and sample sd); trainable parameters."""
    import statistics

    s = fs[KEY]
    tiers = s["tiers"]
    systems: dict = {}
    params: dict = {}
    pruned: dict = {}
    for u in runs(fs):
        base = results.get(f"full-lslo-base-{u['name']}")
        if base is None:
            continue
        per = {"base": base["test"]["chrf"],
               "copy the source (mean sentence chrF)": {d: _mean(v) for d, v in base["copy"].items()}}
        for arm in ARMS:
            step = results.get(f"full-lslo-{arm}-{u['name']}")
            if step is not None:
                per[arm] = step["test"]["chrf"]
                params.setdefault(arm, step["trainable_parameters"])
                if step.get("pruning"):
                    pruned.setdefault(u["name"], {k: step["pruning"][k] for k in ("b_surviving", "b_parameters")})
        for name, chrf in per.items():
            systems.setdefault(name, {})[u["name"]] = chrf

    def stats(values: list[float]) -> dict:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}

    table: dict = {}
    for name, by_run in systems.items():
        directions = sorted({d for chrf in by_run.values() for d in chrf})
        row = {"directions": {d: stats([c[d] for c in by_run.values() if d in c]) for d in directions},
               "tiers": {}, "runs": sorted(by_run)}
        for tier in (*TIERS, "all"):
            per_run = [[v for d, v in c.items() if tier == "all" or tiers[d.split("-")[1]] == tier]
                       for c in by_run.values()]
            per_run = [_mean(v) for v in per_run if v]
            row["tiers"][tier] = stats(per_run) if per_run else {"mean": None, "std": None}
        table[name] = row
    return {"systems": table, "trainable_parameters": params, "pruned_b": pruned, "tiers": tiers}


def report(out: Path, fs: dict, results: dict) -> tuple[list[str], dict]:
    """The experiment's report section: chrF by target tier and per direction, parameter counts,
    and a bar plot of the tiers (``full_lslo.png``)."""
    s = fs[KEY]
    data = summary(fs, results)
    lines = ["### LSLo reproduction: chrF by resource tier\n"]
    if not data["systems"]:
        return lines + ["No run has finished.\n"], data

    def fmt(x: dict) -> str:
        if x["mean"] is None:
            return "—"
        return f"{x['mean']:.1f}" + (f" ± {x['std']:.1f}" if x["std"] is not None else "")

    names = list(data["systems"])
    lines.append(f"Corpus chrF per direction, averaged over the directions into each tier's languages; mean ± "
                 f"sample sd over runs ({', '.join(data['systems'][names[0]]['runs'])}). Tiers: "
                 + ", ".join(f"{t} = {', '.join(f'`{l}`' for l, x in s['tiers'].items() if x == t)}"
                             for t in TIERS) + ".\n")
    lines.append("| system | trainable parameters | " + " | ".join(TIERS) + " | all |")
    lines.append("|---|---:|" + "---:|" * (len(TIERS) + 1))
    for name, row in data["systems"].items():
        p = data["trainable_parameters"].get(name)
        lines.append(f"| {name} | {'' if p is None else f'{p:,}'} | "
                     + " | ".join(fmt(row["tiers"][t]) for t in (*TIERS, "all")) + " |")
    lines.append("")
    lines.append("Trainable parameters: LSLo's A and B of every language (pruned LSLo counts its zeroed B entries "
                 "too), the shared LoRA's A and B (rank = the sum of LSLo's ranks), every weight of the model for "
                 "full fine-tuning.")
    for name, b in data["pruned_b"].items():
        lines.append(f"Pruned LSLo, run {name}: {b['b_surviving']:,} of {b['b_parameters']:,} B entries survive "
                     f"({100 * b['b_surviving'] / b['b_parameters']:.1f} %).")
    lines.append("")
    from xlt.eval.mt import format_direction_table

    for name, row in data["systems"].items():
        scores = {tuple(d.split("-")): v["mean"] for d, v in row["directions"].items()}
        lines += [f"Corpus chrF per direction, {name} (rows: source, columns: target; mean over runs):\n",
                  "```", format_direction_table(scores, s["tiers"]), "```", ""]
    if _plot(out / "full_lslo.png", data):
        lines.append("![LSLo reproduction: chrF by tier and system](full_lslo.png)\n")
    return lines, data


def _plot(path: Path, data: dict) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from xlt.io import atomic_file

    names = list(data["systems"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        tiers = data["systems"][name]["tiers"]
        xs = [i + k * width for i in range(len(TIERS) + 1)]
        ax.bar(xs, [tiers[t]["mean"] or 0 for t in (*TIERS, "all")], width,
               yerr=[tiers[t]["std"] or 0 for t in (*TIERS, "all")], label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(TIERS) + 1)], [*TIERS, "all"])
    ax.set_ylabel("chrF (directions into the tier)")
    ax.set_title("LSLo reproduction (error bars: sd over runs)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(path, mode="wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return True
