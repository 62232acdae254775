"""Shared pieces of the align tests: tiny data and an in-process training run."""

from __future__ import annotations

import random

WORDS = ["cat", "dog", "sun", "tree", "blue", "red", "run", "eat", "big", "small"]


def tiny_texts(n: int = 16, seed: int = 0):
    """``n`` task examples and ``n`` pairs (the candidate is the anchor upper-cased)."""
    from xlt.align.data import PairText, TaskText

    rng = random.Random(seed)
    tasks, pairs = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
        sentence = " ".join(words)
        tasks.append(TaskText(f"Q: {sentence}\nA:", " " + words[0]))
        pairs.append(PairText(sentence, sentence.upper()))
    return tasks, pairs


def train_run(output_dir, preset: str = "mid-align", *, n: int = 16, **overrides):
    """Train a tiny LoRA Llama with ``preset``'s config and ``overrides``; return the trainer."""
    import torch
    from peft import LoraConfig, get_peft_model

    from xlt.align.config import PRESETS
    from xlt.align.data import AlignCollator, build_dataset
    from xlt.align.trainer import AlignTrainer
    from xlt.testing import tiny_model, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer()
    model = tiny_model("llama", tokenizer, seed=0, num_layers=4)
    settings = dict(output_dir=str(output_dir), use_cpu=True, report_to="none", disable_tqdm=True,
                    save_strategy="no", logging_steps=1, learning_rate=1e-2, warmup_steps=0,
                    lora_dropout=0.0, train_sampling_strategy="sequential", seed=0, max_steps=3,
                    dataloader_drop_last=True)
    settings.update(overrides)
    cfg = PRESETS[preset](**settings)
    torch.manual_seed(0)
    if cfg.use_lora:
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM"))
    tasks, pairs = tiny_texts(n)
    if cfg.schedule == "task":
        pairs = []
    train = build_dataset(tokenizer, tasks, pairs, max_length=cfg.max_length, seed=0,
                          streams=cfg.alternate_streams == "separate")
    evalset = build_dataset(tokenizer, tasks[:8], pairs[:6], max_length=cfg.max_length, seed=0, cycle=False)
    collator = AlignCollator(tokenizer.pad_token_id, packing=cfg.packing, block_size=cfg.max_length,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    trainer = AlignTrainer(model=model, args=cfg, train_dataset=train, eval_dataset=evalset,
                           data_collator=collator, processing_class=tokenizer)
    trainer.train()
    return trainer


def step_logs(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "loss" in h and "step" in h]


def finish_distributed() -> None:
    """End a torchrun worker cleanly: every rank reaches the barrier, then the process group is
    destroyed before the interpreter exits (a gloo group left to the interpreter's teardown can
    abort a rank with "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def write_task_and_pair_files(root, tasks, pairs) -> None:
    """``root/train.jsonl`` (TaskExample rows in qaa) and ``root/pairs.jsonl`` (qaa-qab ParallelPair
    rows) from :func:`tiny_texts` output."""
    import json
    import os

    with open(os.path.join(root, "train.jsonl"), "w") as f:
        for t in tasks:
            f.write(json.dumps({"lang": "qaa", "prompt": t.prompt, "completion": t.completion}) + "\n")
    with open(os.path.join(root, "pairs.jsonl"), "w") as f:
        for p in pairs:
            f.write(json.dumps({"src_lang": "qaa", "tgt_lang": "qab", "src": p.anchor, "tgt": p.candidate}) + "\n")
