"""``xlt pretrain``: pre-train a causal LM from scratch with cloned or real second languages."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from xlt.errors import ConfigError, OutputExistsError
from xlt.provenance import VERSIONS_KEY, package_versions

DESCRIPTION = """Pre-train a causal LM from scratch on packed windows of a tokenised corpus, with
cloned languages (--n_clones, --p_clone, --frac_clone) or a real second language (--corpus_l2,
--p_l2, --merge_vocab), and an optional --language_schedule such as 0.1_0.9. Writes a Hugging
Face model directory with the tokenizer(s), languages.json (language names and id maps),
pretrain_config.json and train_log.json. Options may come from --config FILE.yaml."""


def _finished(path: Path) -> bool:
    return (path / "languages.json").is_file() or (path / "model.safetensors").is_file()


def _last_checkpoint(path: Path) -> str | None:
    from xlt.training import last_checkpoint

    found = last_checkpoint(path)
    return str(found) if found else None


def pretrain_command(argv: list[str], prog: str) -> int:
    from xlt.config import parse_dataclasses
    from xlt.pretrain.train import PretrainConfig

    (config,) = parse_dataclasses([PretrainConfig], argv, prog=prog, description=DESCRIPTION)
    out = Path(config.output_dir)
    from xlt.training import resolve_resume

    value = config.resume_from_checkpoint
    resume = resolve_resume("true" if value == "last" else value, out)
    if out.exists() and _finished(out) and not config.overwrite and not resume:
        raise OutputExistsError(out)
    if out.exists() and not resume and _last_checkpoint(out) and not config.overwrite:
        raise ConfigError(f"{out}: holds checkpoints of an unfinished run; pass "
                          "--resume_from_checkpoint true to continue it or --overwrite to start over")
    if out.exists() and not resume and not config.overwrite:
        # only the token cache of a run that never reached a checkpoint may be reused in place
        others = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != "token_cache") \
            if out.is_dir() else [out.name]
        if others:
            raise OutputExistsError(out)

    created = [p for p in [*reversed(out.parents), out] if not p.exists()]  # outermost first
    try:
        return _pretrain(config, out, resume, prog)
    except BaseException:
        # a run that fails before its first checkpoint leaves nothing behind
        if created and created[0].is_dir() and _last_checkpoint(out) is None:
            shutil.rmtree(created[0], ignore_errors=True)
        raise


def _pretrain(config, out: Path, resume, prog: str) -> int:
    from xlt.io import move_entries, write_json
    from xlt.models import load_tokenizer
    from xlt.pretrain.data import tokenize_corpus
    from xlt.pretrain.train import build_language_map, pretrain

    tokenizer = load_tokenizer(config.tokenizer)
    tokenizer_l2 = load_tokenizer(config.tokenizer_l2) if config.tokenizer_l2 else None
    language_map = build_language_map(config, tokenizer, tokenizer_l2)
    cache = Path(config.data_cache) if config.data_cache else out / "token_cache"
    stores = [tokenize_corpus(config.corpus, tokenizer, cache)]
    if config.mode == "bilingual":
        second = tokenizer_l2 or tokenizer
        stores.append(tokenize_corpus(config.corpus_l2, second, cache))
    if config.overwrite and not resume:
        for name in os.listdir(out) if out.is_dir() else []:
            if name.startswith("checkpoint-"):
                shutil.rmtree(out / name, ignore_errors=True)

    trainer, summary = pretrain(config, stores, language_map, tokenizer=tokenizer,
                                resume_from_checkpoint=resume)
    from xlt.training import report_signal_stop

    stopped = report_signal_stop(trainer, prog)
    if stopped is not None:  # pre-empted: a checkpoint, no final output
        return stopped

    # Write the final artefacts into a temporary folder, then move them into place.
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = trainer.model
    model.config.xlt_languages = language_map.names
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if tokenizer_l2 is not None:
        tokenizer_l2.save_pretrained(tmp / "tokenizer_l2")
    languages = language_map.to_dict()
    languages["tokenizers"] = {name: ("tokenizer_l2" if language_map.tokenizer_index(name) == 1
                                      and tokenizer_l2 is not None else ".") for name in language_map.names}
    languages["corpora"] = {"L1": [str(p) for p in config.corpus],
                            **({"L2": [str(p) for p in config.corpus_l2]} if config.corpus_l2 else {})}
    languages["training"] = summary
    write_json(tmp / "languages.json", languages)
    options = config.to_dict()
    write_json(tmp / "pretrain_config.json", {"method": config.method_options(), "trainer": options,
                                               VERSIONS_KEY: package_versions()})
    write_json(tmp / "train_log.json", trainer.state.log_history)
    # languages.json (what marks a finished run) goes last
    move_entries(tmp, out, last="languages.json")
    per_language = ", ".join(f"{k} {v}" for k, v in summary["sequences_per_language"].items())
    print(json.dumps({"output_dir": str(out), **{k: v for k, v in summary.items()}}, default=str))
    print(f"{prog}: {summary['steps']} steps, {summary['tokens_seen']} tokens "
          f"(sequences per language: {per_language}), final loss {summary['train_loss']:.4f} -> {out}")
    return 0
