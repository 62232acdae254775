"""LSLo training-step cost: a batch mixing directions vs one shared LoRA vs one example at a time.

Three ways of doing one optimizer step on the same batch (random tokens, 16 examples, every
example its own (src, tgt) pair drawn from 8 languages, so the batch mixes 10+ directions):

* ``lslo``: LSLo, every example routed to its languages' subspaces inside one batched forward
  (rank r per language, rectangular adapters on the paper's M2M-100 positions);
* ``lora``: one shared PEFT LoRA of the same rank r on the same modules (the cost floor);
* ``loop``: LSLo run example by example (batch of 1, its own subspaces), gradients accumulated,
  then one optimizer step: what per-example adapters cost without batched routing.

Each repeat runs the three in rotating order; medians over repeats are reported with the ratios
``lslo / lora`` (target <= 1.5) and ``loop / lslo`` (target >= 3). Writes
``benchmarks/results/lslo.json``.

    PYTHONPATH=src python benchmarks/bench_lslo.py [--device cuda] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

LANGS = ["qaa", "qab", "qac", "qad", "qae", "qaf", "qag", "qah"]
TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "encoder_attn.q_proj",
           "encoder_attn.k_proj", "encoder_attn.v_proj", "fc1", "fc2"]
SIZES = {
    "tiny": dict(hidden_size=32, num_layers=4, num_heads=4, intermediate_size=64),
    "small": dict(hidden_size=256, num_layers=8, num_heads=4, intermediate_size=1024),  # 4+4 layers,
}


def build(size: str, device: str, seed: int = 0):
    from xlt.testing import tiny_model, train_nllb_tokenizer

    tokenizer = train_nllb_tokenizer(LANGS, vocab_size=512)
    torch.manual_seed(seed)
    model = tiny_model("m2m100", tokenizer, seed=seed, **SIZES[size]).to(device)
    model.config.dropout = 0.0
    return model, tokenizer


def make_batch(vocab: int, batch: int, src_len: int, tgt_len: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, len(LANGS), (batch,), generator=g)
    tgt = (src + 1 + torch.randint(0, len(LANGS) - 1, (batch,), generator=g)) % len(LANGS)
    inputs = {"input_ids": torch.randint(5, vocab, (batch, src_len), generator=g),
              "labels": torch.randint(5, vocab, (batch, tgt_len), generator=g)}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs = {k: v.to(device) for k, v in inputs.items()}
    return inputs, src.to(device), tgt.to(device)


def lslo_model(base, rank: int):
    from xlt.lslo import LSLoConfig, apply_lslo

    model = apply_lslo(base, LSLoConfig(languages=LANGS, ranks={l: rank for l in LANGS}, target_modules=TARGETS,
                                        dim=None))
    with torch.no_grad():  # non-zero B so every path does real work
        for layer in model.lslo_layers.values():
            layer.lora_b.normal_(0, 0.01)
    return model


def lora_model(base, rank: int):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(base, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0,
                                           target_modules=r".*(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj)|.*fc1|.*fc2"))


def step_batched(model, opt, inputs, src, tgt, routed: bool):
    opt.zero_grad(set_to_none=True)
    kw = dict(src_lang_ids=src, tgt_lang_ids=tgt) if routed else {}
    loss = model(**inputs, **kw).loss
    loss.backward()
    opt.step()
    return float(loss.detach())


def step_loop(model, opt, inputs, src, tgt):
    opt.zero_grad(set_to_none=True)
    n = inputs["input_ids"].shape[0]
    total = 0.0
    for b in range(n):
        one = {k: v[b:b + 1] for k, v in inputs.items()}
        loss = model(**one, src_lang_ids=src[b:b + 1], tgt_lang_ids=tgt[b:b + 1]).loss / n
        loss.backward()
        total += float(loss.detach())
    opt.step()
    return total


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_size(size: str, device: str, repeats: int, rank: int, batch: int, length: int) -> dict:
    import copy

    base, tokenizer = build(size, device)
    variants = {"lslo": lslo_model(copy.deepcopy(base), rank), "lora": lora_model(copy.deepcopy(base), rank),
                "loop": None}
    variants["loop"] = variants["lslo"]
    opts = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
            for name, m in variants.items() if name != "loop"}
    opts["loop"] = opts["lslo"]
    inputs, src, tgt = make_batch(len(tokenizer), batch, length, length, device)
    for m in variants.values():
        m.train()

    def run(name):
        if name == "lslo":
            return step_batched(variants[name], opts[name], inputs, src, tgt, routed=True)
        if name == "lora":
            return step_batched(variants[name], opts[name], inputs, src, tgt, routed=False)
        return step_loop(variants[name], opts[name], inputs, src, tgt)

    names = ["lslo", "lora", "loop"]
    for name in names:  # warm-up
        run(name)
    times = {name: [] for name in names}
    for k in range(repeats):
        order = names[k % 3:] + names[:k % 3]
        for name in order:
            sync(device)
            start = time.perf_counter()
            run(name)
            sync(device)
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}
    directions = len({(int(s), int(t)) for s, t in zip(src.tolist(), tgt.tolist())})
    params = {"lslo": sum(p.numel() for p in variants["lslo"].parameters() if p.requires_grad),
              "lora": sum(p.numel() for p in variants["lora"].parameters() if p.requires_grad)}
    return {"size": size, "config": SIZES[size], "batch": batch, "length": length, "rank": rank,
            "directions_in_batch": directions, "languages": len(LANGS), "trainable_parameters": params,
            "median_seconds": med, "all_seconds": times,
            "lslo_over_lora": med["lslo"] / med["lora"], "loop_over_lslo": med["loop"] / med["lslo"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 on a shared machine)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "lslo.json"))
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    results = []
    for size in args.sizes:
        r = bench_size(size, args.device, args.repeats, args.rank, args.batch, args.length)
        results.append(r)
        m = r["median_seconds"]
        print(f"{size:>6}: lslo {m['lslo'] * 1e3:8.1f} ms | shared lora {m['lora'] * 1e3:8.1f} ms | "
              f"one-by-one {m['loop'] * 1e3:8.1f} ms | lslo/lora {r['lslo_over_lora']:.2f}x (target <= 1.5) | "
              f"loop/lslo {r['loop_over_lslo']:.1f}x (target >= 3) | {r['directions_in_batch']} directions",
              flush=True)
    doc = {"benchmark": "lslo training step", "device": args.device, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "machine": platform.machine(), "processor": platform.processor(),
           "repeats": args.repeats, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
