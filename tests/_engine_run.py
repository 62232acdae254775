"""Run by test_engines.py: train tiny mid-align / AFP / SFT / LSLo / pretrain runs under one engine,
write what they logged.

``python _engine_run.py OUT single RUN...`` (one process) or under
``torchrun --nproc_per_node 2`` (ENGINE = ddp or deepspeed; FSDP2 is _fsdp2_run.py). Each RUN is
``name:method:ga[:engine-config]`` (the config: a file name in examples/deepspeed/). Every run
trains on the same global batch (4 rows per micro-batch over all processes) and rank 0 writes
``OUT/<name>.json`` (the step logs) and ``OUT/<name>.pt`` (the final trainable weights, full).
LSLo (``xlt.lslo.run.train``, the call behind ``xlt train lslo``) reads its tiny M2M-100 and
translation pairs from the directory in ``XLT_TEST_LSLO_WORLD`` and also writes its adapter and
pruning report into ``OUT/<name>/``; pretrain is ``xlt.pretrain.build_trainer`` on a synthetic
token stream with one cloned language.
"""

import gc
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _align_helpers import step_logs, train_run  # noqa: E402

GLOBAL_BATCH = 4
STEPS = 4
METHODS = {
    # full fine-tuning: the blocks after the alignment layer, the final norm and the head get no
    # gradient from an alignment micro-batch (the case engines differ on)
    "mid-align": ("mid-align", dict(alignment_gather=True, use_lora=False, learning_rate=1e-3)),
    "afp": ("afp", dict(packing=False, use_lora=True, learning_rate=1e-3)),
    # `xlt train sft`: the align trainer's task-only preset, full fine-tuning
    "sft": ("sft", dict(use_lora=False, learning_rate=1e-3)),
}


def lslo_run(output_dir: str, per_device: int, **extra):
    """``xlt.lslo.run.train`` on the tiny world: 8 pairs per epoch, pruning from epoch 2 on
    (t1 = 1, t2 = 2: 0.875 x 0.5 of every language's B at epoch 2, 0.5 from epoch 3), so the
    4 steps prune (GA 1: 2 epochs; GA 2: 4 epochs, training on after pruning was made permanent);
    a checkpoint at step 3."""
    from xlt.lslo.run import LSLoDataArguments, train
    from xlt.lslo.trainer import LSLoTrainingConfig

    world = Path(os.environ["XLT_TEST_LSLO_WORLD"])
    cfg = LSLoTrainingConfig(output_dir=output_dir, report_to="none", disable_tqdm=True, logging_steps=1,
                             learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
                             per_device_train_batch_size=per_device, tiers=["qaa=high", "qab=low"],
                             pruning="language", pruning_t1=1, pruning_t2=2, target_pruning_ratio=0.5,
                             seed=0, dataloader_drop_last=True, save_strategy="steps", save_steps=3, **extra)
    return train(cfg, LSLoDataArguments(model=str(world / "model"), train_file=str(world / "train.jsonl")),
                 progress=False)


def pretrain_run(output_dir: str, per_device: int, **extra):
    """``xlt.pretrain.build_trainer`` (pico GPT-2, one cloned language, 16-token windows)."""
    import numpy as np

    from xlt.pretrain.cloned import LanguageMap
    from xlt.pretrain.data import TokenStore
    from xlt.pretrain.train import PretrainConfig, build_trainer

    store = TokenStore.from_array(np.random.default_rng(0).integers(3, 64, size=2000))
    cfg = PretrainConfig(output_dir=output_dir, corpus=["synthetic"], tokenizer="synthetic", preset="pico",
                         seq_len=16, n_clones=1, p_clone=0.5, per_device_train_batch_size=per_device,
                         learning_rate=1e-3, warmup_steps=0, report_to="none", disable_tqdm=True,
                         save_strategy="no", logging_steps=1, seed=0, **extra)
    trainer = build_trainer(cfg, [store], LanguageMap.cloned(64, 1))
    trainer.train()
    return trainer


def _fp32_copy_difference(trainer) -> float:
    """The largest difference between a trainable weight and DeepSpeed's fp32 copy of it (the
    copy the optimizer steps and a DeepSpeed checkpoint resumes from)."""
    from deepspeed.utils import safe_get_full_fp32_param

    from xlt.engines import gathered

    worst = 0.0
    for p in trainer.model_wrapped.parameters():
        if p.requires_grad:
            copy = safe_get_full_fp32_param(p).float().cpu()
            with gathered([p]):
                model = p.detach().float().cpu().reshape(copy.shape)
            worst = max(worst, float((copy - model).abs().max()))
    return worst


def main(out: str, engine: str, runs: list[str]) -> None:
    import torch
    import transformers

    from xlt.engines import configure_cpu_deepspeed, engine_record, full_state, num_parameters

    transformers.utils.logging.set_verbosity_error()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    for run in runs:
        name, method, ga, *rest = run.split(":")
        preset, extra = METHODS.get(method, (method, dict(learning_rate=None)))
        extra = dict(extra, gradient_accumulation_steps=int(ga), max_steps=STEPS)
        if engine == "deepspeed":
            configure_cpu_deepspeed()
            extra.update(deepspeed=str(HERE.parent / "examples" / "deepspeed" / rest[0]), use_cpu=False,
                         accelerator_config={"use_configured_state": True})
        start = time.time()
        if method in ("lslo", "pretrain"):
            extra.pop("learning_rate")
            extra.setdefault("use_cpu", True)
            runner = lslo_run if method == "lslo" else pretrain_run
            trainer = runner(os.path.join(out, name), GLOBAL_BATCH // world, **extra)
        else:
            trainer = train_run(os.path.join(out, name), preset, per_device_train_batch_size=GLOBAL_BATCH // world,
                                **extra)
        weights = full_state(trainer.model_wrapped)
        n_parameters = num_parameters(trainer.model)
        fp32_copy = _fp32_copy_difference(trainer) if engine == "deepspeed" else None
        if rank == 0:
            record = dict(engine_record(trainer), n_parameters=n_parameters,
                          n_numel=sum(p.numel() for p in trainer.model.parameters()),
                          seconds=round(time.time() - start, 2), logs=step_logs(trainer), fp32_copy=fp32_copy)
            with open(os.path.join(out, f"{name}.json"), "w") as f:
                json.dump(record, f)
            torch.save({k.removeprefix("module."): v for k, v in weights.items()}, os.path.join(out, f"{name}.pt"))
        del trainer, weights
        if engine == "deepspeed":
            # the next run's model must not be built under this run's ZeRO-3 (zero.Init) settings
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()
            gc.collect()


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
