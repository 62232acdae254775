"""What every xlt trainer shares: stopping on a non-finite loss, checkpointing on SIGTERM,
finding the checkpoint to resume from.

Long jobs on shared clusters get pre-empted (SIGTERM, then SIGKILL a little later) and sometimes
diverge. The promises (``docs/reliability.md``):

* a NaN or inf loss stops training with a message naming the optimizer step, before that
  step's update is applied, so the last checkpoint on disk is the last good state;
* SIGTERM makes the trainer finish the current step, save a checkpoint and exit; the command
  then writes no final output (the run is not finished) and exits with status 143 (128 +
  SIGTERM), naming the checkpoint to resume from (:func:`report_signal_stop`);
* ``--resume_from_checkpoint`` (a path, or ``true`` for the newest checkpoint in
  ``output_dir``) continues a killed run.

Before the first step, :func:`schedule_check_callback` says (one line on stderr, once) when a
schedule cannot reach its target within the run's length: a warm-up longer than the run, or a
method's own schedule (LSLo's pruning ratio) that ends short of its target.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import Callable

from xlt.errors import ConfigError, XltError


class NonFiniteLossError(XltError):
    """The training loss became NaN or infinite."""


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The ``checkpoint-N`` directory with the largest N in ``output_dir``, or None."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return None
    found = []
    for child in directory.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def resolve_resume(value: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """Turn a ``--resume_from_checkpoint`` value into a checkpoint path (or None).

    ``true`` / ``auto`` pick the newest checkpoint in ``output_dir``; a path must exist.
    """
    if value in (None, False, "", "false", "False", "no"):
        return None
    if value in (True, "true", "True", "auto", "yes"):
        found = last_checkpoint(output_dir)
        if found is None:
            raise ConfigError(f"--resume_from_checkpoint: no checkpoint-N directory in {output_dir}")
        return str(found)
    path = Path(str(value))
    if not (path / "trainer_state.json").is_file():
        raise ConfigError(f"--resume_from_checkpoint: {path} is not a checkpoint directory "
                          "(no trainer_state.json)")
    return str(path)


def prepare_output(output_dir: str | os.PathLike, resume_from_checkpoint, overwrite: bool) -> tuple[Path, str | None]:
    """``(output directory, checkpoint to resume from or None)`` of a training run; an existing
    directory is an :class:`~xlt.errors.OutputExistsError` unless the run resumes or ``overwrite``."""
    from xlt.errors import OutputExistsError

    out = Path(output_dir)
    resume = resolve_resume(resume_from_checkpoint, out)
    if out.exists() and not resume and not overwrite:
        raise OutputExistsError(out)
    return out, resume


def wait_for_every_process(args) -> None:
    """Wait for every process of a distributed run (``args``: the ``TrainingArguments``, whose
    ``device`` sets the process group up). Called after :func:`prepare_output`, so that no
    process sees the directory the main one's Trainer creates as an existing output."""
    import torch.distributed as dist

    args.device  # noqa: B018
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Print ``xlt: warning: <message>`` on stderr, once per process for a given message."""
    if message in _WARNED:
        return
    _WARNED.add(message)
    print(f"xlt: warning: {message}", file=sys.stderr, flush=True)


def warmup_warning(args, max_steps: int) -> str | None:
    """The warning for a warm-up longer than a run of ``max_steps`` optimizer steps, or None."""
    if not max_steps or max_steps < 1:
        return None
    warmup = args.get_warmup_steps(max_steps)
    if warmup > max_steps:
        return (f"the warm-up ({warmup} steps) is longer than the run ({max_steps} optimizer steps): "
                f"the learning rate never reaches its peak {args.learning_rate:g}")
    return None


def schedule_check_callback(*checks: Callable[..., str | None]):
    """A ``TrainerCallback`` that, when training begins (the Trainer knows the run's optimizer
    steps and epochs then), warns about schedules that cannot reach their target.

    Always checked: the warm-up against the run's optimizer steps. ``checks``: more functions
    ``check(args, state) -> message | None`` (``state.max_steps`` and ``state.num_train_epochs``
    are the run's length).
    """
    from transformers import TrainerCallback

    class ScheduleCheckCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return control
            for check in (lambda a, s: warmup_warning(a, s.max_steps), *checks):
                message = check(args, state)
                if message:
                    warn_once(message)
            return control

    return ScheduleCheckCallback()


class GuardedTrainerMixin:
    """Mix into a ``transformers.Trainer`` subclass (before it) to stop on a non-finite loss.

    The check runs after the backward pass and before the optimizer step, so the bad update is
    never applied and no checkpoint is written after it.
    """

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        value = float(loss.detach().float().mean()) if loss is not None else 0.0
        if not math.isfinite(value):
            step = self.state.global_step + 1
            saved = last_checkpoint(self.args.output_dir)
            where = f"; the last good checkpoint is {saved}" if saved else "; no checkpoint was saved yet"
            raise NonFiniteLossError(f"training loss became {value} at optimizer step {step}{where} "
                                     "(lower the learning rate, or check the data)")
        return loss


def graceful_stop_callback(signals=(signal.SIGTERM,)):
    """A ``TrainerCallback`` that, on SIGTERM, finishes the step, saves a checkpoint and stops."""
    from transformers import TrainerCallback

    class GracefulStopCallback(TrainerCallback):
        def __init__(self):
            self.received: int | None = None
            self._previous = {}

        def _handler(self, signum, frame):
            self.received = signum

        def on_train_begin(self, args, state, control, **kwargs):
            for sig in signals:
                try:
                    self._previous[sig] = signal.signal(sig, self._handler)
                except ValueError:  # not the main thread: leave signals alone
                    pass

        def on_step_end(self, args, state, control, **kwargs):
            if self.received is not None:
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_train_end(self, args, state, control, **kwargs):
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._previous.clear()

    return GracefulStopCallback()


def stop_signal(trainer) -> int | None:
    """The signal that stopped ``trainer.train()`` through :func:`graceful_stop_callback`, or None."""
    for callback in getattr(trainer.callback_handler, "callbacks", []):
        if type(callback).__name__ == "GracefulStopCallback" and callback.received is not None:
            return int(callback.received)
    return None


def quiet_trainer(trainer) -> None:
    """Remove the Trainer's progress bar and per-log printing (the logs stay in
    ``trainer.state.log_history``): for callers that show their own progress."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def report_signal_stop(trainer, prog: str) -> int | None:
    """After ``trainer.train()``: if a signal stopped it, say so on stderr and return the exit
    status (128 + signal number) the command should end with; None when training finished."""
    import sys

    received = stop_signal(trainer)
    if received is None:
        return None
    saved = last_checkpoint(trainer.args.output_dir)
    name = signal.Signals(received).name
    print(f"{prog}: stopped by {name} after step {trainer.state.global_step}; checkpoint saved to {saved}; "
          "continue with --resume_from_checkpoint true", file=sys.stderr, flush=True)
    return 128 + received
