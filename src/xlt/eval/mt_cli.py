"""``xlt eval mt``: translate every direction of a test set with one or more systems and score it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from xlt.errors import ConfigError
from xlt.provenance import VERSIONS_KEY, package_versions


def _parse_systems(args) -> list[tuple[str, str]]:
    systems: list[tuple[str, str]] = []
    for item in args.system or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--system: cannot read {item!r} (expected NAME=PATH)")
        systems.append((name, path))
    for path in args.model or []:
        systems.append((Path(path).name or str(path), path))
    if not systems:
        raise ConfigError("xlt eval mt: give at least one --model PATH or --system NAME=PATH")
    names = [n for n, _ in systems]
    for n in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", n):
            raise ConfigError(f"xlt eval mt: system name {n!r} must be letters, digits, '.', '_', '+', '-' "
                              "(name it with --system NAME=PATH)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"xlt eval mt: system name {dupes[0]!r} used twice (name them with --system NAME=PATH)")
    return systems


def mt_command(argv: list[str], prog: str) -> int:
    """Generate every direction (beam search), score BLEU / chrF (/ spBLEU), print and write tables."""
    from xlt.config import ArgumentParser, require_positive
    from xlt.translation import DEFAULT_PROMPT_TEMPLATE

    parser = ArgumentParser(prog=prog, description=(
        "Translate every direction of a ParallelPair test set with each system (a Hugging Face "
        "seq2seq or decoder-only model directory, or an LSLo adapter directory from 'xlt train lslo', "
        "whose base model is the one it records unless --base is given; decoder-only systems continue "
        "a translation prompt) and score each direction with "
        "sacrebleu. Prints a source x target table grouped by resource tier per system and a "
        "comparison of tier averages; with --out writes scores JSON, hypotheses and PNG heat maps."))
    parser.add_argument("--data", required=True, help="test ParallelPair records (e.g. translation/test.jsonl)")
    parser.add_argument("--model", action="append", metavar="PATH", help="a system (repeatable)")
    parser.add_argument("--system", action="append", metavar="NAME=PATH", help="a named system (repeatable)")
    parser.add_argument("--base", default=None, help="base model for LSLo adapter systems (default: recorded)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer (default: the system's, else its base's)")
    parser.add_argument("--directions", nargs="+", default=None, metavar="SRC-TGT",
                        help="only these directions (default: all in --data)")
    parser.add_argument("--max-per-direction", type=int, default=None, help="first N pairs of each direction")
    parser.add_argument("--num-beams", type=int, default=5, help="beam size (reference: 5)")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="fixed generation length limit (tokens after the language tag); "
                             "default: fairseq's --max-len-a * source length + --max-len-b")
    parser.add_argument("--max-len-a", type=float, default=0.0,
                        help="generation limit per source token (fairseq-generate's default: 0)")
    parser.add_argument("--max-len-b", type=int, default=200,
                        help="generation limit, constant part (fairseq-generate's default: 200)")
    parser.add_argument("--max-source-length", type=int, default=256, help="source truncation (tokens)")
    parser.add_argument("--chrf-word-order", type=int, default=0, choices=[0, 1, 2],
                        help="chrF word n-gram order; 2 = chrF++")
    parser.add_argument("--spm-model", default=None, metavar="FILE",
                        help="SentencePiece model for spBLEU (e.g. FLORES-200's flores200sacrebleuspm "
                             "or FLORES-101's sacrebleu_tokenizer_spm.model); spBLEU is skipped without it")
    parser.add_argument("--wrong-language", choices=("auto", "on", "off"), default="auto",
                        help="share of hypotheses not identified as the target language (py3langid): "
                             "auto = for the target languages the identifier knows, on = all (else an error)")
    parser.add_argument("--tiers", nargs="+", default=None, metavar="LANG=TIER",
                        help="resource tier per language (default: from the first LSLo adapter)")
    parser.add_argument("--metric", default=None,
                        help="metric of the printed tables and heat maps (default: spbleu if available, else bleu)")
    parser.add_argument("--prompt-template", default=DEFAULT_PROMPT_TEMPLATE.replace("\n", "\\n"),
                        help="decoder-only systems without a recorded prompt: the translation prompt, with "
                             "{src_lang}, {tgt_lang} and {src}; '\\n' is a newline")
    parser.add_argument("--language-names", nargs="+", default=None, metavar="CODE=NAME",
                        help="decoder-only systems without a recorded prompt: language names in the prompt")
    parser.add_argument("--out", default=None, help="output directory (scores JSON, hypotheses, PNG)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="model dtype")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    for name in ("num_beams", "batch_size", "max_source_length"):
        require_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.max_new_tokens is not None:
        require_positive("--max-new-tokens", args.max_new_tokens)
    require_positive("--max-len-a", args.max_len_a, allow_zero=True)
    require_positive("--max-len-b", args.max_len_b, allow_zero=True)
    if args.max_new_tokens is None and args.max_len_b < 1 and args.max_len_a == 0:
        raise ConfigError("--max-len-a 0 --max-len-b 0 allows no generated token")
    if args.max_per_direction is not None:
        require_positive("--max-per-direction", args.max_per_direction)
    systems = _parse_systems(args)
    _cli_prompt(args)  # a bad template fails before any model loads

    from xlt.io import check_output

    if args.out:
        check_output(args.out, args.overwrite)
    from xlt.eval.mt import (evaluate, format_comparison, format_direction_table, group_directions, make_metrics,
                             tier_averages)
    from xlt.formats import read_records
    from xlt.lslo.config import parse_mapping

    pairs = read_records(args.data, "parallel")
    groups = group_directions(pairs)
    if args.directions:
        wanted = []
        for d in args.directions:
            src, sep, tgt = d.partition("-")
            if not sep or (src, tgt) not in groups:
                raise ConfigError(f"--directions: {args.data} has no {d!r} pairs "
                                  f"(directions present: {', '.join(f'{s}-{t}' for s, t in groups)})")
            wanted.append((src, tgt))
        groups = {d: groups[d] for d in wanted}
    if args.max_per_direction:
        groups = {d: v[:args.max_per_direction] for d, v in groups.items()}
    metrics = make_metrics(chrf_word_order=args.chrf_word_order, spm_model=args.spm_model)
    metric = args.metric or ("spbleu" if "spbleu" in metrics else "bleu")
    if metric not in metrics:
        raise ConfigError(f"--metric: {metric!r} is not computed (available: {', '.join(metrics)})")
    tiers = parse_mapping(args.tiers, name="--tiers") if args.tiers else None

    evaluation = evaluate([p for members in groups.values() for p in members], dict(systems), metrics=metrics,
                          tiers=tiers, prompt=_cli_prompt(args), base=args.base, tokenizer=args.tokenizer,
                          device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle,
                          num_beams=args.num_beams, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                          max_source_length=args.max_source_length, wrong_language=args.wrong_language)
    results, hypotheses, tiers = evaluation.systems, evaluation.hypotheses, evaluation.tiers

    for name, res in results.items():
        table = {d: v[metric] for d, v in res["directions"].items()}
        print(format_direction_table(table, tiers, title=f"== {name}: {metric} (rows: source, columns: target)"))
        print()
    print(format_comparison({n: {d: v[metric] for d, v in r["directions"].items()} for n, r in results.items()},
                            tiers, metric=metric))
    for extra in metrics:
        if extra != metric:
            print()
            print(format_comparison({n: {d: v[extra] for d, v in r["directions"].items()}
                                     for n, r in results.items()}, tiers, metric=extra))

    rates = {n: {d: 100 * v["wrong_language_rate"] for d, v in r["directions"].items()
                 if v["wrong_language_rate"] is not None} for n, r in results.items()}
    for name, table in rates.items():
        if table:
            print()
            print(format_direction_table(table, tiers, title=f"== {name}: wrong-language rate, % "
                                                             "(rows: source, columns: target)"))
    sigs = evaluation.signatures
    print()
    for name, sig in sigs.items():
        print(f"signature {name}: {sig}")
    if args.out:
        _write_outputs(args, results, hypotheses, tiers, metrics, metric, sigs, tier_averages)
    from xlt.io import summary_line

    n_directions = len({d for r in results.values() for d in r["directions"]})
    print(summary_line(prog, f"{len(results)} system(s) on {n_directions} directions ({', '.join(metrics)})",
                       args.out))
    return 0


def _cli_prompt(args):
    from xlt.lslo.config import parse_mapping
    from xlt.translation import TranslationPrompt

    return TranslationPrompt(template=args.prompt_template,
                             language_names=parse_mapping(args.language_names, name="--language-names"))


def _write_outputs(args, results, hypotheses, tiers, metrics, metric, sigs, tier_averages) -> None:
    from xlt.eval.mt import plot_direction_heatmap
    from xlt.formats import write_jsonl
    from xlt.io import atomic_dir

    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        doc = {"data": str(args.data), "metric": metric, "signatures": sigs, "tiers": tiers,
               "settings": {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
                            "max_len_a": args.max_len_a, "max_len_b": args.max_len_b,
                            "chrf_word_order": args.chrf_word_order, "spm_model": args.spm_model,
                            "wrong_language": args.wrong_language},
               "systems": {}, VERSIONS_KEY: package_versions(extra=("sacrebleu", "py3langid"))}
        for name, res in results.items():
            directions = {f"{s}-{t}": v for (s, t), v in res["directions"].items()}
            averages = {m: tier_averages({d: v[m] for d, v in res["directions"].items()}, tiers)
                        for m in metrics}
            rates = {d: v["wrong_language_rate"] for d, v in res["directions"].items()
                     if v["wrong_language_rate"] is not None}
            if rates:
                averages["wrong_language_rate"] = tier_averages(rates, tiers)
            doc["systems"][name] = {"path": res["path"], "lslo": res["lslo"], "directions": directions,
                                    "averages": averages}
            write_jsonl(tmp / f"hypotheses.{name}.jsonl", hypotheses[name])
            figure = plot_direction_heatmap({d: v[metric] for d, v in res["directions"].items()}, tiers,
                                            title=f"{name}: {metric}")
            figure.savefig(tmp / f"heatmap.{name}.{metric}.png", format="png", dpi=120)
        (tmp / "mt_scores.json").write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
