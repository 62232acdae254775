"""``xlt eval icl``, ``xlt eval task`` and ``xlt eval lm-eval``: the command-line adapters.

Every input is read and every output path checked before the model is loaded, so a bad file
or an existing output fails in a second, and nothing is half-written.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from xlt.config import ArgumentParser
from xlt.errors import ConfigError, DataError
from xlt.io import write_json
from xlt.provenance import VERSIONS_KEY, package_versions

ICL_DESCRIPTION = """\
Multiple-choice in-context evaluation of a causal LM in several languages. --task is a built-in
template (pawsx, xnli, xcopa, xstorycloze, xwinograd, belebele, sib200, global_mmlu), a template YAML file, or
'choice' for MultipleChoiceItem JSON Lines. --test/--dev are file paths, '{lang}' standing for
each of --languages (e.g. 'x-final/{lang}/test_2k.tsv'), or 'hf:DATASET' for a hub dataset whose
configs are the languages (belebele, sib200 and global_mmlu default to theirs). Scoring 'afp' sums log2 p over
the whole text (the AFP reference); 'lm-eval' scores the continuation as lm-evaluation-harness
(acc, acc_norm)."""


def _model_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or hub id (the base, with --adapter)")
    parser.add_argument("--adapter", default=None, help="PEFT adapter directory loaded on top of --model")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory or hub id (default: the adapter's if it has one, else the model's)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow pickle weight files (they can run code when loaded)")
    parser.add_argument("--trust-remote-code", action="store_true")


def load_model_and_tokenizer(args):
    """Load ``args.model`` (+ ``args.adapter``) and its tokenizer, in eval mode."""
    from xlt.models import load_model, load_tokenizer

    tokenizer_source = args.tokenizer
    if tokenizer_source is None:
        adapter = Path(args.adapter) if args.adapter else None
        has_own = adapter is not None and ((adapter / "tokenizer.json").is_file()
                                           or (adapter / "tokenizer_config.json").is_file())
        tokenizer_source = str(adapter) if has_own else args.model
    tokenizer = load_tokenizer(tokenizer_source, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, kind="causal", dtype=args.dtype, device=args.device,
                       adapter=args.adapter, allow_pickle=args.allow_pickle,
                       trust_remote_code=args.trust_remote_code)
    model.eval()
    return model, tokenizer


def _check_outputs(paths: list[str | None], overwrite: bool) -> None:
    """Fail before any work if an output exists (directories are made only when writing)."""
    from xlt.errors import OutputExistsError

    for path in paths:
        if path and Path(path).exists() and not overwrite:
            raise OutputExistsError(path)


def _write_samples(path: str, rows: list[dict], overwrite: bool) -> None:
    from xlt.io import atomic_file

    with atomic_file(path, overwrite=overwrite) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# Reading evaluation data


def _expand(pattern: str, languages: list[str] | None) -> list[tuple[str | None, Path]]:
    if "{lang}" in pattern:
        if not languages:
            raise ConfigError(f"{pattern}: the path has '{{lang}}', so --languages is needed")
        return [(lang, Path(pattern.replace("{lang}", lang))) for lang in languages]
    return [(None, Path(pattern))]


def _group(items, lang_of, languages: list[str] | None, source: str) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for item in items:
        grouped.setdefault(lang_of(item), []).append(item)
    if None in grouped:
        if languages and len(languages) == 1:
            grouped[languages[0]] = grouped.pop(None)
        else:
            raise ConfigError(f"{source}: items carry no language; give the language with '{{lang}}' "
                              "in the path or a single --languages code")
    if languages:
        missing = [lang for lang in languages if lang not in grouped]
        if missing:
            raise DataError(f"unknown language code {missing[0]!r}: no items in it (languages present: "
                            f"{', '.join(sorted(grouped))})", path=source)
        grouped = {lang: grouped[lang] for lang in languages}
    return grouped


HUB_PREFIX = "hf:"


def read_hub_split(source: str, template, languages: list[str] | None, *, dev: bool = False,
                   cache_dir: str | None = None) -> dict[str, list]:
    """Items per language of a hub dataset (``hf:ID``) whose configs are the languages; the split
    is the template's ``dataset.split`` (``dev_split`` for demonstrations)."""
    from xlt.eval.readers import ROW_READERS, hub_rows

    dataset_id = source[len(HUB_PREFIX):]
    if template is None or template.reader not in ROW_READERS:
        raise ConfigError(f"{source}: hub datasets are read for the tasks {', '.join(ROW_READERS)}; "
                          "give a file for this one")
    if not languages:
        raise ConfigError(f"{source}: name the languages (its configs) with --languages")
    spec = template.dataset or {}
    split = spec.get("dev_split") if dev else spec.get("split", "test")
    if split is None:
        raise ConfigError(f"{template.task}: {dataset_id} has no split for demonstrations; give --dev FILE")
    out = {}
    for lang in languages:
        items = ROW_READERS[template.reader](hub_rows(dataset_id, lang, split, task=template.task,
                                                      cache_dir=cache_dir), template.task)
        if not items:
            raise DataError(f"{template.task}: {dataset_id} ({lang}, {split}) has no items")
        for item in items:
            item.lang = lang
        out[lang] = items
    return out


def default_source(template, *, dev: bool = False) -> str | None:
    """``hf:ID`` of the template's hub dataset, where it has one (and a dev split, for ``dev``)."""
    spec = getattr(template, "dataset", None)
    if not spec or (dev and not spec.get("dev_split")):
        return None
    return HUB_PREFIX + spec["path"]


def read_eval_split(pattern: str, template, languages: list[str] | None, *, dev: bool = False) -> dict[str, list]:
    """Items per language from ``pattern`` (template RawItems, or MultipleChoiceItems); an
    ``hf:ID`` pattern reads a hub dataset (:func:`read_hub_split`)."""
    from xlt.formats import check_language, read_multiple_choice

    if languages:
        for lang in languages:
            check_language(lang, field="--languages")
    if pattern.startswith(HUB_PREFIX):
        return read_hub_split(pattern, template, languages, dev=dev)
    out: dict[str, list] = {}
    for lang, path in _expand(pattern, languages):
        if template is None:
            items = read_multiple_choice(path)
            if lang is not None:
                wrong = [it for it in items if it.lang != lang]
                if wrong:
                    raise DataError(f"item in language {wrong[0].lang!r} in the file for {lang!r}", path=path)
            grouped = _group(items, lambda it: it.lang, [lang] if lang else languages, str(path))
        else:
            from xlt.eval.readers import get_reader

            items = get_reader(template.reader, template.label_field)(path)
            if not items:
                raise DataError("no items (the file is empty)", path=path)
            if lang is not None:  # the file of one language; a multi-language file is filtered
                items = [it for it in items if it.lang in (None, lang)]
                for it in items:
                    it.lang = lang
            grouped = _group(items, lambda it: it.lang, [lang] if lang else languages, str(path))
        for key, value in grouped.items():
            out.setdefault(key, []).extend(value)
    return out


# --------------------------------------------------------------------------------------------
# xlt eval icl


def build_icl_parser(prog: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=ICL_DESCRIPTION)
    _model_arguments(parser)
    parser.add_argument("--task", default="choice",
                        help="pawsx, xnli, xcopa, xstorycloze, xwinograd, a template YAML file, or choice")
    parser.add_argument("--test", default=None,
                        help="test file (pattern with {lang}) or hf:DATASET (default: the task's hub dataset)")
    parser.add_argument("--dev", default=None,
                        help="dev file for demonstrations (pattern with {lang}) or hf:DATASET "
                             "(default: the task's hub dataset, where it has a dev split)")
    parser.add_argument("--languages", nargs="+", default=None, help="languages to evaluate")
    parser.add_argument("--prompt-language", default=None,
                        help="template and demonstrations in this language for every test language "
                             "(cross-lingual ICL; default: each test language's own)")
    parser.add_argument("--shots", type=int, nargs="+", default=[0], help="numbers of demonstrations")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="demonstration seeds (0-shot runs use the first only)")
    parser.add_argument("--prompts", choices=("afp", "lm-eval"), default="afp",
                        help="the five AFP tasks: the AFP paper's prompts (default) or "
                             "lm-evaluation-harness's own task prompts and demonstration sampling")
    parser.add_argument("--scoring", choices=("afp", "lm-eval"), default=None,
                        help="default: afp for templates, lm-eval for MultipleChoiceItem files")
    parser.add_argument("--target-delimiter", default="auto",
                        help="choice files: text between context and choice; 'auto' is a space unless "
                             "the context ends or the choice starts with whitespace; ' ' is "
                             "lm-eval's target_delimiter exactly")
    parser.add_argument("--fewshot-delimiter", default="\n\n",
                        help="choice files: text between demonstrations (lm-eval's fewshot_delimiter)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N items per language")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--no-prefix-sharing", dest="share_prefix", action="store_false",
                        help="score every choice as a whole sequence instead of continuing its "
                             "item's shared context from one cached pass (same scores, slower)")
    parser.add_argument("--output", default=None, help="results JSON")
    parser.add_argument("--log-samples", default=None, metavar="FILE.jsonl",
                        help="per-item log-likelihoods and predictions")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def run_icl(model, tokenizer, *, template, test, dev, shots_list, seeds, scoring, prompt_language,
            batch_size, target_delimiter, fewshot_delimiter, progress=False, share_prefix=True):
    """Every (shots, seed) run; returns a list of run dicts and every item's result."""
    from xlt.eval.icl import evaluate_icl

    runs, samples = [], []
    for shots in shots_list:
        for seed in (seeds if shots else seeds[:1]):
            table, results = evaluate_icl(model, tokenizer, template=template, test=test, dev=dev,
                                          shots=shots, seed=seed, scoring=scoring,
                                          prompt_language=prompt_language, batch_size=batch_size,
                                          target_delimiter=target_delimiter,
                                          fewshot_delimiter=fewshot_delimiter, progress=progress,
                                          share_prefix=share_prefix)
            runs.append({"shots": shots, "seed": seed, "results": table,
                         "average_acc": sum(r["acc"] for r in table.values()) / len(table)})
            samples += [dict(r.to_dict(), shots=shots, seed=seed) for r in results]
    return runs, samples


def icl_command(argv: list[str], prog: str) -> int:
    from xlt.eval.icl import format_table
    from xlt.eval.templates import load_template

    args = build_icl_parser(prog).parse_args(argv)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if any(k < 0 for k in args.shots):
        raise ConfigError("--shots must be >= 0")
    _check_outputs([args.output, args.log_samples], args.overwrite)
    template = None if args.task == "choice" else load_template(args.task, prompts=args.prompts)
    scoring = args.scoring or ("lm-eval" if template is None else template.scoring)
    if args.test is None:
        args.test = default_source(template) if template is not None else None
        if args.test is None:
            raise ConfigError("--test is needed (this task has no hub dataset)")
    test = read_eval_split(args.test, template, args.languages)
    if args.limit is not None:
        test = {lang: items[:args.limit] for lang, items in test.items()}
    dev = None
    if any(args.shots):
        if args.dev is None:
            args.dev = default_source(template, dev=True) if template is not None else None
        if args.dev is None:
            raise ConfigError("--shots > 0 needs --dev (demonstrations come from the dev split)")
        dev_languages = [args.prompt_language] if args.prompt_language else list(test)
        dev = read_eval_split(args.dev, template, dev_languages, dev=True)
    if template is not None:  # unknown prompt languages fail before the model loads
        for lang in test:
            template.prompt_for(args.prompt_language or lang)

    model, tokenizer = load_model_and_tokenizer(args)
    runs, samples = run_icl(model, tokenizer, template=template, test=test, dev=dev,
                            shots_list=args.shots, seeds=args.seeds, scoring=scoring,
                            prompt_language=args.prompt_language, batch_size=args.batch_size,
                            target_delimiter=args.target_delimiter,
                            fewshot_delimiter=args.fewshot_delimiter,
                            progress=sys.stderr.isatty(), share_prefix=args.share_prefix)
    task_name = template.task if template is not None else "choice"
    for run in runs:
        print(format_table(run["results"], title=f"{task_name}  {run['shots']}-shot  seed {run['seed']}  "
                                                 f"scoring {scoring}"))
        print()
    report = {"task": task_name, "template": template.source if template else None, "scoring": scoring,
              "prompts": args.prompts,
              "model": args.model, "adapter": args.adapter, "prompt_language": args.prompt_language,
              "test": args.test, "dev": args.dev, "runs": runs, VERSIONS_KEY: package_versions()}
    if args.output:
        write_json(args.output, report, overwrite=True)
    if args.log_samples:
        _write_samples(args.log_samples, samples, overwrite=True)
    from xlt.io import summary_line

    n_items = sum(len(items) for items in test.values())
    best = max(run["average_acc"] for run in runs)
    print(summary_line(prog, f"{task_name}: {n_items} items in {len(test)} languages, {len(runs)} run(s), "
                             f"best average acc {100 * best:.2f}", args.output, args.log_samples))
    return 0


# --------------------------------------------------------------------------------------------
# xlt eval task


def build_task_parser(prog: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=(
        "Per-language exact-match accuracy of greedy completions of TaskExample files "
        "(lang, prompt, completion); MultipleChoiceItem files are scored 0-shot as in 'xlt eval icl'."))
    _model_arguments(parser)
    parser.add_argument("--data", nargs="+", required=True, help="TaskExample or MultipleChoiceItem files")
    parser.add_argument("--languages", nargs="+", default=None, help="only these languages")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples per language")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation budget (default: longest gold completion in tokens + 2)")
    parser.add_argument("--stop", nargs="*", default=["\n"], help="stop strings that end a prediction")
    parser.add_argument("--scoring", choices=("afp", "lm-eval"), default="lm-eval",
                        help="MultipleChoiceItem files: scoring rule")
    parser.add_argument("--output", default=None, help="results JSON {lang: {accuracy, n}}")
    parser.add_argument("--predictions", default=None, metavar="FILE.jsonl", help="every prediction")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def _file_kind(path: Path) -> str:
    from xlt.formats import iter_rows

    for _, row in iter_rows(path):
        if isinstance(row, dict) and "choices" in row:
            return "choice"
        return "task"
    raise DataError("no records (the file is empty)", path=path)


def task_command(argv: list[str], prog: str) -> int:
    from xlt.eval.task import evaluate_task, format_task_table
    from xlt.formats import read_multiple_choice, read_task_examples

    args = build_task_parser(prog).parse_args(argv)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    _check_outputs([args.output, args.predictions], args.overwrite)
    kinds = {str(p): _file_kind(Path(p)) for p in args.data}
    if len(set(kinds.values())) > 1:
        raise ConfigError("--data mixes TaskExample and MultipleChoiceItem files; evaluate them separately")
    kind = next(iter(kinds.values()))
    records = []
    for path in args.data:
        records += (read_multiple_choice if kind == "choice" else read_task_examples)(path)
    if args.languages:
        present = {r.lang for r in records}
        missing = [lang for lang in args.languages if lang not in present]
        if missing:
            raise DataError(f"unknown language code {missing[0]!r}: no examples in it (languages present: "
                            f"{', '.join(sorted(present))})", path=args.data[0])
        records = [r for r in records if r.lang in args.languages]
    if args.limit is not None:
        seen: dict[str, int] = {}
        kept = []
        for r in records:
            seen[r.lang] = seen.get(r.lang, 0) + 1
            if seen[r.lang] <= args.limit:
                kept.append(r)
        records = kept

    model, tokenizer = load_model_and_tokenizer(args)
    progress = sys.stderr.isatty()
    if kind == "choice":
        from xlt.eval.icl import evaluate_icl

        by_lang: dict[str, list] = {}
        for r in records:
            by_lang.setdefault(r.lang, []).append(r)
        icl_table, results = evaluate_icl(model, tokenizer, template=None, test=by_lang, shots=0,
                                          scoring=args.scoring, batch_size=args.batch_size, progress=progress)
        table = {lang: {"accuracy": row["acc"], "n": row["n"]} for lang, row in icl_table.items()}
        rows = [r.to_dict() for r in results]
    else:
        table, predictions = evaluate_task(model, tokenizer, records, max_new_tokens=args.max_new_tokens,
                                           batch_size=args.batch_size, stop=args.stop, progress=progress)
        rows = [p.to_dict() for p in predictions]
    print(format_task_table(table, title=f"exact match ({'multiple choice, 0-shot' if kind == 'choice' else 'greedy generation'})"))
    if args.output:
        write_json(args.output, {"model": args.model, "adapter": args.adapter, "data": args.data,
                                 "languages": table, VERSIONS_KEY: package_versions()}, overwrite=True)
    if args.predictions:
        _write_samples(args.predictions, rows, overwrite=True)
    from xlt.io import summary_line

    n = sum(row["n"] for row in table.values())
    mean = sum(row["accuracy"] for row in table.values()) / max(1, len(table))
    print(summary_line(prog, f"{n} examples in {len(table)} languages, mean accuracy {100 * mean:.2f}",
                       args.output, args.predictions))
    return 0


# --------------------------------------------------------------------------------------------
# xlt eval lm-eval


def build_lm_eval_parser(prog: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=(
        "Run lm-evaluation-harness (optional extra: pip install 'xlt[lm-eval]') on a model loaded "
        "by xlt, optionally with a PEFT adapter."))
    _model_arguments(parser)
    parser.add_argument("--tasks", required=True, help="comma-separated harness task names, e.g. xnli_de,paws_zh")
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=float, default=None, help="items per task (a fraction if < 1)")
    parser.add_argument("--include-path", action="append", default=[],
                        help="folder of extra task YAML files (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="results JSON")
    parser.add_argument("--log-samples", default=None, metavar="FILE.jsonl", help="per-request samples")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def lm_eval_command(argv: list[str], prog: str) -> int:
    from xlt.eval.lm_eval_bridge import require_lm_eval, results_table, run_lm_eval

    args = build_lm_eval_parser(prog).parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("--tasks is empty")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise ConfigError(f"--num-fewshot must be >= 0, got {args.num_fewshot}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and not (math.isfinite(args.limit) and args.limit > 0):
        raise ConfigError(f"--limit must be a number > 0 (a fraction if < 1), got {args.limit}")
    _check_outputs([args.output, args.log_samples], args.overwrite)
    from xlt.models import local_model_dir

    local_model_dir(args.model)  # a missing model is named before the harness is needed
    require_lm_eval()
    model, tokenizer = load_model_and_tokenizer(args)
    results = run_lm_eval(model, tokenizer, tasks, num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                          limit=args.limit, include_path=args.include_path,
                          log_samples=bool(args.log_samples), seed=args.seed)
    print(results_table(results))
    if args.output:
        summary = {k: results.get(k) for k in ("results", "n-shot", "versions", "configs", "n-samples")}
        summary[VERSIONS_KEY] = package_versions(extra=("lm_eval",))
        write_json(args.output, _jsonable(summary), overwrite=True)
    if args.log_samples:
        rows = []
        for task, samples in (results.get("samples") or {}).items():
            for sample in samples:
                rows.append(_jsonable({"task": task, **sample}))
        _write_samples(args.log_samples, rows, overwrite=True)
    from xlt.io import summary_line

    print(summary_line(prog, f"lm-evaluation-harness on {len(tasks)} task(s)", args.output, args.log_samples))
    return 0


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

