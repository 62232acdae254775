"""Run by test_engines.py: mid-align (alternate) and AFP (joint) steps under FSDP2 (``fully_shard``).

accelerate builds FSDP only on GPUs, so this drives the same pieces the Trainer uses (an
early-exit ``layer_states`` through the sharded model, ``alignment_loss`` with the cross-process
gather and its world-size gradient scaling, the window's token-normalised CE,
``fill_missing_gradients`` before AdamW) in a plain loop, sharded the way accelerate's
transformer-based wrap policy shards (every decoder block, then the root). ``python
_fsdp2_run.py OUT single RUN...`` or ``torchrun --nproc_per_node 2 _fsdp2_run.py OUT fsdp2
RUN...``; a RUN is ``name:method:ga``. Rank 0 writes ``OUT/<name>.json`` and ``OUT/<name>.pt``
as _engine_run.py does.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

GLOBAL_BATCH, STEPS, SEQ, LAYER = 4, 4, 12, 2


def _batch(gen, vocab, rank, world):
    """One global micro-batch (task rows and pairs, right-padded), this process's rows."""
    import torch

    ids = torch.randint(4, vocab, (3, GLOBAL_BATCH, SEQ), generator=gen)
    lengths = torch.randint(4, SEQ + 1, (3, GLOBAL_BATCH), generator=gen)
    mask = (torch.arange(SEQ)[None, None] < lengths[..., None]).long()
    ids = ids * mask + 3 * (1 - mask)
    labels = ids.masked_fill(mask == 0, -100)
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    return dict(ids=ids[0, rows], mask=mask[0, rows], labels=labels[0, rows], tokens=(labels[0, :, 1:] != -100).sum(),
                pair_ids=torch.cat([ids[1, rows], ids[2, rows]]), pair_mask=torch.cat([mask[1, rows], mask[2, rows]]))


def main(out: str, engine: str, runs: list[str]) -> None:
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    from xlt import fastpath
    from xlt.align.layers import layer_states
    from xlt.align.losses import alignment_loss
    from xlt.engines import fill_missing_gradients, full_state
    from xlt.models import decoder_blocks
    from xlt.testing import tiny_model, train_bpe_tokenizer

    world, rank = 1, 0
    if engine == "fsdp2":
        torch.distributed.init_process_group("gloo")
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    tokenizer = train_bpe_tokenizer()
    for run in runs:
        name, method, ga = run.split(":")
        ga = int(ga)
        model = tiny_model("llama", tokenizer, seed=0, num_layers=4)
        model.train()
        if method == "afp":
            torch.manual_seed(0)
            model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                     target_modules=["q_proj", "v_proj", "up_proj"]))
        if engine == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            for block in decoder_blocks(model):
                fully_shard(block)
            fully_shard(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        gen = torch.Generator().manual_seed(0)
        logs = []
        fastpath.reset()
        for step in range(STEPS):
            window = [_batch(gen, model.config.vocab_size, rank, world) for _ in range(ga)]
            objectives = ["task" if (step * ga + i) % 2 == 0 else "alignment" for i in range(ga)] \
                if method == "mid-align" else ["both"] * ga
            tokens = sum(int(b["tokens"]) for b, o in zip(window, objectives) if o != "alignment")
            ce_log, align_log = torch.zeros(()), torch.zeros(())
            for batch, objective in zip(window, objectives):
                loss = torch.zeros(())
                if objective != "alignment":
                    logits = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits
                    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                                         reduction="sum") / tokens
                    loss = loss + ce * world  # the Trainer's rescale for averaging over processes
                    ce_log += ce.detach()
                if objective != "task":
                    hidden = layer_states(model, batch["pair_ids"], batch["pair_mask"], LAYER)
                    b = hidden.shape[0] // 2
                    term = alignment_loss(hidden[:b], batch["pair_mask"][:b], hidden[b:], batch["pair_mask"][b:],
                                          temperature=0.1, gather=world > 1) / ga
                    align_log += term.detach()  # the global value (every process gathered all rows)
                    loss = loss + (term * world - (world - 1) * term.detach())
                loss.backward()
            if world > 1:
                torch.distributed.all_reduce(ce_log)
            fill_missing_gradients(params)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            logs.append({"step": step + 1, "loss": float(ce_log + align_log)})
        weights = full_state(model)
        if rank == 0:
            record = {"engine": engine, "world_size": world, "seconds": 0, "logs": logs,
                      "early_exit": fastpath.counts()["taken"].get(fastpath.EARLY_EXIT, 0)}
            with open(os.path.join(out, f"{name}.json"), "w") as f:
                json.dump(record, f)
            torch.save(weights, os.path.join(out, f"{name}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    from _align_helpers import finish_distributed

    finish_distributed()
