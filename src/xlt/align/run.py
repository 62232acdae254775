"""Fine-tune with task loss and representation alignment: the Python call behind
``xlt train sft | mid-align | afp``.

:func:`train` takes the two option objects the commands parse (:class:`AlignDataArguments` and
an :class:`~xlt.align.config.AlignConfig`, usually one of the presets in
:data:`~xlt.align.config.PRESETS`), reads the task and parallel files, loads the model, trains
an :class:`~xlt.align.trainer.AlignTrainer`, and writes the adapter (or model), the tokenizer,
``log_history.json`` and, last, ``train_config.json`` into ``output_dir``. It prints nothing
itself: the summary line goes to ``report`` when one is given.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from xlt.config import check_training_arguments, used_options
from xlt.errors import ConfigError

DATA_FORMATS = ("auto", "xlt", "mid-align", "afp")


@dataclass
class AlignDataArguments:
    """Model and data options of the training commands."""

    model: str = field(metadata={"help": "model directory or hub id (a causal LM)"})
    train_file: str | None = field(default=None, metadata={
        "help": "task examples: toolkit TaskExample records, mid-align rows {text_parallel_0, "
                "text_parallel_1, prefix, text} or AFP rows {sent0, sent1, clm_text, clm_prompt_len}"})
    parallel_file: list[str] | None = field(default=None, metadata={
        "help": "parallel pairs (ParallelPair records, or a reference-format file); several allowed",
        "nargs": "+"})
    eval_file: str | None = field(default=None, metadata={"help": "dev task examples (same formats as train_file)"})
    eval_parallel_file: list[str] | None = field(default=None, metadata={
        "help": "dev parallel pairs (alignment loss and retrieval accuracy)", "nargs": "+"})
    data_format: str = field(default="auto", metadata={
        "help": "format of the data files; auto = from the fields of the first record",
        "choices": list(DATA_FORMATS)})
    dtype: str = field(default="auto", metadata={"help": "weights dtype: auto (from the checkpoint), float32, bfloat16, float16"})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, flash_attention_2, ..."})
    allow_pickle: bool = field(default=False, metadata={"help": "allow loading pickle (.bin) weights"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow a model's own code"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output_dir"})


def _read_texts(path: str, fmt: str, cfg, *, want: str):
    """(tasks, pairs) from one file; ``want`` is "task" or "parallel" (the role of the file)."""
    from xlt.align.data import PairText, TaskText, detect_format, reference_row
    from xlt.formats import iter_rows, read_records

    if fmt == "auto":
        first = next(iter(iter_rows(path)), None)
        fmt = detect_format(first[1]) if first is not None else "xlt"
    tasks, pairs = [], []
    if fmt == "xlt":
        if want == "task":
            for ex in read_records(path, "task"):
                tasks.append(TaskText(ex.prompt, ex.completion, append_eos=cfg.append_eos))
        else:
            for p in read_records(path, "parallel"):
                anchor, candidate = (p.tgt, p.src) if cfg.alignment_anchors == "tgt" else (p.src, p.tgt)
                pairs.append(PairText(anchor, candidate))
        return tasks, pairs
    n = 0
    for where, row in iter_rows(path):
        task, pair = reference_row(row, fmt, path=path, **where)
        n += 1
        if task is not None and want == "task":
            tasks.append(task)
        pairs.append(pair)
    if n == 0:
        from xlt.errors import DataError
        raise DataError("no records (the file is empty)", path=path)
    return tasks, pairs


def _load_split(task_file, parallel_files, data, cfg):
    tasks, pairs = [], []
    if task_file:
        t, p = _read_texts(task_file, data.data_format, cfg, want="task")
        tasks += t
        pairs += p
    for path in parallel_files or []:
        _, p = _read_texts(path, data.data_format, cfg, want="parallel")
        pairs += p
    return tasks, pairs


def train(config, data: AlignDataArguments, *, report: Callable[[str], None] | None = None,
          progress: bool = True):
    """Train as ``xlt train <config.preset>`` does; return the trainer after training.

    ``config``: an :class:`~xlt.align.config.AlignConfig` (``SFTConfig``, ``MidAlignConfig``,
    ``AFPConfig`` or the base class; ``output_dir`` receives everything); ``data``: the model
    and data files. Data are read and checked before the model loads. ``report``: called once
    (on the main process) with a one-line summary of the run before training starts.
    ``progress=False`` removes the Trainer's progress bar and per-log printing (the logs stay in
    ``trainer.state.log_history``).

    When a signal stopped training (:func:`xlt.training.stop_signal` is then not None) the last
    checkpoint is the output and no final files are written. An existing ``output_dir`` is an
    :class:`~xlt.errors.OutputExistsError` unless ``data.overwrite`` or the run resumes.
    """
    cfg = config
    check_training_arguments(cfg)
    if not data.train_file:
        raise ConfigError("--train_file is required (task examples)")
    from xlt.engines import check_fsdp_version

    check_fsdp_version(cfg)
    from xlt.training import prepare_output, wait_for_every_process

    out, resume = prepare_output(cfg.output_dir, cfg.resume_from_checkpoint, data.overwrite)
    wait_for_every_process(cfg)  # every process checked output_dir before the main one's Trainer creates it
    if cfg.schedule == "task" and (data.parallel_file or data.eval_parallel_file):
        raise ConfigError("--parallel_file is not used by the task-only schedule "
                          "(use xlt train mid-align or afp, or --schedule alternate/joint)")

    # data first: a bad file fails before the model loads
    tasks, pairs = _load_split(data.train_file, data.parallel_file, data, cfg)
    if cfg.schedule == "task":
        pairs = []
    elif not pairs:
        raise ConfigError(f"the {cfg.schedule} schedule needs parallel pairs: pass --parallel_file "
                          "or a train_file in a reference format that carries pairs")
    if not tasks:
        raise ConfigError(f"{data.train_file} holds no task examples")
    eval_tasks, eval_pairs = ([], [])
    if data.eval_file or data.eval_parallel_file:
        eval_tasks, eval_pairs = _load_split(data.eval_file, data.eval_parallel_file, data, cfg)
        if cfg.schedule == "task":
            eval_pairs = []

    import torch  # noqa: F401  (heavy imports only once the input is known to be good)
    import transformers

    from xlt.align.data import AlignCollator, build_dataset
    from xlt.align.trainer import AlignTrainer
    from xlt.models import (check_target_modules, default_target_modules, load_model, load_tokenizer,
                            refuse_adapter_model, targets_are_conv1d)

    refuse_adapter_model(data.model, "xlt train")
    tokenizer = load_tokenizer(data.model, padding_side="right", trust_remote_code=data.trust_remote_code)
    model = load_model(data.model, kind="causal", dtype=data.dtype, device="cpu",
                       allow_pickle=data.allow_pickle, trust_remote_code=data.trust_remote_code,
                       attn_implementation=data.attn_implementation)
    model.config.use_cache = False
    if cfg.schedule != "task" and cfg.alignment_layer is not None:
        from xlt.align.layers import _check_layer
        from xlt.models import num_layers

        _check_layer(cfg.alignment_layer, num_layers(model))  # before anything is written
    if cfg.use_lora:
        from peft import LoraConfig, get_peft_model

        transformers.set_seed(cfg.seed)  # the LoRA A matrices are drawn now, before the Trainer seeds

        targets = cfg.lora_target_modules or default_target_modules(model)
        check_target_modules(model, targets)
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, target_modules=targets,
                                                 fan_in_fan_out=targets_are_conv1d(model, targets),
                                                 task_type="CAUSAL_LM"))
        if cfg.activation_checkpointing:
            model.enable_input_require_grads()

    train_ds = build_dataset(tokenizer, tasks, pairs, max_length=cfg.max_length, seed=cfg.seed,
                             completion_only_loss=cfg.completion_only_loss,
                             streams=cfg.alternate_streams == "separate")
    eval_ds = None
    if eval_tasks or eval_pairs:
        eval_ds = build_dataset(tokenizer, eval_tasks, eval_pairs, max_length=cfg.max_length, seed=cfg.seed,
                                cycle=False, completion_only_loss=cfg.completion_only_loss)
    elif cfg.eval_strategy != "no":
        raise ConfigError(f"eval_strategy={cfg.eval_strategy} needs --eval_file or --eval_parallel_file")
    collator = AlignCollator(tokenizer.pad_token_id, pad_to_multiple_of=cfg.pad_to_multiple_of,
                             packing=cfg.packing, block_size=cfg.max_length,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if out.exists() and data.overwrite and not resume:
        shutil.rmtree(out)
    from xlt.training import graceful_stop_callback, quiet_trainer, schedule_check_callback

    callbacks = [graceful_stop_callback(), schedule_check_callback()]
    if cfg.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        if not (cfg.load_best_model_at_end and eval_ds is not None):
            raise ConfigError("early_stopping_patience needs evaluation data and load_best_model_at_end")
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))

    trainer = AlignTrainer(model=model, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                           data_collator=collator, processing_class=tokenizer,
                           callbacks=callbacks)
    from xlt.engines import check_engine

    trainer.xlt_engine = engine = check_engine(trainer)  # what the run really trains under
    if report is not None and trainer.is_world_process_zero():
        layer = f", alignment layer {trainer.alignment_layer}" if trainer.alignment_layer is not None else ""
        report(f"{len(tasks)} task examples, {len(pairs)} pairs -> {len(train_ds)} rows{layer}; "
               f"{'LoRA' if cfg.use_lora else 'full fine-tuning'}")
    if not progress:
        quiet_trainer(trainer)
    trainer.train(resume_from_checkpoint=resume)
    from xlt.training import stop_signal

    if stop_signal(trainer) is None:  # else pre-empted: a checkpoint, no final output
        _save(trainer, tokenizer, data, cfg, out, engine)
    return trainer


def _save(trainer, tokenizer, data, cfg, out: Path, engine: dict) -> None:
    """Write the adapter (or model), tokenizer, the config used and the log history into ``out``.

    Each file lands with an atomic rename; ``train_config.json`` is written last and marks a
    finished run. It holds every option of the command and can be passed back with ``--config``.
    """
    from xlt.io import move_entries, write_json

    tmp = out / ".final.tmp"
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # every process: DeepSpeed ZeRO-3 gathers the weights here
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(str(tmp))
    move_entries(tmp, out)
    write_json(out / "log_history.json", trainer.state.log_history)
    from xlt.engines import ENGINE_KEY

    write_json(out / "train_config.json", {**used_options(data, cfg), ENGINE_KEY: engine})
