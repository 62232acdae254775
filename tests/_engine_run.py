"""Run by test_engines.py: train tiny mid-align / AFP runs under one engine, write what they logged.

``python _engine_run.py OUT single RUN...`` (one process) or under
``torchrun --nproc_per_node 2`` (ENGINE = ddp or deepspeed; FSDP2 is _fsdp2_run.py). Each RUN is
``name:method:ga[:engine-config]`` (the config: a file name in examples/deepspeed/). Every run
trains on the same global batch (4 rows per micro-batch over all processes) and rank 0 writes
``OUT/<name>.json`` (the step logs) and ``OUT/<name>.pt`` (the final trainable weights, full).
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
}


def main(out: str, engine: str, runs: list[str]) -> None:
    import torch
    import transformers

    from xlt.engines import configure_cpu_deepspeed, engine_record, full_state, num_parameters

    transformers.utils.logging.set_verbosity_error()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    for run in runs:
        name, method, ga, *rest = run.split(":")
        preset, extra = METHODS[method]
        extra = dict(extra, gradient_accumulation_steps=int(ga), max_steps=STEPS)
        if engine == "deepspeed":
            configure_cpu_deepspeed()
            extra.update(deepspeed=str(HERE.parent / "examples" / "deepspeed" / rest[0]), use_cpu=False,
                         accelerator_config={"use_configured_state": True})
        start = time.time()
        trainer = train_run(os.path.join(out, name), preset, per_device_train_batch_size=GLOBAL_BATCH // world,
                            **extra)
        weights = full_state(trainer.model_wrapped)
        if rank == 0:
            record = dict(engine_record(trainer), n_parameters=num_parameters(trainer.model), seconds=round(time.time() - start, 2), logs=step_logs(trainer))
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
