"""``xlt train sft | mid-align | afp``: parse the options, then :func:`xlt.align.train` does the run.

All three commands take the same options (``--help`` shows each preset's defaults): the fields of
:class:`AlignDataArguments` and of the preset's :class:`~xlt.align.config.AlignConfig` subclass
(every ``transformers.TrainingArguments`` option included), from ``--config file.yaml`` and/or
the command line.
"""

from __future__ import annotations

from xlt.align.run import DATA_FORMATS, AlignDataArguments  # noqa: F401  (the commands' data options)
from xlt.errors import ConfigError


def sft_command(argv: list[str], prog: str) -> int:
    """``xlt train sft``: task fine-tuning only (the baseline)."""
    return _train("sft", argv, prog)


def mid_align_command(argv: list[str], prog: str) -> int:
    """``xlt train mid-align``: task loss alternated with middle-layer InfoNCE."""
    return _train("mid-align", argv, prog)


def afp_command(argv: list[str], prog: str) -> int:
    """``xlt train afp``: early-layer InfoNCE + cross-lingual instruction LM loss."""
    return _train("afp", argv, prog)


_DESCRIPTIONS = {
    "sft": "Task fine-tuning (LoRA or full) of a causal LM on prompt/completion examples.",
    "mid-align": "Middle-layer alignment (Liu & Niehues, ACL 2025): task loss alternated per "
                 "micro-batch with InfoNCE on mean-pooled states of a middle layer.",
    "afp": "AFP (Li et al., NAACL 2024): 1.0 * InfoNCE on last-token states of layer 1 + 1.5 * "
           "LM loss on (cross-lingual) instruction data, every step.",
}


def _train(preset: str, argv: list[str], prog: str) -> int:
    import transformers

    from xlt.align.config import PRESETS
    from xlt.align.run import train
    from xlt.config import parse_dataclasses

    data, cfg = parse_dataclasses([AlignDataArguments, PRESETS[preset]], argv, prog=prog,
                                  description=_DESCRIPTIONS[preset])
    if not cfg.output_dir or cfg.output_dir == "trainer_output" and "--output_dir" not in argv:
        raise ConfigError(f"{prog}: --output_dir is required")
    transformers.utils.logging.set_verbosity_warning()
    trainer = train(cfg, data, report=lambda line: print(f"{prog}: {line}", flush=True))
    from xlt.training import report_signal_stop

    stopped = report_signal_stop(trainer, prog)
    if stopped is not None:  # pre-empted: a checkpoint, no final output
        return stopped
    if trainer.is_world_process_zero():
        from xlt.io import summary_line

        losses = [e["train_loss"] for e in trainer.state.log_history if "train_loss" in e]
        loss = f", final loss {losses[-1]:.4f}" if losses else ""
        from xlt.engines import describe

        print(summary_line(prog, f"{'LoRA adapter' if cfg.use_lora else 'model'} after "
                                 f"{trainer.state.global_step} steps{loss}, trained under "
                                 f"{describe(trainer.xlt_engine)}", cfg.output_dir), flush=True)
    return 0
