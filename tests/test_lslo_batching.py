"""What the paper's LSLo run needs: token batches (fairseq --max-tokens) with update frequency,
LSLo on a subset of layers, and a warning when pruning cannot reach its target in the run."""

from __future__ import annotations

import json
import random

import pytest
import torch

from xlt.errors import ConfigError

from _lslo_helpers import TOY_LANGS, paper_config, tiny_m2m100, toy_corpus, toy_pairs


def _greedy_by_hand(sizes: list[int], max_tokens: int) -> list[tuple[int, ...]]:
    """fairseq's rule, written out: sizes ascending; a batch closes when one more row would make
    rows x longest exceed max_tokens."""
    out, batch = [], []
    for s in sorted(sizes):
        if batch and max(batch + [s]) * (len(batch) + 1) > max_tokens:
            out.append(tuple(batch))
            batch = []
        batch.append(s)
    return out + [tuple(batch)] if batch else out


def test_token_batches_match_fairseq_rule_and_reshuffle_per_epoch():
    from xlt.lslo.batching import TokenBatchSampler
    from xlt.lslo.trainer import TemperatureSampler

    rng = random.Random(0)
    sizes = [rng.randint(3, 40) for _ in range(300)]
    directions = [("qaa", "qab") if i % 3 else ("qab", "qaa") for i in range(300)]
    rows = TemperatureSampler(directions, 5.0, seed=4)
    sampler = TokenBatchSampler(sizes, 100, seed=4, row_sampler=rows)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        drawn = rows.indices(epoch)
        assert sorted(i for b in batches for i in b) == sorted(drawn)  # each drawn row once
        assert all(len(b) * max(sizes[i] for i in b) <= 100 for b in batches)
        got = sorted(tuple(sorted(sizes[i] for i in b)) for b in batches)
        assert got == sorted(_greedy_by_hand([sizes[i] for i in drawn], 100))
        assert len(sampler) == len(batches)
    first = TokenBatchSampler(sizes, 100, seed=4, row_sampler=TemperatureSampler(directions, 5.0, seed=4))
    assert first.batches(0) == sampler.batches(0)  # same seed, same batches in the same order
    assert first.batches(0) != first.batches(1)  # reshuffled every epoch
    assert TokenBatchSampler(sizes, 100, seed=5).batches(0) != TokenBatchSampler(sizes, 100, seed=4).batches(0)
    with pytest.raises(ConfigError, match="max_tokens 30 is smaller than an example of"):
        TokenBatchSampler(sizes, 30, seed=0).batches(0)


def test_lslo_on_a_subset_of_layers_leaves_the_others_plain():
    from xlt.lslo import apply_lslo
    from xlt.lslo.layer import LSLoLinear

    lslo = apply_lslo(tiny_m2m100(), paper_config(encoder_layers=[1], decoder_layers=[0]))
    base = lslo.base_model.model
    for side, keep in (("encoder", 1), ("decoder", 0)):
        for index, layer in enumerate(getattr(base, side).layers):
            kinds = {type(m) for n, m in layer.named_modules() if n.endswith(("q_proj", "fc1", "fc2"))}
            assert kinds == ({LSLoLinear} if index == keep else {torch.nn.Linear}), (side, index)
    assert {v for v in lslo.layer_of.values()} == {("encoder", 1), ("decoder", 0)}
    assert len(lslo.lslo_layers) == 5 + 8
    with pytest.raises(ConfigError, match="encoder_layers names layer 2 but the model has 2 encoder layers"):
        apply_lslo(tiny_m2m100(), paper_config(encoder_layers=[2]))


def test_pruning_shortfall_names_the_final_sparsity():
    from xlt.lslo.pruning import PruningSchedule

    schedule = PruningSchedule(2, 10, 0.9)
    message = schedule.shortfall(3)
    assert f"{0.9 * (1 - (1 - 1 / 10) ** 3):.3f}" == "0.244" and "final sparsity of B is 0.244" in message
    assert "t1 + t2 = 12" in message and "3 epoch(s)" in message
    assert schedule.shortfall(12) is None and schedule.shortfall(15) is None
    assert "never starts" in schedule.shortfall(1)


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    from xlt.formats import write_jsonl
    from xlt.testing import save_tiny_model, train_nllb_tokenizer

    root = tmp_path_factory.mktemp("lslo-batching")
    write_jsonl(root / "train.jsonl", toy_pairs(3, seed=0))
    tokenizer = train_nllb_tokenizer(TOY_LANGS, toy_corpus(), vocab_size=300)
    save_tiny_model("m2m100", root / "model", tokenizer=tokenizer, hidden_size=32, num_layers=4)
    return root


@pytest.mark.slow
def test_cli_token_batches_layers_and_pruning_warning(toy_world, xlt_cli):
    from safetensors.torch import load_file

    from xlt.formats import read_records
    from xlt.lslo.batching import row_size
    from xlt.lslo.trainer import encode_pairs
    from xlt.models import load_tokenizer

    out = toy_world / "run"
    result = xlt_cli("train", "lslo", "--model", toy_world / "model", "--train_file", toy_world / "train.jsonl",
                     "--output_dir", out, "--num_train_epochs", "3", "--max_tokens", "128",
                     "--gradient_accumulation_steps", "2", "--encoder_lora_layers", "1",
                     "--decoder_lora_layers", "0", "--pruning", "language", "--pruning_t1", "2",
                     "--pruning_t2", "10", "--use_cpu", "--disable_tqdm", "true", "--logging_steps", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("xlt: warning:")]
    assert len(warnings) == 1 and "final sparsity of B is 0.244" in warnings[0], result.stderr[-2000:]
    # optimizer steps: ceil(batches / update frequency) per epoch, batches by fairseq's rule
    pairs = read_records(toy_world / "train.jsonl", "parallel")
    rows = encode_pairs(load_tokenizer(toy_world / "model"), pairs, sorted(TOY_LANGS),
                        max_source_length=128, max_target_length=128)
    n_batches = len(_greedy_by_hand([row_size(r) for r in rows], 128))
    state = json.loads((out / "log_history.json").read_text())
    assert max(e.get("step", 0) for e in state) == 3 * -(-n_batches // 2)
    config = json.loads((out / "train_config.json").read_text())
    assert config["max_tokens"] == 128 and config["encoder_lora_layers"] == [1]
    weights = load_file(str(out / "lslo_model.safetensors"))
    import re

    assert {re.match(r"model\.(encoder|decoder)\.layers\.(\d+)\.", k).groups() for k in weights} == \
        {("encoder", "1"), ("decoder", "0")}
