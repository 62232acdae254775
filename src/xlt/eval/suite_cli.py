"""``xlt eval suite``: several multiple-choice tasks in several languages, one results table.

Every (task, language) result is written to ``OUT/parts/`` as soon as it is known; a rerun with
the same settings skips those and scores the rest, so a killed run resumes where it stopped.
All data is read before the model loads; the summary files are rewritten from the parts at the end.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from xlt.errors import ConfigError, DataError
from xlt.provenance import VERSIONS_KEY, package_versions

DESCRIPTION = """Run multiple-choice tasks (belebele, sib200, global_mmlu, pawsx, xnli, xcopa,
xstorycloze, xwinograd or template YAML files) and MGSM (mgsm: greedy direct answers, number exact
match as lm-evaluation-harness's mgsm_direct scores it; mgsm_cot: native chain-of-thought after
--shots exemplars, as its mgsm_native_cot) in several languages with one model and write OUT/results.json
(task x language x metric, with the model, prompts and versions), OUT/results.md and
OUT/heatmap.png; --corpus LANG=FILE adds the language's bits per byte on that text (task 'ppl');
task 'flores' translates FLORES+ devtest (openlanguagedata/flores_plus, or files in its schema) in
the --directions asked for, scored with BLEU, chrF++, spBLEU (with --spm-model) and the share of
outputs in the wrong language.
Belebele, SIB-200, Global-MMLU and MGSM read their hub datasets unless --data gives files; the other
tasks need --data TASK=PATTERN ('{lang}' standing for each language). Resumable: a rerun with the
same settings scores only the (task, language) pairs not yet in OUT/parts/."""


def build_parser(prog: str):
    from xlt.config import ArgumentParser
    from xlt.eval.cli import _model_arguments

    parser = ArgumentParser(prog=prog, description=DESCRIPTION)
    _model_arguments(parser)
    parser.add_argument("--tasks", nargs="+", default=[], help="tasks, comma- or space-separated")
    parser.add_argument("--languages", nargs="+", required=True, help="languages (comma- or space-separated)")
    parser.add_argument("--shots", type=int, default=0, help="demonstrations per item")
    parser.add_argument("--seed", type=int, default=0, help="demonstration seed")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N items per language")
    parser.add_argument("--data", nargs="+", default=[], metavar="TASK=PATTERN",
                        help="test data of a task: a path with {lang}, or hf:DATASET")
    parser.add_argument("--dev", nargs="+", default=[], metavar="TASK=PATTERN",
                        help="demonstration data of a task (default: the task's hub dev split, where it has one)")
    parser.add_argument("--corpus", nargs="+", default=[], metavar="LANG=FILE",
                        help="text (one document per line) whose bits per byte is reported as task 'ppl'")
    parser.add_argument("--context", type=int, default=512, help="ppl: tokens each window reads")
    parser.add_argument("--last-n", type=int, default=128, help="ppl: targets scored per window")
    parser.add_argument("--prompts", choices=("afp", "lm-eval"), default="afp",
                        help="the five AFP tasks: the AFP paper's prompts (default) or "
                             "lm-evaluation-harness's own task prompts and demonstration sampling")
    parser.add_argument("--scoring", choices=("afp", "lm-eval"), default=None,
                        help="scoring rule for every task (default: each template's)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="mgsm and flores: tokens generated at most per answer (default 256, the harness's)")
    parser.add_argument("--directions", nargs="+", default=["en-xx"],
                        help="flores: en-xx (the pivot into every other language), xx-en, all (every ordered "
                             "pair) or SRC-TGT directions, comma- or space-separated")
    parser.add_argument("--pivot", default=None, help="flores: the 'en' of en-xx / xx-en (default: the first language)")
    parser.add_argument("--spm-model", default=None,
                        help="flores: a SentencePiece model file for spBLEU (the FLORES-200 model, "
                             "flores200_sacrebleu_tokenizer_spm.model); without it no spBLEU")
    parser.add_argument("--num-beams", type=int, default=1, help="flores: beam size (default 1: greedy)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--out", required=True, help="output directory (reused to resume)")
    return parser


def _split_list(values: list[str]) -> list[str]:
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return list(dict.fromkeys(out))


def _key_values(items: list[str], option: str, form: str, kind: str, known: list[str],
                known_option: str) -> dict[str, str]:
    """``KEY=VALUE`` items of ``option`` as a dict; each key must be one of ``known`` (the values
    of ``known_option``), else one line naming the option, the item and what was expected."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{option}: cannot read {item!r} (expected {form})")
        if key not in known:
            raise ConfigError(f"{option}: {kind} {key!r} is not in {known_option} ({', '.join(known)})")
        out[key] = value
    return out


def _mapping(items: list[str], option: str, tasks: list[str]) -> dict[str, str]:
    return _key_values(items, option, "TASK=PATTERN", "task", tasks, "--tasks")


def _part_path(out: Path, task: str, lang: str) -> Path:
    return out / "parts" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', task)}.{lang}.json"


def suite_command(argv: list[str], prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    from xlt.config import require_positive
    from xlt.eval.cli import default_source, read_eval_split
    from xlt.eval.templates import load_template
    from xlt.formats import check_language
    from xlt.io import read_json, summary_line, write_json

    require_positive("--batch-size", args.batch_size)
    if args.max_new_tokens is not None:
        require_positive("--max-new-tokens", args.max_new_tokens)
    if args.limit is not None:
        require_positive("--limit", args.limit)
    if args.shots < 0:
        raise ConfigError(f"--shots must be >= 0, got {args.shots}")
    task_names = _split_list(args.tasks)
    languages = _split_list(args.languages)
    for lang in languages:
        check_language(lang, field="--languages")
    corpora = _corpora(args.corpus, languages)
    if not task_names and not corpora:
        raise ConfigError("give --tasks, --corpus or both")
    if corpora:
        from xlt.eval.ppl import check_geometry

        check_geometry(args.context, args.last_n, None)
    templates = {}
    for name in task_names:  # a template file is known by its 'task' name from here on
        if name == "flores":
            from xlt.eval.flores import FloresTask

            template = FloresTask()
            if args.shots:
                raise ConfigError(f"flores: translated 0-shot; --shots {args.shots} is for the multiple-choice "
                                  "tasks: run flores in another suite")
        elif name == "mgsm_cot":
            from xlt.eval.mgsm import load_mgsm_cot_task

            template = load_mgsm_cot_task()
        elif name == "mgsm":
            from xlt.eval.mgsm import load_mgsm_task

            template = load_mgsm_task()
            if args.shots:
                raise ConfigError(f"mgsm: answered 0-shot (the harness's mgsm_direct); --shots {args.shots} is "
                                  "for the multiple-choice tasks and mgsm_cot: run mgsm in another suite")
        else:
            template = load_template(name, prompts=args.prompts)
        if template.task in templates:
            raise ConfigError(f"--tasks: two templates named {template.task!r}")
        templates[template.task] = template
    task_names = list(templates)
    data = _mapping(args.data, "--data", task_names)
    dev_data = _mapping(args.dev, "--dev", task_names)
    for name, template in templates.items():
        data.setdefault(name, default_source(template))
        if data[name] is None:
            raise ConfigError(f"{name}: no hub dataset for this task; give --data {name}=PATTERN")
        if args.shots and name not in ("mgsm", "flores"):
            dev_data.setdefault(name, default_source(template, dev=True))
            if dev_data[name] is None:
                raise ConfigError(f"{name}: --shots {args.shots} needs demonstrations; give --dev {name}=PATTERN")
    scoring = {name: template.scoring if name in GENERATION_TASKS else args.scoring or template.scoring
               for name, template in templates.items()}
    columns = {name: languages for name in task_names}  # flores: its directions
    mt_metrics = None
    if "flores" in templates:
        from xlt.eval.flores import parse_directions
        from xlt.eval.mt import make_metrics

        require_positive("--num-beams", args.num_beams)
        directions = parse_directions(_split_list(args.directions), languages, args.pivot)
        columns["flores"] = [f"{src}-{tgt}" for src, tgt in directions]
        mt_metrics = make_metrics(chrf_word_order=2, spm_model=args.spm_model)  # a missing model file: here
    out = Path(args.out)
    settings = {"model": args.model, "adapter": args.adapter, "tokenizer": args.tokenizer, "shots": args.shots,
                "seed": args.seed, "limit": args.limit}

    # what earlier runs finished with the same settings; the rest is read now, before the model
    results: dict[str, dict[str, dict]] = {name: {} for name in task_names}
    pending = []
    sentences_cache: dict[str, dict[str, str]] = {}
    from xlt.eval.suite import MgsmUnit, SuiteUnit

    for name, template in templates.items():
        task_settings = dict(settings, data=data[name], dev=dev_data.get(name), scoring=scoring[name],
                             template=template.source)
        if name in ("mgsm", "mgsm_cot"):
            task_settings["max_new_tokens"] = args.max_new_tokens or template.max_new_tokens
        if name == "flores":
            task_settings.update(max_new_tokens=args.max_new_tokens or FLORES_MAX_NEW_TOKENS, num_beams=args.num_beams,
                                 spm_model=str(Path(args.spm_model).resolve()) if args.spm_model else None)
        for lang in columns[name]:
            part = _part_path(out, name, lang)
            if part.is_file():
                done = read_json(part, error=DataError)
                if done.get("settings") != task_settings:
                    changed = sorted(k for k in task_settings if (done.get("settings") or {}).get(k) != task_settings[k])
                    raise ConfigError(f"{part}: computed with other settings ({', '.join(changed)}); "
                                      "give another --out")
                results[name][lang] = done["metrics"]
                continue
            if name == "flores":
                pending.append((_flores_unit(lang, data[name], args, sentences_cache), task_settings))
                continue
            test = read_eval_split(data[name], template, [lang])[lang]
            if args.limit is not None:
                test = test[:args.limit]
            dev = read_eval_split(dev_data[name], template, [lang], dev=True)[lang] if args.shots else None
            template.prompt_for(lang)  # a language without a prompt fails before the model loads
            if name in ("mgsm", "mgsm_cot"):
                unit = MgsmUnit(lang, template, test, args.max_new_tokens or template.max_new_tokens, task=name,
                                dev=dev)
            else:
                unit = SuiteUnit(name, lang, template, test, dev, scoring[name])
            pending.append((unit, task_settings))

    from xlt.eval.suite import PerplexityUnit
    from xlt.pretrain.data import iter_lines

    if corpora:
        results["ppl"] = {}
    for lang, path in corpora.items():
        ppl_settings = dict(settings, corpus=str(path), context=args.context, last_n=args.last_n)
        part = _part_path(out, "ppl", lang)
        if part.is_file():
            done = read_json(part, error=DataError)
            if done.get("settings") != ppl_settings:
                changed = sorted(k for k in ppl_settings if (done.get("settings") or {}).get(k) != ppl_settings[k])
                raise ConfigError(f"{part}: computed with other settings ({', '.join(changed)}); give another --out")
            results["ppl"][lang] = done["metrics"]
            continue
        texts = list(iter_lines([path]))
        if not texts:
            raise DataError("no text (every line is empty)", path=path)
        pending.append((PerplexityUnit(lang, texts, args.context, args.last_n), ppl_settings))

    revision = None
    if pending:
        from xlt.eval.cli import load_model_and_tokenizer
        from xlt.eval.suite import evaluate_suite

        model, tokenizer = load_model_and_tokenizer(args)
        revision = getattr(model.config, "_commit_hash", None)
        unit_settings = {id(unit): s for unit, s in pending}

        def write_part(unit, metrics, items):
            part = {"task": unit.task, "language": unit.language, "settings": unit_settings[id(unit)],
                    "metrics": metrics, "revision": revision, VERSIONS_KEY: package_versions()}
            if items is not None:
                items = dict(items)
                if "predictions" in items:
                    part["predictions"] = items.pop("predictions")
                part["items"] = items  # what xlt eval compare pairs runs by
            write_json(_part_path(out, unit.task, unit.language), part)
            results[unit.task][unit.language] = metrics

        evaluate_suite(model, tokenizer, [unit for unit, _ in pending], shots=args.shots, seed=args.seed,
                       batch_size=args.batch_size, on_result=write_part, progress=sys.stderr.isatty(),
                       mt_metrics=mt_metrics)
    _write_summary(out, args, templates, data, dev_data, scoring, results, columns, revision, corpora)
    n_done = sum(len(c) for c in columns.values()) + len(corpora) - len(pending)
    what = f"{len(task_names)} task(s) x {len(languages)} language(s)" + (f", ppl of {len(corpora)}" if corpora else "")
    print(summary_line(prog, f"{what}: {len(pending)} scored, {n_done} from earlier runs", out / "results.json",
                       out / "results.md", out / "heatmap.png" if _choice_tasks(templates) else None))
    return 0


#: tasks answered by generation (no multiple-choice accuracy, no heat map, 0-shot)
GENERATION_TASKS = ("mgsm", "mgsm_cot", "flores")
#: flores: tokens generated at most per sentence unless --max-new-tokens
FLORES_MAX_NEW_TOKENS = 256


def _choice_tasks(templates) -> list[str]:
    return [task for task in templates if task not in GENERATION_TASKS]


def _flores_unit(direction: str, source: str, args, cache: dict[str, dict[str, str]]):
    """The :class:`~xlt.eval.flores.FloresUnit` of ``direction`` (``SRC-TGT`` as
    :func:`~xlt.eval.flores.parse_directions` made it), each language read once."""
    from xlt.eval.flores import FloresUnit, direction_items, parse_directions, read_sentences

    [(src, tgt)] = parse_directions([direction], _split_list(args.languages))
    for lang in (src, tgt):
        if lang not in cache:
            cache[lang] = read_sentences(source, lang)
    return FloresUnit(src, tgt, direction_items(cache[src], cache[tgt], src, tgt, args.limit),
                      num_beams=args.num_beams, max_new_tokens=args.max_new_tokens or FLORES_MAX_NEW_TOKENS)


def _corpora(items: list[str], languages: list[str]) -> dict[str, Path]:
    out = {}
    for lang, path in _key_values(items, "--corpus", "LANG=FILE", "language", languages, "--languages").items():
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such corpus file")
        out[lang] = Path(path)
    return out


def _write_summary(out: Path, args, templates, data, dev_data, scoring, results, columns, revision,
                   corpora) -> None:
    from xlt.eval.suite import plot_suite_heatmap, suite_markdown
    from xlt.io import atomic_file, write_json

    languages = _split_list(args.languages)
    ordered = {name: {lang: results[name][lang] for lang in columns.get(name, languages) if lang in results[name]}
               for name in results}
    tasks = {}
    for name, template in templates.items():
        if name == "flores":
            from xlt.translation import TranslationPrompt

            prompt = TranslationPrompt().template
            tasks[name] = {"template": template.source, "data": data[name], "dataset": dict(template.dataset),
                           "scoring": scoring[name], "directions": columns[name],
                           "prompts": {direction: prompt for direction in columns[name]},
                           "spm_model": args.spm_model, "num_beams": args.num_beams}
            continue
        prompts = {lang: template.prompt_for(lang).test_template for lang in languages}
        tasks[name] = {"template": template.source, "data": data[name], "dev": dev_data.get(name),
                       "dataset": dict(template.dataset) if template.dataset else None,
                       "scoring": scoring[name], "prompts": prompts}
    if corpora:
        tasks["ppl"] = {"corpus": {lang: str(path) for lang, path in corpora.items()}, "context": args.context,
                        "last_n": args.last_n, "metric": "bits_per_byte"}
    write_json(out / "results.json", {
        "model": args.model, "adapter": args.adapter, "tokenizer": args.tokenizer, "revision": revision,
        "settings": {"shots": args.shots, "seed": args.seed, "limit": args.limit, "languages": languages},
        "tasks": tasks, "results": ordered, VERSIONS_KEY: package_versions()})
    name = f"{args.model}{' + ' + args.adapter if args.adapter else ''}"
    sections = []
    choice = {task: ordered[task] for task in _choice_tasks(templates) if task in ordered}
    if choice:
        sections.append(f"# {name}: accuracy (%), {args.shots}-shot\n\n{suite_markdown(choice, 'acc')}\n")
    for task, template in templates.items():  # e.g. Global-MMLU per cultural-sensitivity label
        by = getattr(template, "report_by", None)
        keys = sorted({k for m in ordered.get(task, {}).values() for k in m
                       if k.startswith("acc_") and k != "acc_norm"}) if by else []
        if keys:
            rows = {f"{task} ({key[len('acc_'):]})": {lang: {"acc": m[key]} for lang, m in ordered[task].items()
                                                      if key in m} for key in keys}
            sections.append(f"# {name}: {task} accuracy (%) per {by}, {args.shots}-shot\n\n"
                            f"{suite_markdown(rows, 'acc')}\n")
    if "mgsm" in templates:
        rows = {f"mgsm ({label})": {lang: {"exact_match": m[metric]} for lang, m in ordered["mgsm"].items()}
                for label, metric in (("flexible-extract", "exact_match_flexible"),
                                      ("remove_whitespace", "exact_match"))}
        sections.append(f"# {name}: MGSM exact match (%), 0-shot direct answers\n\n"
                        f"{suite_markdown(rows, 'exact_match')}\n")
    if "mgsm_cot" in templates:
        rows = {f"mgsm_cot ({label})": {lang: {"exact_match": m[metric]} for lang, m in ordered["mgsm_cot"].items()}
                for label, metric in (("flexible-extract", "exact_match_flexible"), ("strict-match", "exact_match"))}
        sections.append(f"# {name}: MGSM exact match (%), native chain-of-thought, {args.shots}-shot\n\n"
                        f"{suite_markdown(rows, 'exact_match')}\n")
        rate = {lang: {"rate": m["wrong_language_rate"]} for lang, m in ordered["mgsm_cot"].items()
                if m.get("wrong_language_rate") is not None}
        if rate:
            sections.append(f"# {name}: MGSM chain-of-thought answers in the wrong language (%)\n\n"
                            f"{suite_markdown({'mgsm_cot': rate}, 'rate')}\n")
    if "flores" in templates:
        labels = {"chrf++": "chrF++", "bleu": "BLEU", "spbleu": "spBLEU"}
        rows = {f"flores ({label})": {d: {"score": m[metric]} for d, m in ordered["flores"].items() if metric in m}
                for metric, label in labels.items() if any(metric in m for m in ordered["flores"].values())}
        rate = {d: {"score": m["wrong_language_rate"]} for d, m in ordered["flores"].items()
                if m.get("wrong_language_rate") is not None}
        sections.append(f"# {name}: FLORES translation, 0-shot, beam {args.num_beams}\n\n"
                        f"{suite_markdown(rows, 'score', percent=False)}\n")
        if rate:
            sections.append(f"# {name}: FLORES outputs in the wrong language (%)\n\n"
                            f"{suite_markdown({'flores': rate}, 'score')}\n")
    if corpora:
        sections.append(f"# {name}: bits per byte (context {args.context}, last {args.last_n} scored)\n\n"
                        f"{suite_markdown(ordered, 'bits_per_byte', percent=False)}\n")
    with atomic_file(out / "results.md") as handle:
        handle.write("\n".join(sections))
    print("\n".join(sections))
    if choice:
        figure = plot_suite_heatmap(choice, "acc", title=f"{Path(args.model).name}: accuracy (%), {args.shots}-shot")
        with atomic_file(out / "heatmap.png", mode="wb") as handle:
            figure.savefig(handle, format="png", dpi=120)
