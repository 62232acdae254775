"""xlt's ``activation_probability`` (LAPE's per-language activation probabilities) against the
counting loops a researcher would write by hand, same model, same corpus, same batches.

A Llama with random weights (hidden 256, 4 layers, FFN 1024 by default, built in-process with the
test suite's byte-level BPE tokenizer) reads ``--lines`` sentences in each of ``--languages``
made-up languages (each its own word list). Three ways to get the share of each language's tokens
on which each FFN activation (``mlp.act_fn``'s output) is above 0:

* **xlt**: :func:`xlt.analysis.neurons.activation_probability` (hooks on the activation modules,
  counts per layer vectorised over neurons, one forward per batch);
* **per-neuron loop**: the baseline the issue names: per language, per batch, hand-written forward
  hooks keep each layer's activation, then a Python loop over layers and neurons counts
  ``(act[:, j] > 0).sum()`` into a ``(layers, width)`` table;
* **per-layer counting**: the same hooks, counted per layer with one vectorised
  ``(act > 0).sum(0)`` (how the paper's released code counts, inside its vLLM forward).

All three tokenize inside the timing, sort each language's lines by length (as xlt does, so the
batches and their padding are identical) and use right padding with the pads masked out; the
probabilities must be equal bit for bit (asserted). After one warm-up each, the three run
``--repeats`` times in alternating order (the order reverses each repeat); the medians and the
ratios to xlt are printed and written as JSON with the thread count and ``uptime``'s load.

    PYTHONPATH=src python benchmarks/bench_neurons.py [--lines 300] [--languages 4] [--batch-size 8]
        [--repeats 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEMS = ("cat dog sat mat red blue big small run eat house tree river stone light over under quick slow "
         "happy green old young man woman child city road water food bread after before never always").split()
SUFFIXES = ("", "a", "ok", "ine", "us")


def corpus(language: int, lines: int, seed: int) -> list[str]:
    """``lines`` sentences of 6..30 words from the language's own word list (stems + its suffix)."""
    rng = random.Random(seed * 1000 + language)
    suffix = SUFFIXES[language % len(SUFFIXES)]
    words = [stem + suffix if language < len(SUFFIXES) else stem[::-1] + suffix for stem in STEMS]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 30))).capitalize() + "."
            for _ in range(lines)]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300, help="sentences per language")
    parser.add_argument("--languages", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "neurons.json"))
    args = parser.parse_args()

    import torch

    from xlt.analysis.neurons import activation_probability
    from xlt.testing import tiny_model, train_bpe_tokenizer

    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    load_before = uptime()
    tokenizer = train_bpe_tokenizer()
    model = tiny_model("llama", tokenizer, hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                       intermediate_size=args.ffn, max_positions=512).to(args.device).eval()
    corpora = {f"l{k}": corpus(k, args.lines, seed=0) for k in range(args.languages)}
    pad, max_length = tokenizer.pad_token_id, 512

    def run_xlt():
        probabilities, n_tokens = activation_probability(model, tokenizer, {k: iter(v) for k, v in corpora.items()},
                                                         batch_size=args.batch_size, max_length=max_length)
        return probabilities, n_tokens

    n_layers, ffn = len(model.model.layers), args.ffn

    def by_hand(new_table, add_layer):
        """Per language: tokenize, sort by length, right-pad batches, one forward each with hooks on
        every ``mlp.act_fn`` keeping its output; ``add_layer(table, i, activation (tokens, width))``
        adds layer ``i``'s counts of the batch's real tokens to the language's table."""
        layers = model.model.layers
        kept: list = [None] * len(layers)
        handles = [layer.mlp.act_fn.register_forward_hook(
            lambda module, inputs, output, i=i: kept.__setitem__(i, output)) for i, layer in enumerate(layers)]
        out, n_tokens = [], {}
        try:
            for language, lines in corpora.items():
                ids = sorted(tokenizer(lines, truncation=True, max_length=max_length)["input_ids"], key=len)
                table, seen = new_table(), 0
                for start in range(0, len(ids), args.batch_size):
                    chunk = ids[start:start + args.batch_size]
                    width = max(map(len, chunk))
                    batch = torch.tensor([s + [pad] * (width - len(s)) for s in chunk], device=args.device)
                    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk], device=args.device)
                    with torch.no_grad():
                        model(input_ids=batch, attention_mask=mask, use_cache=False)
                    real = mask.bool()
                    for i, activation in enumerate(kept):
                        add_layer(table, i, activation[real])
                    seen += int(real.sum())
                out.append((torch.as_tensor(table, dtype=torch.float64).cpu() / seen).float())
                n_tokens[language] = seen
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack(out), n_tokens

    def add_per_neuron(table, i, real):  # a Python loop over the layer's neurons
        row = table[i]
        for j in range(real.shape[1]):
            row[j] += int((real[:, j] > 0).sum())

    def add_per_layer(table, i, real):  # one vectorised count per layer
        table[i] += (real > 0).sum(dim=0)

    def run_per_neuron():
        return by_hand(lambda: [[0] * ffn for _ in range(n_layers)], add_per_neuron)

    def run_per_layer():
        return by_hand(lambda: torch.zeros(n_layers, ffn, dtype=torch.int64, device=args.device), add_per_layer)

    variants = (("xlt", run_xlt), ("per_neuron_loop", run_per_neuron), ("per_layer_counting", run_per_layer))
    for _, run in variants:  # warm-up
        run()
    times = {name: [] for name, _ in variants}
    results = {}
    for repeat in range(args.repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        for name, run in order:
            started = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - started)
    reference, tokens = results["xlt"]
    for name in ("per_neuron_loop", "per_layer_counting"):
        probabilities, n_tokens = results[name]
        assert n_tokens == tokens, f"{name}: token counts differ ({n_tokens} vs {tokens})"
        assert torch.equal(probabilities, reference), f"{name}: activation probabilities differ from xlt's"
    medians = {name: statistics.median(t) for name, t in times.items()}
    load_after = uptime()
    summary = {"device": args.device, "threads": torch.get_num_threads(), "languages": args.languages,
               "lines_per_language": args.lines, "tokens": tokens, "batch_size": args.batch_size,
               "hidden": args.hidden, "layers": args.layers, "ffn": args.ffn, "repeats": args.repeats,
               "uptime_before": load_before, "uptime_after": load_after, "equal_probabilities": True,
               "median_s": {k: round(v, 4) for k, v in medians.items()},
               "speedup_vs_per_neuron_loop": round(medians["per_neuron_loop"] / medians["xlt"], 2),
               "speedup_vs_per_layer_counting": round(medians["per_layer_counting"] / medians["xlt"], 2),
               "times": times}
    print(f"{sum(tokens.values())} tokens, {args.languages} languages, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads; medians: " +
          ", ".join(f"{k} {v:.3f} s" for k, v in medians.items()) +
          f"; per-neuron loop / xlt {summary['speedup_vs_per_neuron_loop']}x, per-layer counting / xlt "
          f"{summary['speedup_vs_per_layer_counting']}x; probabilities equal")
    print(f"load before: {load_before}\nload after:  {load_after}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
