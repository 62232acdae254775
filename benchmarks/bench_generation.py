"""Batched greedy generation (``xlt.eval.task.generate_completions``, what MGSM and ``xlt eval
task`` use: left-padded batches, longest first) against one sequence at a time and against
lm-evaluation-harness's ``HFLM.generate_until`` on the very same prompts, model and batch size.

A Llama with random weights (hidden 256, 4 layers by default, built in-process with the test
suite's byte-level BPE tokenizer) continues MGSM-shaped prompts ("Question: ...\\nAnswer:") for
``--max-new-tokens`` tokens (greedy; a random model rarely stops early, so every sequence costs
about the same). The three run alternately after one warm-up each; medians and ratios are
printed and written as JSON, with the share of prompts whose completions agree between the
batched and the one-at-a-time run (left padding changes float rounding, which can flip a greedy
choice between near-equal logits).

    PYTHONPATH=src python benchmarks/bench_generation.py [--prompts 64] [--batch-size 16]
        [--max-new-tokens 32] [--repeats 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the cat dog sat on mat red blue big small runs eats house tree river stone light over "
         "under quickly slowly happy green old young man woman child city road water food bread "
         "because after before never always again little apples costs dollars each bought").split()


def prompts_for(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 48)))
        out.append(f"Question: {words.capitalize()}?\nAnswer:")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for all runs (default: torch's own, one per core)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-lm-eval", action="store_true", help="leave lm-evaluation-harness out")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generation.json"))
    args = parser.parse_args(argv)

    import logging

    import torch

    from xlt.eval.task import generate_completions
    from xlt.testing import tiny_model, train_bpe_tokenizer

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = train_bpe_tokenizer()
    model = tiny_model("llama", tokenizer, hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                       max_positions=512).to(args.device).eval()
    prompts = prompts_for(args.prompts)
    stop: tuple[str, ...] = ()

    def batched(texts):
        return generate_completions(model, tokenizer, texts, max_new_tokens=args.max_new_tokens,
                                    batch_size=args.batch_size, stop=stop)

    def one_at_a_time(texts):
        return generate_completions(model, tokenizer, texts, max_new_tokens=args.max_new_tokens, batch_size=1,
                                    stop=stop)

    runners = [("xlt batched", batched), ("one at a time", one_at_a_time)]
    version = None
    if not args.no_lm_eval:
        import lm_eval
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM

        version = lm_eval.__version__
        harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, max_length=512,
                       device=args.device)

        def run_harness(texts):
            kwargs = {"until": [], "max_gen_toks": args.max_new_tokens, "do_sample": False}
            instances = [Instance(request_type="generate_until", doc={}, arguments=(t, dict(kwargs)), idx=0)
                         for t in texts]
            return harness.generate_until(instances, disable_tqdm=True)

        runners.append(("lm_eval", run_harness))
    for _, run in runners:
        run(prompts[:2])  # warm-up
    times = {name: [] for name, _ in runners}
    outputs = {}
    for repeat in range(args.repeats):
        order = runners if repeat % 2 == 0 else runners[::-1]
        for name, run in order:
            started = time.perf_counter()
            outputs[name] = run(prompts)
            times[name].append(time.perf_counter() - started)
    med = {name: statistics.median(t) for name, t in times.items()}
    agree = sum(a == b for a, b in zip(outputs["xlt batched"], outputs["one at a time"])) / len(prompts)
    summary = {"device": args.device, "threads": torch.get_num_threads(), "prompts": args.prompts,
               "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
               "hidden": args.hidden, "layers": args.layers, "lm_eval": version,
               "median_s": {k: round(v, 4) for k, v in med.items()},
               "speedup_vs_one_at_a_time": round(med["one at a time"] / med["xlt batched"], 2),
               "completions_equal_to_one_at_a_time": agree, "times": times}
    if "lm_eval" in med:
        summary["speedup_vs_lm_eval"] = round(med["lm_eval"] / med["xlt batched"], 2)
    print(", ".join(f"{name} {value:.2f} s" for name, value in med.items())
          + f"; batched vs one at a time {summary['speedup_vs_one_at_a_time']:.2f}x"
          + (f", vs lm-eval {summary['speedup_vs_lm_eval']:.2f}x" if "lm_eval" in med else "")
          + f"; {args.prompts} prompts x {args.max_new_tokens} tokens, batch {args.batch_size}, "
            f"{torch.get_num_threads()} threads; completions equal to one-at-a-time: {agree:.0%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
