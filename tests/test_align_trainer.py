"""AlignTrainer: loss scaling under gradient accumulation, undiluted two-loss logging,
evaluation metrics."""

from __future__ import annotations

import pytest
import torch

from _align_helpers import step_logs, train_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A few short training runs shared by the tests of this module."""
    cache = {}

    def get(name, preset, **kw):
        if name not in cache:
            cache[name] = train_run(tmp_path_factory.mktemp(name), preset, **kw)
        return cache[name]

    return get


def test_task_loss_is_invariant_to_gradient_accumulation(runs):
    one = step_logs(runs("sft1", "sft", per_device_train_batch_size=8))
    two = step_logs(runs("sft2", "sft", per_device_train_batch_size=4, gradient_accumulation_steps=2))
    assert [h["loss"] for h in one] == pytest.approx([h["loss"] for h in two], rel=1e-5)
    assert one[0]["loss"] != one[-1]["loss"]


def test_alternate_window_weights_each_objective_by_its_share(runs):
    # GA = 2: every optimizer step is [task, alignment]; the step loss is ½ CE + ½ A, and each
    # component is logged at its own (undiluted) value
    logs = step_logs(runs("alt2", "mid-align", per_device_train_batch_size=4, gradient_accumulation_steps=2))
    for h in logs:
        assert h["loss"] == pytest.approx(0.5 * (h["task_loss"] + h["alignment_loss"]), rel=1e-4)
        assert h["task_loss"] > 3 and h["alignment_loss"] > 0.1


def test_alternate_without_accumulation_alternates_steps_and_logs_means_not_zeros(runs):
    trainer = runs("alt1", "mid-align", per_device_train_batch_size=4, logging_steps=2, max_steps=4)
    logs = step_logs(trainer)
    assert [h["step"] for h in logs] == [2, 4]
    for h in logs:  # step 2k-1 was a task step, step 2k an alignment step
        assert h["loss"] == pytest.approx(0.5 * (h["task_loss"] + h["alignment_loss"]), rel=1e-4)
        assert h["task_loss"] > 3  # the reference would log about half of it


def test_joint_loss_is_the_weighted_sum(runs):
    logs = step_logs(runs("joint", "afp", per_device_train_batch_size=4, use_lora=True, learning_rate=1e-3))
    for h in logs:
        assert h["loss"] == pytest.approx(1.5 * h["task_loss"] + 1.0 * h["alignment_loss"], rel=1e-4)


def test_evaluation_reports_both_losses_and_retrieval_accuracy(runs):
    from xlt.align import layer_states, pool, retrieval_accuracy

    trainer = runs("joint", "afp", per_device_train_batch_size=4, use_lora=True, learning_rate=1e-3)
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(1.5 * metrics["eval_task_loss"] + metrics["eval_alignment_loss"],
                                                 rel=1e-4)
    # retrieval accuracy recomputed independently, one sentence at a time (no padding at all)
    model = trainer.model.eval()
    vectors = {"anchor": [], "candidate": []}
    with torch.no_grad():
        for pair in trainer.eval_dataset.pairs:
            for side in vectors:
                ids = torch.tensor([pair[f"{side}_input_ids"]])
                hidden = layer_states(model, ids, torch.ones_like(ids), 1)
                vectors[side].append(hidden[0, -1])
    expected = retrieval_accuracy(torch.stack(vectors["anchor"]), torch.stack(vectors["candidate"]))
    assert metrics["eval_alignment_retrieval_accuracy"] == pytest.approx(expected)
    assert 0.0 <= expected <= 1.0
    del pool
