"""Data: reference-format rows, tokenisation and label masking, zipping of tasks and pairs."""

from __future__ import annotations

import pytest

from xlt.align.data import (AlignCollator, PairText, TaskText, build_dataset, detect_format, reference_row,
                            tokenize_pairs, tokenize_task)
from xlt.errors import DataError


def test_detect_and_read_reference_rows():
    mid = {"text_parallel_0": "Bore da", "text_parallel_1": "Good morning", "prefix": "P: ", "text": "x<|eot_id|>"}
    afp = {"sent0": "Hello", "sent1": "Hallo", "clm_text": "Say hi. Answer in German: Hallo", "clm_prompt_len": 26}
    assert detect_format(mid) == "mid-align" and detect_format(afp) == "afp"
    assert detect_format({"lang": "en", "prompt": "a", "completion": "b"}) == "xlt"
    task, pair = reference_row(mid, "mid-align")
    assert pair == PairText("Bore da", "Good morning") and task == TaskText("P: ", "x<|eot_id|>", append_eos=False)
    task, pair = reference_row(afp, "afp")
    assert task.prompt == "Say hi. Answer in German: " and task.completion == "Hallo" and pair.anchor == "Hello"
    assert reference_row({"text_parallel_0": "a", "text_parallel_1": "b"}, "mid-align")[0] is None


@pytest.mark.parametrize("row,fmt,field", [
    ({"text_parallel_0": "a", "text_parallel_1": "", "prefix": "p", "text": "t"}, "mid-align", "text_parallel_1"),
    ({"text_parallel_0": "a", "text_parallel_1": "b", "prefix": "p"}, "mid-align", "text"),
    ({"text_parallel_0": "a", "text_parallel_1": "b", "prefix": "p", "text": " "}, "mid-align", "text"),
    ({"sent0": " ", "sent1": "b", "clm_text": "abc", "clm_prompt_len": 1}, "afp", "sent0"),
    ({"sent0": "a", "sent1": "b", "clm_text": "abc", "clm_prompt_len": 4}, "afp", "clm_prompt_len"),
    ({"sent0": "a", "sent1": "b", "clm_text": "abc", "clm_prompt_len": -1}, "afp", "clm_prompt_len"),
])
def test_bad_reference_rows_name_the_field(row, fmt, field):
    with pytest.raises(DataError, match=f"f.json:7: field '{field}'"):
        reference_row(row, fmt, path="f.json", line=7)


def test_afp_rows_with_an_empty_response_train_on_their_special_tokens_only(bpe_tokenizer):
    # both reference generators write clm_prompt_len == len(clm_text) when an output is empty;
    # the reference packs such a document with labels on its BOS / EOS tokens only
    text = "Say hi. Answer in German: "
    task, _ = reference_row({"sent0": "Hello", "sent1": "Hallo", "clm_text": text, "clm_prompt_len": len(text)},
                            "afp", path="f.json", line=3)
    assert task == TaskText(text, "", append_eos=False)
    other = TaskText("Q: one", " two")
    rows = build_dataset(bpe_tokenizer, [other, task], [], max_length=64)
    collator = AlignCollator(bpe_tokenizer.pad_token_id, packing=True, block_size=512,
                             bos_token_id=bpe_tokenizer.bos_token_id, eos_token_id=bpe_tokenizer.eos_token_id)
    batch = collator([rows[0], rows[1]])
    doc = bpe_tokenizer(text)["input_ids"]
    first = bpe_tokenizer(other.prompt + other.completion)["input_ids"] + [bpe_tokenizer.eos_token_id]
    assert batch["input_ids"][0].tolist() == first + doc
    specials = {bpe_tokenizer.bos_token_id, bpe_tokenizer.eos_token_id}
    assert batch["labels"][0, len(first):].tolist() == [t if t in specials else -100 for t in doc]
    assert batch["labels"][0, len(first)] == bpe_tokenizer.bos_token_id
    assert set(rows[1]["labels"]) == {-100}  # padded instead of packed: no label at all


def test_task_tokens_mask_the_prompt_and_end_with_eos(bpe_tokenizer):
    (row,) = tokenize_task(bpe_tokenizer, [TaskText("Question: what is two plus three? Answer:", " five")], 64)
    prompt_ids = bpe_tokenizer("Question: what is two plus three? Answer:")["input_ids"]
    assert row["input_ids"][0] == bpe_tokenizer.bos_token_id and row["input_ids"][-1] == bpe_tokenizer.eos_token_id
    assert row["input_ids"][:len(prompt_ids)] == prompt_ids
    assert row["labels"][:len(prompt_ids)] == [-100] * len(prompt_ids)
    assert row["labels"][len(prompt_ids):] == row["input_ids"][len(prompt_ids):]
    assert bpe_tokenizer.decode(row["input_ids"][len(prompt_ids):-1]) == " five"
    (raw,) = tokenize_task(bpe_tokenizer, [TaskText("Q:", " a</s>", append_eos=False)], 64)
    assert raw["input_ids"][-1] == bpe_tokenizer.eos_token_id and raw["input_ids"].count(bpe_tokenizer.eos_token_id) == 1


def test_pairs_are_raw_sentences_with_default_special_tokens(bpe_tokenizer):
    (row,) = tokenize_pairs(bpe_tokenizer, [PairText("The cat sat.", "Le chat dort.")], 64)
    assert row["anchor_input_ids"] == bpe_tokenizer("The cat sat.")["input_ids"]
    assert row["anchor_input_ids"][0] == bpe_tokenizer.bos_token_id
    assert bpe_tokenizer.eos_token_id not in row["candidate_input_ids"]


def test_training_rows_cycle_the_shorter_list_and_evaluation_rows_do_not(bpe_tokenizer):
    tasks = [TaskText(f"Q{i}:", f" {i}") for i in range(5)]
    pairs = [PairText(f"s{i}", f"t{i}") for i in range(2)]
    train = build_dataset(bpe_tokenizer, tasks, pairs, max_length=32, seed=3)
    assert len(train) == 5
    seen = [tuple(train[i]["anchor_input_ids"]) for i in range(5)]
    assert len(set(seen)) == 2 and all("input_ids" in train[i] for i in range(5))
    assert seen == [tuple(build_dataset(bpe_tokenizer, tasks, pairs, max_length=32, seed=3)[i]["anchor_input_ids"])
                    for i in range(5)]
    evalset = build_dataset(bpe_tokenizer, tasks, pairs, max_length=32, cycle=False)
    kinds = [("input_ids" in evalset[i], "anchor_input_ids" in evalset[i]) for i in range(5)]
    assert kinds == [(True, True), (True, True), (True, False), (True, False), (True, False)]
    batch = AlignCollator(bpe_tokenizer.pad_token_id)([evalset[i] for i in range(5)])
    assert batch["input_ids"].shape[0] == 5 and batch["anchor_input_ids"].shape[0] == 2


def test_completion_only_loss_false_puts_the_loss_on_every_token(bpe_tokenizer):
    """AdaMergeX's reference adapters: the loss of a 511-word prompt + 1-word completion covers
    every token; compared with a cross-entropy computed by hand over the whole sequence."""
    import torch

    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, seed=3)
    examples = [TaskText("the cat sat on the mat and the dog", " ran"),
                TaskText("one two three", " four five")]
    collate = AlignCollator(bpe_tokenizer.pad_token_id, pad_to_multiple_of=None)

    def batch_loss(completion_only):
        rows = build_dataset(bpe_tokenizer, examples, [], max_length=64, completion_only_loss=completion_only)
        batch = collate([rows[i] for i in range(len(rows))])
        with torch.no_grad():
            return float(model(**batch).loss)

    # independent: tokenise prompt + completion (+ EOS), score every next token, mean over tokens
    total, count = 0.0, 0
    for ex in examples:
        ids = bpe_tokenizer(ex.prompt + ex.completion)["input_ids"] + [bpe_tokenizer.eos_token_id]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits[:-1], dim=-1)
        total += float(-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
        count += len(ids) - 1
    full = batch_loss(False)
    assert full == pytest.approx(total / count, rel=1e-5)
    assert abs(batch_loss(True) - full) > 1e-3
    (row,) = tokenize_task(bpe_tokenizer, examples[:1], 64, completion_only_loss=False)
    assert row["labels"] == row["input_ids"] and row["prompt_length"] == 0


def test_separate_streams_use_every_example_and_pair_each_epoch_in_alternating_blocks():
    from torch.utils.data import BatchSampler

    from xlt.align.data import AlternatingStreamsSampler

    n_tasks, n_pairs, batch, world = 7, 3, 2, 2
    sampler = AlternatingStreamsSampler(n_tasks, n_pairs, block=batch * world, seed=5)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == 2 * 2 * batch * world  # ceil(7 / 4) = 2 blocks per stream
        tasks = [i for i in order if i < n_tasks]
        pairs = [i - n_tasks for i in order if i >= n_tasks]
        assert set(tasks) == set(range(n_tasks)) and set(pairs) == set(range(n_pairs))
        assert len(tasks) == len(pairs) == 8
    assert sampler.indices(0) != sampler.indices(1) and sampler.indices(1) == list(sampler)
    # the batches accelerate deals to each process: micro-batch k holds one kind on every process
    from accelerate.data_loader import BatchSamplerShard

    sampler.set_epoch(0)
    per_process = [list(BatchSamplerShard(BatchSampler(sampler, batch, drop_last=False), world, rank))
                   for rank in range(world)]
    for k in range(len(per_process[0])):
        for p in per_process:  # each batch is all tasks or all pairs ...
            assert all(i < n_tasks for i in p[k]) or not any(i < n_tasks for i in p[k])
        assert {p[k][0] < n_tasks for p in per_process} == {k % 2 == 0}  # ... and the same kind everywhere
