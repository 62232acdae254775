"""``xlt data afp``: AFP cross-lingual instruction data from Bactrian-X or a translation TSV.

The flags are the reference generator's (short and long forms); the output file lands in
``--output-dir`` under the reference's name (``AFP.en_zh.X0.5.R3.0.json``) and is
byte-identical to the reference's for the same inputs and seed.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import time
from pathlib import Path

from xlt.config import ArgumentParser
from xlt.errors import ConfigError, DataError, OutputExistsError
from xlt.io import atomic_file

DESCRIPTION = """\
Generate AFP training data (JSON Lines records sent0, sent1, clm_text, clm_prompt_len).
bilingual: instructions of Bactrian-X in two languages (pivot first), answered in the same or
the other language; crosslingual: a pivot and 2+ languages; translation: a TSV of parallel
lines. Output is byte-identical to the reference generator for the same inputs and seed."""


def build_parser(prog: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("-m", "--mode", choices=("bilingual", "crosslingual", "translation"),
                        default="bilingual")
    parser.add_argument("-l", "--languages", nargs="*", default=["en", "zh"], metavar="LANG",
                        help="language codes, pivot first (bilingual/translation: 2, crosslingual: 3+)")
    parser.add_argument("-x", "--cross-probability", type=float, default=0.5,
                        help="probability that the answer language differs from the instruction's")
    parser.add_argument("-c", "--change-probability", type=float, default=0.5,
                        help="translation: probability of swapping the direction; crosslingual: "
                             "probability that a cross sample answers in the pivot")
    parser.add_argument("-r", "--repeat", type=float, default=1.0,
                        help="passes over the data (a float: int(R*N)+1 records are written)")
    parser.add_argument("-s", "--seed", type=int, default=0)
    parser.add_argument("-b", "--bactrian-dir", default=None,
                        help="directory of Bactrian-X files LANG.json (a JSON array; .json.gz too)")
    parser.add_argument("-t", "--translation-file", default=None,
                        help="translation mode: UTF-8 TSV, column 0 in languages[0], column 1 in languages[1]")
    parser.add_argument("--task-file", default=None,
                        help="instead of --bactrian-dir: TaskExample JSON Lines holding the same items "
                             "in every language (e.g. a synthetic world's tasks/<task>/dev.jsonl)")
    parser.add_argument("--parallel-file", default=None,
                        help="instead of --translation-file: ParallelPair JSON Lines (either direction)")
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--language-name", action="append", default=[], metavar="CODE=NAME",
                        help="English name used in the prompt for a code (repeatable), e.g. qab=Bolish")
    parser.add_argument("--language-names", default=None, metavar="FILE.json",
                        help="names from a JSON file: {code: name}, or a synthetic world's world.json")
    parser.add_argument("--exact-count", action="store_true",
                        help="fix a reference quirk: write int(R*N) records, not int(R*N)+1")
    parser.add_argument("--jsonl", action="store_true",
                        help="fix a reference quirk: name the JSON Lines output .jsonl instead of .json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def parse_language_names(values: list[str]) -> dict[str, str]:
    names = {}
    for value in values:
        code, sep, name = value.partition("=")
        if not sep or not code.strip() or not name.strip():
            raise ConfigError(f"--language-name expects CODE=NAME, got {value!r}")
        names[code.strip()] = name.strip()
    return names


def read_language_names(path: Path) -> dict[str, str]:
    from xlt.io import read_json

    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("languages"), list):
        try:
            return {str(lang["code"]): str(lang["name"]) for lang in data["languages"]}
        except (KeyError, TypeError):
            raise ConfigError(f"{path}: every entry of 'languages' needs 'code' and 'name'") from None
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}
    raise ConfigError(f"{path}: expected {{code: name}} or a world.json with 'languages'")


def bactrian_path(directory: Path, lang: str) -> Path:
    """``DIR/LANG.json`` or, failing that, ``DIR/LANG.json.gz``."""
    for name in (f"{lang}.json", f"{lang}.json.gz", f"{lang}.jsonl", f"{lang}.jsonl.gz"):
        path = directory / name
        if path.is_file():
            return path
    raise DataError(f"no Bactrian-X file for language {lang!r} (expected {lang}.json or "
                    f"{lang}.json.gz)", path=directory)


def read_bactrian_file(path: Path) -> list[dict]:
    """A Bactrian-X language file: one JSON array of {instruction, input, id, output}
    (JSON Lines accepted too), optionally gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read ({exc})", path=path) from None
    try:
        if raw.lstrip()[:1] == b"[":
            rows = json.loads(raw)
        else:
            rows = []
            for number, line in enumerate(io.BytesIO(raw), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"invalid JSON: {exc.msg}", path=path, line=number) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path) from None
    del raw
    if not isinstance(rows, list) or not rows:
        raise DataError("expected a non-empty JSON array of records", path=path)
    return rows


def read_translation_file(path: Path) -> list[tuple[str, str]]:
    from xlt.afp.data import parse_translation_lines

    if not path.is_file():
        raise DataError("no such file", path=path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return parse_translation_lines(handle, source=str(path))
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path) from None


def data_afp_command(argv: list[str], prog: str) -> int:
    from xlt.afp import data as afp

    args = build_parser(prog).parse_args(argv)
    options = afp.AFPOptions(mode=args.mode, languages=tuple(args.languages),
                             cross_probability=args.cross_probability,
                             change_probability=args.change_probability, repeat=args.repeat,
                             seed=args.seed, exact_count=args.exact_count)
    names = read_language_names(Path(args.language_names)) if args.language_names else {}
    names.update(parse_language_names(args.language_name))
    for lang in options.languages:
        afp.language_name(lang, names)
    out = Path(args.output_dir) / afp.output_name(options, suffix=".jsonl" if args.jsonl else ".json")
    if out.exists() and not args.overwrite:  # fail before any work; the directory is made on writing
        raise OutputExistsError(out)
    started = time.perf_counter()

    if options.mode == "translation":
        if args.parallel_file is not None:
            from xlt.formats import read_parallel_pairs

            pairs = afp.translation_pairs_from_parallel(read_parallel_pairs(args.parallel_file),
                                                        *options.languages)
            if not pairs:
                raise DataError(f"no {options.languages[0]}-{options.languages[1]} pairs", path=args.parallel_file)
        elif args.translation_file is not None:
            pairs = read_translation_file(Path(args.translation_file))
        else:
            raise ConfigError("--mode translation needs --translation-file or --parallel-file")
        plan = afp.plan_translation(len(pairs), options)
        lines = afp.render_translation(plan, pairs, options, names)
    else:
        data, sources = {}, {}
        if args.task_file is not None:
            from xlt.formats import read_task_examples

            data = afp.bactrian_from_examples(read_task_examples(args.task_file), options.languages,
                                              source=args.task_file)
        elif args.bactrian_dir is not None:
            directory = Path(args.bactrian_dir)
            if not directory.is_dir():
                raise DataError("no such directory", path=directory)
            for lang in options.languages:
                path = bactrian_path(directory, lang)
                sources[lang] = str(path)
                data[lang] = read_bactrian_file(path)
        else:
            raise ConfigError(f"--mode {options.mode} needs --bactrian-dir or --task-file")
        data = afp.align_by_id(data, options.languages, sources=sources)
        plan = (afp.plan_bilingual if options.mode == "bilingual" else afp.plan_crosslingual)(data, options)
        lines = afp.render_bilingual(plan, data, options, names)

    count = 0
    with atomic_file(out, overwrite=args.overwrite) as handle:
        buffer = []
        for line in lines:
            buffer.append(line)
            if len(buffer) >= 4096:
                handle.write("".join(buffer))
                count += len(buffer)
                buffer.clear()
        handle.write("".join(buffer))
        count += len(buffer)
    elapsed = time.perf_counter() - started
    counts = afp.plan_direction_counts(plan, options)
    from xlt.io import summary_line

    print("directions: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(summary_line(prog, f"wrote {count} records ({elapsed:.1f} s)", out))
    sys.stdout.flush()
    return 0
