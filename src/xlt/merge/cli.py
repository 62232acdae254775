"""``xlt merge adamergex|linear|task-arithmetic|language-arithmetic|layer-swap`` and ``xlt data reference-lm``.

The commands read adapter directories and data files, call :mod:`xlt.merge`, print a summary
and write the result atomically (the output path is checked before any work).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from xlt.config import ArgumentParser
from xlt.errors import ConfigError, DataError
from xlt.io import atomic_dir, check_output, summary_line, write_json
from xlt.provenance import VERSIONS_KEY, package_versions

DEFAULT_GRID = "0:1:0.1"
REPORT_NAME = "merge_report.json"


# --------------------------------------------------------------------------------------------
# shared options and output


def _common_merge_options(parser: ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (a PEFT adapter, or a full "
                        "model with --merge-into-base)")
    parser.add_argument("--rank", type=int, default=None,
                        help="LoRA only: re-factorise the exact update to this rank by truncated SVD "
                             "(reports the relative error per module); default: exact, rank = sum of ranks")
    parser.add_argument("--dtype", default="auto",
                        help="dtype of the written tensors (auto = the inputs'; float32, bfloat16, float16)")
    parser.add_argument("--merge-into-base", action="store_true",
                        help="write a full Hugging Face model (base + merged adapter) instead of an adapter")
    parser.add_argument("--base", default=None,
                        help="base model (path or hub id); default: the adapters' base_model_name_or_path")
    parser.add_argument("--tokenizer", default=None, help="tokenizer (default: the base model's)")
    parser.add_argument("--device", default="cpu", help="device for --merge-into-base and --t auto")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read adapter_model.bin pickle files (they can run code: trusted files only)")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="accept adapters whose configs name different base models")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.set_defaults(prog=parser.prog)  # for the closing summary line


def _parse_dtype(name: str):
    from xlt.models import parse_dtype

    try:
        value = parse_dtype(name)
    except Exception as exc:
        raise ConfigError(f"--dtype: {exc}") from None
    return None if value == "auto" else value


def _check_rank(rank):
    if rank is not None and rank < 1:
        raise ConfigError(f"--rank must be >= 1, got {rank}")


def _base_of(states, explicit: str | None) -> str:
    if explicit:
        return explicit
    base = states[0].config.get("base_model_name_or_path")
    if not base:
        raise ConfigError("the adapter config names no base model; pass --base")
    return base


def _load_base(path: str, device: str):
    from xlt.models import load_model

    return load_model(path, dtype="float32", device=device)


def _load_tokenizer(path: str):
    from xlt.models import load_tokenizer

    return load_tokenizer(path)


def _write_result(args, result, states, extra_report: dict | None = None) -> None:
    from xlt.merge.adapters import write_adapter

    report = dict(result.report, **(extra_report or {}))
    report[VERSIONS_KEY] = package_versions()
    if args.merge_into_base:
        from xlt.merge.selection import merge_into_base

        base = _base_of(states, args.base)
        model = merge_into_base(_load_base(base, args.device), result.adapter)
        tokenizer = None
        try:
            tokenizer = _load_tokenizer(args.tokenizer or base)
        except Exception as exc:  # a base without a tokenizer still gives a usable model
            print(f"note: no tokenizer saved ({str(exc).splitlines()[0]})", file=sys.stderr)
        report["merged_into_base"] = base
        with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
            model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
        print(summary_line(args.prog, "wrote the merged model", args.out))
    else:
        write_adapter(result.adapter, args.out, overwrite=args.overwrite, extra_files={REPORT_NAME: report})
        print(summary_line(args.prog, f"wrote a {result.adapter.peft_type} adapter", args.out))


def _print_summary(result) -> None:
    r = result.report
    if r.get("peft_type") == "LORA":
        print(f"{r.get('method', 'merge')} ({r['mode']}): {r['modules']} modules, "
              f"rank {r['rank']}, weights {', '.join(f'{w:g}' for w in r['weights'])}")
        if "relative_error" in r:
            print("relative Frobenius error per module:")
            for name, err in r["relative_error"].items():
                print(f"  {name}\t{err:.6f}")
            print(f"max relative error: {r['max_relative_error']:.6f}")
        if "ref_A_disagreement" in r:
            d = r["ref_A_disagreement"]
            print(f"LoRA-A disagreement of the reference adapters: {d:.4f}"
                  + ("  (large: they do not share an init, the factor-wise rule adds init noise; "
                     "consider --mode delta)" if d > 0.5 else ""))
    else:
        line = f"{r.get('method', 'merge')} ({r['mode']}): {r['modules']} (IA)^3 vectors"
        if "clamped_entries" in r:
            line += f", {r['clamped_entries']} entries of ref_source clamped to |x| >= {r['eps']:g}"
        print(line)


# --------------------------------------------------------------------------------------------
# xlt merge adamergex


def adamergex_command(argv: list[str], prog: str) -> int:
    from xlt.merge.adamergex import IA3_EPS, LORA_MODES
    from xlt.merge.selection import METRICS

    parser = ArgumentParser(prog=prog, description=(
        "AdaMergeX: a target-language task adapter = task adapter (source language) + "
        "t * (reference adapter in the target language - reference adapter in the source "
        "language); additive for LoRA, multiplicative for (IA)^3."))
    parser.add_argument("--task", required=True, help="task adapter trained in the source language")
    parser.add_argument("--ref-target", required=True, help="reference-task adapter, target language")
    parser.add_argument("--ref-source", required=True, help="reference-task adapter, source language")
    parser.add_argument("--t", required=True, help="merging coefficient, or 'auto' (with --dev)")
    parser.add_argument("--mode", choices=LORA_MODES, default="delta",
                        help="LoRA: delta = exact update arithmetic; factorwise = the reference code's "
                             "factor-by-factor rule; as-released = the released script (no subtraction)")
    parser.add_argument("--ia3-eps", type=float, default=IA3_EPS,
                        help="(IA)^3: clamp |l_ref_source| to at least this before dividing (0: no clamp, "
                             "error on a non-finite result)")
    parser.add_argument("--dev", default=None, help="--t auto: target-language dev set (TaskExample records)")
    parser.add_argument("--dev-lang", default=None, help="--t auto: use only the dev records of this language")
    parser.add_argument("--dev-limit", type=int, default=None, help="--t auto: first N dev records only")
    parser.add_argument("--grid", default=DEFAULT_GRID,
                        help="--t auto: t values, comma-separated or start:stop:step (stop included)")
    parser.add_argument("--metric", choices=METRICS, default="accuracy",
                        help="--t auto: exact-match accuracy of greedy completions, or completion loss")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="--t auto: generation length (default: longest dev completion + 2 tokens)")
    parser.add_argument("--batch-size", type=int, default=16, help="--t auto: evaluation batch size")
    parser.add_argument("--curve", default=None, help="--t auto: also write the t curve to this JSON file")
    _common_merge_options(parser)
    args = parser.parse_args(argv)

    from xlt.merge.adamergex import adamergex
    from xlt.merge.adapters import read_adapter

    auto = args.t.strip().lower() == "auto"
    t = None
    if not auto:
        try:
            t = float(args.t)
        except ValueError:
            raise ConfigError(f"--t: expected a number or 'auto', got {args.t!r}") from None
        if not math.isfinite(t):
            raise ConfigError(f"--t must be finite, got {args.t}")
        if args.dev is not None:
            raise ConfigError("--dev is used only with --t auto")
    elif args.dev is None:
        raise ConfigError("--t auto needs --dev (a target-language dev set)")
    _check_rank(args.rank)
    if args.ia3_eps < 0 or not math.isfinite(args.ia3_eps):
        raise ConfigError(f"--ia3-eps must be a finite number >= 0, got {args.ia3_eps}")
    dtype = _parse_dtype(args.dtype)
    check_output(args.out, args.overwrite)
    if args.curve:
        check_output(args.curve, True)
    states = [read_adapter(getattr(args, name), allow_pickle=args.allow_pickle)
              for name in ("task", "ref_target", "ref_source")]

    def merge(value: float):
        return adamergex(*states, value, mode=args.mode, rank=args.rank, eps=args.ia3_eps, dtype=dtype,
                         allow_base_mismatch=args.allow_base_mismatch)

    extra = {}
    if auto:
        merge(0.0)  # validate the adapters before loading a model
        t, curve = _choose_t(args, states, merge)
        extra = {"t_selection": {"metric": args.metric, "dev": args.dev, "dev_lang": args.dev_lang,
                                 "best_t": t, "curve": curve}}
        if args.curve:
            write_json(args.curve, extra["t_selection"])
    result = merge(t)
    _print_summary(result)
    _write_result(args, result, states, extra)
    return 0


def _choose_t(args, states, merge):
    from xlt.formats import read_records
    from xlt.merge.selection import attach_adapter, load_adapter_tensors, parse_grid, score_task, select_t

    grid = parse_grid(args.grid)
    examples = read_records(args.dev, "task")
    langs = sorted({ex.lang for ex in examples})
    if args.dev_lang is not None:
        examples = [ex for ex in examples if ex.lang == args.dev_lang]
        if not examples:
            raise DataError(f"no records of language {args.dev_lang!r} (languages present: "
                            f"{', '.join(langs)})", path=args.dev)
    elif len(langs) > 1:
        raise ConfigError(f"{args.dev}: records of several languages ({', '.join(langs)}); "
                          "pick the target language with --dev-lang")
    if args.dev_limit is not None:
        examples = examples[:args.dev_limit]
    base = _base_of(states, args.base)
    tokenizer = _load_tokenizer(args.tokenizer or base)
    model = attach_adapter(_load_base(base, args.device), merge(grid[0]).adapter)

    def evaluate(t):
        load_adapter_tensors(model, merge(t).adapter)
        return score_task(model, tokenizer, examples, metric=args.metric,
                          max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    def show(point):
        acc = f"  accuracy {point['accuracy']:.4f}" if "accuracy" in point else ""
        print(f"t = {point['t']:g}{acc}  loss {point['loss']:.4f}", flush=True)

    print(f"choosing t on {len(examples)} dev records ({args.metric}):")
    best, curve = select_t(grid, evaluate, metric=args.metric, progress=show)
    print(f"best t = {best:g}")
    return best, curve


# --------------------------------------------------------------------------------------------
# xlt merge linear / task-arithmetic


def _many_adapters_parser(prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--adapters", nargs="+", required=True, help="adapter directories (two or more)")
    parser.add_argument("--weights", nargs="+", type=float, default=None,
                        help="one weight per adapter (default: all 1)")
    _common_merge_options(parser)
    return parser


def _run_many(args, fn, **options) -> int:
    from xlt.merge.adapters import read_adapter

    _check_rank(args.rank)
    dtype = _parse_dtype(args.dtype)
    if len(args.adapters) < 2:
        raise ConfigError("--adapters: give at least two adapter directories")
    if args.weights is not None and len(args.weights) != len(args.adapters):
        raise ConfigError(f"--weights: {len(args.adapters)} adapters but {len(args.weights)} weights")
    check_output(args.out, args.overwrite)
    states = [read_adapter(a, allow_pickle=args.allow_pickle) for a in args.adapters]
    result = fn(states, args.weights, rank=args.rank, dtype=dtype,
                allow_base_mismatch=args.allow_base_mismatch, **options)
    _print_summary(result)
    _write_result(args, result, states)
    return 0


def linear_command(argv: list[str], prog: str) -> int:
    from xlt.merge.methods import linear

    parser = _many_adapters_parser(prog, "Weighted average of adapter updates, exact: "
                                         "sum_i w_i dW_i / sum_i w_i (LoRA: rank sum_i r_i).")
    parser.add_argument("--no-normalize", action="store_true", help="do not divide by the sum of the weights")
    args = parser.parse_args(argv)
    return _run_many(args, linear, normalize=not args.no_normalize)


def task_arithmetic_command(argv: list[str], prog: str) -> int:
    from xlt.merge.methods import task_arithmetic

    parser = _many_adapters_parser(prog, "Task arithmetic on adapter updates, exact: "
                                         "lambda * sum_i w_i dW_i (negative weights subtract).")
    parser.add_argument("--lambda", dest="scale", type=float, default=1.0, help="overall scale")
    args = parser.parse_args(argv)
    if not math.isfinite(args.scale):
        raise ConfigError(f"--lambda must be finite, got {args.scale}")
    return _run_many(args, task_arithmetic, scale=args.scale)


# --------------------------------------------------------------------------------------------
# xlt merge language-arithmetic


def language_arithmetic_command(argv: list[str], prog: str) -> int:
    from xlt.merge.adapters import read_adapter
    from xlt.merge.methods import language_arithmetic

    parser = ArgumentParser(prog=prog, description=(
        "Language arithmetic (Chronopoulou et al., 2023): task adapter + lambda * (target-language "
        "adapter - source-language adapter), exact on LoRA updates (rank r1 + r2 + r3, or --rank)."))
    parser.add_argument("--task", required=True, help="task adapter trained in the source language")
    parser.add_argument("--target-language", required=True, help="language adapter, target language")
    parser.add_argument("--source-language", required=True, help="language adapter, source language")
    parser.add_argument("--lambda", dest="lam", type=float, default=1.0,
                        help="weight of the language difference (default 1)")
    _common_merge_options(parser)
    args = parser.parse_args(argv)
    if not math.isfinite(args.lam):
        raise ConfigError(f"--lambda must be finite, got {args.lam}")
    _check_rank(args.rank)
    dtype = _parse_dtype(args.dtype)
    check_output(args.out, args.overwrite)
    states = [read_adapter(getattr(args, name), allow_pickle=args.allow_pickle)
              for name in ("task", "target_language", "source_language")]
    result = language_arithmetic(*states, args.lam, rank=args.rank, dtype=dtype,
                                 allow_base_mismatch=args.allow_base_mismatch)
    _print_summary(result)
    _write_result(args, result, states)
    return 0


# --------------------------------------------------------------------------------------------
# xlt merge layer-swap


def layer_swap_command(argv: list[str], prog: str) -> int:
    from xlt.merge.layer_swap import OUTER_RULES, layer_swap_directories

    parser = ArgumentParser(prog=prog, description=(
        "Layer swapping (Bandarkar et al., ICLR 2025): the task expert's blocks, except the bottom "
        "--bottom and top --top blocks, which come from the language expert (both fine-tuned from "
        "one base). Two model directories give a model directory, two adapters an adapter."))
    parser.add_argument("--task-expert", required=True, help="task expert (model or adapter directory)")
    parser.add_argument("--language-expert", required=True, help="language expert (model or adapter directory)")
    parser.add_argument("--bottom", type=int, required=True, help="blocks taken from the language expert at the bottom")
    parser.add_argument("--top", type=int, required=True, help="blocks taken from the language expert at the top")
    parser.add_argument("--transition", type=int, default=None,
                        help="blocks blended on the task side of each seam (None: 1 when --blend is given, else 0)")
    parser.add_argument("--blend", type=float, default=None,
                        help="language expert's weight in the transition blocks (None: 0.5)")
    parser.add_argument("--outer", choices=OUTER_RULES, default="adjacent",
                        help="embeddings, final norm and head: adjacent = from the expert owning the first "
                             "(embeddings) and last (norm, head) block; or all from one expert")
    parser.add_argument("--num-layers", type=int, default=None,
                        help="adapters: the base model's block count (default: from the adapters' tensors)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read adapter_model.bin pickle files (they can run code: trusted files only)")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="adapters: accept configs that name different base models")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    transition = args.transition if args.transition is not None else (1 if args.blend is not None else 0)
    blend = args.blend if args.blend is not None else 0.5
    if args.num_layers is not None and args.num_layers < 1:
        raise ConfigError(f"--num-layers must be >= 1, got {args.num_layers}")
    check_output(args.out, args.overwrite)
    report = layer_swap_directories(args.task_expert, args.language_expert, args.out, bottom=args.bottom,
                                    top=args.top, transition=transition, blend=blend, outer=args.outer,
                                    num_layers=args.num_layers, overwrite=args.overwrite,
                                    allow_pickle=args.allow_pickle,
                                    allow_base_mismatch=args.allow_base_mismatch)
    blocks = report["blocks"]
    runs = []
    for source in blocks:
        if runs and runs[-1][0] == source:
            runs[-1][1] += 1
        else:
            runs.append([source, 1])
    print(f"layer swap over {report['num_layers']} blocks: "
          + " | ".join(f"{n} x {source}" for source, n in runs)
          + f"; outer tensors: {args.outer}")
    if report.get("note"):
        print(f"note: {report['note']}")
    kind = "adapter" if report.get("peft_type") else "model"
    print(summary_line(prog, f"wrote the layer-swapped {kind}", args.out))
    return 0


# --------------------------------------------------------------------------------------------
# xlt data reference-lm


TEXT_SUFFIXES = (".txt", ".text")


def _read_articles(path: str, text_field: str | None, max_articles: int | None):
    """Yield article texts: one per non-empty line of a text file, or one per record."""
    import gzip

    from xlt.formats import iter_rows

    p = Path(path)
    suffixes = p.suffixes
    inner = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    count = 0
    if inner in TEXT_SUFFIXES:
        if not p.is_file():
            raise DataError("no such file", path=p)
        opener = gzip.open if p.suffix == ".gz" else open
        try:
            with opener(p, "rt", encoding="utf-8") as handle:
                for line in handle:
                    line = line.rstrip("\n")
                    if line.strip():
                        yield line
                        count += 1
                        if max_articles is not None and count >= max_articles:
                            return
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason})", path=p) from None
        return
    for where, row in iter_rows(path):
        if not isinstance(row, dict):
            raise DataError("expected a JSON object", path=path, **where)
        if text_field is not None:
            if not isinstance(row.get(text_field), str):
                raise DataError("missing or not a string", path=path, field=text_field, **where)
            text = row[text_field]
        elif isinstance(row.get("text"), str):
            text = row["text"]
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            text = row["prompt"] + row["completion"]  # the reference's own <Lang>_Wiki.json layout
        else:
            raise DataError("expected a 'text' field or 'prompt' and 'completion' (or pass --text-field)",
                            path=path, **where)
        yield text
        count += 1
        if max_articles is not None and count >= max_articles:
            return


def reference_lm_command(argv: list[str], prog: str) -> int:
    from xlt.formats import check_language, write_jsonl
    from xlt.merge.reference_data import BOUNDARIES, UNITS, chunk_text

    parser = ArgumentParser(prog=prog, description=(
        "Build AdaMergeX reference-task data (causal LM) from raw text: chunks of "
        "--prompt-units units as the prompt and --completion-units as the completion, written as "
        "TaskExample JSON Lines. Inputs: .txt (one article per non-empty line), .jsonl/.json/.parquet "
        "(a 'text' field, or prompt + completion), optionally gzipped."))
    parser.add_argument("--input", nargs="+", required=True, help="raw text files")
    parser.add_argument("--lang", required=True, help="language code written into every record")
    parser.add_argument("--out", required=True, help="output .jsonl file")
    parser.add_argument("--unit", choices=UNITS, default="word",
                        help="word (whitespace words, the reference's demo data) or char (its script)")
    parser.add_argument("--prompt-units", type=int, default=511, help="units per prompt (paper: 511)")
    parser.add_argument("--completion-units", type=int, default=1, help="units per completion (paper: 1)")
    parser.add_argument("--boundary", choices=BOUNDARIES, default="space",
                        help="join of the carried remainder and the next article: space, or glue (as "
                             "released: no separator, newlines deleted)")
    parser.add_argument("--text-field", default=None, help="JSON/parquet field holding the text")
    parser.add_argument("--max-articles", type=int, default=None,
                        help="use only the first N articles per input (the reference used 10,000)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    check_language(args.lang, field="--lang")
    if args.max_articles is not None and args.max_articles < 1:
        raise ConfigError(f"--max-articles must be >= 1, got {args.max_articles}")
    check_output(args.out, args.overwrite)

    def articles():
        for path in args.input:
            yield from _read_articles(path, args.text_field, args.max_articles)

    chunks = chunk_text(articles(), unit=args.unit, n_prompt=args.prompt_units,
                        n_completion=args.completion_units, boundary=args.boundary)
    records, skipped = [], 0
    for prompt, completion in chunks.pairs:
        if not completion.strip():  # a whitespace character cannot be a TaskExample completion
            skipped += 1
            continue
        if args.unit == "word":  # prompt + completion reproduces the running text
            completion = " " + completion
        records.append({"lang": args.lang, "prompt": prompt, "completion": completion})
    if not records:
        size = args.prompt_units + args.completion_units
        raise DataError(f"the text is too short for one chunk of {size} {args.unit}s "
                        f"({chunks.dropped_units} {args.unit}s in {chunks.articles} articles)",
                        path=args.input[0])
    write_jsonl(args.out, records, overwrite=args.overwrite)
    note = f", {skipped} chunks with a whitespace completion skipped" if skipped else ""
    print(summary_line(prog, f"{len(records)} records from {chunks.articles} articles ({args.unit} units, "
                             f"{args.prompt_units} + {args.completion_units}); {chunks.dropped_units} "
                             f"trailing {args.unit}s dropped{note}", args.out))
    return 0
