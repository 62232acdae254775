"""Shared training guards: non-finite loss stops before the update, SIGTERM checkpoints and stops."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from xlt.errors import ConfigError
from xlt.models import load_model
from xlt.training import (GuardedTrainerMixin, NonFiniteLossError, graceful_stop_callback, last_checkpoint,
                          resolve_resume)


class _Guarded(GuardedTrainerMixin, Trainer):
    pass


def _dataset(tokenizer, n=16):
    enc = tokenizer(["the cat sat on the mat"] * n)
    return [{"input_ids": ids, "labels": ids} for ids in enc.input_ids]


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=6, save_steps=2,
                logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True, learning_rate=1e-3)
    base.update(kw)
    return TrainingArguments(**base)


class _PoisonAt(TrainerCallback):
    """Corrupt a weight with NaN when the step after ``step`` optimizer steps begins."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_llama_dir, bpe_tokenizer):
    model = load_model(tiny_llama_dir)
    trainer = _Guarded(model=model, args=_args(tmp_path), train_dataset=_dataset(bpe_tokenizer),
                       callbacks=[_PoisonAt(2)])
    with pytest.raises(NonFiniteLossError, match=r"became nan at optimizer step 3; the last good checkpoint "
                                                 r"is .*checkpoint-2"):
        trainer.train()
    assert last_checkpoint(tmp_path).name == "checkpoint-2"
    assert not (tmp_path / "checkpoint-4").exists()
    saved = load_model(tmp_path / "checkpoint-2")
    assert all(torch.isfinite(p).all() for p in saved.parameters())


class _SigtermAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, tiny_llama_dir, bpe_tokenizer):
    model = load_model(tiny_llama_dir)
    previous = signal.getsignal(signal.SIGTERM)
    trainer = _Guarded(model=model, args=_args(tmp_path, save_steps=100, max_steps=10),
                       train_dataset=_dataset(bpe_tokenizer), callbacks=[_SigtermAt(2), graceful_stop_callback()])
    trainer.train()
    assert trainer.state.global_step == 3  # the step under way when the signal came was finished
    assert last_checkpoint(tmp_path).name == "checkpoint-3"
    assert signal.getsignal(signal.SIGTERM) == previous  # handler restored


def test_resolve_resume(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(ConfigError, match="no checkpoint-N directory"):
        resolve_resume(True, tmp_path)
    for n in (2, 10):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-99").mkdir()  # incomplete: no trainer_state.json
    assert resolve_resume("auto", tmp_path).endswith("checkpoint-10")
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        resolve_resume(str(tmp_path / "checkpoint-99"), tmp_path)
