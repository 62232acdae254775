"""Run by test_engines.py: mid-align (alternate), AFP (joint), SFT, LSLo and pretrain steps under
FSDP2 (``fully_shard``).

accelerate builds FSDP only on GPUs, so this drives the same pieces the Trainer uses (an
early-exit ``layer_states`` through the sharded model, ``alignment_loss`` with the cross-process
gather and its world-size gradient scaling, the window's token-normalised CE,
``fill_missing_gradients`` before AdamW) in a plain loop, sharded the way accelerate's
transformer-based wrap policy shards (every decoder block, then the root). ``python
_fsdp2_run.py OUT single RUN...`` or ``torchrun --nproc_per_node 2 _fsdp2_run.py OUT fsdp2
RUN...``; a RUN is ``name:method:ga``. Rank 0 writes ``OUT/<name>.json`` and ``OUT/<name>.pt``
as _engine_run.py does.

LSLo (:func:`lslo_run`) trains the tiny M2M-100 of ``XLT_TEST_LSLO_WORLD`` (its shared, encoder and
decoder embeddings and its head are one tied tensor) with the pruning schedule that
_engine_run.py gives the Trainer, every encoder and decoder block and then the root sharded:
the masks read B through ``full_tensor``, making them permanent writes each process's shard, and
the adapter (the weights, the base fingerprint) is saved into ``OUT/<name>/`` by rank 0 after
every process gathered it. Pretrain (:func:`pretrain_run`) steps the model and windows of
``xlt.pretrain.build_trainer``.
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


def _shard(blocks, root) -> None:
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block)
    fully_shard(root)


def _ce_window(model, window, world, rank, *, shift: bool) -> float:
    """Backward the token-normalised CE of one optimizer window. ``window``: the global
    micro-batches (dicts of tensors with ``labels``, -100 = ignored), of which each process takes
    its rows; ``shift``: causal LM labels (predict the next token). Returns the global loss."""
    import torch
    import torch.nn.functional as F

    tokens = sum(int((b["labels"][:, 1:] if shift else b["labels"]).ne(-100).sum()) for b in window)
    logged = torch.zeros(())
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    for batch in window:
        mine = {k: v[rows] for k, v in batch.items()}
        labels = mine.pop("labels")
        logits = model(**mine).logits
        if shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        ce = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum") / tokens
        (ce * world).backward()  # the Trainer's rescale for averaging over processes
        logged += ce.detach()
    if world > 1:
        torch.distributed.all_reduce(logged)
    return float(logged)


def _steps(model, params, windows, world, rank, *, shift, lr=1e-3, begin=None, end=None):
    """AdamW over ``windows`` (a callable: step -> list of global micro-batches); ``begin`` /
    ``end``: called with the step before / after it. Returns the step logs."""
    import torch

    from xlt.engines import fill_missing_gradients

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    logs = []
    for step in range(STEPS):
        if begin is not None:
            begin(step)
        loss = _ce_window(model, windows(step), world, rank, shift=shift)
        fill_missing_gradients(params)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        logs.append({"step": step + 1, "loss": loss})
        if end is not None:
            end(step)
    return logs


def lslo_run(name, out, ga, world, rank, engine):
    """LSLo on the tiny M2M-100: 8 pairs per epoch, pruning at t1 = 1, t2 = 2, target 0.5 (as
    _engine_run.py trains it through the Trainer). Returns the model and the record."""
    import transformers

    from xlt.formats import read_records
    from xlt.lslo.model import apply_lslo
    from xlt.lslo.pruning import PruningSchedule, pruning_report
    from xlt.lslo.trainer import LSLoTrainingConfig, TemperatureSampler, TranslationCollator, encode_pairs
    from xlt.models import decoder_blocks, encoder_blocks, load_model, load_tokenizer

    world_dir = Path(os.environ["XLT_TEST_LSLO_WORLD"])
    languages = ["qaa", "qab"]
    cfg = LSLoTrainingConfig(output_dir=os.path.join(out, name), tiers=["qaa=high", "qab=low"], report_to="none")
    tokenizer = load_tokenizer(str(world_dir / "model"), padding_side="right")
    model = load_model(str(world_dir / "model"), kind="auto", device="cpu")
    model.train()
    transformers.set_seed(0)
    lslo = apply_lslo(model, cfg.lslo_config(languages, seq2seq=True))
    pairs = read_records(str(world_dir / "train.jsonl"), "parallel")
    rows = encode_pairs(tokenizer, pairs, languages, max_source_length=32, max_target_length=32)
    collate = TranslationCollator(tokenizer.pad_token_id, model.config.decoder_start_token_id)
    sampler = TemperatureSampler([(p.src_lang, p.tgt_lang) for p in pairs], 5.0, seed=0)
    if engine == "fsdp2":
        _shard([*encoder_blocks(model), *decoder_blocks(model)], model)
    # M2M-100 ties its shared, encoder and decoder embeddings and its head: still one tensor
    tied = model.lm_head.weight is model.model.shared.weight is model.model.encoder.embed_tokens.weight \
        is model.model.decoder.embed_tokens.weight
    # the LSLo matrices are DTensor shards outside the forward (what the direct reads must gather)
    sharded = all(hasattr(layer.lora_b, "full_tensor") for layer in lslo.lslo_layers.values())
    schedule = PruningSchedule(1, 2, 0.5, "language")
    per_epoch = len(sampler) // (GLOBAL_BATCH * ga)

    def window(step):
        order = sampler.indices(step // per_epoch)
        first = (step % per_epoch) * ga * GLOBAL_BATCH
        return [collate([rows[j] for j in order[first + i * GLOBAL_BATCH:first + (i + 1) * GLOBAL_BATCH]])
                for i in range(ga)]

    def begin(step):
        if step % per_epoch == 0:
            schedule.begin_epoch(lslo, step // per_epoch + 1)

    def end(step):
        if (step + 1) % per_epoch == 0:
            schedule.end_epoch(lslo)

    params = [p for p in lslo.parameters() if p.requires_grad]
    logs = _steps(lslo, params, window, world, rank, shift=False, lr=1e-2, begin=begin, end=end)
    lslo.save_pretrained(os.path.join(out, name), is_main_process=rank == 0)
    report = pruning_report(lslo)
    return lslo, {"logs": logs, "tied": tied, "sharded": sharded, "pruned": [h["masked"] for h in schedule.history],
                  "surviving": report["surviving"]}


def pretrain_run(name, out, ga, world, rank, engine):
    """The model and windows of ``xlt.pretrain.build_trainer`` (as _engine_run.py's pretrain run)."""
    import numpy as np

    from xlt.models import decoder_blocks
    from xlt.pretrain.cloned import LanguageMap
    from xlt.pretrain.data import TokenStore, collate_windows
    from xlt.pretrain.train import PretrainConfig, build_trainer

    store = TokenStore.from_array(np.random.default_rng(0).integers(3, 64, size=2000))
    cfg = PretrainConfig(output_dir=os.path.join(out, name), corpus=["synthetic"], tokenizer="synthetic",
                         preset="pico", seq_len=16, n_clones=1, p_clone=0.5, use_cpu=True, report_to="none",
                         per_device_train_batch_size=GLOBAL_BATCH // world, gradient_accumulation_steps=ga,
                         max_steps=STEPS)
    trainer = build_trainer(cfg, [store], LanguageMap.cloned(64, 1))
    model, dataset = trainer.model, trainer.train_dataset
    model.train()
    if engine == "fsdp2":
        _shard(decoder_blocks(model), model)

    def window(step):
        first = step * ga * GLOBAL_BATCH
        return [collate_windows([dataset[first + i * GLOBAL_BATCH + j] for j in range(GLOBAL_BATCH)])
                for i in range(ga)]

    params = [p for p in model.parameters() if p.requires_grad]
    return model, {"logs": _steps(model, params, window, world, rank, shift=True)}


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
        if method in ("lslo", "pretrain"):
            model, record = (lslo_run if method == "lslo" else pretrain_run)(name, out, ga, world, rank, engine)
            weights = full_state(model)
            if rank == 0:
                with open(os.path.join(out, f"{name}.json"), "w") as f:
                    json.dump({"engine": engine, "world_size": world, "seconds": 0, **record}, f)
                torch.save(weights, os.path.join(out, f"{name}.pt"))
            continue
        model = tiny_model("llama", tokenizer, seed=0, num_layers=4)
        model.train()
        if method == "afp":
            torch.manual_seed(0)
            model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                     target_modules=["q_proj", "v_proj", "up_proj"]))
        if engine == "fsdp2":
            _shard(decoder_blocks(model), model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        gen = torch.Generator().manual_seed(0)
        logs = []
        fastpath.reset()
        for step in range(STEPS):
            window = [_batch(gen, model.config.vocab_size, rank, world) for _ in range(ga)]
            objectives = ["task" if (step * ga + i) % 2 == 0 else "alignment" for i in range(ga)] \
                if method == "mid-align" else ["task"] * ga if method == "sft" else ["both"] * ga
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
    # Every output is written and the process group is gone: leave without the interpreter's
    # teardown, where a native thread left joinable sometimes aborts a rank ("terminate called
    # without an active exception", exit -6) after a complete run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
