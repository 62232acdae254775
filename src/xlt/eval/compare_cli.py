"""``xlt eval compare``: runs of ``xlt eval suite`` side by side, paired bootstrap intervals."""

from __future__ import annotations

from pathlib import Path

from xlt.errors import ConfigError, DataError

DESCRIPTION = """Put runs of 'xlt eval suite' (their OUT directories) side by side: per task and
language each run's score and, for every run against the baseline (the first, or --baseline),
the difference with a paired bootstrap confidence interval over items; then each task's mean over
languages with its interval (items resampled within each language). Runs that scored other
tasks, languages, items, shots, seeds, limits, scoring rules or prompts are refused. Prints a
markdown table; --out FILE.md writes it and FILE.json (every number) beside it."""


def build_parser(prog: str):
    from xlt.config import ArgumentParser

    parser = ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("runs", nargs="+", metavar="DIR", help="output directories of xlt eval suite")
    parser.add_argument("--baseline", default=None, metavar="DIR", help="the run the others are compared with")
    parser.add_argument("--metric", default=None,
                        help="per-item value compared in every task: acc, acc_norm, exact_match, exact_match_flexible "
                             "(default: acc for multiple choice, exact_match_flexible for mgsm, chrf++ for flores)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--out", default=None, metavar="FILE.md", help="markdown table; FILE.json beside it")
    return parser


def read_suite_run(directory: str | Path, label: str | None = None):
    """A :class:`xlt.eval.compare.SuiteRun` from an ``xlt eval suite`` directory: its
    results.json and the per-item values of each (task, language) part (tasks without
    per-item values, the bits per byte of ``ppl``, are left out)."""
    from xlt.eval.compare import SuiteRun
    from xlt.eval.suite_cli import _part_path
    from xlt.io import read_json

    directory = Path(directory)
    if not (directory / "results.json").is_file():
        raise DataError(f"{directory}: not an xlt eval suite directory (no results.json)")
    report = read_json(directory / "results.json", error=DataError)
    try:
        settings = {key: report["settings"][key] for key in ("shots", "seed", "limit")}
        tasks = {name: task for name, task in report["tasks"].items() if name != "ppl"}
        results = report["results"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{directory / 'results.json'}: not written by xlt eval suite (no {exc})") from None
    model = report.get("model", "")
    if report.get("adapter"):
        model += " + " + report["adapter"]
    items = {}
    for name in tasks:
        items[name] = {}
        for lang in results.get(name, {}):
            path = _part_path(directory, name, lang)
            part = read_json(path, error=DataError)
            values = part.get("items")
            if not isinstance(values, dict) or not isinstance(values.get("key"), list):
                raise DataError(f"{path}: no per-item values (written by an older xlt eval suite); "
                                "rerun the suite into a new --out to compare it")
            items[name][lang] = values
    return SuiteRun(label or str(directory), model, settings, tasks, items)


def compare_command(argv: list[str], prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    from xlt.config import require_positive
    from xlt.eval.compare import compare_runs, comparison_markdown
    from xlt.io import atomic_file, summary_line, write_json

    require_positive("--n-boot", args.n_boot)
    if not 0 < args.level < 1:
        raise ConfigError(f"--level must be in (0, 1), got {args.level}")
    paths = list(dict.fromkeys(args.runs))
    if len(paths) < 2 and args.baseline in (None, *paths):
        raise ConfigError(f"give at least two runs to compare, got {len(paths)}")
    baseline = 0
    if args.baseline is not None:
        if args.baseline not in paths:
            paths.insert(0, args.baseline)
        baseline = paths.index(args.baseline)
    runs = [read_suite_run(path) for path in paths]
    comparison = compare_runs(runs, baseline=baseline, metric=args.metric, level=args.level, n_boot=args.n_boot,
                              seed=args.seed)
    table = comparison_markdown(comparison)
    header = (f"# {args.metric or 'scores'} (%; chrF++ in its points) and differences from {comparison['baseline']} "
              f"(points, paired bootstrap, {args.n_boot} resamples, seed {args.seed})\n\n")
    print(header + table)
    written = []
    if args.out is not None:
        out = Path(args.out)
        with atomic_file(out) as handle:
            handle.write(header + table + "\n")
        written = [out, write_json(out.with_suffix(".json"), comparison)]
    n_cells = sum(len(entry["languages"]) for entry in comparison["tasks"].values())
    what = (f"{len(runs)} runs, {len(comparison['tasks'])} task(s), {n_cells} (task, language) pairs compared "
            f"with {comparison['baseline']}")
    print(summary_line(prog, what, *written))
    return 0
