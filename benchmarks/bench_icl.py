"""Batched vs one-at-a-time multiple-choice ICL scoring on the same tiny model and items.

The test suite's tiny randomly initialised Llama (hidden 32, 4 layers) scores 3-choice items (0-shot by
default) under both scoring rules; (A) ``batch_size=32`` right-padded, sorted by length,
(B) ``batch_size=1``. Runs alternate A/B, several repeats, medians; the per-choice scores of
A and B are checked to agree within 1e-5.

    PYTHONPATH=src python benchmarks/bench_icl.py [--items 64] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the cat dog sat on mat red blue big small runs eats house tree river stone light "
         "over under quickly slowly happy green").split()


def make_items(n: int, seed: int = 0):
    from xlt.formats import MultipleChoiceItem

    rng = random.Random(seed)
    return [MultipleChoiceItem(lang="en", context=" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))),
                               choices=tuple(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
                                             for _ in range(3)), label=rng.randint(0, 2))
            for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shots", type=int, default=0, help="demonstrations per item")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for both A and B (1 keeps a shared machine comparable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "icl.json"))
    args = parser.parse_args()

    import torch

    from xlt.eval.icl import prepare_choice_items, score_items
    from xlt.testing import tiny_model, train_bpe_tokenizer

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    tokenizer = train_bpe_tokenizer()
    model = tiny_model("llama", tokenizer).to(args.device).eval()
    items = make_items(args.items)
    demos = make_items(args.shots, seed=1)
    prepared = prepare_choice_items(items, demos)
    n_sequences = sum(len(p.requests) for p in prepared)
    summary = {"device": args.device, "threads": args.threads, "shots": args.shots, "items": args.items, "sequences": n_sequences,
               "batch_size": args.batch_size, "repeats": args.repeats, "rules": {}}
    for rule in ("afp", "lm-eval"):
        times = {"batched": [], "one_at_a_time": []}
        score_items(model, tokenizer, prepared[:4], scoring=rule, batch_size=args.batch_size)  # warm-up
        for _ in range(args.repeats):
            for name, size in (("batched", args.batch_size), ("one_at_a_time", 1)):
                started = time.perf_counter()
                results = score_items(model, tokenizer, prepared, scoring=rule, batch_size=size)
                times[name].append(time.perf_counter() - started)
                if name == "batched":
                    batched = results
                else:
                    single = results
        worst = max(abs(a - b) for x, y in zip(batched, single)
                    for a, b in zip(x.loglikelihoods, y.loglikelihoods))
        med = {k: statistics.median(v) for k, v in times.items()}
        summary["rules"][rule] = {"batched_s": round(med["batched"], 3),
                                  "one_at_a_time_s": round(med["one_at_a_time"], 3),
                                  "speedup": round(med["one_at_a_time"] / med["batched"], 2),
                                  "max_abs_diff": worst, "runs": times}
        print(f"{rule:>8}: batched {med['batched']:.2f} s, one at a time {med['one_at_a_time']:.2f} s, "
              f"speedup {med['one_at_a_time'] / med['batched']:.1f}x ({n_sequences} sequences, "
              f"max |diff| {worst:.1e})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
