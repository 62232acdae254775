"""Batched vs one-at-a-time multiple-choice ICL scoring on the same tiny model and items.

The test suite's tiny randomly initialised Llama (hidden 32, 4 layers) scores 3-choice items (0-shot by
default) under both scoring rules, three ways: (A) ``batch_size=32``, the default batched scorer
(each item's shared prefix run once, its choices continued from the prefix's cache),
(A') ``batch_size=32`` with ``share_prefix=False`` (whole sequences, right-padded, sorted by
length), (B) ``batch_size=1``, one sequence per forward. Runs rotate A/A'/B, several repeats,
medians; the per-choice scores of A and A' are checked against B (within 1e-5).

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
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for every variant (default: torch's own, one per core)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "icl.json"))
    args = parser.parse_args()

    import torch

    from xlt.eval.icl import prepare_choice_items, score_items
    from xlt.eval.scoring import encode_requests
    from xlt.testing import tiny_model, train_bpe_tokenizer

    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = train_bpe_tokenizer()
    model = tiny_model("llama", tokenizer).to(args.device).eval()
    items = make_items(args.items)
    demos = make_items(args.shots, seed=1)
    prepared = prepare_choice_items(items, demos)
    n_sequences = sum(len(p.requests) for p in prepared)
    encoded = encode_requests(tokenizer, [r for p in prepared for r in p.requests], "afp")
    summary = {"device": args.device, "threads": torch.get_num_threads(), "shots": args.shots,
               "items": args.items, "sequences": n_sequences,
               "mean_tokens": round(sum(len(e.input_ids) for e in encoded) / len(encoded), 1),
               "batch_size": args.batch_size, "repeats": args.repeats, "rules": {}}
    variants = (("batched", dict(batch_size=args.batch_size)),
                ("batched_no_sharing", dict(batch_size=args.batch_size, share_prefix=False)),
                ("one_at_a_time", dict(batch_size=1)))
    for rule in ("afp", "lm-eval"):
        times = {name: [] for name, _ in variants}
        scores = {}
        for _, kwargs in variants:
            score_items(model, tokenizer, prepared[:4], scoring=rule, **kwargs)  # warm-up
        for repeat in range(args.repeats):
            shift = repeat % len(variants)
            for name, kwargs in variants[shift:] + variants[:shift]:
                started = time.perf_counter()
                scores[name] = score_items(model, tokenizer, prepared, scoring=rule, **kwargs)
                times[name].append(time.perf_counter() - started)
        worst = max(abs(a - b) for name in ("batched", "batched_no_sharing")
                    for x, y in zip(scores[name], scores["one_at_a_time"])
                    for a, b in zip(x.loglikelihoods, y.loglikelihoods))
        med = {k: statistics.median(v) for k, v in times.items()}
        one = med["one_at_a_time"]
        summary["rules"][rule] = {**{f"{k}_s": round(v, 4) for k, v in med.items()},
                                  "speedup": round(one / med["batched"], 2),
                                  "speedup_no_sharing": round(one / med["batched_no_sharing"], 2),
                                  "max_abs_diff": worst, "runs": times}
        print(f"{rule:>8}: batched {med['batched']:.3f} s, without prefix sharing "
              f"{med['batched_no_sharing']:.3f} s, one at a time {one:.3f} s; speedup "
              f"{one / med['batched']:.1f}x ({one / med['batched_no_sharing']:.1f}x without sharing); "
              f"{n_sequences} sequences, {torch.get_num_threads()} threads, max |diff| {worst:.1e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
