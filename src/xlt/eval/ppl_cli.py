"""``xlt eval ppl``: per-language perplexity with the reference's sliding window."""

from __future__ import annotations

import json
from pathlib import Path

from xlt.errors import ConfigError
from xlt.provenance import VERSIONS_KEY, package_versions

DESCRIPTION = """Per-language token-level perplexity with a sliding window (--context tokens read,
only the last --last_n targets scored, windows --stride apart; the paper uses 512 / 128 / 128).
A model trained by 'xlt pretrain' carries languages.json: every language is scored, clones on the
same --corpus text mapped into their id block, a real second language on '--corpus L2=FILE'.
Any other causal LM: each '--corpus NAME=FILE' (or FILE, named after its stem) is one language.
--unit byte also reports bits per byte (negative log2-likelihood of the scored tokens over the
UTF-8 bytes of the text they stand for), comparable across tokenizers; needs a fast tokenizer."""


def build_parser(prog: str):
    from xlt.config import ArgumentParser

    parser = ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--corpus", nargs="+", required=True, metavar="[LANG=]FILE",
                        help="evaluation text, one document per line")
    parser.add_argument("--languages", nargs="+", default=None,
                        help="languages to score (default: all the model has / all given)")
    parser.add_argument("--context", type=int, default=None,
                        help="tokens each window reads (default: min(512, the model's positions))")
    parser.add_argument("--last_n", type=int, default=128, help="targets scored per window")
    parser.add_argument("--stride", type=int, default=None, help="window shift (default: last_n)")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--max_tokens", type=int, default=None, help="cap on each language's stream")
    parser.add_argument("--unit", choices=("token", "byte"), default="token",
                        help="token: perplexity per token; byte: also bits per byte (reported first)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="model dtype")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--allow-pickle", dest="allow_pickle", action="store_true",
                        help="allow pickle weight files")
    return parser


def _parse_corpora(items: list[str]) -> list[tuple[str | None, Path]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = None, item
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such corpus file")
        out.append((name or None, path))
    return out


def _read_lines(path: Path) -> list[str]:
    from xlt.pretrain.data import iter_lines

    return list(iter_lines([path]))


def ppl_command(argv: list[str], prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    from xlt.io import check_output, read_json, write_json
    from xlt.models import load_model, load_tokenizer
    from xlt.eval.ppl import sliding_window_perplexity, token_stream
    from xlt.pretrain.cloned import LanguageMap

    if args.output:
        check_output(args.output, args.overwrite)
    corpora = _parse_corpora(args.corpus)
    model = load_model(args.model, kind="causal", dtype=args.dtype, device=args.device,
                       allow_pickle=args.allow_pickle)
    model_dir = Path(args.model)
    tokenizers = [load_tokenizer(args.model)]
    languages_file = model_dir / "languages.json"
    if languages_file.is_file():
        language_map = LanguageMap.from_dict(read_json(languages_file))
        if (model_dir / "tokenizer_l2").is_dir():
            tokenizers.append(load_tokenizer(model_dir / "tokenizer_l2"))
        plan = {}
        for name in language_map.names:
            named = [p for n, p in corpora if n == name]
            shared = [p for n, p in corpora if n is None]
            if named:
                plan[name] = named[0]
            elif shared and language_map.tokenizer_index(name) == 0:
                plan[name] = shared[0]
        for name, _ in corpora:
            if name is not None:
                language_map.index(name)  # unknown names are an error
    else:
        language_map = None
        plan = {(name or path.stem): path for name, path in corpora}
    wanted = args.languages or list(plan)
    for name in wanted:
        if name not in plan:
            raise ConfigError(f"no evaluation text for language {name!r}: pass --corpus {name}=FILE")
    context = args.context
    if context is None:
        limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
        context = min(512, limit or 512)
    last_n = min(args.last_n, context) if args.context is None else args.last_n

    results = {}
    for name in wanted:
        tok_index = language_map.tokenizer_index(name) if language_map else 0
        # a second language written with the first tokenizer has no tokenizer_l2/ of its own
        tokenizer = tokenizers[tok_index] if tok_index < len(tokenizers) else tokenizers[0]
        stream = token_stream(_read_lines(plan[name]), tokenizer, max_tokens=args.max_tokens,
                              with_bytes=args.unit == "byte")
        stream, token_bytes = stream if args.unit == "byte" else (stream, None)
        ids = language_map.map_ids(stream, name) if language_map else stream

        def decode(target_ids, _name=name, _tok=tokenizer):
            import torch

            original = language_map.unmap_ids(torch.tensor(target_ids), _name).tolist() if language_map \
                else target_ids
            return _tok.decode(original, skip_special_tokens=True)

        result = sliding_window_perplexity(model, ids, context=context, last_n=last_n, stride=args.stride,
                                           batch_size=args.batch_size, decode=decode,
                                           token_bytes=token_bytes)
        result["corpus"] = str(plan[name])
        results[name] = result
        if args.unit == "byte":
            print(f"{name}: {result['bits_per_byte']:.4f} bits/byte ({result['n_bytes']} bytes scored)")
        print(f"{name}: ppl {result['ppl']:.3f}  ({result['n_tokens']} tokens scored in "
              f"{result['n_windows']} windows; {result.get('normalised_ppl', float('nan')):.4f} per char; "
              f"top-1 {result['top1']:.3f})")
    report = {"model": str(args.model), "context": context, "last_n": last_n,
              "stride": args.stride or last_n, "unit": args.unit, "languages": results, VERSIONS_KEY: package_versions()}
    if args.output:
        write_json(args.output, report, overwrite=True)
    else:
        print(json.dumps(report, indent=2, sort_keys=True))
    from xlt.io import summary_line

    if args.unit == "byte":
        figures = ", ".join(f"{name} {r['bits_per_byte']:.4f} bits/byte" for name, r in results.items())
    else:
        figures = ", ".join(f"{name} {r['ppl']:.3f}" for name, r in results.items())
    print(summary_line(prog, f"perplexity of {len(results)} language(s) ({figures})", args.output))
    return 0
