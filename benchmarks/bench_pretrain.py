"""Throughput of ``xlt pretrain``'s training path against a bare PyTorch loop, side by side.

A: the code path of ``xlt pretrain`` in-process (``PretrainConfig`` -> ``build_trainer`` ->
``Trainer.train``: memory-mapped windows, per-sequence language mapping, the reference LR
schedule, the non-finite-loss guard). B: a bare loop on the same model (same init seed), the
same optimizer (fused AdamW, betas 0.9/0.95), the same LR schedule and one fixed batch already on
the device: forward, backward, step, zero_grad.

Step time = time between consecutive optimizer steps (A: ``on_step_end`` callbacks, so it
includes the data loader; B: the loop itself), warm-up steps dropped, median per run; A and B
alternate over ``--repeats`` runs and the medians of the run medians are compared. The data
loader's own time per batch is measured separately by iterating the Trainer's dataloader without
the model.

    PYTHONPATH=src python benchmarks/bench_pretrain.py [--device cpu|cuda] [--preset micro]
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

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default="micro")
    parser.add_argument("--arch", default="gpt2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2000, help="base vocabulary (x2 with one clone)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 avoids oversubscription "
                             "on a loaded machine")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "pretrain.json"))
    args = parser.parse_args()

    import numpy as np
    import torch
    import transformers as tf
    from transformers import TrainerCallback

    if args.threads:
        torch.set_num_threads(args.threads)
    tf.utils.logging.set_verbosity_error()
    tf.utils.logging.disable_progress_bar()
    from xlt.pretrain import LanguageMap, reference_lr
    from xlt.pretrain.data import TokenStore
    from xlt.pretrain.train import PretrainConfig, build_trainer, model_config

    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA not available", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    n_tokens = args.batch * (args.steps + 1) * args.seq_len * 2 + 1
    store = TokenStore.from_array(rng.integers(1, args.vocab, n_tokens).astype(np.uint16))
    language_map = LanguageMap.cloned(args.vocab, 1)
    tmp = tempfile.mkdtemp(prefix="bench-pretrain-")

    def config():
        return PretrainConfig(corpus=["<memory>"], tokenizer="<memory>", output_dir=tmp, preset=args.preset,
                              arch=args.arch, seq_len=args.seq_len, n_clones=1, p_clone=0.5,
                              max_steps=args.steps, per_device_train_batch_size=args.batch,
                              warmup_steps=2, save_strategy="no", logging_steps=10 ** 6,
                              disable_tqdm=True, report_to="none", use_cpu=args.device == "cpu")

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.stamps = []

        def on_train_begin(self, *a, **k):
            sync()
            self.stamps.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            sync()
            self.stamps.append(time.perf_counter())

    def run_xlt():
        timer = StepTimes()
        trainer = build_trainer(config(), [store], language_map, callbacks=[timer])
        trainer.train()
        steps = [b - a for a, b in zip(timer.stamps, timer.stamps[1:])][args.warmup:]
        return statistics.median(steps), trainer

    def run_bare():
        tf.set_seed(0)
        cfg = model_config(args.preset, args.arch, language_map.model_vocab_size, seq_len=args.seq_len)
        cfg.loss_type = "ForCausalLM"
        model = tf.AutoModelForCausalLM.from_config(cfg).to(args.device)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), eps=1e-8,
                                      weight_decay=0.0, fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: reference_lr(t, warmup_steps=2, decay_steps=args.steps) / 6e-4)
        ids = torch.from_numpy(store.tokens[:args.batch * (args.seq_len + 1)].astype(np.int64))
        rows = ids.reshape(args.batch, args.seq_len + 1).to(args.device)
        batch = {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, :-1].contiguous(),
                 "shift_labels": rows[:, 1:].contiguous()}
        stamps = []
        sync()
        stamps.append(time.perf_counter())
        for _ in range(args.steps):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            sync()
            stamps.append(time.perf_counter())
        steps = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup:]
        return statistics.median(steps)

    def loader_time(trainer):
        loader = trainer.get_train_dataloader()
        start = time.perf_counter()
        count = 0
        for batch in loader:
            if args.device == "cuda":
                batch = {k: v.to(args.device, non_blocking=True) for k, v in batch.items()}
            count += 1
            if count >= args.steps:
                break
        sync()
        return (time.perf_counter() - start) / count

    xlt_steps, bare_steps, loader_steps = [], [], []
    for repeat in range(args.repeats):
        order = ("xlt", "bare") if repeat % 2 == 0 else ("bare", "xlt")
        for which in order:
            if which == "xlt":
                step, trainer = run_xlt()
                xlt_steps.append(step)
                loader_steps.append(loader_time(trainer))
                del trainer
            else:
                bare_steps.append(run_bare())
        print(f"repeat {repeat + 1}/{args.repeats}: xlt {xlt_steps[-1] * 1e3:.1f} ms/step, "
              f"bare {bare_steps[-1] * 1e3:.1f} ms/step, loader {loader_steps[-1] * 1e3:.2f} ms/batch",
              flush=True)
    tokens = args.batch * args.seq_len
    xlt_median, bare_median, loader_median = (statistics.median(v) for v in (xlt_steps, bare_steps, loader_steps))
    result = {
        "device": args.device, "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch": torch.__version__, "transformers": tf.__version__, "threads": torch.get_num_threads(),
        "preset": args.preset, "arch": args.arch, "batch": args.batch, "seq_len": args.seq_len,
        "model_vocab": language_map.model_vocab_size, "steps": args.steps, "warmup_dropped": args.warmup,
        "repeats": args.repeats,
        "xlt_step_s": xlt_steps, "bare_step_s": bare_steps, "loader_batch_s": loader_steps,
        "xlt_tokens_per_s": tokens / xlt_median, "bare_tokens_per_s": tokens / bare_median,
        "ratio_xlt_over_bare": bare_median / xlt_median,
        "loader_fraction_of_step": loader_median / xlt_median,
    }
    print(f"xlt pretrain: {result['xlt_tokens_per_s']:.0f} tokens/s, bare loop: "
          f"{result['bare_tokens_per_s']:.0f} tokens/s, ratio {result['ratio_xlt_over_bare']:.3f}x; "
          f"data loader {loader_median * 1e3:.2f} ms/batch = "
          f"{100 * result['loader_fraction_of_step']:.2f}% of a step")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
