"""The ``xlt`` command line: one entry point, one thin adapter per subcommand.

The command tree lives in :data:`COMMANDS` as import strings, so ``xlt --help`` is instant and
a subcommand imports torch and transformers only when it runs. A target ``"module:function"``
names a function ``function(argv: list[str], prog: str) -> int | None`` that parses its own
arguments (with :mod:`xlt.config`), calls the public API, prints and writes files.

Errors: an :class:`~xlt.errors.XltError` becomes one line ``xlt: error: ...`` on stderr with
exit status 2; anything else is a bug, reported in one line with exit status 1 (the traceback
is shown with ``--debug``).

Library noise (deprecation notices and advice meant for the code calling transformers, peft or
torch) is filtered unless ``--verbose`` is given; see :mod:`xlt.quiet`.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

from xlt import __version__
from xlt.errors import XltError

#: name -> (target, one-line help), or name -> {subname: (target, help)}
COMMANDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "synth": ("xlt.synth.cli:synth_command", "generate a synthetic multilingual world"),
    "pretrain": ("xlt.pretrain.cli:pretrain_command",
                 "pre-train a causal LM from scratch with cloned or imbalanced languages"),
    "train": {
        "sft": ("xlt.align.cli:sft_command", "plain task fine-tuning (the baseline)"),
        "mid-align": ("xlt.align.cli:mid_align_command",
                      "task fine-tuning alternated with middle-layer contrastive alignment"),
        "afp": ("xlt.align.cli:afp_command",
                "AFP: early-layer contrastive alignment + cross-lingual instruction tuning"),
        "lslo": ("xlt.lslo.cli:train_command", "language-specific LoRA for translation models"),
    },
    "data": {
        "afp": ("xlt.afp.cli:data_afp_command", "generate AFP cross-lingual instruction data"),
        "reference-lm": ("xlt.merge.cli:reference_lm_command",
                         "build AdaMergeX reference-task (causal LM) data from raw text"),
    },
    "merge": {
        "adamergex": ("xlt.merge.cli:adamergex_command",
                      "AdaMergeX: task adapter + t * (reference target - reference source)"),
        "linear": ("xlt.merge.cli:linear_command", "weighted sum of LoRA updates, exact"),
        "task-arithmetic": ("xlt.merge.cli:task_arithmetic_command",
                            "task arithmetic over LoRA updates, exact"),
        "language-arithmetic": ("xlt.merge.cli:language_arithmetic_command",
                                "task adapter + lambda * (target-language - source-language adapter), exact"),
        "layer-swap": ("xlt.merge.cli:layer_swap_command",
                       "a task expert with a language expert's bottom and top blocks (models or adapters)"),
    },
    "eval": {
        "icl": ("xlt.eval.cli:icl_command", "multilingual multiple-choice in-context evaluation"),
        "task": ("xlt.eval.cli:task_command",
                 "per-language accuracy (exact match) of generated task completions"),
        "lm-eval": ("xlt.eval.cli:lm_eval_command", "run lm-evaluation-harness on a loaded model"),
        "mt": ("xlt.eval.mt_cli:mt_command", "translate every direction and score BLEU / chrF"),
        "ppl": ("xlt.eval.ppl_cli:ppl_command", "per-language perplexity with a sliding window"),
        "suite": ("xlt.eval.suite_cli:suite_command",
                  "several multiple-choice tasks x languages: results.json, a table, a heat map"),
        "compare": ("xlt.eval.compare_cli:compare_command",
                    "runs of eval suite side by side, paired bootstrap intervals per task and language"),
    },
    "analyze": {
        "similarity": ("xlt.analysis.cli:similarity_command",
                       "layer-wise hidden-state and gradient similarity of parallel inputs"),
        "lens": ("xlt.analysis.cli:lens_command",
                 "the logit lens at every layer: p(target), p(pivot translation), entropy"),
        "neurons": ("xlt.analysis.cli:neurons_command",
                    "language-specific FFN neurons by activation-probability entropy (LAPE), steering"),
    },
    "lslo": {
        "export": ("xlt.lslo.cli:export_command",
                   "fold one direction's LSLo subspaces into a plain Hugging Face model"),
    },
    "demo": ("xlt.demo:demo_command", "run the five methods side by side in a synthetic world"),
}


def _usage(commands: dict, prefix: str) -> str:
    width = max(len(name) for name in commands) + 2
    lines = [f"usage: {prefix} <command> [options]", ""]
    if prefix == "xlt":
        lines += ["Cross-lingual transfer for large language models.", "",
                  "global options:",
                  "  --debug        show the full traceback of an error",
                  "  --verbose      let the libraries' warnings and notices through (filtered by default)",
                  "  --version      print the version and exit",
                  "  -h, --help     show this help and exit", ""]
    lines.append("commands:")
    for name, entry in commands.items():
        if isinstance(entry, dict):
            lines.append(f"  {name:<{width}}{', '.join(entry)}")
        else:
            lines.append(f"  {name:<{width}}{entry[1]}")
    lines += ["", f"Run '{prefix} <command> --help' for the options of a command."]
    return "\n".join(lines)


def _resolve(argv: list[str]) -> tuple[str, str, list[str]] | None:
    """Walk the command tree; return (target, prog, remaining argv) or None after printing help."""
    node: dict = COMMANDS
    prog = "xlt"
    while True:
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage(node, prog))
            if not argv:
                raise XltError(f"{prog}: missing command (one of {', '.join(node)})")
            return None
        name, argv = argv[0], argv[1:]
        if name not in node:
            raise XltError(f"{prog}: unknown command {name!r} (expected one of {', '.join(node)})")
        entry = node[name]
        prog = f"{prog} {name}"
        if isinstance(entry, dict):
            node = entry
            continue
        return entry[0], prog, argv


def run(argv: Sequence[str]) -> int:
    """Dispatch ``argv`` (without the program name); raise on error."""
    argv = list(argv)
    if argv and argv[0] == "--version":
        print(f"xlt {__version__}")
        return 0
    resolved = _resolve(argv)
    if resolved is None:
        return 0
    target, prog, rest = resolved
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise XltError(f"{prog}: not available in this version of xlt") from None
        raise
    command = getattr(module, func_name, None)
    if command is None:
        raise XltError(f"{prog}: not available in this version of xlt")
    status = command(rest, prog)
    return int(status or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("XLT_DEBUG") == "1"
    verbose = "--verbose" in argv
    argv = [a for a in argv if a not in ("--debug", "--verbose")]
    if not verbose:
        from xlt.quiet import quiet_libraries

        quiet_libraries()
    try:
        return run(argv)
    except SystemExit as exc:  # argparse --help
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except XltError as exc:
        if debug:
            raise
        print(f"xlt: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xlt: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, or an error of a library we could not anticipate
        if debug:
            raise
        print(f"xlt: error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
