"""Training pieces of LSLo: temperature sampling, batches, options from YAML, one Trainer step."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from _lslo_helpers import TOY_LANGS, toy_corpus, toy_pairs


def _pairs(sizes: dict[tuple[str, str], int]):
    from xlt.formats import ParallelPair

    return [ParallelPair(s, t, f"{s}{k}", f"{t}{k}") for (s, t), n in sizes.items() for k in range(n)]


def test_temperature_probabilities_and_sampling():
    from xlt.lslo.trainer import sample_directions, temperature_probabilities

    sizes = {("qaa", "qab"): 800, ("qaa", "qac"): 100, ("qab", "qac"): 100}
    p1 = temperature_probabilities(sizes, 1.0)
    assert p1[("qaa", "qab")] == pytest.approx(0.8)
    p5 = temperature_probabilities(sizes, 5.0)
    want = 800 ** 0.2 / (800 ** 0.2 + 2 * 100 ** 0.2)
    assert p5[("qaa", "qab")] == pytest.approx(want)
    pairs = _pairs(sizes)
    drawn = sample_directions(pairs, 5.0, seed=2)
    assert len(drawn) == 1000
    counts = Counter((p.src_lang, p.tgt_lang) for p in drawn)
    assert abs(counts[("qaa", "qab")] - 1000 * want) <= 1
    # upsampled directions cycle through all their examples before repeating one
    small = [p for p in drawn if (p.src_lang, p.tgt_lang) == ("qaa", "qac")]
    assert len({p.src for p in small}) == 100 and len(small) > 100
    assert sample_directions(pairs, 5.0, seed=2) == drawn
    assert sample_directions(pairs, 5.0, seed=3) != drawn
    # batches mix directions: the first 16 rows hold more than one direction
    assert len({(p.src_lang, p.tgt_lang) for p in drawn[:16]}) > 1


@pytest.fixture(scope="module")
def tokenizer():
    from xlt.testing import train_nllb_tokenizer

    return train_nllb_tokenizer(TOY_LANGS, toy_corpus(), vocab_size=300)


def test_encode_pairs_and_collator(tokenizer):
    from transformers.models.m2m_100.modeling_m2m_100 import shift_tokens_right

    from xlt.lslo.trainer import TranslationCollator, encode_pairs

    pairs = toy_pairs(2, seed=0)[:5]
    rows = encode_pairs(tokenizer, pairs, TOY_LANGS, max_source_length=32, max_target_length=32)
    for pair, row in zip(pairs, rows):
        tokenizer.src_lang, tokenizer.tgt_lang = pair.src_lang, pair.tgt_lang
        ref = tokenizer(pair.src, text_target=pair.tgt)
        assert row["input_ids"] == ref["input_ids"] and row["labels"] == ref["labels"]
        assert (row["src_lang_ids"], row["tgt_lang_ids"]) == (TOY_LANGS.index(pair.src_lang),
                                                              TOY_LANGS.index(pair.tgt_lang))
    batch = TranslationCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)(rows)
    assert torch.equal(batch["decoder_input_ids"],
                       shift_tokens_right(batch["labels"], tokenizer.pad_token_id, tokenizer.eos_token_id))
    assert batch["src_lang_ids"].tolist() == [r["src_lang_ids"] for r in rows]
    assert (batch["labels"] == -100).sum() == (batch["decoder_input_ids"] == tokenizer.pad_token_id).sum()


def test_options_from_yaml_and_command_line(tmp_path):
    from xlt.config import parse_dataclasses
    from xlt.lslo.cli import LSLoDataArguments
    from xlt.lslo.trainer import LSLoTrainingConfig

    yaml = tmp_path / "lslo.yaml"
    yaml.write_text("model: m\ntrain_file: t.jsonl\noutput_dir: out\ntiers: {qac: low, qad: low}\n"
                    "encoder_directions: src*1,tgt\npruning: layer\nuse_cpu: true\n", encoding="utf-8")
    data, cfg = parse_dataclasses([LSLoDataArguments, LSLoTrainingConfig],
                                  ["--config", str(yaml), "--tier_ranks", "high=4", "low=16"], prog="xlt train lslo")
    assert (data.model, cfg.pruning, cfg.learning_rate, cfg.label_smoothing_factor) == ("m", "layer", 3e-3, 0.2)
    config = cfg.lslo_config(TOY_LANGS)
    assert config.rank_table() == {"qaa": 4, "qab": 4, "qac": 16, "qad": 16}
    assert config.encoder_directions == ["src", "tgt"] and config.dim == "model"
    shared = LSLoTrainingConfig(output_dir="o", shared=True, use_cpu=True).lslo_config(TOY_LANGS)
    assert shared.subspaces() == [("shared", 2 * 4)]


def test_trainer_run_with_pruning_callback_checkpointing_and_eval_loss(tokenizer, tmp_path):
    from xlt.lslo import LSLoConfig, PruningSchedule, apply_lslo
    from xlt.lslo.trainer import (LSLoTrainer, LSLoTrainingConfig, PruningCallback, TranslationCollator,
                                  encode_pairs)
    from xlt.testing import tiny_model

    torch.set_num_threads(1)
    model = tiny_model("m2m100", tokenizer, seed=0)
    lslo = apply_lslo(model, LSLoConfig(languages=TOY_LANGS, tiers={"qac": "low"}, dim="model"))
    model.enable_input_require_grads()
    rows = encode_pairs(tokenizer, toy_pairs(2, seed=0), TOY_LANGS, max_source_length=32, max_target_length=32)
    args = LSLoTrainingConfig(output_dir=str(tmp_path / "run"), use_cpu=True, num_train_epochs=2,
                              per_device_train_batch_size=12, disable_tqdm=True, learning_rate=1e-2,
                              warmup_steps=0, lr_scheduler_type="constant", gradient_checkpointing=True)
    schedule = PruningSchedule(t1=1, t2=1, target=0.5, pool="language")
    trainer = LSLoTrainer(model=lslo, args=args, train_dataset=rows,
                          data_collator=TranslationCollator(tokenizer.pad_token_id, tokenizer.eos_token_id),
                          processing_class=tokenizer, callbacks=[PruningCallback(schedule)])
    trainer.train()
    assert [h["epoch"] for h in schedule.history] == [1, 2]
    assert [h["ratio"] for h in schedule.history] == [0.0, 0.5]
    for layer in lslo.lslo_layers.values():
        assert layer.lora_b_mask is None  # baked at the end of the epoch
    b = torch.cat([layer.pair(0)[1].detach().reshape(-1) for layer in lslo.lslo_layers.values()])
    assert int((b == 0).sum()) == round(0.5 * b.numel())
    assert float(b.abs().sum()) > 0
    assert "eval_loss" in trainer.evaluate(rows[:8])
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "lslo_model.safetensors").is_file()
