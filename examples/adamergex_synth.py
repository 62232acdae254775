"""AdaMergeX end to end on a synthetic world, on a CPU, in a few minutes.

1. pre-train a tiny Llama from scratch on the world's corpus (all languages);
2. train a task LoRA on the source language's task data (loss on the completion);
3. build reference-task data (``xlt.merge.chunk_words``: prompts of N words, one-word
   completion) from ``corpus/<lang>.txt`` and train one reference LoRA (causal LM, loss on
   every token) per language;
4. merge with AdaMergeX (exact ``delta`` mode; ``factorwise`` for comparison), choose t on the
   first target language's dev set (the paper tunes on one language and reuses t), and
5. evaluate exact-match accuracy on the test sets of the target languages against the task
   adapter alone.

Usage::

    xlt synth --out world
    PYTHONPATH=src python examples/adamergex_synth.py --world world --out runs/adamergex
    PYTHONPATH=src python examples/adamergex_synth.py --tiny-world --out runs/adamergex-tiny

``--tiny-world`` builds a small two-target world of its own (no ``xlt synth`` needed). Every
random choice is seeded. Results go to ``OUT/results.json``; the merged adapters to
``OUT/adapters/``. The training loops here are deliberately minimal (plain PyTorch + PEFT).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from xlt.formats import TaskExample, read_records  # noqa: E402
from xlt.merge import adamergex, chunk_words, read_adapter, write_adapter  # noqa: E402
from xlt.merge.selection import attach_adapter, load_adapter_tensors, score_task, select_t  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ------------------------------------------------------------------------------ a world of our own


def make_tiny_world(out: Path, seed: int = 0) -> Path:
    """Source ``qaa`` (SVO), close target ``qab`` (same order, disjoint words), far target ``qac``
    (SOV); a polarity task ("was it good for the patient?") answered by shared label words."""
    from xlt.testing import train_bpe_tokenizer

    rng = random.Random(seed)
    syll = lambda cons, vow: [c + v for c in cons for v in vow]  # noqa: E731
    sounds = {"qaa": syll("kstpl", "aio"), "qab": syll("mnbdg", "ue"), "qac": syll("rvzfh", "aoy")}
    concepts = [f"n{i}" for i in range(24)] + [f"good{i}" for i in range(6)] + [f"bad{i}" for i in range(6)] + ["det", "neg"]
    lexicon = {}
    for lang, ss in sounds.items():
        used, words = set(), {}
        for c in concepts:
            while True:
                w = "".join(rng.choice(ss) for _ in range(1 if c in ("det", "neg") else 2))
                if w not in used:
                    used.add(w)
                    words[c] = w
                    break
        lexicon[lang] = words

    def sentence(lang, agent, verb, patient, negated):
        L = lexicon[lang]
        v = ([L["neg"]] if negated else []) + [L[verb]]
        a, p = [L["det"], L[agent]], [L["det"], L[patient]]
        words = a + v + p if lang != "qac" else a + p + v
        return " ".join(words) + " ."

    def meaning():
        verb = rng.choice([c for c in concepts if c.startswith(("good", "bad"))])
        return (rng.choice(concepts[:24]), verb, rng.choice(concepts[:24]), rng.random() < 0.3)

    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus").mkdir(exist_ok=True)
    corpus_all = []
    for lang in lexicon:
        lines = [sentence(lang, *meaning()) + (" ?" if rng.random() < 0.1 else "") for _ in range(3000)]
        (out / "corpus" / f"{lang}.txt").write_text("\n".join(lines) + "\n")
        corpus_all += lines
    task_dir = out / "tasks" / "polarity"
    task_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 1500), ("dev", 100), ("test", 300)):
        meanings = [meaning() for _ in range(n)]
        rows = []
        for lang in lexicon:
            for m in meanings:
                good = m[1].startswith("good") != m[3]
                rows.append({"lang": lang, "prompt": sentence(lang, *m) + " ?",
                             "completion": " yes" if good else " no"})
        (task_dir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_bpe_tokenizer(corpus_all + ["yes no ?"], vocab_size=400)
    tok.save_pretrained(out / "tokenizer")
    (out / "world.json").write_text(json.dumps({"seed": seed, "source_language": "qaa",
                                                "languages": [{"code": c} for c in lexicon]}))
    return out


# ------------------------------------------------------------------------------ training


def encode(tok, prompt: str, completion: str, loss_on: str):
    p = tok(prompt)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    labels = (p if loss_on == "all" else [-100] * len(p)) + c
    return p + c, labels


def batches(pairs, batch_size, steps, seed, pad_id):
    rng = random.Random(seed)
    order = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        idx, order = order[:batch_size], order[batch_size:]
        width = max(len(pairs[i][0]) for i in idx)
        ids = torch.tensor([pairs[i][0] + [pad_id] * (width - len(pairs[i][0])) for i in idx])
        lab = torch.tensor([pairs[i][1] + [-100] * (width - len(pairs[i][1])) for i in idx])
        yield ids, (ids != pad_id).long() | (lab != -100).long(), lab


def train(model, pairs, *, steps, lr, batch_size, seed, pad_id, log_name):
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    start, losses = time.time(), []
    for step, (ids, mask, lab) in enumerate(batches(pairs, batch_size, steps, seed, pad_id)):
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    tail = sum(losses[-20:]) / len(losses[-20:])
    print(f"  {log_name}: {steps} steps, final loss {tail:.3f}, {time.time() - start:.0f} s", flush=True)
    return tail


def prime_labels(lines, train_rows, src, seed):
    """Corpus lines that are questions ("... ?") get a *random* answer word of the task appended.

    A model pre-trained only on the corpus never sees the classification label words as outputs;
    with tied embeddings, their logits then stay so small that a LoRA on the blocks cannot make
    them likely (the task LoRA got stuck predicting one class). Random answers teach the answer
    vocabulary and format but nothing about which answer is right: no task knowledge leaks.
    """
    labels = sorted({ex.completion for ex in train_rows if ex.lang == src})
    if len(labels) > 10:  # extraction tasks answer with words of the prompt: nothing to prime
        return lines
    rng = random.Random(seed)
    return [line + rng.choice(labels) if line.rstrip().endswith("?") else line for line in lines]


def pack_corpus(tok, lines, block):
    ids = []
    for line in lines:
        ids += tok(line)["input_ids"] + [tok.eos_token_id]
    blocks = [ids[i:i + block] for i in range(0, len(ids) - block + 1, block)]
    return [(b, b) for b in blocks]


def train_lora(base, pairs, out_dir, *, steps, lr, seed, pad_id, name, init_seed, batch_size=16):
    """A LoRA (r=8, alpha=16, dropout 0.05, 7 modules: the paper's settings) on a copy of base.

    ``init_seed`` is set right before ``get_peft_model`` so that every adapter starts from the
    same LoRA-A init (the factor-wise rule relies on it)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(init_seed)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                                           target_modules=TARGETS, task_type="CAUSAL_LM"))
    train(model, pairs, steps=steps, lr=lr, batch_size=batch_size, seed=seed, pad_id=pad_id, log_name=name)
    model.save_pretrained(out_dir)
    return Path(out_dir)


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=None, help="a world written by `xlt synth`")
    parser.add_argument("--tiny-world", action="store_true", help="build a small world of our own instead")
    parser.add_argument("--out", required=True)
    parser.add_argument("--task", default="polarity")
    parser.add_argument("--targets", default=None, help="target languages (default: all but the source)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a busy shared CPU, intra-op threads slowed these tiny "
                             "models down about 20x)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--task-steps", type=int, default=300)
    parser.add_argument("--task-lr", type=float, default=2e-3)
    parser.add_argument("--ref-lr", type=float, default=2e-3)
    parser.add_argument("--ref-steps", type=int, default=150)
    parser.add_argument("--ref-prompt-words", type=int, default=31, help="reference chunk: prompt words (+1 completion)")
    parser.add_argument("--grid", default="0,0.25,0.5,0.75,1,1.25,1.5")
    parser.add_argument("--eval-limit", type=int, default=200)
    parser.add_argument("--dev-limit", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-label-priming", action="store_true",
                        help="pre-train on the corpus alone (see prime_labels: the task then cannot be learned)")
    args = parser.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    from xlt.models import load_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    world = make_tiny_world(out / "tiny-world", args.seed) if args.tiny_world else Path(args.world)
    info = json.loads((world / "world.json").read_text())
    src = info["source_language"]
    langs = [l["code"] for l in info["languages"]]
    targets = args.targets.split(",") if args.targets else [l for l in langs if l != src]
    tok = load_tokenizer(world / "tokenizer")
    pad = tok.pad_token_id
    corpus = {l: (world / "corpus" / f"{l}.txt").read_text(encoding="utf-8").splitlines() for l in langs}

    split = lambda name: read_records(world / "tasks" / args.task / f"{name}.jsonl", "task")  # noqa: E731
    train_rows, dev_rows, test_rows = split("train"), split("dev"), split("test")

    # 1. pre-train from scratch on every language's corpus
    print(f"world {world} (source {src}, targets {', '.join(targets)}); pre-training", flush=True)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=pad,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cached = out / "base"
    if (cached / "config.json").is_file():  # re-runs reuse the pre-trained model
        base = LlamaForCausalLM.from_pretrained(cached).eval()
        print(f"  pre-trained model reused from {cached}")
    else:
        base = LlamaForCausalLM(cfg)
        lines = [line for l in langs for line in corpus[l]]
        if not args.no_label_priming:
            lines = prime_labels(lines, train_rows, src, args.seed)
        blocks = pack_corpus(tok, lines, 64)
        train(base, blocks, steps=args.pretrain_steps, lr=3e-3, batch_size=args.batch_size, seed=args.seed,
              pad_id=-1, log_name="pre-training (full model)")
        base.save_pretrained(cached)
    base.generation_config.pad_token_id = pad

    # 2. task LoRA on the source language
    task_pairs = [encode(tok, ex.prompt, ex.completion, "completion") for ex in train_rows if ex.lang == src]
    adapters = out / "adapters"
    task_dir = train_lora(base, task_pairs, adapters / f"task_{src}", steps=args.task_steps, lr=args.task_lr,
                          seed=args.seed + 1, pad_id=pad, name=f"task LoRA ({src})", init_seed=args.seed,
                          batch_size=args.batch_size)

    # 3. reference LoRAs: causal LM on reference-lm chunks of each corpus
    ref_dirs = {}
    for k, lang in enumerate([src] + targets):
        chunks = chunk_words(corpus[lang], args.ref_prompt_words, 1)
        pairs = [encode(tok, p, " " + c, "all") for p, c in chunks.pairs]
        ref_dirs[lang] = train_lora(base, pairs, adapters / f"ref_{lang}", steps=args.ref_steps, lr=args.ref_lr,
                                    seed=args.seed + 10 + k, pad_id=pad, name=f"reference LoRA ({lang}, "
                                    f"{len(pairs)} chunks)", init_seed=args.seed,
                                    batch_size=args.batch_size)

    # 4-5. merge, choose t on the first target's dev set, evaluate
    def rows(data, lang, limit):
        return [ex for ex in data if ex.lang == lang][:limit]

    task_state = read_adapter(task_dir)
    model = attach_adapter(copy.deepcopy(base), task_state)  # adapters are swapped in place

    def evaluate(state, examples):
        load_adapter_tensors(model, state)
        return score_task(model, tok, examples, metric="accuracy", batch_size=64)

    results = {"world": str(world), "source": src, "targets": targets, "task": args.task,
               "settings": vars(args), "languages": {}}
    tune_lang = targets[0]
    grid = [float(x) for x in args.grid.split(",")]
    merged_for = {}
    for lang in targets:
        states = [task_state, read_adapter(ref_dirs[lang]), read_adapter(ref_dirs[src])]
        merged_for[lang] = {mode: (lambda t, s=states, m=mode: adamergex(*s, t, mode=m).adapter)
                            for mode in ("delta", "factorwise")}
    # delta mode changes the rank (r1 + r2 + r3): a second PEFT model holds it
    model_delta = attach_adapter(copy.deepcopy(base), merged_for[tune_lang]["delta"](0.0))

    def evaluate_delta(state, examples):
        load_adapter_tensors(model_delta, state)
        return score_task(model_delta, tok, examples, metric="accuracy", batch_size=64)

    dev = rows(dev_rows, tune_lang, args.dev_limit)
    print(f"choosing t on {tune_lang} dev ({len(dev)} records)", flush=True)
    best_t, curve = select_t(grid, lambda t: evaluate_delta(merged_for[tune_lang]["delta"](t), dev),
                             progress=lambda p: print(f"  t = {p['t']:g}: accuracy {p['accuracy']:.3f}, "
                                                      f"loss {p['loss']:.3f}", flush=True))
    results["t_selection"] = {"language": tune_lang, "best_t": best_t, "curve": curve}
    src_test = rows(test_rows, src, args.eval_limit)
    results["source_accuracy_task_adapter"] = evaluate(task_state, src_test)
    base_only = None
    for lang in targets:
        test = rows(test_rows, lang, args.eval_limit)
        row = {"task adapter alone": evaluate(task_state, test)}
        for t in sorted({1.0, best_t}):
            row[f"AdaMergeX delta t={t:g}"] = evaluate_delta(merged_for[lang]["delta"](t), test)
            row[f"AdaMergeX factorwise t={t:g}"] = evaluate(merged_for[lang]["factorwise"](t), test)
        results["languages"][lang] = row
    with model_delta.disable_adapter():
        base_only = {lang: score_task(model_delta, tok, rows(test_rows, lang, args.eval_limit), batch_size=64)
                     for lang in [src] + targets}
    results["base_model_no_adapter"] = base_only
    write_adapter(adamergex(task_state, read_adapter(ref_dirs[tune_lang]), read_adapter(ref_dirs[src]),
                            best_t).adapter, adapters / f"adamergex_{tune_lang}_t{best_t:g}", overwrite=True)
    results["wall_seconds"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n{args.task}: exact-match accuracy on {args.eval_limit} test records per language "
          f"(t chosen on {tune_lang} dev: {best_t:g})")
    print(f"source {src}, task adapter: {results['source_accuracy_task_adapter']['accuracy']:.3f}")
    names = list(next(iter(results["languages"].values())))
    print("| variant | " + " | ".join(targets) + " |")
    print("|---|" + "---:|" * len(targets))
    print("| base model, no adapter | " + " | ".join(f"{base_only[l]['accuracy']:.3f}" for l in targets) + " |")
    for name in names:
        print(f"| {name} | " + " | ".join(f"{results['languages'][l][name]['accuracy']:.3f}" for l in targets) + " |")
    print(f"wall time {results['wall_seconds']:.0f} s -> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
