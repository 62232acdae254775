"""Run ``xlt`` with its writer slowed down mid-write, so a test can kill it there.

usage: python _reliability_slow_writer.py {merge|synth|train} MARKER xlt-argv...

``merge``: after the adapter weights are written into the temporary directory (its config not
yet), touch MARKER and sleep. ``synth``: after the third data file is written, the same.
``train``: each training step writes MARKER and sleeps 0.25 s first, so a test knows training
is under way and can signal the process between checkpoints.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _stall(marker: str) -> None:
    Path(marker).write_text("writing", encoding="utf-8")
    time.sleep(300)


def main() -> int:
    mode, marker, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    if mode == "merge":
        import safetensors.torch

        original = safetensors.torch.save_file

        def slow_save_file(*args, **kwargs):
            original(*args, **kwargs)
            _stall(marker)

        safetensors.torch.save_file = slow_save_file
    elif mode == "synth":
        import xlt.synth.writer as writer

        original = writer.write_jsonl
        calls = []

        def slow_write_jsonl(*args, **kwargs):
            result = original(*args, **kwargs)
            calls.append(1)
            if len(calls) == 3:
                _stall(marker)
            return result

        writer.write_jsonl = slow_write_jsonl
    elif mode == "train":  # every optimizer step takes a moment more; nothing else changes
        import transformers

        original_step = transformers.Trainer.training_step

        def slow_training_step(self, *args, **kwargs):
            # MARKER: a step is under way, so the trainer's signal handlers are installed
            Path(marker).write_text(f"step {self.state.global_step + 1}", encoding="utf-8")
            time.sleep(0.25)
            return original_step(self, *args, **kwargs)

        transformers.Trainer.training_step = slow_training_step
    else:
        raise SystemExit(f"unknown mode {mode}")
    from xlt.cli import main as xlt_main

    return xlt_main(argv)


if __name__ == "__main__":
    sys.exit(main())
