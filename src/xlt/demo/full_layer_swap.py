"""``xlt demo --full``'s layer-swapping experiment (Bandarkar et al., ICLR 2025).

Per run of :func:`xlt.demo.full.units`, from the run's base model:

* the *task expert*: the mid-align experiment's ``sft`` arm (full fine-tuning on the source's
  ``polarity`` data), whose model directory the full demo keeps for this step; the very model
  whose scores the mid-align table reports, so no second task budget is spent. A resumed demo
  whose ``sft`` step ran without this experiment has no directory left: the arm is then trained
  again here, with its settings and seed;
* per target language a *language expert*: full fine-tuning as a causal LM with the loss on every
  token of the first ``lines`` lines of that language's corpus (a small budget, no task data);
* per target the *swapped* model: the task expert with its bottom ``bottom`` and top ``top``
  blocks (and the tensors outside the blocks by the ``outer`` rule) from that language's expert,
  by :func:`xlt.merge.layer_swap_directories` (``xlt merge layer-swap``).

All three are scored zero-shot on the same target test items (:func:`xlt.demo.full.evaluate_items`),
so the comparison is paired by run and by item. Settings were chosen on world 0 only (see
``full_settings()["chosen"]["layer_swap"]`` and docs/demo.md).
"""

from __future__ import annotations

from pathlib import Path

ARMS = ("task expert", "language expert", "swapped")


def task_expert_dir(root: Path, unit: dict) -> Path:
    """Where the mid-align experiment's ``sft`` arm leaves its model for this experiment."""
    return root / "models" / f"sft-{unit['name']}"


def train_language_expert(base_dir: Path, world_dir: Path, lang: str, out: Path, s: dict, *, seed: int,
                          device: str) -> dict:
    """Full fine-tuning of the base model as a causal LM on ``s["lines"]`` lines of ``lang``'s corpus
    (loss on every token); the model and the base tokenizer are saved to ``out``."""
    from xlt.align.data import TaskText
    from xlt.demo.transfer import _run_align
    from xlt.models import load_tokenizer

    lines = (world_dir / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:s["lines"]]
    texts = [TaskText("", line, append_eos=False) for line in lines]  # the loss on every token
    summary = _run_align("sft", base_dir, texts, [], out,
                         {"steps": s["steps"], "batch_size": s["batch_size"], "lr": s["lr"],
                          "warmup": s["warmup"], "use_lora": False, "lora_r": 8},
                         seed=seed, device=device, progress=False)
    load_tokenizer(base_dir).save_pretrained(out)
    return {"lines": len(lines), "train_loss": summary["train_loss"], "steps": summary["steps"]}


def layer_swap_run(task_dir: Path, base_dir: Path, world_dir: Path, work: Path, s: dict, *, seed: int,
                   device: str, split: str = "test") -> dict:
    """One run: the language experts, the swapped models, and every arm's per-item scores.

    ``s``: ``bottom``, ``top``, ``outer`` (the swap) and ``lines``, ``steps``, ``lr``,
    ``batch_size``, ``warmup`` (the language experts), ``test_limit``. Returns ``{"test": {arm:
    {lang: evaluate_items row}}, "swapped_source": {target: row}, "language_experts": {lang:
    summary}, "sources": {"blocks", "outer"}}`` (the swap's report: which expert each block and
    outer tensor came from): the task expert on every language (its source score is a
    precondition), the language experts and the swapped models on their target, and each swapped
    model also on the source (did the swap keep the task?). ``work`` is removed at the end.
    """
    import shutil

    from xlt.demo.full import evaluate_items
    from xlt.demo.transfer import world_info
    from xlt.merge import layer_swap_directories

    info = world_info(world_dir)
    source = info["source_language"]
    targets = [l["code"] for l in info["languages"] if l["code"] != source]
    work.mkdir(parents=True, exist_ok=True)
    test = {"task expert": evaluate_items(task_dir, world_dir, split=split, device=device, limit=s["test_limit"]),
            "language expert": {}, "swapped": {}}
    experts, kept, blocks = {}, {}, None
    for k, lang in enumerate(targets):
        expert = work / f"language-{lang}"
        experts[lang] = train_language_expert(base_dir, world_dir, lang, expert, s, seed=seed + 100 + k,
                                              device=device)
        test["language expert"][lang] = evaluate_items(expert, world_dir, split=split, device=device,
                                                       limit=s["test_limit"], langs=[lang])[lang]
        swapped = work / f"swapped-{lang}"
        report = layer_swap_directories(task_dir, expert, swapped, bottom=s["bottom"], top=s["top"],
                                        outer=s["outer"], overwrite=True)
        blocks = {"blocks": report["blocks"], "outer": report["outer_tensors"]}
        rows = evaluate_items(swapped, world_dir, split=split, device=device, limit=s["test_limit"],
                              langs=[source, lang])
        test["swapped"][lang], kept[lang] = rows[lang], rows[source]
        shutil.rmtree(expert, ignore_errors=True)
        shutil.rmtree(swapped, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return {"bottom": s["bottom"], "top": s["top"], "outer": s["outer"], "sources": blocks,
            "language_experts": experts, "test": test, "swapped_source": kept}


def layer_swap_steps(fs: dict, root: Path, world_dir, base_dir, *, device: str, step_class) -> list:
    """The steps ``full-layer-swap-<run>``, each after its run's ``sft`` arm (its task expert).

    ``world_dir(w)`` / ``base_dir(w, b)``: the full demo's paths."""
    import shutil

    from xlt.demo.full import train_arm, units

    steps = []
    for u in units(fs):
        def run(u=u) -> dict:
            task_dir = task_expert_dir(root, u)
            base, world = base_dir(u["world"], u["base"]), world_dir(u["world"])
            retrained = not (task_dir / "config.json").is_file()
            if retrained:  # a resumed demo whose sft step ran without this experiment
                train_arm("sft", base, world, task_dir, fs["mid_align"], seed=u["seed"], device=device)
            out = layer_swap_run(task_dir, base, world, root / "models" / f"layer-swap-{u['name']}",
                                 fs["layer_swap"], seed=u["seed"], device=device)
            shutil.rmtree(task_dir, ignore_errors=True)
            return {"unit": u, "task_expert_retrained": retrained, **out}
        steps.append(step_class(f"full-layer-swap-{u['name']}", f"layer-swap experiment, {u['name']}", run,
                                needs=(f"full-base-w{u['world']}-b{u['base']}", f"full-mid-align-sft-{u['name']}")))
    return steps


# --------------------------------------------------------------------------------------------
# from step results to verdicts and the table


def _steps(fs: dict, results: dict) -> dict:
    from xlt.demo.full import units

    return {u["name"]: results.get(f"full-layer-swap-{u['name']}") for u in units(fs)}


def layer_swap_reproduction(fs: dict, results: dict) -> dict | None:
    """``layer swap`` (the swapped model against the task expert on target-language polarity
    accuracy, the paper's claim) and ``layer swap vs language expert``; None while a step is
    missing. Preconditions: the task expert learned the source task in every run; every swapped
    model kept it (its source accuracy passes the same test: a swap that lost the task cannot
    transfer it, and one answer to every item would score the majority rate whatever the
    language); every base model beats a unigram model."""
    from xlt.demo.full import _unigram_precondition, units
    from xlt.demo.verdicts import learned_source_task, reproduce

    runs = units(fs)
    steps = _steps(fs, results)
    bases = {(u["world"], u["base"]): results.get(f"full-base-w{u['world']}-b{u['base']}") for u in runs}
    worlds = [results.get(f"full-world-w{w}") for w in fs["world_seeds"]]
    if any(v is None for v in [*steps.values(), *bases.values(), *worlds]):
        return None
    source = worlds[0]["source_language"]
    s = fs["layer_swap"]
    checks = [learned_source_task(step["test"]["task expert"][source]["accuracy"],
                                  step["test"]["task expert"][source]["gold"],
                                  margin=s["precondition_margin"], name="the task expert learned the source task",
                                  who=f"the task expert (run {name})")
              for name, step in steps.items()]
    kept = [learned_source_task(row["accuracy"], row["gold"], margin=s["precondition_margin"],
                                name="the swapped model kept the source task",
                                who=f"the swapped model (run {name}, {lang}'s expert)")
            for name, step in steps.items() for lang, row in sorted(step["swapped_source"].items())]
    worst = [min(c, key=lambda p: p.value - p.threshold) for c in (checks, kept)]
    preconditions = [*worst, _unigram_precondition(bases)]

    def items(step: dict, arm: str) -> list[int]:
        return [c for lang in sorted(step["test"][arm]) if lang != source for c in step["test"][arm][lang]["correct"]]

    def compare(baseline: str, claim: str):
        return reproduce(method="layer swap", baseline=baseline, metric=f"target-language polarity accuracy ({claim})",
                         prediction="increase", a=[items(steps[u["name"]], baseline) for u in runs],
                         b=[items(steps[u["name"]], "swapped") for u in runs], preconditions=preconditions,
                         settings_chosen=fs["chosen"]["layer_swap"])

    return {"layer swap": compare("task expert", "the paper's claim"),
            "layer swap vs language expert": compare("language expert", "the task expert's blocks carry the task")}


def layer_swap_table(fs: dict, results: dict) -> dict:
    """Per arm and target language over the runs that finished: polarity test accuracy (mean,
    sample standard deviation, per-run values) and ``one_answer``, the mean share of the arm's
    most frequent answer (1.0: a constant answer, which scores the items' majority-class rate)."""
    import statistics

    acc: dict = {}
    top: dict = {}
    for name, step in _steps(fs, results).items():
        if step is None:
            continue
        for arm in ARMS:
            for lang in sorted(step["test"]["swapped"]):
                row = step["test"][arm][lang]
                answers = [g if c else 1 - g for c, g in zip(row["correct"], row["gold"])]  # two labels, 0 and 1
                acc.setdefault(arm, {}).setdefault(lang, {})[name] = row["accuracy"]
                top.setdefault(arm, {}).setdefault(lang, []).append(
                    max(answers.count(0), answers.count(1)) / len(answers))
    return {arm: {lang: {"mean": statistics.fmean(v.values()),
                         "std": statistics.stdev(v.values()) if len(v) > 1 else None, "per_run": v,
                         "one_answer": statistics.fmean(top[arm][lang])}
                  for lang, v in sorted(per_lang.items())}
            for arm, per_lang in acc.items()}
