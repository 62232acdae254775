"""``xlt train lslo`` and ``xlt lslo export``: the file-facing side of LSLo."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from xlt.config import used_options
from xlt.errors import ConfigError, OutputExistsError


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


_DESCRIPTION = ("Language-specific LoRA (Cao et al., EMNLP 2024): every language gets its own "
                "low-rank subspace in each adapted linear layer, picked per example by its source "
                "or target language according to each layer's direction; batches mix directions. "
                "Optional gradual magnitude pruning of the B matrices per epoch.")


def train_command(argv: list[str], prog: str) -> int:
    """``xlt train lslo``: train LSLo (or the shared-LoRA baseline with ``--shared``)."""
    from xlt.config import parse_dataclasses
    from xlt.lslo.trainer import LSLoTrainingConfig

    data, cfg = parse_dataclasses([LSLoDataArguments, LSLoTrainingConfig], argv, prog=prog,
                                  description=_DESCRIPTION)
    if not cfg.output_dir or (cfg.output_dir == "trainer_output" and "--output_dir" not in argv):
        raise ConfigError(f"{prog}: --output_dir is required")
    if not data.train_file:
        raise ConfigError(f"{prog}: --train_file is required (ParallelPair records)")
    from xlt.engines import check_fsdp_version

    check_fsdp_version(cfg)
    from xlt.training import resolve_resume

    out = Path(cfg.output_dir)
    resume = resolve_resume(cfg.resume_from_checkpoint, out)
    if out.exists() and not resume and not data.overwrite:
        raise OutputExistsError(out)

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
        raise ConfigError(f"{prog}: eval_strategy={cfg.eval_strategy} needs --eval_file")
    cfg.lslo_config(languages)  # bad LSLo options fail before the model loads
    prompt = cfg.translation_prompt()  # checked here too; used for decoder-only models

    import transformers

    from xlt.eval.mt import language_token
    from xlt.lslo.model import apply_lslo
    from xlt.lslo.pruning import PruningSchedule
    from xlt.lslo.trainer import (CausalFullFinetuneTrainer, CausalLSLoTrainer, CausalTranslationCollator,
                                  FullFinetuneTrainer, LSLoTrainer, PruningCallback, TemperatureSampler,
                                  TranslationCollator, encode_causal_pairs, encode_pairs)
    from xlt.models import load_model, load_tokenizer
    from xlt.training import graceful_stop_callback, schedule_check_callback

    transformers.utils.logging.set_verbosity_warning()
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
    from xlt.engines import check_engine, describe, refuse_sharded_weights

    engine = check_engine(trainer)
    refuse_sharded_weights(engine, "LSLo training (pruning masks, saving, the base fingerprint)")
    kind = "" if seq2seq else "decoder-only, "
    rows = (f"{len(pairs)} pairs in {len(sampler.groups)} directions -> {len(sampler)} rows per epoch, "
            f"redrawn each epoch (T={cfg.sampling_temperature})")
    if cfg.max_tokens is not None:
        rows += (f", in {len(batches['train_batch_sampler'])} batches of <= {cfg.max_tokens} tokens "
                 f"x {cfg.gradient_accumulation_steps} per update")
    if trainer.is_world_process_zero() and lslo is None:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{prog}: full fine-tuning ({kind}{trainable:,} trainable parameters); {rows}", flush=True)
    elif trainer.is_world_process_zero():
        ranks = ", ".join(f"{n}={r}" for n, r in lslo_config.subspaces())
        print(f"{prog}: {'shared LoRA' if cfg.shared else 'LSLo'} ({kind}{len(lslo.lslo_layers)} modules, "
              f"ranks {ranks}; {lslo.num_lslo_parameters():,} trainable parameters); {rows}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    from xlt.training import report_signal_stop

    stopped = report_signal_stop(trainer, prog)
    if stopped is not None:  # pre-empted: a checkpoint, no final output
        return stopped
    _save(trainer, lslo, tokenizer, data, cfg, out, schedule, metadata, engine)
    if trainer.is_world_process_zero():
        print(f"{prog}: trained under {describe(engine)}; wrote {out}", flush=True)
    return 0


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
    """Adapter, tokenizer, pruning report (JSON + PNG), log history, and train_config.json last
    (with the engine the run trained under, :mod:`xlt.engines`)."""
    from xlt.engines import ENGINE_KEY
    from xlt.io import atomic_file, write_json
    from xlt.lslo.pruning import make_pruning_permanent, plot_pruning_report, pruning_report

    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if lslo is None:  # full fine-tuning: a plain model
        trainer.save_model(str(tmp))
    else:
        make_pruning_permanent(lslo)
        lslo.save_pretrained(tmp, **metadata)
    tokenizer.save_pretrained(str(tmp))
    for item in tmp.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    shutil.rmtree(tmp, ignore_errors=True)
    if lslo is not None:
        report = pruning_report(lslo)
        if schedule is not None:
            report["schedule"] = {"pool": schedule.pool, "t1": schedule.t1, "t2": schedule.t2,
                                  "target": schedule.target, "epochs": schedule.history}
        write_json(out / "pruning_report.json", report)
        figure = plot_pruning_report(report)
        with atomic_file(out / "pruning_report.png", mode="wb") as handle:
            figure.savefig(handle, format="png", dpi=120)
    write_json(out / "log_history.json", trainer.state.log_history)
    write_json(out / "train_config.json", {**used_options(data, cfg), ENGINE_KEY: engine})




# --------------------------------------------------------------------------------------------


def base_model_of(adapter: str | os.PathLike, given: str | None) -> str:
    """The base model path: ``given``, else the one recorded in the adapter."""
    from xlt.lslo.model import read_lslo_metadata

    if given:
        return given
    meta = read_lslo_metadata(adapter)
    base = meta.get("base_model_path") or (meta.get("base") or {}).get("name_or_path")
    if not base:
        raise ConfigError(f"{adapter}: the adapter does not record its base model; pass --model")
    return str(base)


def export_command(argv: list[str], prog: str) -> int:
    """``xlt lslo export``: fold one direction's subspaces into a plain Hugging Face model."""
    from xlt.config import ArgumentParser

    parser = ArgumentParser(prog=prog, description="Fold the source language's and the target "
                            "language's LSLo subspaces into the base weights (each layer takes the "
                            "language of its direction) and write a plain Hugging Face model for "
                            "that one direction: an encoder-decoder model forces the target language "
                            "as first token; a decoder-only model keeps the translation prompt it was "
                            "trained with in its config (xlt eval mt uses it).")
    parser.add_argument("--adapter", required=True, help="LSLo adapter directory (xlt train lslo output)")
    parser.add_argument("--src", required=True, help="source language code")
    parser.add_argument("--tgt", required=True, help="target language code")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--model", default=None, help="base model (default: the one the adapter records)")
    parser.add_argument("--dtype", default="float32", help="dtype of the written weights")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) base weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)

    from xlt.io import atomic_dir, check_output
    from xlt.lslo.config import LSLoConfig
    from xlt.lslo.model import read_lslo_metadata

    check_output(args.out, args.overwrite)
    config = LSLoConfig.from_dict(read_lslo_metadata(args.adapter)["config"])
    config.language_index(args.src)
    config.language_index(args.tgt)
    base_path = base_model_of(args.adapter, args.model)

    from xlt.eval.mt import language_token_id
    from xlt.lslo.model import load_lslo, merge_direction
    from xlt.models import load_model, load_tokenizer, parse_dtype

    adapter = Path(args.adapter)
    tokenizer = load_tokenizer(adapter if (adapter / "tokenizer_config.json").is_file() else base_path)
    model = load_model(base_path, kind="auto", dtype="float32", device="cpu", allow_pickle=args.allow_pickle)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    forced = language_token_id(tokenizer, args.tgt) if seq2seq else None
    lslo = load_lslo(model, adapter)
    merged = merge_direction(lslo, args.src, args.tgt, inplace=True)
    dtype = parse_dtype(args.dtype)
    if dtype != "auto":
        merged.to(dtype)
    if seq2seq:
        merged.generation_config.forced_bos_token_id = forced
    else:  # decoder-only: the prompt it was trained with travels in config.json (xlt eval mt reads it)
        prompt = read_lslo_metadata(adapter).get("translation_prompt")
        if prompt:
            merged.config.xlt_translation_prompt = prompt
        merged.config.use_cache = True
    merged.config.lslo_direction = f"{args.src}-{args.tgt}"
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    n = len(lslo.lslo_layers)
    print(f"{prog}: folded {args.src}->{args.tgt} into {n} linear layers of {base_path}; wrote {args.out}")
    return 0
