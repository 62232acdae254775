"""Alignment micro-batch cost, and SFT training-loop overhead against a plain Trainer.

1. ``layers``: one alignment micro-batch (forward, mean/last pooling, InfoNCE, backward) computed
   A) with ``xlt.align.layer_states`` (runs blocks 1..k only) and
   B) the reference way: the full model with ``output_hidden_states=True`` (all blocks, final
      norm and LM head), taking ``hidden_states[k]``.
   Cases: k = N/2 and k = 1 of an 8-layer Llama, on a tiny model (hidden 64, vocab 512) and a
   small one (hidden 512, intermediate 1408, vocab 32,000), batch 2 x 16 sentences of 64 tokens
   (both sides of 16 pairs, as the trainer runs them), all parameters trainable.
2. ``sft``: ``trainer.train()`` for the same steps, model (tiny Llama + LoRA r 8 on q,v), data and
   batch: A) ``AlignTrainer`` with the SFT preset (what ``xlt train sft`` runs), B) a plain
   ``transformers.Trainer`` on the same tokenised rows and collator.

A and B alternate within each repeat (the tiny model gets three times the repeats: its steps are
short and noisier); medians over repeats are reported with their ratio A / B.

    python benchmarks/bench_align.py [--repeats 7] [--device cpu|cuda] [--only layers|sft] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _llama(hidden, inter, vocab, layers, device, seed=0):
    import torch
    import transformers as tf

    config = tf.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                            num_attention_heads=max(4, hidden // 64), num_key_value_heads=max(2, hidden // 128),
                            max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return tf.LlamaForCausalLM(config).to(device).train()


def bench_layers(device: str, repeats: int) -> list[dict]:
    import torch

    from xlt.align import alignment_loss, layer_states

    results = []
    for size, (hidden, inter, vocab) in {"tiny": (64, 172, 512), "small": (512, 1408, 32000)}.items():
        model = _llama(hidden, inter, vocab, 8, device)
        g = torch.Generator().manual_seed(0)
        pairs, length = 16, 64
        ids = torch.randint(3, vocab, (2 * pairs, length), generator=g).to(device)
        lengths = torch.randint(length // 2, length + 1, (2 * pairs,), generator=g)
        mask = (torch.arange(length)[None] < lengths[:, None]).long().to(device)
        for layer, pooling in ((4, "mean"), (1, "last")):
            def loss_of(hidden_states):
                return alignment_loss(hidden_states[:pairs], mask[:pairs], hidden_states[pairs:], mask[pairs:],
                                      temperature=0.1, pooling=pooling)

            def run_a():
                model.zero_grad(set_to_none=True)
                loss_of(layer_states(model, ids, mask, layer)).backward()

            def run_b():
                model.zero_grad(set_to_none=True)
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
                loss_of(out.hidden_states[layer]).backward()

            for fn in (run_a, run_b, run_a, run_b):  # warm-up
                fn()
            times = {"A": [], "B": []}
            rounds = repeats * 3 if size == "tiny" else repeats  # tiny steps are short and noisier
            for _ in range(rounds):
                for name, fn in (("A", run_a), ("B", run_b)):
                    _sync(device)
                    t0 = time.perf_counter()
                    fn()
                    _sync(device)
                    times[name].append(time.perf_counter() - t0)
            a, b = statistics.median(times["A"]), statistics.median(times["B"])
            row = dict(case=f"{size} model, layer {layer} of 8 ({pooling})", hidden=hidden, vocab=vocab,
                       layer=layer, a_median_s=a, b_median_s=b, ratio=a / b,
                       target=0.75 if layer == 4 else 0.3, a_times=times["A"], b_times=times["B"])
            results.append(row)
            print(f"{row['case']:<40} layer_states {a * 1e3:8.1f} ms   full+hidden_states {b * 1e3:8.1f} ms   "
                  f"ratio {a / b:.3f} (target <= {row['target']})", flush=True)
        del model
    return results


def bench_sft(device: str, repeats: int, steps: int = 20) -> dict:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers.trainer_callback import PrinterCallback

    from xlt.align.config import SFTConfig
    from xlt.align.data import AlignCollator, TaskText, build_dataset
    from xlt.align.trainer import AlignTrainer
    from xlt.testing import tiny_model, train_bpe_tokenizer
    from xlt.training import graceful_stop_callback

    transformers.utils.logging.set_verbosity_error()
    tokenizer = train_bpe_tokenizer()
    import random

    rng = random.Random(0)
    words = "the cat dog sun tree blue red run eat big small house river stone bird".split()
    tasks = []
    for _ in range(256):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(8, 24)))
        tasks.append(TaskText(f"Question: {sentence}\nAnswer:", " " + sentence.split()[0]))
    dataset = build_dataset(tokenizer, tasks, [], max_length=512)
    collator = AlignCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)
    common = dict(per_device_train_batch_size=16, max_steps=steps, learning_rate=5e-4, logging_steps=5,
                  report_to="none", disable_tqdm=True, save_strategy="no", seed=1, use_cpu=device == "cpu",
                  lr_scheduler_type="inverse_sqrt", warmup_steps=0.03, weight_decay=0.0,
                  remove_unused_columns=False, dataloader_pin_memory=False)

    def model_for():
        model = tiny_model("llama", tokenizer, seed=0, hidden_size=128, num_layers=4, num_heads=4)
        torch.manual_seed(0)
        return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                                target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))

    def run_a(out):
        cfg = SFTConfig(output_dir=out, **common)
        trainer = AlignTrainer(model=model_for(), args=cfg, train_dataset=dataset, data_collator=collator,
                               processing_class=tokenizer, callbacks=[graceful_stop_callback()])
        trainer.remove_callback(PrinterCallback)
        t0 = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t0, trainer.state.log_history[-2]["loss"]

    def run_b(out):
        args = transformers.TrainingArguments(output_dir=out, **common)
        trainer = transformers.Trainer(model=model_for(), args=args, train_dataset=dataset, data_collator=collator,
                                       processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        t0 = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t0, trainer.state.log_history[-2]["loss"]

    times = {"A": [], "B": []}
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_a(tmp + "/w")
        run_b(tmp + "/w")  # warm-up
        for r in range(repeats):
            for name, fn in (("A", run_a), ("B", run_b)):
                elapsed, loss = fn(f"{tmp}/{name}{r}")
                times[name].append(elapsed)
                losses[name] = loss
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"sft: AlignTrainer {a:.3f} s   plain Trainer {b:.3f} s   ratio {a / b:.3f} (target <= 1.05); "
          f"last logged loss {losses['A']:.4f} vs {losses['B']:.4f}", flush=True)
    return dict(case=f"{steps} steps, batch 16, tiny Llama (hidden 128, 4 layers) + LoRA r 8", a_median_s=a,
                b_median_s=b, ratio=a / b, target=1.05, a_times=times["A"], b_times=times["B"],
                last_loss_a=losses["A"], last_loss_b=losses["B"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["layers", "sft"], default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 keeps timings stable on a shared CPU)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "align.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    result = {"device": args.device, "machine": platform.machine(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
              "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None}
    if args.only in (None, "layers"):
        result["layers"] = bench_layers(args.device, args.repeats)
    if args.only in (None, "sft"):
        result["sft"] = bench_sft(args.device, max(3, args.repeats // 2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
