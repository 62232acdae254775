"""``xlt synth``: generate a synthetic multilingual world into a directory."""

from __future__ import annotations

import time

from xlt.config import ArgumentParser
from xlt.errors import ConfigError
from xlt.synth.config import LABEL_WORDS, WORD_ORDERS, WorldConfig

_DEFAULT = WorldConfig()


def _word_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _float_list(name: str, text: str) -> tuple[float, ...]:
    if text.strip() == "equal":
        return ()
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise ConfigError(f"{name}: expected comma-separated numbers, got {part!r}") from None
    return tuple(values)


def build_parser(prog: str) -> ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description="Generate a synthetic multilingual world: N artificial languages that share "
                    "one meaning space, with corpora, task splits, parallel and translation data "
                    "and a tokenizer (layout: docs/synth.md). Same seed, same bytes.")
    d = _DEFAULT
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of every random choice")
    parser.add_argument("--languages", type=int, default=d.languages,
                        help="number of languages (qaa is the source, then qab, qac, ...)")
    parser.add_argument("--word-orders", default=",".join(d.word_orders), metavar="ORDERS",
                        help="comma-separated word order per language, cycled "
                             f"(each one of {', '.join(WORD_ORDERS)})")
    parser.add_argument("--anchor-share", type=float, default=d.anchor_share,
                        help="share of content concepts with the same form in every language "
                             "(numerals first, then names, then others)")
    parser.add_argument("--label-words", choices=LABEL_WORDS, default=d.label_words,
                        help="classification labels: shared anchor words, or each language's own")
    parser.add_argument("--negation-share", type=float, default=d.negation_share,
                        help="share of negated events")
    parser.add_argument("--corpus-lines", type=int, default=d.corpus_lines,
                        help="monolingual corpus lines over all languages")
    parser.add_argument("--corpus-shares", default="equal", metavar="SHARES",
                        help="comma-separated relative corpus share per language, e.g. 0.9,0.1, "
                             "or 'equal'")
    parser.add_argument("--question-share", type=float, default=d.question_share,
                        help="share of corpus lines that are task prompts without an answer")
    for name, what in (("task-train", "task training"), ("task-dev", "task dev"),
                       ("task-test", "task test"), ("translation-train", "translation training"),
                       ("translation-dev", "translation (and parallel) dev"),
                       ("translation-test", "translation test"),
                       ("parallel-train", "parallel training")):
        parser.add_argument(f"--{name}", type=int, default=getattr(d, name.replace("-", "_")),
                            help=f"meanings in the {what} split (rendered in every language)")
    parser.add_argument("--vocab-size", type=int, default=d.vocab_size,
                        help="tokenizer vocabulary size")
    parser.add_argument("--instructions", type=int, default=None, metavar="N",
                        help="also write instruction data in every language (Bactrian-X layout, for "
                             "xlt data afp): DIR/instructions/<code>.json, N meanings per kind")
    return parser


def config_from_args(args) -> WorldConfig:
    return WorldConfig(
        seed=args.seed, languages=args.languages, word_orders=_word_list(args.word_orders),
        anchor_share=args.anchor_share, label_words=args.label_words,
        negation_share=args.negation_share, corpus_lines=args.corpus_lines,
        corpus_shares=_float_list("corpus_shares", args.corpus_shares),
        question_share=args.question_share, task_train=args.task_train, task_dev=args.task_dev,
        task_test=args.task_test, translation_train=args.translation_train,
        translation_dev=args.translation_dev, translation_test=args.translation_test,
        parallel_train=args.parallel_train, vocab_size=args.vocab_size)


def synth_command(argv: list[str], prog: str) -> int:
    """Parse options, generate the world and write it atomically."""
    from xlt.io import check_output

    args = build_parser(prog).parse_args(argv)
    config = config_from_args(args)          # every knob is checked before anything is written
    if args.instructions is not None and args.instructions < 1:
        raise ConfigError(f"--instructions must be >= 1 (meanings per instruction kind), got {args.instructions}")
    check_output(args.out, args.overwrite)   # refuse an existing DIR before the work

    from xlt.synth.world import generate_world
    from xlt.synth.writer import write_world

    start = time.perf_counter()
    world = generate_world(config)
    counts = write_world(world, args.out, overwrite=args.overwrite)
    if args.instructions is not None:
        from pathlib import Path

        from xlt.synth.instructions import write_instructions

        for name, n in write_instructions(world, Path(args.out) / "instructions", limit=args.instructions).items():
            counts[f"instructions/{name}"] = n
    seconds = time.perf_counter() - start
    langs = ", ".join(f"{lang.code} ({lang.name}, {lang.word_order})" for lang in world.languages)
    from xlt.io import summary_line

    print(summary_line(prog, f"wrote {len(world.languages)} languages [{langs}], {sum(counts.values())} lines "
                             f"in {len(counts) + 1} files plus tokenizer/ in {seconds:.1f} s", args.out))
    return 0
