"""The evaluation suite's two kinds of work against lm-evaluation-harness, side by side in one
run: log-likelihood scoring of multiple-choice requests (``bench_icl_shared_demos``: XNLI- and
XCOPA-shaped requests in the harness's layouts at 0 and 5 shots, xlt's scorer vs
``HFLM.loglikelihood``) and greedy generation (``bench_generation``: MGSM-shaped prompts, xlt's
batched generation vs one sequence at a time vs ``HFLM.generate_until``), on the same
random-weight Llama, tokenizer, requests and batch size. This script prints one table and writes
both parts' results (each as its script writes it alone) under one JSON file.

    PYTHONPATH=src python benchmarks/bench_eval_suite.py [--threads N] [--repeats 5] [--device cpu]
        [--items 200] [--prompts 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    import bench_generation
    import bench_icl_shared_demos

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_suite.json"))
    args = parser.parse_args(argv)
    common = ["--repeats", str(args.repeats), "--device", args.device]
    if args.threads:
        common += ["--threads", str(args.threads)]
    started, load_before = time.time(), _load()
    with tempfile.TemporaryDirectory() as parts:
        scoring = bench_icl_shared_demos.main(common + ["--items", str(args.items),
                                                        "--out", str(Path(parts) / "scoring.json")])
        generation = bench_generation.main(common + ["--prompts", str(args.prompts),
                                                     "--out", str(Path(parts) / "generation.json")])
    summary = {"load_before": load_before, "load_after": _load(), "wall_s": round(time.time() - started, 1),
               "loglikelihood": scoring, "generation": generation}
    print("\n| work | xlt | lm-evaluation-harness | xlt faster by |\n|---|---:|---:|---:|")
    for case, row in scoring["cases"].items():
        print(f"| log-likelihood, {case} ({row['requests']} requests) | {row['xlt_s']:.2f} s | "
              f"{row['lm_eval_s']:.2f} s | {row['speedup']:.2f}x |")
    med = generation["median_s"]
    if "lm_eval" in med:
        print(f"| generation, {generation['prompts']} prompts x {generation['max_new_tokens']} tokens | "
              f"{med['xlt batched']:.2f} s | {med['lm_eval']:.2f} s | {generation['speedup_vs_lm_eval']:.2f}x |")
    print(f"\ngeneration, batched vs one sequence at a time: {generation['speedup_vs_one_at_a_time']:.2f}x "
          f"({med['one at a time']:.2f} s one at a time)")
    print(f"load: {summary['load_before']} -> {summary['load_after']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
