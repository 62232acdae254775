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


def _eval_trainer(tmp_path, n_tasks: int, n_pairs: int, eval_batch: int, **overrides):
    """An untrained mid-align trainer on a tiny model whose dev task and pair lists differ in length."""
    from _align_helpers import tiny_texts

    from xlt.align.config import MidAlignConfig
    from xlt.align.data import AlignCollator, build_dataset
    from xlt.align.trainer import AlignTrainer
    from xlt.testing import tiny_model, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer()
    model = tiny_model("llama", tokenizer, seed=0, num_layers=4)
    settings = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", disable_tqdm=True,
                    save_strategy="no", use_lora=False, per_device_eval_batch_size=eval_batch,
                    task_weight=0.7, alignment_weight=1.3)
    settings.update(overrides)
    cfg = MidAlignConfig(**settings)
    tasks, _ = tiny_texts(n_tasks, seed=1)
    _, pairs = tiny_texts(n_pairs, seed=2)
    evalset = build_dataset(tokenizer, tasks, pairs, max_length=64, cycle=False)
    trainer = AlignTrainer(model=model, args=cfg, train_dataset=evalset, eval_dataset=evalset,
                           data_collator=AlignCollator(tokenizer.pad_token_id), processing_class=tokenizer)
    return trainer, tokenizer, tasks, pairs


@torch.no_grad()
def _dev_losses_by_hand(model, tokenizer, tasks, pairs, *, layer: int, eval_batch: int, temperature: float):
    """(token-mean CE over every dev task example, mean over anchors of the InfoNCE of its eval batch),
    one unpadded sequence at a time."""
    model.eval()
    total, tokens = 0.0, 0
    for t in tasks:
        ids = tokenizer(t.prompt + t.completion)["input_ids"] + [tokenizer.eos_token_id]
        prompt = tokenizer(t.prompt)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
        targets = torch.tensor(ids[1:])
        scored = torch.arange(1, len(ids)) >= len(prompt)  # target position t+1 is a completion token
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        total += float(nll[scored].sum())
        tokens += int(scored.sum())

    def vector(text):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        return model(ids, output_hidden_states=True).hidden_states[layer][0].double().mean(dim=0)

    anchor_losses = []
    for start in range(0, len(pairs), eval_batch):
        chunk = pairs[start:start + eval_batch]
        a = torch.stack([vector(p.anchor) for p in chunk])
        c = torch.stack([vector(p.candidate) for p in chunk])
        sim = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(c, dim=1).T / temperature
        anchor_losses += torch.nn.functional.cross_entropy(sim, torch.arange(len(chunk)), reduction="none").tolist()
    return total / tokens, sum(anchor_losses) / len(anchor_losses)


@pytest.mark.parametrize("n_tasks,n_pairs", [(3, 8), (9, 4)])
def test_eval_loss_is_the_weighted_sum_of_dev_ce_and_alignment_loss_whatever_the_file_lengths(
        tmp_path, n_tasks, n_pairs):
    # rows past the shorter dev list carry one objective: the Trainer's per-batch mean of the
    # summed loss would drift toward that objective's loss
    trainer, tokenizer, tasks, pairs = _eval_trainer(tmp_path, n_tasks, n_pairs, eval_batch=2)
    metrics = trainer.evaluate()
    ce, align = _dev_losses_by_hand(trainer.model, tokenizer, tasks, pairs, layer=2, eval_batch=2,
                                    temperature=0.1)
    assert metrics["eval_task_loss"] == pytest.approx(ce, rel=1e-4)
    assert metrics["eval_alignment_loss"] == pytest.approx(align, rel=1e-4)
    assert metrics["eval_loss"] == pytest.approx(0.7 * ce + 1.3 * align, rel=1e-4)


@pytest.mark.parametrize("streams", ["shared", "separate"])
def test_alternate_epoch_uses_every_example_and_pair_only_with_separate_streams(tmp_path, streams):
    from _align_helpers import tiny_texts

    from xlt.align.config import MidAlignConfig
    from xlt.align.data import AlignCollator, build_dataset, tokenize_pairs, tokenize_task
    from xlt.align.trainer import AlignTrainer
    from xlt.testing import tiny_model, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer()
    tasks, _ = tiny_texts(9, seed=3)
    _, pairs = tiny_texts(4, seed=4)
    seen = {"task": [], "alignment": []}

    class Recording(AlignTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if "labels" in inputs:
                seen["task"] += [tuple(r[m.bool()].tolist()) for r, m in zip(inputs["input_ids"], inputs["attention_mask"])]
            if "anchor_input_ids" in inputs:
                seen["alignment"] += [tuple(r[m.bool()].tolist()) for r, m in
                                      zip(inputs["anchor_input_ids"], inputs["anchor_attention_mask"])]
            assert not ("labels" in inputs and "anchor_input_ids" in inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    cfg = MidAlignConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", disable_tqdm=True,
                         save_strategy="no", use_lora=False, per_device_train_batch_size=2,
                         gradient_accumulation_steps=2, num_train_epochs=1, alternate_streams=streams)
    train = build_dataset(tokenizer, tasks, pairs, max_length=64, seed=0, streams=streams == "separate")
    trainer = Recording(model=tiny_model("llama", tokenizer, seed=0, num_layers=2), args=cfg, train_dataset=train,
                        data_collator=AlignCollator(tokenizer.pad_token_id), processing_class=tokenizer)
    trainer.train()
    all_tasks = {tuple(r["input_ids"]) for r in tokenize_task(tokenizer, tasks, 64)}
    all_anchors = {tuple(r["anchor_input_ids"]) for r in tokenize_pairs(tokenizer, pairs, 64)}
    assert set(seen["task"]) <= all_tasks and set(seen["alignment"]) <= all_anchors
    if streams == "separate":  # ceil(9 / 2) = 5 blocks of each kind: 10 micro-batches, 5 steps
        assert set(seen["task"]) == all_tasks and set(seen["alignment"]) == all_anchors
        assert len(seen["task"]) == len(seen["alignment"]) == 10 and trainer.state.global_step == 5
    else:  # 9 shared rows, each feeding the objective of its micro-batch: some examples unused
        assert len(seen["task"]) + len(seen["alignment"]) == 9
        assert set(seen["task"]) != all_tasks
