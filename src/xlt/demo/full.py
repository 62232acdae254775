"""``xlt demo --full``: powered, controlled reproduction experiments in the synthetic world.

The units of randomness are *runs*: a world seed, a base-model seed and a fine-tuning seed
together (:func:`units`); every arm of an experiment is trained once per unit, so the arms of a
unit differ only in the method, and the comparison is paired by unit and, within a unit, by
test item (the same items, in the same order, for every arm).

Mid-align (Liu & Niehues 2025). Every arm runs the same alternate schedule with separate
streams (:class:`~xlt.align.data.StreamsDataset`): two micro-batches per optimizer step, the
first a task micro-batch, the second a micro-batch of source-target parallel pairs, the streams
ordered by one seeded sampler. So every arm sees the very same task micro-batches in the same
order, with the same loss scaling, and only the pair micro-batch's objective differs
(:class:`ArmTrainer`):

* ``sft``: the pair micro-batch contributes nothing (no forward, a zero loss): plain SFT on the
  task micro-batches, scaled as in the other arms;
* ``parallel-lm``: the control for the extra data: causal-LM loss on both sentences of each
  pair (the same parallel text, the same number of micro-batches, no contrastive objective);
* ``mid-align``: the paper's contrastive loss at the middle layer; ``align-first`` and
  ``align-last``: the same loss at the first and at the last layer (the paper's layer claim).

Settings were chosen on a tuning world (world seed 0, ``xlt demo``'s world) that the full demo
never reports; the reported worlds (seeds 1 and 2 by default) were never used to choose
anything. See docs/demo.md.
"""

from __future__ import annotations

import math
from pathlib import Path

ARMS = ("sft", "parallel-lm", "mid-align", "align-first", "align-last")

#: Experiments that live in modules of their own, as ``(settings key, module name)``, run when
#: their key is in the full settings. Each module provides:
#:
#: * ``settings(quick: bool) -> dict``: the experiment's settings, with a ``"chosen"`` entry (how
#:   every setting was chosen, printed in the report);
#: * ``steps(root: Path, fs: dict, *, device: str, step_class) -> list``: its steps (names start
#:   with ``full-<key>-``; the shared worlds and base models are :func:`world_path` and
#:   :func:`base_path`, made by the steps ``full-world-w<W>`` and ``full-base-w<W>-b<B>``);
#: * ``reproduction(fs: dict, results: dict) -> dict | None``: ``{key: Reproduction}``, None while
#:   a step is missing;
#: * ``report(out: Path, fs: dict, results: dict) -> tuple[list[str], dict]``: markdown lines for
#:   the report (may write plots into ``out``) and a JSON-ready summary (``results.json`` under
#:   ``full_<key>``).
EXPERIMENT_MODULES: tuple[tuple[str, str], ...] = (
    ("afp", "xlt.demo.full_afp"),
    ("lslo", "xlt.demo.full_lslo"),
    ("cloned", "xlt.demo.full_cloned"),
)


def experiment_modules(fs: dict) -> list[tuple[str, object]]:
    """The registered experiment modules whose key is in the full settings ``fs``, imported."""
    from importlib import import_module

    return [(key, import_module(name)) for key, name in EXPERIMENT_MODULES if key in fs]


def world_path(root: Path, w: int) -> Path:
    """The directory of world ``w`` of the full demo (``root``: the demo's ``out / "full"``)."""
    return root / f"world-w{w}"


def base_path(root: Path, w: int, b: int) -> Path:
    """The base model pre-trained with seed ``b`` on world ``w``."""
    return root / "models" / f"base-w{w}-b{b}"


def units(settings: dict) -> list[dict]:
    """The runs of every experiment: ``{"world": w, "base": b, "seed": s, "name": ...}``.

    World seeds times ``units_per_world`` runs; run ``k`` of a world uses base-model seed ``k``
    and fine-tuning seed ``k``, so world, base and fine-tuning randomness all vary.
    """
    out = []
    for w in settings["world_seeds"]:
        for k in range(settings["units_per_world"]):
            out.append({"world": w, "base": k, "seed": k, "name": f"w{w}-b{k}-s{k}"})
    return out


# --------------------------------------------------------------------------------------------
# training: every arm on one schedule


def arm_trainer_class():
    """The :class:`ArmTrainer` class (built lazily: importing it loads transformers)."""
    import torch

    from xlt.align.trainer import AlignTrainer

    class ArmTrainer(AlignTrainer):
        """An :class:`~xlt.align.trainer.AlignTrainer` whose pair micro-batches take the arm's
        objective: ``contrastive`` (the trainer's own), ``none`` (a zero loss, no forward) or
        ``lm`` (the mean token cross-entropy of the anchor and the candidate sentences)."""

        pair_objective = "contrastive"

        def _alignment_loss(self, model, pair: dict, training: bool):
            if self.pair_objective == "contrastive":
                return super()._alignment_loss(model, pair, training)
            if self.pair_objective == "none":
                device = pair["anchor_input_ids"].device
                return torch.zeros((), device=device, requires_grad=True)
            losses = []
            for side in ("anchor", "candidate"):
                ids, mask = pair[f"{side}_input_ids"], pair[f"{side}_attention_mask"]
                labels = ids.masked_fill(mask == 0, -100)
                losses.append(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
            return (losses[0] + losses[1]) / 2

    return ArmTrainer


def train_arm(arm: str, base_dir: Path, world_dir: Path, out: Path, s: dict, *, seed: int, device: str) -> dict:
    """Fine-tune the base model with one arm of the mid-align experiment; save the model to ``out``.

    ``s``: the experiment's settings (``steps``, ``batch_size``, ``lr``, ``warmup``, ``tasks``).
    """
    import torch

    from xlt.align.config import MidAlignConfig
    from xlt.align.data import AlignCollator, PairText, TaskText, build_dataset
    from xlt.demo.transfer import _pairs, _quiet_trainer, _task_texts, train_and_save, world_info
    from xlt.models import load_model, load_tokenizer, num_layers

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r} (arms: {', '.join(ARMS)})")
    info = world_info(world_dir)
    source = info["source_language"]
    targets = [l["code"] for l in info["languages"] if l["code"] != source]
    tasks = [TaskText(ex.prompt, ex.completion, append_eos=True)
             for ex in _task_texts(world_dir, "train", [source], s["tasks"])]
    # the mid-align paper's anchor side: the target sentence
    pairs = [PairText(p.tgt, p.src) for p in _pairs(world_dir, source, targets, "train")]
    tokenizer = load_tokenizer(base_dir, padding_side="right")
    model = load_model(base_dir, kind="causal", dtype="float32", device="cpu")
    model.config.use_cache = False
    layers = num_layers(model)
    layer = {"align-first": 1, "align-last": layers}.get(arm, max(1, layers // 2))
    cfg = MidAlignConfig(output_dir=str(out.parent / f".{out.name}.run"), max_steps=s["steps"],
                         per_device_train_batch_size=s["batch_size"], learning_rate=s["lr"],
                         lr_scheduler_type="cosine", warmup_steps=s["warmup"], seed=seed, data_seed=seed,
                         use_lora=False, max_length=64, logging_steps=max(1, s["steps"] // 5),
                         save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=device == "cpu",
                         dataloader_num_workers=0, gradient_accumulation_steps=2,
                         alternate_streams="separate", alignment_layer=layer,
                         alignment_weight=s["alignment_weight"], alignment_temperature=0.1)
    torch.manual_seed(seed)
    dataset = build_dataset(tokenizer, tasks, pairs, max_length=cfg.max_length, seed=seed, streams=True)
    collator = AlignCollator(tokenizer.pad_token_id, pad_to_multiple_of=cfg.pad_to_multiple_of)
    trainer = arm_trainer_class()(model=model, args=cfg, train_dataset=dataset, data_collator=collator,
                                  processing_class=tokenizer)
    trainer.pair_objective = {"sft": "none", "parallel-lm": "lm"}.get(arm, "contrastive")
    _quiet_trainer(trainer)
    result, task_loss, pair_loss = train_and_save(trainer, out, tokenizer)
    return {"arm": arm, "train_loss": result.training_loss, "steps": trainer.state.global_step,
            "layer": layer if trainer.pair_objective == "contrastive" else None, "task_examples": len(tasks),
            "pairs": len(pairs), "final_task_loss": task_loss, "final_pair_loss": pair_loss}


# --------------------------------------------------------------------------------------------
# evaluation: per-item scores, paired across arms


def evaluate_items(model_dir: Path, world_dir: Path, *, split: str, device: str, limit: int | None = None,
                   langs: list[str] | None = None) -> dict:
    """Zero-shot polarity accuracy of the model in ``model_dir``, per language and per item.

    Returns ``{lang: {"accuracy", "correct": [0/1 per item], "gold": [label per item],
    "majority_rate"}}``: the first ``limit`` items of each language (the same meanings, in the
    same order, in every language and for every model), scored by the log-likelihood of the two
    label words (``xlt eval icl``'s lm-eval rule); ``langs``: only these languages (default: all).
    """
    from xlt.demo.transfer import CLASSIFICATION_TASK
    from xlt.demo.verdicts import majority_rate
    from xlt.eval.icl import evaluate_icl
    from xlt.formats import read_records
    from xlt.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, kind="causal", dtype="float32", device=device)
    model.eval()
    items = read_records(world_dir / "tasks" / CLASSIFICATION_TASK / f"{split}.choice.jsonl", "choice")
    by_lang: dict[str, list] = {}
    for item in items:
        if langs is not None and item.lang not in langs:
            continue
        if limit is None or len(by_lang.setdefault(item.lang, [])) < limit:
            by_lang.setdefault(item.lang, []).append(item)
    _, results = evaluate_icl(model, tokenizer, test=by_lang, scoring="lm-eval", batch_size=64)
    out: dict[str, dict] = {}
    for r in results:
        row = out.setdefault(r.lang, {"correct": [], "gold": []})
        row["correct"].append(int(r.correct))
        row["gold"].append(int(r.gold))
    for row in out.values():
        row["accuracy"] = sum(row["correct"]) / len(row["correct"])
        row["majority_rate"] = majority_rate(row["gold"])
    return out


# --------------------------------------------------------------------------------------------
# the base model's precondition: better than a unigram model


def unigram_check(base_dir: Path, world_dir: Path, *, device: str, limit: int = 200) -> dict:
    """Mean negative log-likelihood per predicted token (nats) on held-out text (the translation
    test sentences, every language: meanings never in the pre-training corpus) of the base model
    and of a unigram model fitted on the pre-training corpus (add-one smoothing), scored on the
    same tokens (every token after the first of each sentence)."""
    from collections import Counter

    import torch

    from xlt.demo.transfer import world_info
    from xlt.formats import read_records
    from xlt.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    model = load_model(base_dir, kind="causal", dtype="float32", device=device)
    model.eval()
    langs = [l["code"] for l in world_info(world_dir)["languages"]]
    counts: Counter = Counter()
    for lang in langs:
        lines = (world_dir / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    total, vocab = sum(counts.values()), len(tokenizer)
    sentences = sorted({p.tgt for p in read_records(world_dir / "translation" / "test.jsonl", "parallel")})[:limit]
    lm_nll = uni_nll = 0.0
    n = 0
    with torch.no_grad():
        for text in sentences:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) < 2:
                continue
            x = torch.tensor([ids], device=device)
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)
            lm_nll -= float(logp.gather(1, x[0, 1:, None]).sum())
            uni_nll -= sum(math.log((counts[t] + 1) / (total + vocab)) for t in ids[1:])
            n += len(ids) - 1
    return {"base_nll": lm_nll / n, "unigram_nll": uni_nll / n, "tokens": n}


# --------------------------------------------------------------------------------------------
# AdaMergeX: one task adapter, reference adapters per language, merges scored per item


def adamergex_run(base_dir: Path, world_dir: Path, work: Path, s: dict, *, seed: int, device: str) -> dict:
    """One run of the AdaMergeX experiment (Zhao et al. 2024).

    A LoRA task adapter on the source's ``polarity`` data; a LoRA reference adapter per language,
    causal LM with the loss on every token of ``ref_lines`` lines of that language's corpus; then
    per target, scored on the same test items: the task adapter alone, task arithmetic (task +
    t * target reference) and AdaMergeX (task + t * (target reference - source reference), the
    exact product-space rule of ``xlt merge adamergex``), at the fixed ``t`` (not tuned).
    """
    import shutil
    from types import SimpleNamespace

    from xlt.demo.transfer import CLASSIFICATION_TASK, source_task_examples, train_lora_on_examples, world_info
    from xlt.merge import adamergex, read_adapter
    from xlt.merge.adamergex import merge_lora
    from xlt.merge.selection import merge_into_base
    from xlt.models import load_model, load_tokenizer

    info = world_info(world_dir)
    source = info["source_language"]
    targets = [l["code"] for l in info["languages"] if l["code"] != source]
    work.mkdir(parents=True, exist_ok=True)
    task_dir = work / "task"
    task_settings = {**s["task"], "lora_extra_targets": s["task"]["lora_extra_targets"]}
    train_lora_on_examples(base_dir, source_task_examples(world_dir, [CLASSIFICATION_TASK]), task_dir, task_settings,
                           steps=s["task"]["steps"], seed=seed, device=device, append_eos=True, progress=False)
    refs = {}
    for k, lang in enumerate([source] + targets):
        lines = (world_dir / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:s["ref_lines"]]
        examples = [SimpleNamespace(prompt="", completion=line) for line in lines]  # loss on every token
        out = work / f"ref-{lang}"
        train_lora_on_examples(base_dir, examples, out, {**s["task"], "lr": s["ref_lr"]}, steps=s["ref_steps"],
                               seed=seed + 100 + k, device=device, progress=False)
        refs[lang] = read_adapter(out)
    task = read_adapter(task_dir)
    tokenizer = load_tokenizer(base_dir)
    t = s["t"]

    def score(state, langs) -> dict:
        model = merge_into_base(load_model(base_dir, kind="causal", dtype="float32", device="cpu"), state)
        model_dir = work / "merged"
        shutil.rmtree(model_dir, ignore_errors=True)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        rows = evaluate_items(model_dir, world_dir, split="test", device=device, limit=s["test_limit"])
        shutil.rmtree(model_dir, ignore_errors=True)
        return {lang: rows[lang] for lang in langs}

    arms = {"task adapter alone": score(task, [source] + targets), "task arithmetic": {}, "adamergex": {}}
    for lang in targets:
        arms["task arithmetic"].update(score(merge_lora([task, refs[lang]], [1.0, t], mode="delta").adapter, [lang]))
        arms["adamergex"].update(score(adamergex(task, refs[lang], refs[source], t).adapter, [lang]))
    shutil.rmtree(work, ignore_errors=True)
    return {"t": t, "test": arms}


# --------------------------------------------------------------------------------------------
# the steps of the full demo


def full_steps(out: Path, fs: dict, *, device: str, step_class) -> list:
    """The full demo's steps (``step_class``: the runner's ``Step``), under ``out / "full"``."""
    import shutil

    from xlt.demo import transfer as tr

    root = out / "full"
    steps = []

    def world_dir(w: int) -> Path:
        return world_path(root, w)

    def base_dir(w: int, b: int) -> Path:
        return base_path(root, w, b)

    for w in fs["world_seeds"]:
        steps.append(step_class(f"full-world-w{w}", f"world {w}",
                                lambda w=w: tr.make_world(world_dir(w), {**fs["world"], "seed": w})))
    bases = sorted({(u["world"], u["base"]) for u in units(fs)})
    for w, b in bases:
        def run_base(w=w, b=b) -> dict:
            langs = [l["code"] for l in tr.world_info(world_dir(w))["languages"]]
            summary = tr.pretrain_lm([world_dir(w) / "corpus" / f"{c}.txt" for c in langs],
                                     world_dir(w) / "tokenizer", base_dir(w, b), fs["base"], seed=b,
                                     device=device, progress=False)
            return {"pretrain": summary, "unigram": unigram_check(base_dir(w, b), world_dir(w), device=device)}
        steps.append(step_class(f"full-base-w{w}-b{b}", f"base model, world {w}, seed {b}", run_base,
                                needs=(f"full-world-w{w}",)))
    s = fs["mid_align"]
    for u in units(fs):
        for arm in s["arms"]:
            def run_arm(u=u, arm=arm) -> dict:
                model = root / "models" / f"{arm}-{u['name']}"
                train = train_arm(arm, base_dir(u["world"], u["base"]), world_dir(u["world"]), model, s,
                                  seed=u["seed"], device=device)
                test = evaluate_items(model, world_dir(u["world"]), split="test", device=device,
                                      limit=s["test_limit"])
                if not (arm == "sft" and "layer_swap" in fs):  # else the layer-swap step's task expert
                    shutil.rmtree(model, ignore_errors=True)
                return {"unit": u, "train": train, "test": test}
            steps.append(step_class(f"full-mid-align-{arm}-{u['name']}", f"mid-align experiment: {arm}, {u['name']}",
                                    run_arm, needs=(f"full-base-w{u['world']}-b{u['base']}",)))
    if "world_checks" in fs:
        from xlt.demo.world_checks import world_checks

        for w in fs["world_seeds"]:
            steps.append(step_class(
                f"full-world-checks-w{w}", f"the analysis tools checked in world {w}",
                lambda w=w: world_checks(base_dir(w, 0), world_dir(w), device=device, settings=fs["world_checks"]),
                needs=(f"full-base-w{w}-b0",)))
    if "adamergex" in fs:
        for u in units(fs):
            steps.append(step_class(
                f"full-adamergex-{u['name']}", f"AdaMergeX experiment, {u['name']}",
                lambda u=u: adamergex_run(base_dir(u["world"], u["base"]), world_dir(u["world"]),
                                          root / "models" / f"adamergex-{u['name']}", fs["adamergex"],
                                          seed=u["seed"], device=device),
                needs=(f"full-base-w{u['world']}-b{u['base']}",)))
    if "layer_swap" in fs:
        from xlt.demo.full_layer_swap import layer_swap_steps

        steps += layer_swap_steps(fs, root, world_dir, base_dir, device=device, step_class=step_class)
    for _, module in experiment_modules(fs):
        steps += module.steps(root, fs, device=device, step_class=step_class)
    return steps


# --------------------------------------------------------------------------------------------
# from step results to verdicts


def _target_items(step: dict, source: str) -> list[int]:
    """One arm's per-item correctness on every target language of one unit (languages in code
    order, items in file order): the paired unit of the comparison."""
    return [c for lang in sorted(step["test"]) if lang != source for c in step["test"][lang]["correct"]]


def _unigram_precondition(bases: dict):
    """Every base model beats a unigram model on held-out text: the worst base decides.
    ``bases``: ``{(world, seed): base step result}``."""
    from xlt.demo.verdicts import precondition

    (w, b), worst = max(bases.items(), key=lambda kv: kv[1]["unigram"]["base_nll"] - kv[1]["unigram"]["unigram_nll"])
    return precondition(
        "base model beats a unigram model", worst["unigram"]["base_nll"], worst["unigram"]["unigram_nll"],
        higher_is_better=False, scale=1.0, unit="nats",
        text=(f"held-out negative log-likelihood per token of the worst base model (world {w}, seed {b}) "
              f"against a unigram model of its pre-training corpus"))


def mid_align_reproduction(fs: dict, results: dict) -> dict | None:
    """The mid-align reproductions, ``{key: Reproduction}``: ``mid-align`` (against SFT on
    target-language polarity accuracy, the paper's claim) and the comparisons a reviewer asks
    for: against the parallel-text LM control (``mid-align vs control``) and the middle layer
    against the first and the last (``mid-align layer``...); None while a step is missing."""
    from xlt.demo.verdicts import learned_source_task, reproduce

    s = fs["mid_align"]
    runs = units(fs)
    steps = {(arm, u["name"]): results.get(f"full-mid-align-{arm}-{u['name']}") for u in runs for arm in s["arms"]}
    bases = {(u["world"], u["base"]): results.get(f"full-base-w{u['world']}-b{u['base']}") for u in runs}
    worlds = [results.get(f"full-world-w{w}") for w in fs["world_seeds"]]
    if any(v is None for v in [*steps.values(), *bases.values(), *worlds]):
        return None
    source = worlds[0]["source_language"]
    # the baseline learned its source task in every run: the worst run decides
    checks = [learned_source_task(steps[("sft", u["name"])]["test"][source]["accuracy"],
                                  steps[("sft", u["name"])]["test"][source]["gold"],
                                  margin=s["precondition_margin"], who=f"SFT (run {u['name']})") for u in runs]
    learned = min(checks, key=lambda p: p.value - p.threshold)
    unigram = _unigram_precondition(bases)
    preconditions = [learned, unigram]

    def compare(method: str, baseline: str, claim: str):
        a = [_target_items(steps[(baseline, u["name"])], source) for u in runs]
        b_ = [_target_items(steps[(method, u["name"])], source) for u in runs]
        return reproduce(method=method, baseline=baseline, metric=f"target-language polarity accuracy ({claim})",
                         prediction="increase", a=a, b=b_, preconditions=preconditions,
                         settings_chosen=fs["chosen"]["mid_align"])

    out = {"mid-align": compare("mid-align", "sft", "the paper's claim")}
    if "parallel-lm" in s["arms"]:
        out["mid-align vs control"] = compare("mid-align", "parallel-lm", "alignment, not the parallel text")
    for other, key, claim in (("align-first", "mid-align layer (first)", "the middle layer over the first"),
                              ("align-last", "mid-align layer (last)", "the middle layer over the last")):
        if other in s["arms"]:
            out[key] = compare("mid-align", other, claim)
    return out


def mid_align_table(fs: dict, results: dict) -> dict:
    """Per arm and language: polarity test accuracy, mean and sample standard deviation over the
    runs that finished, with the per-run values (for the report and results.json)."""
    import statistics

    s = fs["mid_align"]
    table: dict = {}
    for arm in s["arms"]:
        per_lang: dict = {}
        for u in units(fs):
            step = results.get(f"full-mid-align-{arm}-{u['name']}")
            if step is None:
                continue
            for lang, row in step["test"].items():
                per_lang.setdefault(lang, {})[u["name"]] = row["accuracy"]
        table[arm] = {lang: {"mean": statistics.fmean(v.values()),
                             "std": statistics.stdev(v.values()) if len(v) > 1 else None, "per_run": v}
                      for lang, v in sorted(per_lang.items())}
    return table


def adamergex_reproduction(fs: dict, results: dict) -> dict | None:
    """``adamergex`` (against the task adapter alone on target-language polarity accuracy, the
    paper's claim) and ``adamergex vs task arithmetic`` (the source reference's subtraction
    matters); None while a step is missing."""
    from xlt.demo.verdicts import learned_source_task, reproduce

    runs = units(fs)
    steps = {u["name"]: results.get(f"full-adamergex-{u['name']}") for u in runs}
    bases = {(u["world"], u["base"]): results.get(f"full-base-w{u['world']}-b{u['base']}") for u in runs}
    worlds = [results.get(f"full-world-w{w}") for w in fs["world_seeds"]]
    if any(v is None for v in [*steps.values(), *bases.values(), *worlds]):
        return None
    source = worlds[0]["source_language"]
    checks = [learned_source_task(step["test"]["task adapter alone"][source]["accuracy"],
                                  step["test"]["task adapter alone"][source]["gold"],
                                  margin=fs["adamergex"]["precondition_margin"], who=f"the task adapter (run {name})")
              for name, step in steps.items()]
    preconditions = [min(checks, key=lambda p: p.value - p.threshold), _unigram_precondition(bases)]

    def items(step: dict, arm: str) -> list[int]:
        return [c for lang in sorted(step["test"][arm]) if lang != source for c in step["test"][arm][lang]["correct"]]

    def compare(method: str, baseline: str, claim: str):
        return reproduce(method=method, baseline=baseline, metric=f"target-language polarity accuracy ({claim})",
                         prediction="increase", a=[items(steps[u["name"]], baseline) for u in runs],
                         b=[items(steps[u["name"]], method) for u in runs], preconditions=preconditions,
                         settings_chosen=fs["chosen"]["adamergex"])

    return {"adamergex": compare("adamergex", "task adapter alone", "the paper's claim"),
            "adamergex vs task arithmetic": compare("adamergex", "task arithmetic",
                                                    "subtracting the source reference")}


def reproductions(settings: dict, results: dict) -> dict:
    """``results["reproduction"]``: ``{key: Reproduction}`` for the experiments that have run."""
    fs = settings.get("full")
    if not fs:
        return {}
    out = dict(mid_align_reproduction(fs, results) or {})
    if "adamergex" in fs:
        out.update(adamergex_reproduction(fs, results) or {})
    if "layer_swap" in fs:
        from xlt.demo.full_layer_swap import layer_swap_reproduction

        out.update(layer_swap_reproduction(fs, results) or {})
    for _, module in experiment_modules(fs):
        out.update(module.reproduction(fs, results) or {})
    return out


def experiment_reports(out: Path, settings: dict, results: dict) -> list[tuple[str, list[str], dict]]:
    """``(key, markdown lines, JSON summary)`` of every registered experiment module that runs."""
    fs = settings.get("full")
    if not fs:
        return []
    return [(key, *module.report(out, fs, results)) for key, module in experiment_modules(fs)]
