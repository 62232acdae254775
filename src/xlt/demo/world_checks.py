"""The analysis tools checked in the synthetic world, where the answer is known.

Two checks on a base model pre-trained on a world's corpora (:func:`world_checks`):

* **lens** (:mod:`xlt.analysis.lens`): the close target ``qab`` has the source's grammar and its own
  words, so word ``k`` of a ``qab`` sentence translates word ``k`` of its ``qaa`` parallel sentence.
  Prompt: the first ``k`` words of the ``qab`` sentence; target: its word ``k``; pivot: word ``k``
  of the ``qaa`` sentence. Expected: at the last layer the model continues in the prompt's language,
  mean ``p_target`` > mean ``p_pivot``.
* **neurons** (:mod:`xlt.analysis.neurons`): activation probabilities on the first corpus lines of
  each language, LAPE selection with the tool's defaults; then the perplexity of each language's
  translation test sentences with each language's neurons deactivated. Expected (Tang et al.,
  2024): deactivating language L's neurons raises L's perplexity most, i.e. L's ratio (deactivated /
  plain) is the largest in its row.

Each check returns what was measured, the ``expected`` outcome in words and ``passed`` (bool).
"""

from __future__ import annotations

import random
from pathlib import Path

#: Settings of the checks and their defaults (``lens_prompts`` and ``neuron_lines`` are the two
#: a caller sizes; the rest rarely change).
DEFAULTS = {
    "lens_prompts": 200,        # lens prompts in all
    "lens_per_sentence": 3,     # at most this many prefixes of one sentence
    "lens_target": "qab",       # the prompt's language (the source's grammar, its own words)
    "neuron_lines": 1000,       # corpus lines per language for the activation probabilities
    "ppl_lines": 100,           # translation test sentences per language for the perplexities
    "batch_size": 16,
    "seed": 0,                  # which prefixes of a sentence are taken
}


# --------------------------------------------------------------------------------------------
# lens


def single_token(tokenizer, word: str) -> bool:
    """Whether ``" " + word`` (a word as it follows another in running text) is one token."""
    return len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1


def aligned_lens_probes(pairs, tokenizer, *, source: str, target: str, n_prompts: int,
                        per_sentence: int = 3, seed: int = 0) -> list[dict]:
    """Lens prompts from word-aligned parallel pairs of ``source`` and ``target`` (same word order).

    ``pairs``: ParallelPair records in file order. For each pair whose two sentences have as many
    words (split on spaces), the positions ``k`` in ``2..len-1`` (0-based word ``k`` follows the
    first ``k`` words) whose two words differ and are each one token after a space; at most
    ``per_sentence`` of them (a seeded choice, kept in order), until ``n_prompts`` prompts. Returns
    dicts ``{"pair", "k", "prompt", "target", "pivot"}``: ``pair`` the record's index, ``prompt``
    the first ``k`` target-language words, ``target`` / ``pivot`` word ``k`` of the target /
    source sentence with a leading space.
    """
    rng = random.Random(seed)
    out: list[dict] = []
    for index, pair in enumerate(pairs):
        if len(out) >= n_prompts:
            break
        sides = {pair.src_lang: pair.src, pair.tgt_lang: pair.tgt}
        if set(sides) != {source, target}:
            continue
        src_words, tgt_words = sides[source].split(" "), sides[target].split(" ")
        if len(src_words) != len(tgt_words):
            continue
        positions = [k for k in range(2, len(tgt_words))
                     if tgt_words[k] != src_words[k]
                     and single_token(tokenizer, tgt_words[k]) and single_token(tokenizer, src_words[k])]
        if len(positions) > per_sentence:
            positions = sorted(rng.sample(positions, per_sentence))
        for k in positions[:n_prompts - len(out)]:
            out.append({"pair": index, "k": k, "prompt": " ".join(tgt_words[:k]),
                        "target": " " + tgt_words[k], "pivot": " " + src_words[k]})
    return out


def lens_verdict(p_target: list[float], p_pivot: list[float]) -> dict:
    """From per-layer means (layers 1..N): the last layer's values, the layer where ``p_pivot``
    peaks, the layers where ``p_pivot`` > ``p_target``, and ``passed`` = the last layer's
    ``p_target`` > ``p_pivot``."""
    peak = max(range(len(p_pivot)), key=lambda i: p_pivot[i])
    return {"last_layer_p_target": p_target[-1], "last_layer_p_pivot": p_pivot[-1],
            "pivot_peak_layer": peak + 1,
            "pivot_above_target_layers": [i + 1 for i, (t, v) in enumerate(zip(p_target, p_pivot)) if v > t],
            "passed": bool(p_target[-1] > p_pivot[-1])}


def lens_check(model, tokenizer, world_dir: Path, *, source: str, s: dict) -> dict:
    from xlt.analysis.lens import LensProbe, run_lens
    from xlt.formats import read_records

    target = s["lens_target"]
    a, b = sorted((source, target))
    path = world_dir / "parallel" / f"{a}-{b}.dev.jsonl"
    pairs = read_records(path, "parallel")
    probes = aligned_lens_probes(pairs, tokenizer, source=source, target=target, n_prompts=s["lens_prompts"],
                                 per_sentence=s["lens_per_sentence"], seed=s["seed"])
    result = run_lens(model, tokenizer, [LensProbe(p["prompt"], p["target"], p["pivot"]) for p in probes],
                      batch_size=s["batch_size"])
    summary = result.summary()
    p_target, p_pivot = summary["p_target"]["mean"], summary["p_pivot"]["mean"]
    return {
        "what": f"logit lens on the first k words of {target} sentences of {path.name}; target: word k of the "
                f"{target} sentence, pivot: word k of its {source} parallel sentence (word-aligned: same grammar)",
        "expected": f"at the last layer the model continues in the prompt's language: mean p_target > mean p_pivot",
        "prompt_lang": target, "pivot_lang": source, "pairs_file": f"parallel/{path.name}",
        "n_prompts": len(probes), "n_averaged": sum(result.included), "layers": list(range(1, result.num_layers + 1)),
        "p_target": p_target, "p_pivot": p_pivot, "entropy": summary["entropy"]["mean"],
        "ci95": {m: {"low": summary[m]["low"], "high": summary[m]["high"]} for m in ("p_target", "p_pivot")},
        **lens_verdict(p_target, p_pivot),
        "prompts": probes,
    }


# --------------------------------------------------------------------------------------------
# language-specific neurons


def neuron_verdict(ratios: dict[str, dict[str, float]], counts: dict[str, int]) -> dict:
    """``ratios[off][lang]``: perplexity of ``lang`` with ``off``'s neurons deactivated over its
    plain perplexity; ``counts[off]``: how many neurons ``off`` has. Per language with neurons:
    ``own`` ratio, ``others_mean`` ratio and ``passed`` = its own ratio is the largest in its row
    (strictly). ``passed`` overall: every such language passed, and at least one has neurons."""
    rows = {}
    for off, row in ratios.items():
        if not counts.get(off):
            continue
        others = [r for lang, r in row.items() if lang != off]
        rows[off] = {"own": row[off], "others_mean": sum(others) / len(others) if others else None,
                     "passed": bool(all(row[off] > r for r in others))}
    return {"rows": rows, "passed": bool(rows) and all(r["passed"] for r in rows.values())}


def neurons_check(model, tokenizer, world_dir: Path, *, languages: list[str], s: dict) -> dict:
    from xlt.analysis.neurons import activation_probability, deactivate_neurons, line_perplexity, select_neurons
    from xlt.formats import read_records

    corpora = {lang: (world_dir / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:s["neuron_lines"]]
               for lang in languages}
    probabilities, n_tokens = activation_probability(model, tokenizer, corpora, batch_size=s["batch_size"])
    selection = select_neurons(probabilities, languages)
    records = read_records(world_dir / "translation" / "test.jsonl", "parallel")
    held_out = {lang: sorted({p.tgt for p in records if p.tgt_lang == lang})[:s["ppl_lines"]] for lang in languages}

    def perplexities() -> dict[str, float]:
        return {lang: line_perplexity(model, tokenizer, held_out[lang], batch_size=s["batch_size"])["ppl"]
                for lang in languages}

    plain = perplexities()
    counts = {lang: len(selection.neurons[lang]) for lang in languages}
    ppl, ratios = {"none": plain}, {}
    for off in languages:
        if not counts[off]:
            continue
        with deactivate_neurons(model, selection.by_layer(off)):
            ppl[off] = perplexities()
        ratios[off] = {lang: ppl[off][lang] / plain[lang] for lang in languages}
    verdict = neuron_verdict(ratios, counts)
    return {
        "what": f"LAPE neurons (the tool's defaults: {selection.settings}) from the first {s['neuron_lines']} corpus "
                f"lines per language; perplexity of up to {s['ppl_lines']} translation test sentences per language "
                "with each language's neurons deactivated",
        "expected": "deactivating language L's neurons raises L's perplexity most: its own ratio "
                    "(deactivated / plain) is the largest in its row (Tang et al. 2024)",
        "languages": languages, "n_tokens": n_tokens, "counts": counts, "overlap": selection.overlap(),
        "n_candidates": selection.n_candidates, "n_selected": selection.n_selected,
        "ppl": ppl, "ratio": ratios, "rows": verdict["rows"], "passed": verdict["passed"],
    }


# --------------------------------------------------------------------------------------------


def world_checks(base_dir: Path, world_dir: Path, *, device: str, settings: dict) -> dict:
    """Both checks on the base model in ``base_dir`` (a causal LM with its tokenizer) and its world
    ``world_dir``. ``settings``: keys of :data:`DEFAULTS` (missing ones take the default). Returns
    ``{"settings", "lens", "neurons", "passed"}``, JSON-ready; each check has ``what``,
    ``expected`` and ``passed``."""
    from xlt.demo.transfer import world_info
    from xlt.errors import ConfigError
    from xlt.models import load_model, load_tokenizer

    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown world-check setting(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    s = {**DEFAULTS, **settings}
    base_dir, world_dir = Path(base_dir), Path(world_dir)
    info = world_info(world_dir)
    source = info["source_language"]
    languages = [lang["code"] for lang in info["languages"]]
    if s["lens_target"] not in languages or s["lens_target"] == source:
        raise ConfigError(f"lens_target {s['lens_target']!r} is not a target language of {world_dir / 'world.json'}")
    tokenizer = load_tokenizer(base_dir)
    model = load_model(base_dir, kind="causal", dtype="float32", device=device)
    model.eval()
    lens = lens_check(model, tokenizer, world_dir, source=source, s=s)
    neurons = neurons_check(model, tokenizer, world_dir, languages=languages, s=s)
    return {"settings": s, "lens": lens, "neurons": neurons, "passed": lens["passed"] and neurons["passed"]}
