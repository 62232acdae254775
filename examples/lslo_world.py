"""LSLo end to end on a synthetic world, on a CPU in minutes.

Steps (every step is the real ``xlt`` command line):

1. a tiny M2M-100 and an NLLB-style tokenizer with the world's language codes
   (``xlt.testing``), trained on the world's monolingual corpus;
2. a stand-in for a pre-trained multilingual model: ``xlt train lslo --full_finetune`` on the
   directions into and out of the world's source language only;
3. ``xlt train lslo`` (LSLo, ranks by tier), the same with language-specific gradual pruning of
   half of B, and ``xlt train lslo --shared`` (one LoRA of the same parameter count), on every
   direction;
4. ``xlt eval mt`` of the base, the two LSLo runs and the shared LoRA on every direction of the
   test split.

A step whose output directory already holds a finished run is kept (rerun with another --out
to start over).

    python examples/lslo_world.py --world WORLD_DIR --out runs/lslo-world
    python examples/lslo_world.py --toy --out runs/lslo-toy     # a built-in 4-language toy world

``WORLD_DIR`` is the output of ``xlt synth`` (``world.json``, ``corpus/<lang>.txt``,
``translation/{train,dev,test}.jsonl``). Tiers default to the world's resource imbalance:
the source language high, then languages by corpus size (largest third med, the rest low).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def xlt(*args, log: Path | None = None, done: Path | None = None) -> None:
    if done is not None and (done / "train_config.json").is_file():
        print(f"(kept {done}: already trained)", flush=True)
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "xlt", *map(str, args)]
    print("$ xlt " + " ".join(map(str, args)), flush=True)
    start = time.time()
    with open(log, "w") if log else open(os.devnull, "w") as handle:
        result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE if log is None else handle,
                                stderr=subprocess.STDOUT if log else None, text=True)
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}); see {log}")
    if log is None and result.stdout:
        print(result.stdout, end="")
    print(f"  ({time.time() - start:.0f} s)", flush=True)


def toy_world(out: Path) -> Path:
    """Four languages: qaa (source), qab / qac (same word order, other words), qad (reversed order)."""
    sys.path.insert(0, str(ROOT / "src"))
    from xlt.formats import ParallelPair, write_jsonl

    langs = ["qaa", "qab", "qac", "qad"]
    words = ["cat", "dog", "sun", "tree", "house", "river", "bird", "stone", "red", "big", "sees", "eats",
             "runs", "small", "green", "old", "moon", "fish", "eats", "blue"]
    shifts = {"qaa": 0, "qab": 3, "qac": 11, "qad": 17}
    suffix = {"qaa": "", "qab": "o", "qac": "en", "qad": "u"}

    def render(meaning, lang):
        ws = ["".join(chr((ord(c) - 97 + shifts[lang]) % 26 + 97) for c in w) + suffix[lang] for w in meaning]
        return " ".join(ws[::-1] if lang == "qad" else ws)

    rng = random.Random(0)
    world = out / "toy-world"
    (world / "translation").mkdir(parents=True, exist_ok=True)
    (world / "corpus").mkdir(exist_ok=True)
    sizes = {"train": 60, "dev": 8, "test": 10}
    for split, n in sizes.items():
        pairs = []
        for _ in range(n):
            meaning = [rng.choice(words) for _ in range(rng.randint(2, 6))]
            pairs += [ParallelPair(s, t, render(meaning, s), render(meaning, t)) for s in langs for t in langs if s != t]
        write_jsonl(world / "translation" / f"{split}.jsonl", pairs)
    for k, lang in enumerate(langs):
        lines = [render([rng.choice(words) for _ in range(rng.randint(2, 6))], lang) for _ in range(400 // (k + 1))]
        (world / "corpus" / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (world / "world.json").write_text(json.dumps({"seed": 0, "source_language": "qaa",
                                                  "languages": [{"code": l} for l in langs]}), encoding="utf-8")
    return world


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="an xlt synth output directory")
    parser.add_argument("--toy", action="store_true", help="use a built-in 4-language toy world")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200, help="LSLo / shared LoRA optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-per-direction", type=int, default=20)
    parser.add_argument("--num-beams", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.world and not args.toy:
        parser.error("give --world DIR or --toy")
    args.out.mkdir(parents=True, exist_ok=True)
    world = toy_world(args.out) if args.toy else args.world
    info = json.loads((world / "world.json").read_text(encoding="utf-8"))
    langs = [l["code"] for l in info["languages"]]
    source = info.get("source_language", langs[0])

    sys.path.insert(0, str(ROOT / "src"))
    from xlt.formats import read_records, write_jsonl
    from xlt.testing import save_tiny_model, train_nllb_tokenizer

    # 1. tokenizer and random tiny M2M-100 -----------------------------------------------------
    corpus, sizes = [], {}
    for lang in langs:
        path = world / "corpus" / f"{lang}.txt"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        sizes[lang] = len(lines)
        corpus += lines[:2000]
    train = read_records(world / "translation" / "train.jsonl", "parallel")
    corpus += [p.src for p in train[:4000]]
    tokenizer = train_nllb_tokenizer(langs, corpus, vocab_size=1000)
    random_dir = args.out / "models" / "random"
    if not random_dir.exists():
        save_tiny_model("m2m100", random_dir, tokenizer=tokenizer, hidden_size=args.hidden_size, num_layers=4,
                        intermediate_size=2 * args.hidden_size, max_positions=128, seed=0)
    others = sorted((l for l in langs if l != source), key=lambda l: -sizes.get(l, 0))
    tiers = {source: "high"}
    for k, lang in enumerate(others):
        tiers[lang] = "med" if k < max(1, len(others) // 3) else "low"
    tier_args = [f"{l}={t}" for l, t in tiers.items()]
    print(f"languages {langs}; tiers {tiers}; {len(train)} training pairs", flush=True)

    # 2. pre-trained stand-in: full fine-tuning on source-centric directions ---------------------
    centric = [p for p in train if source in (p.src_lang, p.tgt_lang)]
    write_jsonl(args.out / "pretrain.jsonl", centric)
    test = read_records(world / "translation" / "test.jsonl", "parallel")
    seen: dict = {}
    test = [p for p in test if seen.setdefault((p.src_lang, p.tgt_lang), []).append(p) or
            len(seen[(p.src_lang, p.tgt_lang)]) <= args.test_per_direction]
    write_jsonl(args.out / "test.jsonl", test)
    common = ["--use_cpu", "--overwrite", "--disable_tqdm", "true", "--logging_steps", "50",
              "--per_device_train_batch_size", args.batch_size, "--max_source_length", 64,
              "--max_target_length", 64, "--label_smoothing_factor", "0.1"]
    base = args.out / "models" / "base"
    xlt("train", "lslo", "--full_finetune", "--model", random_dir, "--train_file", args.out / "pretrain.jsonl",
        "--output_dir", base, "--max_steps", args.pretrain_steps, "--learning_rate", "3e-3",
        "--lr_scheduler_type", "linear", "--warmup_steps", "20", *common, log=args.out / "pretrain.log", done=base)

    # 3. LSLo and the shared LoRA of the same parameter count on every direction ----------------
    # (pruning: epochs of the schedule are counted in passes over the sampled data)
    epochs_needed = max(1, round(args.steps * args.batch_size / len(train)))
    lslo_common = ["--model", base, "--train_file", world / "translation" / "train.jsonl", "--tiers", *tier_args,
                   "--max_steps", args.steps, "--learning_rate", "3e-3", "--lr_scheduler_type", "constant",
                   "--warmup_steps", "0", *common]
    xlt("train", "lslo", *lslo_common, "--output_dir", args.out / "lslo", log=args.out / "lslo.log",
        done=args.out / "lslo")
    xlt("train", "lslo", *lslo_common, "--output_dir", args.out / "lslo-pruned", "--pruning", "language",
        "--pruning_t1", "1", "--pruning_t2", max(1, epochs_needed - 1), "--target_pruning_ratio", "0.5",
        log=args.out / "lslo-pruned.log", done=args.out / "lslo-pruned")
    xlt("train", "lslo", *lslo_common, "--output_dir", args.out / "shared", "--shared",
        log=args.out / "shared.log", done=args.out / "shared")

    # 4. evaluation --------------------------------------------------------------------------
    xlt("eval", "mt", "--data", args.out / "test.jsonl", "--system", f"base={base}",
        "--system", f"lslo={args.out / 'lslo'}", "--system", f"lslo-pruned={args.out / 'lslo-pruned'}",
        "--system", f"shared={args.out / 'shared'}",
        "--num-beams", args.num_beams, "--max-new-tokens", 48, "--chrf-word-order", 2,
        "--tiers", *tier_args, "--out", args.out / "eval", "--overwrite")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
