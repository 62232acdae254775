"""Steps 1-3 of the demo: the world, the base model, and task transfer (SFT / mid-align / AFP).

Every function takes explicit paths and settings and returns plain dicts (JSON-ready); the
runner (:mod:`xlt.demo.runner`) decides what is skipped and where results go. The functions
call the same public API as the commands: ``xlt.synth`` (``xlt synth``), ``xlt.pretrain``
(``xlt pretrain``), ``xlt.align`` (``xlt train sft | mid-align | afp``) and ``xlt.eval``
(``xlt eval icl`` for classification accuracy, ``xlt eval task`` for exact match).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

METHODS = ("sft", "mid-align", "afp")
CLASSIFICATION_TASK = "polarity"
EXTRACTION_TASK = "roles"


# --------------------------------------------------------------------------------------------
# 1. the world


def make_world(out: Path, world_settings: dict) -> dict:
    """Generate and write the synthetic world; return a short description."""
    from xlt.synth import WorldConfig, generate_world, write_world

    config = WorldConfig(**_world_kwargs(world_settings))
    world = generate_world(config)
    counts = write_world(world, out, overwrite=True)
    return {"languages": [{"code": lang.code, "name": lang.name, "word_order": lang.word_order}
                          for lang in world.languages],
            "source_language": world.codes[0], "files": len(counts)}


def _world_kwargs(settings: dict) -> dict:
    kwargs = dict(settings)
    for key in ("word_orders", "corpus_shares"):
        if key in kwargs and kwargs[key] is not None:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def world_info(world_dir: Path) -> dict:
    info = json.loads((Path(world_dir) / "world.json").read_text(encoding="utf-8"))
    return info


# --------------------------------------------------------------------------------------------
# 2. the base model


def save_whole(model, out: Path, tokenizer=None) -> None:
    """Write ``model`` (and ``tokenizer``) to ``out`` through a temporary sibling directory that
    then replaces ``out`` whole, so a step stopped midway leaves no half-written model."""
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def train_and_save(trainer, out: Path, tokenizer) -> tuple[Any, float | None, float | None]:
    """Train an align-family ``trainer``, write its model (and ``tokenizer``) whole to ``out``,
    remove its run directory; ``(train result, last task loss, last alignment loss)`` (None where
    none was logged)."""
    result = trainer.train()
    save_whole(trainer.model, out, tokenizer)
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    logs = trainer.state.log_history
    task = [r["task_loss"] for r in logs if "task_loss" in r]
    align = [r["alignment_loss"] for r in logs if "alignment_loss" in r]
    return result, task[-1] if task else None, align[-1] if align else None


def tiny_llama(vocab_size: int, tokenizer, model_settings: dict, seq_len: int):
    """A from-scratch Llama config of the demo's size (layers x hidden)."""
    import transformers as tf

    hidden = model_settings["hidden"]
    return tf.LlamaConfig(vocab_size=vocab_size, hidden_size=hidden,
                          intermediate_size=model_settings.get("mlp", 4 * hidden),
                          num_hidden_layers=model_settings["layers"],
                          num_attention_heads=model_settings["heads"],
                          num_key_value_heads=model_settings["heads"],
                          max_position_embeddings=max(128, seq_len), tie_word_embeddings=False,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)


def pretrain_lm(corpus_files: list[Path], tokenizer_dir: Path, out: Path, settings: dict, *,
                seed: int, device: str, n_clones: int = 0, p_clone: float = 0.5,
                language_names: list[str] | None = None, language_schedule: str | None = None,
                progress: bool = True) -> dict:
    """Pre-train a tiny causal LM from scratch with ``xlt.pretrain`` and save it to ``out``.

    ``n_clones`` = 0: one stream of every corpus file (the multilingual base model); 1: the
    cloned-language setting (``p_clone`` of the sequences in the clone; ``language_schedule``,
    e.g. ``"0.1_0.9"``, changes it over training and must start at ``p_clone``).
    """
    import transformers as tf

    from xlt.models import load_tokenizer
    from xlt.pretrain.data import tokenize_corpus
    from xlt.pretrain.train import PretrainConfig, build_language_map, build_trainer, global_batch_size

    tokenizer = load_tokenizer(tokenizer_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        config = PretrainConfig(
            output_dir=str(work / "run"), corpus=[str(p) for p in corpus_files], tokenizer=str(tokenizer_dir),
            preset="nano", arch="llama", seq_len=settings["seq_len"], n_clones=n_clones, p_clone=p_clone,
            language_names=language_names, language_schedule=language_schedule, max_steps=settings["steps"], learning_rate=settings["lr"],
            min_lr=settings["lr"] / 10, warmup_steps=settings["warmup"],
            per_device_train_batch_size=settings["batch_size"], seed=seed, language_seed=seed,
            logging_steps=max(1, settings["steps"] // 10), save_strategy="no", report_to="none",
            disable_tqdm=not progress, use_cpu=device == "cpu", data_cache=str(out.parent / "token_cache"),
            dataloader_num_workers=0)
        language_map = build_language_map(config, tokenizer)
        stores = [tokenize_corpus(config.corpus, tokenizer, config.data_cache)]
        tf.set_seed(seed)
        model = tf.AutoModelForCausalLM.from_config(
            tiny_llama(language_map.model_vocab_size, tokenizer, settings["model"], settings["seq_len"]))
        trainer = build_trainer(config, stores, language_map, tokenizer=tokenizer, model=model)
        _quiet_trainer(trainer)
        result = trainer.train()
        final = work / "model"
        trainer.model.config.xlt_languages = language_map.names
        trainer.model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        (final / "languages.json").write_text(json.dumps(language_map.to_dict(), default=str))
        if out.exists():
            shutil.rmtree(out)
        os.replace(final, out)
        steps = trainer.state.global_step
        return {"steps": steps, "train_loss": result.training_loss,
                "tokens_seen": steps * global_batch_size(config) * config.window_length,
                "parameters": sum(p.numel() for p in trainer.model.parameters())}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# 3. task transfer


def _task_texts(world_dir: Path, split: str, langs: list[str] | None, tasks: list[str]):
    from xlt.formats import read_records

    rows = []
    for task in tasks:
        rows += [ex for ex in read_records(world_dir / "tasks" / task / f"{split}.jsonl", "task")
                 if langs is None or ex.lang in langs]
    return rows


def _pairs(world_dir: Path, source: str, targets: list[str], split: str, limit: int | None = None):
    from xlt.formats import read_records

    pairs = []
    for tgt in targets:
        a, b = sorted((source, tgt))
        recs = read_records(world_dir / "parallel" / f"{a}-{b}.{split}.jsonl", "parallel")
        pairs += recs[:limit] if limit else recs
    return pairs


def train_method(method: str, base_dir: Path, world_dir: Path, out: Path, settings: dict, *, seed: int,
                 device: str, progress: bool = True) -> dict:
    """Fine-tune the base model on the source language's task data with one method; save the
    adapter to ``out``. The three methods get the same task micro-batches (batch size, steps,
    learning rate, LoRA); mid-align and AFP add their alignment micro-batches on parallel pairs
    (source with each target), their extra input.
    """
    from xlt.align.data import PairText, TaskText

    info = world_info(world_dir)
    source = info["source_language"]
    targets = [l["code"] for l in info["languages"] if l["code"] != source]
    tasks = [TaskText(ex.prompt, ex.completion, append_eos=True)
             for ex in _task_texts(world_dir, "train", [source], settings["tasks"])]
    pairs = []
    if method != "sft":
        anchors = "tgt" if method == "mid-align" else "src"  # the papers' anchor sides
        for p in _pairs(world_dir, source, settings.get("align_targets") or targets, "train",
                        settings.get("pairs_per_target")):
            pairs.append(PairText(p.tgt, p.src) if anchors == "tgt" else PairText(p.src, p.tgt))
    return _run_align(method, base_dir, tasks, pairs, out, settings, seed=seed, device=device, progress=progress)


def _run_align(method: str, base_dir: Path, tasks: list, pairs: list, out: Path, s: dict, *, seed: int,
               device: str, progress: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from xlt.align.config import AFPConfig, MidAlignConfig, SFTConfig
    from xlt.align.data import AlignCollator, build_dataset
    from xlt.align.trainer import AlignTrainer
    from xlt.models import default_target_modules, load_model, load_tokenizer, num_layers

    tokenizer = load_tokenizer(base_dir, padding_side="right")
    model = load_model(base_dir, kind="causal", dtype="float32", device="cpu")
    model.config.use_cache = False
    layers = num_layers(model)
    common = dict(output_dir=str(out.parent / f".{out.name}.run"), max_steps=s["steps"],
                  per_device_train_batch_size=s["batch_size"], learning_rate=s["lr"],
                  lr_scheduler_type="cosine", warmup_steps=s["warmup"], seed=seed, data_seed=seed,
                  use_lora=s.get("use_lora", True), lora_r=s["lora_r"], lora_alpha=2 * s["lora_r"], lora_dropout=0.0,
                  max_length=64, logging_steps=max(1, s["steps"] // 5), save_strategy="no",
                  report_to="none", disable_tqdm=not progress, use_cpu=device == "cpu",
                  dataloader_num_workers=0)
    if method == "sft":
        cfg = SFTConfig(**common)
    elif method == "mid-align":
        # alternate schedule with 2 micro-batches per step: one task + one alignment micro-batch,
        # so the task sees exactly SFT's micro-batches
        cfg = MidAlignConfig(**common, gradient_accumulation_steps=2,
                             alignment_layer=s["mid_align_layer"] or max(1, layers // 2),
                             alignment_weight=s["mid_align_weight"], alignment_temperature=0.1)
    elif method == "afp":
        cfg = AFPConfig(**common, alignment_layer=s["afp_layer"], alignment_weight=s["afp_weight"],
                        task_weight=1.0, alignment_gather=False, packing=False)
    else:
        raise ValueError(f"unknown method {method!r}")
    torch.manual_seed(seed)
    if cfg.use_lora:
        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=default_target_modules(model) + list(s.get("lora_extra_targets", [])),
            task_type="CAUSAL_LM"))
    dataset = build_dataset(tokenizer, tasks, pairs, max_length=cfg.max_length, seed=seed)
    collator = AlignCollator(tokenizer.pad_token_id, pad_to_multiple_of=cfg.pad_to_multiple_of,
                             packing=cfg.packing, block_size=cfg.max_length,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    trainer = AlignTrainer(model=model, args=cfg, train_dataset=dataset, data_collator=collator,
                           processing_class=tokenizer)
    _quiet_trainer(trainer)
    result = trainer.train()
    save_whole(trainer.model, out)
    shutil.rmtree(cfg.output_dir, ignore_errors=True)
    logs = trainer.state.log_history
    last_align = [r["alignment_loss"] for r in logs if "alignment_loss" in r]
    last_task = [r["task_loss"] for r in logs if "task_loss" in r]
    return {"train_loss": result.training_loss, "steps": trainer.state.global_step,
            "alignment_layer": trainer.alignment_layer, "task_examples": len(tasks), "pairs": len(pairs),
            "final_task_loss": last_task[-1] if last_task else None,
            "final_alignment_loss": last_align[-1] if last_align else None}


def evaluate_transfer(base_dir: Path, adapter_dir: Path | None, world_dir: Path, *, split: str,
                      limit: int, device: str, tasks: list[str], progress: bool = False) -> dict:
    """Zero-shot scores of the base model with ``adapter_dir`` merged in (see :func:`evaluate_model`)."""
    from xlt.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    model = load_model(base_dir, kind="causal", dtype="float32", device="cpu")
    if adapter_dir is not None and (Path(adapter_dir) / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    elif adapter_dir is not None:  # full fine-tuning: a whole model
        model = load_model(adapter_dir, kind="causal", dtype="float32", device="cpu")
    model.to(device)
    return evaluate_model(model, tokenizer, world_dir, split=split, limit=limit, tasks=tasks, progress=progress)


def evaluate_model(model, tokenizer, world_dir: Path, *, split: str, limit: int, tasks: list[str],
                   languages: list[str] | None = None, progress: bool = False) -> dict:
    """Per-language zero-shot scores: ``{lang: {"accuracy": polarity acc, "exact_match": roles EM}}``.

    Classification: log-likelihood of the two label words (``xlt eval icl``'s lm-eval rule, 0
    shots). Extraction: greedy generation, exact match (``xlt eval task``). The first ``limit``
    items of each language (the same meanings in every language).
    """
    from xlt.eval.icl import evaluate_icl
    from xlt.eval.task import evaluate_task
    from xlt.formats import read_records

    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    keep = (lambda lang: True) if languages is None else (lambda lang: lang in languages)
    out: dict[str, dict[str, float]] = {}
    if CLASSIFICATION_TASK in tasks:
        items = read_records(world_dir / "tasks" / CLASSIFICATION_TASK / f"{split}.choice.jsonl", "choice")
        by_lang: dict[str, list] = {}
        for item in items:
            if keep(item.lang) and len(by_lang.setdefault(item.lang, [])) < limit:
                by_lang[item.lang].append(item)
        table, _ = evaluate_icl(model, tokenizer, test=by_lang, scoring="lm-eval", batch_size=64,
                                progress=progress)
        for lang, row in table.items():
            out.setdefault(lang, {})["accuracy"] = row["acc"]
    if EXTRACTION_TASK in tasks:
        examples = read_records(world_dir / "tasks" / EXTRACTION_TASK / f"{split}.jsonl", "task")
        counts: dict[str, int] = {}
        chosen = []
        for ex in examples:
            if keep(ex.lang) and counts.get(ex.lang, 0) < limit:
                counts[ex.lang] = counts.get(ex.lang, 0) + 1
                chosen.append(ex)
        table, _ = evaluate_task(model, tokenizer, chosen, batch_size=64, progress=progress)
        for lang, row in table.items():
            out.setdefault(lang, {})["exact_match"] = row["accuracy"]
    return out


def train_lora_on_examples(base_dir: Path, examples: list, out: Path, settings: dict, *, steps: int, seed: int,
                           device: str, append_eos: bool = False, progress: bool = True) -> dict:
    """Plain LoRA fine-tuning (``xlt train sft``'s trainer) on ``TaskExample`` records."""
    from xlt.align.data import TaskText

    tasks = [TaskText(ex.prompt, ex.completion, append_eos=append_eos) for ex in examples]
    return _run_align("sft", base_dir, tasks, [], out, {**settings, "steps": steps, "use_lora": True},
                      seed=seed, device=device, progress=progress)


def source_task_examples(world_dir: Path, tasks: list[str]) -> list:
    """The source language's training examples of ``tasks``."""
    return _task_texts(world_dir, "train", [world_info(world_dir)["source_language"]], tasks)


def _quiet_trainer(trainer) -> None:
    """No per-log printing (the demo shows its own progress bar; logs stay in log_history)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
