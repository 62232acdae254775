"""Run by ``torchrun --nproc_per_node 2`` from test_align_ddp.py: train, write the step logs."""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

from _align_helpers import step_logs, train_run  # noqa: E402


def main(out: str, per_device: int) -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    logs = {}
    alternate = dict(alignment_gather=True, gradient_accumulation_steps=2)
    for name, preset, extra in (("alternate", "mid-align", alternate),
                                ("alternate-separate", "mid-align", dict(alternate, alternate_streams="separate")),
                                ("joint", "afp", dict(packing=False, use_lora=True, learning_rate=1e-3))):
        trainer = train_run(os.path.join(out, name), preset, per_device_train_batch_size=per_device, **extra)
        logs[name] = step_logs(trainer)
    if int(os.environ.get("RANK", "0")) == 0:
        with open(os.path.join(out, "logs.json"), "w") as f:
            json.dump(logs, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    from _align_helpers import finish_distributed

    finish_distributed()
