"""``xlt train lslo`` and ``xlt lslo export``: the file-facing side of LSLo."""

from __future__ import annotations

from pathlib import Path

from xlt.errors import ConfigError
from xlt.lslo.run import LSLoDataArguments  # noqa: F401  (the command's data options)


_DESCRIPTION = ("Language-specific LoRA (Cao et al., EMNLP 2024): every language gets its own "
                "low-rank subspace in each adapted linear layer, picked per example by its source "
                "or target language according to each layer's direction; batches mix directions. "
                "Optional gradual magnitude pruning of the B matrices per epoch.")


def train_command(argv: list[str], prog: str) -> int:
    """``xlt train lslo``: train LSLo (or the shared-LoRA baseline with ``--shared``)."""
    import transformers

    from xlt.config import parse_dataclasses
    from xlt.lslo.run import train
    from xlt.lslo.trainer import LSLoTrainingConfig

    data, cfg = parse_dataclasses([LSLoDataArguments, LSLoTrainingConfig], argv, prog=prog,
                                  description=_DESCRIPTION)
    if not cfg.output_dir or (cfg.output_dir == "trainer_output" and "--output_dir" not in argv):
        raise ConfigError(f"{prog}: --output_dir is required")
    transformers.utils.logging.set_verbosity_warning()
    trainer = train(cfg, data, report=lambda line: print(f"{prog}: {line}", flush=True))
    from xlt.training import report_signal_stop

    stopped = report_signal_stop(trainer, prog)
    if stopped is not None:  # pre-empted: a checkpoint, no final output
        return stopped
    if trainer.is_world_process_zero():
        from xlt.io import summary_line

        what = ("model" if cfg.full_finetune else
                ("shared LoRA adapter" if cfg.shared else "LSLo adapter"))
        from xlt.engines import describe

        print(summary_line(prog, f"{what} after {trainer.state.global_step} steps, trained under "
                                 f"{describe(trainer.xlt_engine)}", cfg.output_dir), flush=True)
    return 0


# --------------------------------------------------------------------------------------------


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
    from xlt.lslo.model import base_model_of, read_lslo_metadata

    check_output(args.out, args.overwrite)
    config = LSLoConfig.from_dict(read_lslo_metadata(args.adapter)["config"])
    config.language_index(args.src)
    config.language_index(args.tgt)
    base_path = base_model_of(args.adapter, args.model)

    from xlt.translation import language_token_id
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
    from xlt.io import summary_line

    print(summary_line(prog, f"folded {args.src}->{args.tgt} into {n} linear layers of {base_path}", args.out))
    return 0
