"""``xlt analyze similarity`` (layer-wise hidden-state and gradient similarity of parallel inputs),
``xlt analyze lens`` (the logit lens by layer) and ``xlt analyze neurons`` (language-specific
neurons by LAPE, and steering by deactivating them)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from xlt.errors import ConfigError, DataError

DESCRIPTION = """Compare a causal LM's hidden states and gradients on parallel inputs, layer by layer.
--text FILE: the same text in two cloned languages of a model trained by 'xlt pretrain'
(position-wise cosine). --pairs FILE: ParallelPair records (jsonl/json/csv/tsv/parquet) whose two
sides are compared after a maximum-weight token matching. Several --model values are compared in
one plot. Writes similarity.json, layers.csv, gradients.csv and PNG plots to --output_dir."""


def build_parser(prog: str):
    from xlt.config import ArgumentParser

    parser = ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--model", nargs="+", required=True, help="model directories or hub ids")
    parser.add_argument("--label", nargs="+", default=None, help="one label per model (default: dir name)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="text file, one line per input, compared across two clones")
    source.add_argument("--pairs", help="parallel pairs (ParallelPair records in any toolkit format)")
    parser.add_argument("--languages", nargs=2, default=None, metavar=("A", "B"),
                        help="the two languages of the model compared (default: its first two)")
    parser.add_argument("--mode", choices=["position", "matching"], default=None,
                        help="token alignment (default: position for --text, matching for --pairs)")
    parser.add_argument("--n_inputs", type=int, default=500, help="use the first N (packed) inputs")
    parser.add_argument("--pack", type=int, default=0,
                        help="glue consecutive lines into inputs of at most this many tokens per side "
                             "(the paper: 512; 0 = one line per input)")
    parser.add_argument("--min_len", type=int, default=0,
                        help="with --pack: drop packed inputs shorter than this (the paper: 128)")
    parser.add_argument("--max_len", type=int, default=None,
                        help="truncate each side to this many tokens (default: the model's positions)")
    parser.add_argument("--no_gradients", action="store_true", help="skip the gradient similarity")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--output_dir", required=True, help="directory for JSON, CSV and PNG outputs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output_dir")
    parser.add_argument("--allow-pickle", dest="allow_pickle", action="store_true",
                        help="allow pickle weight files")
    return parser


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


def _model_inputs(args, model_path: str, model) -> tuple[list[tuple], str, dict]:
    """Parallel inputs in the model's vocabulary, the default mode and clone-embedding figures."""
    import torch

    from xlt.formats import read_parallel_pairs
    from xlt.io import read_json
    from xlt.models import load_tokenizer
    from xlt.analysis.similarity import pack_parallel
    from xlt.pretrain.cloned import LanguageMap
    from xlt.pretrain.data import iter_lines

    model_dir = Path(model_path)
    tokenizers = [load_tokenizer(model_path)]
    language_map = None
    if (model_dir / "languages.json").is_file():
        language_map = LanguageMap.from_dict(read_json(model_dir / "languages.json"))
        if (model_dir / "tokenizer_l2").is_dir():
            tokenizers.append(load_tokenizer(model_dir / "tokenizer_l2"))
    if language_map is not None and language_map.n_languages >= 2:
        lang_a, lang_b = args.languages or language_map.names[:2]
        language_map.index(lang_a)
        language_map.index(lang_b)
    elif args.languages and language_map is not None:
        raise ConfigError(f"{model_path}: has one language ({language_map.names[0]}), cannot compare two")
    elif args.languages:
        raise ConfigError(f"--languages {' '.join(args.languages)}: {model_path} has no languages.json "
                          "(only models pre-trained by 'xlt pretrain' with several languages have "
                          "languages to choose from); leave --languages out")
    else:
        lang_a = lang_b = None

    def encode(texts: list[str], language) -> list[list[int]]:
        index = language_map.tokenizer_index(language) if language_map and language else 0
        tokenizer = tokenizers[index] if index < len(tokenizers) else tokenizers[0]
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    if args.text:
        if language_map is None or language_map.kind != "cloned":
            raise ConfigError(f"{model_path}: --text compares cloned languages, which needs a model "
                              "pre-trained with cloned languages (languages.json); use --pairs otherwise")
        lines = list(iter_lines([args.text]))
        ids = encode(lines, lang_a)
        raw = list(zip(ids, ids))
        mode = "position"
    else:
        pairs = read_parallel_pairs(args.pairs)
        raw = list(zip(encode([p.src for p in pairs], lang_a), encode([p.tgt for p in pairs], lang_b)))
        mode = "matching"
    if args.pack:
        inputs = pack_parallel(raw, max_len=args.pack, min_len=args.min_len)
    else:
        inputs = [(list(a), list(b)) for a, b in raw if min(len(a), len(b)) >= max(args.min_len, 2)]
    inputs = inputs[:args.n_inputs]
    if not inputs:
        raise DataError("no parallel input of at least 2 tokens per side",
                        path=args.text or args.pairs)
    limit = args.max_len or getattr(model.config, "n_positions", None) or \
        getattr(model.config, "max_position_embeddings", None)
    out = []
    for a, b in inputs:
        a = torch.tensor(a[:limit] if limit else a, dtype=torch.long)
        b = torch.tensor(b[:limit] if limit else b, dtype=torch.long)
        if language_map is not None and lang_a is not None:
            a = language_map.map_ids(a, lang_a)
            b = language_map.map_ids(b, lang_b)
        out.append((a, b))
    embeddings = {}
    if language_map is not None and language_map.kind == "cloned" and lang_a is not None:
        from xlt.analysis.similarity import clone_embedding_similarity

        index_a, index_b = language_map.index(lang_a), language_map.index(lang_b)
        if index_a == 0 and index_b > 0:
            embeddings = clone_embedding_similarity(model, language_map.base_vocab_size, index_b,
                                                    language_map.mask)
    return out, mode, embeddings


def similarity_command(argv: list[str], prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    from tqdm.auto import tqdm

    from xlt.analysis.plots import plot_gradient_heatmap, plot_similarity_by_layer
    from xlt.analysis.similarity import analyze_parallel
    from xlt.io import atomic_dir, check_output, write_json
    from xlt.models import load_model

    for name, value, low in (("--n_inputs", args.n_inputs, 1), ("--pack", args.pack, 0),
                             ("--min_len", args.min_len, 0), ("--max_len", args.max_len, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    check_output(args.output_dir, args.overwrite)
    labels = args.label or [Path(m).name or m for m in args.model]
    if len(labels) != len(args.model):
        raise ConfigError(f"--label needs one label per --model ({len(args.model)}), got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--label values must be distinct, got {', '.join(labels)}")
    results = {}
    for label, model_path in zip(labels, args.model):
        model = load_model(model_path, kind="causal", dtype="float32", device=args.device,
                           allow_pickle=args.allow_pickle, attn_implementation="eager")
        inputs, default_mode, embeddings = _model_inputs(args, model_path, model)
        mode = args.mode or default_mode
        with tqdm(total=len(inputs), desc=f"similarity {label}", leave=False) as bar:
            result = analyze_parallel(model, inputs, mode=mode, gradients=not args.no_gradients,
                                      progress=bar.update)
        results[label] = (model_path, result, embeddings)
        means = result.layer_means()
        curve = " ".join(f"{v:.2f}" for v in means["hidden_cos"][1:])
        extra = "".join(f"; {k} {v:.3f}" for k, v in embeddings.items())
        print(f"{label}: {len(inputs)} inputs, {mode} cosine by layer 1..{result.n_layers}: {curve}; "
              f"mean block gradient cosine {result.mean_block_gradient_cosine():.3f}{extra}")
        del model

    with atomic_dir(args.output_dir, overwrite=args.overwrite) as tmp:
        payload = {label: {"model": path, **result.to_dict(), **({"clone_embedding_cos": emb} if emb else {})}
                   for label, (path, result, emb) in results.items()}
        write_json(tmp / "similarity.json", payload)
        with open(tmp / "layers.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["model", "layer", "hidden_cos", "hidden_cos_std", "pooled_cos", "cka"])
            for label, (_, result, _emb) in results.items():
                means = result.layer_means()
                for layer in range(result.n_layers + 1):
                    writer.writerow([label, layer] + [_fmt(means[k][layer]) for k in
                                                      ("hidden_cos", "hidden_cos_std", "pooled_cos", "cka")])
        if not args.no_gradients:
            with open(tmp / "gradients.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["model", "parameter", "layer", "type", "grad_cos_mean", "n_inputs"])
                for label, (_, result, _emb) in results.items():
                    for name, values in result.gradients.items():
                        layer, kind = result.layout.get(name, (None, name))
                        writer.writerow([label, name, "" if layer is None else layer, kind,
                                         _fmt(sum(values) / len(values)), len(values)])
        plot_similarity_by_layer({label: result.layer_means() for label, (_, result, _emb) in results.items()},
                                 tmp / "similarity_by_layer.png")
        if not args.no_gradients:
            for label, (_, result, _emb) in results.items():
                types, matrix = result.gradient_matrix()
                plot_gradient_heatmap(types, matrix, tmp / f"gradient_heatmap_{_safe(label)}.png",
                                      title=f"Gradient cosine by block and parameter type: {label}")
    from xlt.io import summary_line

    files = sorted(p.name for p in Path(args.output_dir).iterdir())
    print(summary_line(prog, f"layer-wise similarity of {len(results)} model(s), {len(files)} files "
                             f"({', '.join(files)})", args.output_dir))
    return 0


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6f}"


# --------------------------------------------------------------------------------------------
# xlt analyze lens

LENS_DESCRIPTION = """The logit lens at every layer (Wendler et al., 2024): each block's output decoded with the
model's final norm and head at the position that predicts the next word; per layer the probability
of the expected next token (p_target), of its pivot-language translation's first token (p_pivot)
and the entropy. --pairs: word pairs (ParallelPair records) with the pivot language on one side,
turned into few-shot translation (--source-lang) or repetition prompts; --prompts: your own rows
{"prompt", "target", "pivot"}. --tuned-lens DIR: decode through a tuned lens's affine translators
(Belrose et al., 2023) instead. Writes lens.json and lens.png to --out."""


def lens_command(argv: list[str], prog: str) -> int:
    from xlt.config import ArgumentParser

    parser = ArgumentParser(prog=prog, description=LENS_DESCRIPTION)
    parser.add_argument("--model", required=True, help="causal LM (directory or hub id)")
    parser.add_argument("--adapter", default=None, help="PEFT adapter applied on top of --model")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", help="ParallelPair records with the pivot language on one side")
    source.add_argument("--prompts", help='rows {"prompt", "target", "pivot"} (jsonl, json, parquet)')
    parser.add_argument("--pivot", default="en", help="--pairs: the pivot language code (default en)")
    parser.add_argument("--target-lang", default=None,
                        help="--pairs: the language whose next word is expected (default: the only non-pivot one)")
    parser.add_argument("--source-lang", default=None,
                        help="--pairs: translate from this language (default: repeat words of --target-lang)")
    parser.add_argument("--shots", type=int, default=4, help="--pairs: few-shot examples per prompt")
    parser.add_argument("--limit", type=int, default=None, help="use the first N prompts only")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass")
    parser.add_argument("--tuned-lens", default=None, metavar="DIR",
                        help="decode through a tuned lens (tuned-lens layout: config.json + params.safetensors "
                             "or params.pt, the latter with --allow-pickle) instead of the plain logit lens")
    _add_model_output_options(parser, "output directory (lens.json, lens.png)")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from xlt.analysis.lens import final_norm_and_head, load_tuned_lens, probes_from_pairs, read_probes, run_lens
    from xlt.analysis.plots import plot_lens
    from xlt.io import atomic_dir, check_output, summary_line, write_json
    from xlt.models import load_model, load_tokenizer

    for name, value, low in (("--shots", args.shots, 0), ("--limit", args.limit, 1),
                             ("--batch-size", args.batch_size, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    if args.prompts and (args.source_lang or args.target_lang):
        raise ConfigError("--source-lang and --target-lang apply to --pairs only")
    check_output(args.out, args.overwrite)
    if args.prompts:
        probes = read_probes(args.prompts)
    else:
        from xlt.formats import read_parallel_pairs

        probes = probes_from_pairs(read_parallel_pairs(args.pairs), pivot=args.pivot, target_lang=args.target_lang,
                                   source_lang=args.source_lang, shots=args.shots)
    probes = probes[:args.limit] if args.limit else probes
    # kind auto: an encoder-decoder model loads, and the analysis refuses it in one clear line
    model = load_model(args.model, kind="auto", dtype=args.dtype, device=args.device, adapter=args.adapter,
                       allow_pickle=args.allow_pickle).eval()
    tokenizer = load_tokenizer(args.adapter or args.model)
    final_norm_and_head(model)  # a model the lens cannot read is refused before the progress bar
    tuned_lens = load_tuned_lens(args.tuned_lens, model, allow_pickle=args.allow_pickle) if args.tuned_lens else None
    with tqdm(total=len(probes), desc="lens", leave=False) as bar:
        result = run_lens(model, tokenizer, probes, batch_size=args.batch_size, progress=bar.update,
                          tuned_lens=tuned_lens)
    result.extra.update(model=args.model, adapter=args.adapter,
                        task=("prompts" if args.prompts else "translation" if args.source_lang else "repetition"),
                        source=args.prompts or args.pairs, pivot_lang=None if args.prompts else args.pivot)
    payload = result.to_dict()
    summary = result.summary()
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        write_json(tmp / "lens.json", payload)
        plot_lens(payload["layers"], summary, tmp / "lens.png",
                  pivot_label=f"pivot ({args.pivot})" if not args.prompts else "pivot",
                  title=f"{payload['lens'].capitalize()} lens: latent language by layer")
    dropped = payload["n_prompts"] - payload["n_averaged"]
    curve = " ".join(f"{t:.3g}/{p:.3g}" for t, p in zip(payload["p_target"], payload["p_pivot"]))
    print(f"{payload['n_prompts']} prompts" + (f" ({dropped} left out of the averages: target and pivot "
                                                f"share their first token)" if dropped else "")
          + f"; p_target/p_pivot by layer 1..{payload['num_layers']}: {curve}")
    print(summary_line(prog, f"{payload['lens']} lens by layer (lens.json, lens.png)", args.out))
    return 0


# --------------------------------------------------------------------------------------------
# xlt analyze neurons

NEURONS_DESCRIPTION = """Language-specific neurons by activation-probability entropy (LAPE; Tang et al., ACL 2024):
per FFN neuron and language, the share of the language's tokens on which the neuron's activation
(the output of the FFN's activation function, before the gate product) is above 0; the entropy of
those probabilities normalised over the languages (LAPE); the neurons of lowest LAPE, assigned to
the languages on which they fire often. --corpus LANG=FILE per language (UTF-8 text, one sequence
per line). Writes neurons.safetensors, neurons.json and neurons.png to --out; with --steer-lines
and --steer-prompts, the perplexity and greedy generations with each language's neurons
deactivated too."""


def parse_corpus_args(values: list[str]) -> dict[str, str]:
    """``["en=a.txt", "fr=b.txt"]`` -> ``{"en": "a.txt", "fr": "b.txt"}``, each file checked."""
    corpora: dict[str, str] = {}
    for value in values:
        language, sep, path = value.partition("=")
        if not sep or not language.strip() or not path.strip():
            raise ConfigError(f"--corpus {value!r}: expected LANG=FILE, e.g. --corpus en=wiki.en.txt")
        if language in corpora:
            raise ConfigError(f"--corpus: language {language!r} given twice")
        if not Path(path).is_file():
            raise DataError("no such corpus file" if not Path(path).exists() else "is not a file", path=path)
        corpora[language] = path
    if len(corpora) < 2:
        raise ConfigError(f"--corpus: LAPE compares languages, give at least two (got {len(corpora)})")
    return corpora


def neurons_command(argv: list[str], prog: str) -> int:
    from xlt.config import ArgumentParser

    parser = ArgumentParser(prog=prog, description=NEURONS_DESCRIPTION)
    parser.add_argument("--model", required=True, help="causal LM (directory or hub id)")
    parser.add_argument("--adapter", default=None, help="PEFT adapter applied on top of --model")
    parser.add_argument("--corpus", nargs="+", action="extend", required=True, metavar="LANG=FILE",
                        help="one text file per language, one sequence per line")
    parser.add_argument("--max-tokens", type=int, default=None, help="count at most N tokens per language")
    parser.add_argument("--max-length", type=int, default=512,
                        help="truncate each line to N tokens (at most the model's positions)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--lape-quantile", type=float, default=0.01,
                        help="select this share of all neurons, lowest LAPE first (the paper: 0.01)")
    parser.add_argument("--filter-quantile", type=float, default=0.95,
                        help="candidates fire above this percentile of all probabilities on some language (0.95)")
    parser.add_argument("--threshold-quantile", type=float, default=0.95,
                        help="a selected neuron belongs to a language whose probability is above this "
                             "percentile of all probabilities (0.95)")
    parser.add_argument("--steer-lines", type=int, default=0,
                        help="perplexity of each corpus's first N lines with each language's neurons "
                             "deactivated (0: off)")
    parser.add_argument("--steer-prompts", default=None,
                        help="text file, one prompt per line: greedy generations with each language's "
                             "neurons deactivated")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="--steer-prompts: tokens generated")
    _add_model_output_options(parser, "output directory")
    args = parser.parse_args(argv)

    from itertools import islice

    from tqdm.auto import tqdm

    from xlt.analysis.neurons import (activation_probability, deactivate_neurons, greedy_generate,
                                      line_perplexity, select_neurons)
    from xlt.analysis.plots import plot_neuron_counts
    from xlt.io import atomic_dir, check_output, summary_line, write_json
    from xlt.models import load_model, load_tokenizer
    from xlt.pretrain.data import iter_lines

    for name, value, low in (("--max-tokens", args.max_tokens, 1), ("--max-length", args.max_length, 1),
                             ("--batch-size", args.batch_size, 1), ("--steer-lines", args.steer_lines, 0),
                             ("--max-new-tokens", args.max_new_tokens, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    for name, value in (("--lape-quantile", args.lape_quantile), ("--filter-quantile", args.filter_quantile),
                        ("--threshold-quantile", args.threshold_quantile)):
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"{name} must be in (0, 1], got {value}")
    corpora = parse_corpus_args(args.corpus)
    for path in corpora.values():  # read through once: a bad file fails now, not after hours of counting
        if not sum(1 for _ in iter_lines([path])):
            raise DataError("no text (only empty lines)", path=path)
    prompts = None
    if args.steer_prompts:
        if not Path(args.steer_prompts).is_file():
            raise DataError("no such prompt file", path=args.steer_prompts)
        prompts = list(iter_lines([args.steer_prompts]))
        if not prompts:
            raise DataError("no prompt", path=args.steer_prompts)
    check_output(args.out, args.overwrite)
    # kind auto: an encoder-decoder model loads, and the analysis refuses it in one clear line
    model = load_model(args.model, kind="auto", dtype=args.dtype, device=args.device, adapter=args.adapter,
                       allow_pickle=args.allow_pickle).eval()
    tokenizer = load_tokenizer(args.adapter or args.model)
    bars = {}

    def progress(language: str, n: int) -> None:
        if language not in bars:
            for bar in bars.values():
                bar.close()
            bars[language] = tqdm(total=args.max_tokens, desc=f"neurons {language}", unit="tok", leave=False)
        bars[language].update(n)

    try:
        probabilities, n_tokens = activation_probability(
            model, tokenizer, {lang: iter_lines([path]) for lang, path in corpora.items()},
            batch_size=args.batch_size, max_length=args.max_length, max_tokens=args.max_tokens, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    from xlt.analysis.neurons import lape

    languages = list(corpora)
    entropy = lape(probabilities)
    selection = select_neurons(probabilities, languages, lape_quantile=args.lape_quantile,
                               filter_quantile=args.filter_quantile, threshold_quantile=args.threshold_quantile,
                               entropy=entropy)
    payload = selection.to_dict()
    payload.update(model=args.model, adapter=args.adapter, corpora=corpora, n_tokens=n_tokens,
                   num_layers=int(probabilities.shape[1]), ffn_width=int(probabilities.shape[2]))
    from xlt.analysis.neurons import sequence_limit

    payload["settings"].update(max_length=sequence_limit(model, args.max_length), max_tokens=args.max_tokens, batch_size=args.batch_size)
    if args.steer_lines or prompts:
        steering: dict = {}
        conditions = [None] + languages
        if args.steer_lines:
            texts = {lang: list(islice(iter_lines([path]), args.steer_lines)) for lang, path in corpora.items()}
            ppl = {}
            for off in tqdm(conditions, desc="steering ppl", leave=False):
                with deactivate_neurons(model, selection.by_layer(off) if off else {}):
                    ppl[off or "none"] = {lang: line_perplexity(model, tokenizer, lines, batch_size=args.batch_size,
                                                                max_length=args.max_length)["ppl"]
                                          for lang, lines in texts.items()}
            steering["ppl"] = ppl
        if prompts:
            generations = {}
            for off in tqdm(conditions, desc="steering generation", leave=False):
                with deactivate_neurons(model, selection.by_layer(off) if off else {}):
                    generations[off or "none"] = greedy_generate(model, tokenizer, prompts,
                                                                 max_new_tokens=args.max_new_tokens)
            steering["prompts"] = prompts
            steering["generations"] = generations
        payload["steering"] = steering
    from safetensors.torch import save_file

    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        save_file({"activation_probability": probabilities.contiguous(), "lape": entropy.contiguous()},
                  str(tmp / "neurons.safetensors"), metadata={"languages": ",".join(languages)})
        write_json(tmp / "neurons.json", payload)
        plot_neuron_counts(selection.counts_per_layer(), tmp / "neurons.png")
    counts = ", ".join(f"{lang} {len(selection.neurons[lang])}" for lang in languages)
    print(f"{sum(n_tokens.values())} tokens over {len(languages)} languages; {selection.n_selected} neurons of "
          f"lowest LAPE selected; per language: {counts}")
    if args.steer_lines:
        for off, row in payload["steering"]["ppl"].items():
            print(f"ppl with {off} neurons deactivated: " + ", ".join(f"{lang} {v:.4g}" for lang, v in row.items()))
    print(summary_line(prog, "language-specific neurons (neurons.safetensors, neurons.json, neurons.png)", args.out))
    return 0


def _add_model_output_options(parser, out_help: str) -> None:
    """The options ``analyze lens`` and ``analyze neurons`` share: device, dtype and the output."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16, float16, auto)")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickle weight files")
