"""Train LSLo (or a baseline) on translation data: the Python call behind ``xlt train lslo``.

:func:`train` takes the two option objects the command parses (:class:`LSLoDataArguments` and
:class:`~xlt.lslo.trainer.LSLoTrainingConfig`), reads the ParallelPair files, loads the model,
trains, and writes the adapter (or, with ``full_finetune``, the model), the tokenizer, the
pruning report (JSON + PNG), ``log_history.json`` and, last, ``train_config.json`` into
``output_dir``. It prints nothing itself: the summary line goes to ``report`` when one is given.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from xlt.config import check_training_arguments, used_options
from xlt.errors import ConfigError


@dataclass
class LSLoDataArguments:
    """Model and data options of ``xlt train lslo``."""

    model: str = field(metadata={"help": "translation model directory or hub id (M2M-100 / NLLB)"})
    train_file: str | None = field(default=None, metadata={
        "help": "translation data: ParallelPair records {src_lang, tgt_lang, src, tgt}, any number of "
                "directions (.jsonl, .json, .parquet, optionally .gz)"})
    eval_file: str | None = field(default=None, metadata={"help": "dev ParallelPair records (eval loss)"})
    tokenizer: str | None = field(default=None, metadata={
        "help": "tokenizer directory (default: the model's); it needs a token per language code "
                "(the code itself, NLLB-style, or __code__, M2M-100-style)"})
    dtype: str = field(default="float32", metadata={"help": "base weights dtype (LSLo weights stay float32)"})
    allow_pickle: bool = field(default=False, metadata={"help": "allow loading pickle (.bin) weights"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow a model's own code"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output_dir"})


def train(config, data: LSLoDataArguments, *, report: Callable[[str], None] | None = None,
          progress: bool = True):
    """Train as ``xlt train lslo`` does; return the trainer after training.

    ``config``: an :class:`~xlt.lslo.trainer.LSLoTrainingConfig` (``output_dir`` receives
    everything); ``data``: the model, tokenizer and data files. Data are read and checked before
    the model loads. ``report``: called once (on the main process) with a one-line summary of
    the run before training starts. ``progress=False`` removes the Trainer's progress bar and
    per-log printing (the logs stay in ``trainer.state.log_history``).

    When a signal stopped training (:func:`xlt.training.stop_signal` is then not None) the last
    checkpoint is the output and no final files are written. An existing ``output_dir`` is an
    :class:`~xlt.errors.OutputExistsError` unless ``data.overwrite`` or the run resumes.
    """
    cfg = config
    check_training_arguments(cfg)
    if not data.train_file:
        raise ConfigError("--train_file is required (ParallelPair records)")
    from xlt.engines import check_fsdp_version

    check_fsdp_version(cfg)
    from xlt.training import prepare_output, wait_for_every_process

    out, resume = prepare_output(cfg.output_dir, cfg.resume_from_checkpoint, data.overwrite)
    wait_for_every_process(cfg)  # every process checked output_dir before the main one's Trainer creates it

    # data first: a bad file fails before the model loads
    from xlt.formats import languages_of, read_records

    pairs = read_records(data.train_file, "parallel", languages=cfg.languages)
    pairs = _filter_directions(pairs, cfg.directions, data.train_file)
    languages = list(cfg.languages) if cfg.languages else sorted(languages_of(pairs))
    eval_pairs = None
    if data.eval_file:
        eval_pairs = _filter_directions(read_records(data.eval_file, "parallel", languages=languages),
                                        cfg.directions, data.eval_file)
    elif cfg.eval_strategy != "no":
        raise ConfigError(f"eval_strategy={cfg.eval_strategy} needs --eval_file")
    cfg.lslo_config(languages)  # bad LSLo options fail before the model loads
    prompt = cfg.translation_prompt()  # checked here too; used for decoder-only models

    import transformers

    from xlt.lslo.model import apply_lslo
    from xlt.lslo.pruning import PruningSchedule
    from xlt.lslo.trainer import (CausalFullFinetuneTrainer, CausalLSLoTrainer, CausalTranslationCollator,
                                  FullFinetuneTrainer, LSLoTrainer, PruningCallback, TemperatureSampler,
                                  TranslationCollator, encode_causal_pairs, encode_pairs)
    from xlt.models import load_model, load_tokenizer, refuse_adapter_model
    from xlt.training import graceful_stop_callback, quiet_trainer, schedule_check_callback
    from xlt.translation import language_token

    refuse_adapter_model(data.model, "xlt train lslo")
    tokenizer = load_tokenizer(data.tokenizer or data.model, padding_side="right",
                               trust_remote_code=data.trust_remote_code)
    model = load_model(data.model, kind="auto", dtype=data.dtype, device="cpu",
                       allow_pickle=data.allow_pickle, trust_remote_code=data.trust_remote_code)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    if seq2seq:
        for lang in languages:
            language_token(tokenizer, lang)
    lslo_config = cfg.lslo_config(languages, seq2seq=seq2seq)
    model.config.use_cache = False
    transformers.set_seed(cfg.seed)  # A's initialisation draws from the global generator
    lslo = None if cfg.full_finetune else apply_lslo(model, lslo_config)
    if lslo is not None and cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # the frozen embeddings would cut the checkpointed graph

    lengths = dict(max_source_length=cfg.max_source_length, max_target_length=cfg.max_target_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.pad_token_id
    if seq2seq:
        train_rows = encode_pairs(tokenizer, pairs, languages, **lengths)
        eval_rows = encode_pairs(tokenizer, eval_pairs, languages, **lengths) if eval_pairs else None
        start = model.config.decoder_start_token_id
        if start is None:
            start = tokenizer.eos_token_id
        collator = TranslationCollator(pad, start, language_ids=lslo is not None)
        trainer_class = FullFinetuneTrainer if lslo is None else LSLoTrainer
    else:
        train_rows = encode_causal_pairs(tokenizer, pairs, languages, prompt, **lengths)
        eval_rows = encode_causal_pairs(tokenizer, eval_pairs, languages, prompt, **lengths) if eval_pairs else None
        collator = CausalTranslationCollator(pad, language_ids=lslo is not None)
        trainer_class = CausalFullFinetuneTrainer if lslo is None else CausalLSLoTrainer
        model.config.xlt_translation_prompt = prompt.to_dict()  # kept by a full fine-tune's config.json
    seed = cfg.data_seed if cfg.data_seed is not None else cfg.seed
    sampler = TemperatureSampler([(p.src_lang, p.tgt_lang) for p in pairs], cfg.sampling_temperature, seed=seed)
    batches = {"train_sampler": sampler}
    if cfg.max_tokens is not None:
        from xlt.lslo.batching import TokenBatchSampler, row_size

        batches = {"train_batch_sampler": TokenBatchSampler([row_size(r) for r in train_rows], cfg.max_tokens,
                                                            seed=seed, row_sampler=sampler)}
    callbacks = [graceful_stop_callback()]
    schedule = None
    checks = []
    if cfg.pruning != "none":
        schedule = PruningSchedule(cfg.pruning_t1, cfg.pruning_t2, cfg.target_pruning_ratio, cfg.pruning)
        pruning = PruningCallback(schedule)
        callbacks.append(pruning)
        checks.append(pruning.check)
    callbacks.append(schedule_check_callback(*checks))
    if out.exists() and data.overwrite and not resume:
        shutil.rmtree(out)
    metadata = {"base_model_path": data.model}
    if not seq2seq:
        metadata["translation_prompt"] = prompt.to_dict()
    extra = {} if lslo is None else {"adapter_metadata": metadata}  # in checkpoints and the final adapter
    trainer = trainer_class(model=model if lslo is None else lslo, args=cfg, train_dataset=train_rows,
                            eval_dataset=eval_rows, data_collator=collator, processing_class=tokenizer,
                            callbacks=callbacks, **batches, **extra)
    from xlt.engines import check_engine

    trainer.xlt_engine = engine = check_engine(trainer)  # what the run really trains under
    kind = "" if seq2seq else "decoder-only, "
    rows = (f"{len(pairs)} pairs in {len(sampler.groups)} directions -> {len(sampler)} rows per epoch, "
            f"redrawn each epoch (T={cfg.sampling_temperature})")
    if cfg.max_tokens is not None:
        rows += (f", in {len(batches['train_batch_sampler'])} batches of <= {cfg.max_tokens} tokens "
                 f"x {cfg.gradient_accumulation_steps} per update")
    if report is not None and trainer.is_world_process_zero() and lslo is None:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        report(f"full fine-tuning ({kind}{trainable:,} trainable parameters); {rows}")
    elif report is not None and trainer.is_world_process_zero():
        ranks = ", ".join(f"{n}={r}" for n, r in lslo_config.subspaces())
        report(f"{'shared LoRA' if cfg.shared else 'LSLo'} ({kind}{len(lslo.lslo_layers)} modules, "
               f"ranks {ranks}; {lslo.num_lslo_parameters():,} trainable parameters); {rows}")
    if not progress:
        quiet_trainer(trainer)
    trainer.train(resume_from_checkpoint=resume)
    from xlt.training import stop_signal

    if stop_signal(trainer) is None:  # else pre-empted: a checkpoint, no final output
        _save(trainer, lslo, tokenizer, data, cfg, out, schedule, metadata, engine)
    return trainer


def _filter_directions(pairs, directions, path):
    if not directions:
        return pairs
    wanted = set()
    for d in directions:
        src, sep, tgt = d.partition("-")
        if not sep or not src or not tgt:
            raise ConfigError(f"--directions: cannot read {d!r} (expected src-tgt, e.g. qaa-qab)")
        wanted.add((src, tgt))
    kept = [p for p in pairs if (p.src_lang, p.tgt_lang) in wanted]
    present = {(p.src_lang, p.tgt_lang) for p in pairs}
    missing = sorted(wanted - present)
    if missing:
        raise ConfigError(f"--directions: {path} has no {missing[0][0]}-{missing[0][1]} pairs")
    return kept


def _save(trainer, lslo, tokenizer, data, cfg, out: Path, schedule, metadata, engine: dict) -> None:
    """Adapter, tokenizer, pruning report (JSON + PNG), log history, and train_config.json last."""
    from xlt.io import atomic_file, move_entries, write_json
    from xlt.lslo.pruning import make_pruning_permanent, plot_pruning_report, pruning_report

    trainer.accelerator.wait_for_everyone()
    # every process gathers the weights (ZeRO-3 and FSDP2 partition them); the main one writes
    main = trainer.is_world_process_zero()
    tmp = out / ".final.tmp"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if lslo is None:  # full fine-tuning: a plain model
        trainer.save_model(str(tmp))
    else:
        make_pruning_permanent(lslo)
        lslo.save_pretrained(tmp, is_main_process=main, **metadata)
    report = pruning_report(lslo) if lslo is not None else None
    if not main:
        return
    tokenizer.save_pretrained(str(tmp))
    move_entries(tmp, out)
    if lslo is not None:
        if schedule is not None:
            report["schedule"] = {"pool": schedule.pool, "t1": schedule.t1, "t2": schedule.t2,
                                  "target": schedule.target, "epochs": schedule.history}
        write_json(out / "pruning_report.json", report)
        figure = plot_pruning_report(report)
        with atomic_file(out / "pruning_report.png", mode="wb") as handle:
            figure.savefig(handle, format="png", dpi=120)
    write_json(out / "log_history.json", trainer.state.log_history)
    from xlt.engines import ENGINE_KEY

    write_json(out / "train_config.json", {**used_options(data, cfg), ENGINE_KEY: engine})
