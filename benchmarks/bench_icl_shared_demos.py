"""xlt's log-likelihood scorer vs lm-evaluation-harness's ``HFLM.loglikelihood`` on the very
same request strings, same model, same batch size.

A Llama with random weights (hidden 256, 4 layers by default, built in-process with the test
suite's byte-level BPE tokenizer) scores XNLI- and XCOPA-shaped requests laid out as the
harness lays out ``xnli_*`` (empty text; the choice is "premise, right? Yes, hypothesis") and
``xcopa_*`` (the premise without its final period, a connector, the lowercased choice), with
``--shots`` demonstrations (the same ones for every item of a task, as xlt selects them) joined
by "\\n\\n". For each (task, shots), the two scorers run alternately (the first one swaps each
repeat) after one warm-up each; the medians and their ratio are printed and written as JSON,
with the largest per-choice difference and whether every prediction agrees (asserted).

    PYTHONPATH=src python benchmarks/bench_icl_shared_demos.py [--items 200] [--shots 0,5]
        [--tasks xnli,xcopa] [--batch-size 16] [--repeats 5] [--threads N] [--device cpu]
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
         "because after before never always again little").split()


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + "."


def xnli_docs(n: int, rng: random.Random):
    """(choice texts, gold) per item, as the harness's xnli_* builds them (empty doc text)."""
    docs = []
    for _ in range(n):
        premise, hypothesis = _sentence(rng, 8, 24), _sentence(rng, 4, 12)
        choices = [f"{premise}, right? {word}, {hypothesis}" for word in ("Yes", "Also", "No")]
        docs.append(("", choices, rng.randrange(3)))
    return docs


def xcopa_docs(n: int, rng: random.Random):
    """(doc text, choice texts, gold) as the harness's xcopa_* builds them."""
    docs = []
    for _ in range(n):
        premise = _sentence(rng, 5, 14)
        connector = rng.choice(("because", "therefore"))
        choices = [_sentence(rng, 3, 10) for _ in range(2)]
        docs.append((premise.strip()[:-1] + " " + connector, [c[0].lower() + c[1:] for c in choices],
                     rng.randrange(2)))
    return docs


def requests_for(task: str, items: int, shots: int, seed: int = 0):
    """``(pairs, choices per item)``: (context, continuation) strings in the harness's layout."""
    make = xnli_docs if task == "xnli" else xcopa_docs
    docs, demos = make(items, random.Random(seed)), make(shots, random.Random(seed + 1))
    prefix = "".join(text + " " + choices[gold] + "\n\n" for text, choices, gold in demos)
    pairs = [(prefix + text, " " + choice) for text, choices, _ in docs for choice in choices]
    return pairs, [len(choices) for _, choices, _ in docs]


def token_bound(encoded) -> tuple[int, int]:
    """``(tokens fed scoring each request whole, distinct tokens)``: a token is distinct per
    distinct prefix of ids ending in it; an exact scorer runs each at least once, so the ratio
    bounds what sharing alone can save (at equal cost per token)."""
    fed = sum(len(e.input_ids) - 1 for e in encoded)
    distinct = {e.input_ids[:k] for e in encoded for k in range(1, len(e.input_ids))}
    return fed, len(distinct)


def predictions(scores, widths):
    out, cursor = [], 0
    for width in widths:
        part = scores[cursor:cursor + width]
        cursor += width
        out.append(max(range(width), key=lambda k: part[k]))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--shots", default="0,5", help="comma-separated demonstration counts")
    parser.add_argument("--tasks", default="xnli,xcopa")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-positions", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=None, help="FFN width (default: 2 x hidden)")
    parser.add_argument("--vocab", type=int, default=None,
                        help="the model's vocabulary (default: the tokenizer's 512); a larger one costs what a "
                             "real vocabulary costs in the head and its softmax, its extra ids never occur")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for both scorers (default: torch's own, one per core)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "icl_shared_demos.json"))
    args = parser.parse_args(argv)

    import logging

    import lm_eval
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from xlt import fastpath
    from xlt.eval.scoring import SHARED_DEMONSTRATIONS, encode_requests, score_encoded
    from xlt.testing import tiny_model, train_bpe_tokenizer

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = train_bpe_tokenizer()
    extra = {"vocab_size": args.vocab} if args.vocab else {}
    model = tiny_model("llama", tokenizer, hidden_size=args.hidden, num_layers=args.layers,
                       num_heads=args.heads, intermediate_size=args.intermediate,
                       max_positions=args.max_positions, **extra).to(args.device).eval()
    harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size,
                   max_length=args.max_positions, device=args.device)
    pad = tokenizer.pad_token_id

    def run_xlt(pairs):
        encoded = encode_requests(tokenizer, pairs, "lm-eval")
        return [s for s, _ in score_encoded(model, encoded, batch_size=args.batch_size, pad_token_id=pad,
                                            max_length=args.max_positions)]

    def run_harness(pairs):
        instances = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in pairs]
        return [ll for ll, _ in harness.loglikelihood(instances, disable_tqdm=True)]

    scorers = (("xlt", run_xlt), ("lm_eval", run_harness))
    summary = {"device": args.device, "threads": torch.get_num_threads(), "items": args.items,
               "batch_size": args.batch_size, "repeats": args.repeats, "hidden": args.hidden,
               "layers": args.layers, "heads": args.heads, "intermediate": model.config.intermediate_size,
               "vocab": model.config.vocab_size, "parameters": sum(p.numel() for p in model.parameters()),
               "lm_eval": lm_eval.__version__, "cases": {}}
    for task in args.tasks.split(","):
        for shots in (int(s) for s in args.shots.split(",")):
            pairs, widths = requests_for(task, args.items, shots)
            for _, scorer in scorers:
                scorer(pairs[:sum(widths[:4])])  # warm-up
            times = {name: [] for name, _ in scorers}
            scores = {}
            fastpath.reset()
            for repeat in range(args.repeats):
                order = scorers if repeat % 2 == 0 else scorers[::-1]
                for name, scorer in order:
                    started = time.perf_counter()
                    scores[name] = scorer(pairs)
                    times[name].append(time.perf_counter() - started)
            worst = max(abs(a - b) for a, b in zip(scores["xlt"], scores["lm_eval"]))
            same = predictions(scores["xlt"], widths) == predictions(scores["lm_eval"], widths)
            med = {name: statistics.median(t) for name, t in times.items()}
            ratio = med["lm_eval"] / med["xlt"]
            runs = fastpath.counts()["taken"].get(SHARED_DEMONSTRATIONS, 0)
            fed, distinct = token_bound(encode_requests(tokenizer, pairs, "lm-eval"))
            summary["cases"][f"{task}/{shots}-shot"] = {
                "requests": len(pairs), "xlt_s": round(med["xlt"], 4), "lm_eval_s": round(med["lm_eval"], 4),
                "speedup": round(ratio, 2), "max_abs_diff": worst, "same_predictions": same,
                "shared_demonstration_runs": runs, "tokens_fed_whole": fed, "distinct_tokens": distinct,
                "times": times}
            print(f"{task} {shots}-shot: xlt {med['xlt']:.3f} s, lm-eval {med['lm_eval']:.3f} s, "
                  f"{ratio:.2f}x; {len(pairs)} requests, batch {args.batch_size}, "
                  f"{torch.get_num_threads()} threads, max |diff| {worst:.1e}, same predictions: {same}")
            assert same, f"{task} {shots}-shot: predictions differ from the harness's"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
