"""Training pieces of LSLo: temperature sampling, batches, options from YAML, one Trainer step."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from xlt.errors import ConfigError

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
    # the reference's epoch size: every direction scaled to the largest one's ratio, capped at
    # 1.5 x the data: 800 * (1 + 2 * (100/800)^0.2) = 1855.6 > 1500
    assert len(drawn) == 1500
    counts = Counter((p.src_lang, p.tgt_lang) for p in drawn)
    assert abs(counts[("qaa", "qab")] - 1500 * want) <= 1
    # upsampled directions cycle through all their examples before repeating one
    small = [p for p in drawn if (p.src_lang, p.tgt_lang) == ("qaa", "qac")]
    assert len({p.src for p in small}) == 100 and len(small) > 100
    assert sample_directions(pairs, 5.0, seed=2) == drawn
    assert sample_directions(pairs, 5.0, seed=3) != drawn
    assert len(sample_directions(pairs, 5.0, seed=2, size=300)) == 300
    # equal-sized directions: an epoch is the data itself, each example once
    even = _pairs({("qaa", "qab"): 30, ("qab", "qaa"): 30})
    assert sorted(sample_directions(even, 5.0, seed=0), key=lambda p: (p.src_lang, p.src)) == \
        sorted(even, key=lambda p: (p.src_lang, p.src))
    # batches mix directions: the first 16 rows hold more than one direction
    assert len({(p.src_lang, p.tgt_lang) for p in drawn[:16]}) > 1


def test_sampling_is_redrawn_every_epoch_with_temperature_proportions():
    from xlt.lslo.trainer import TemperatureSampler

    sizes = {("qaa", "qab"): 300, ("qab", "qac"): 120, ("qac", "qad"): 60, ("qad", "qaa"): 20}
    directions = [d for d, n in sizes.items() for _ in range(n)]
    sampler = TemperatureSampler(directions, 3.0, seed=11)
    epoch0, epoch1 = sampler.indices(0), sampler.indices(1)
    assert Counter(epoch0) != Counter(epoch1)  # other rows, not only another order
    again = TemperatureSampler(directions, 3.0, seed=11)
    again.set_epoch(1)
    assert list(again) == epoch1 and again.indices(0) == epoch0
    assert TemperatureSampler(directions, 3.0, seed=12).indices(1) != epoch1
    # proportions over 20 epochs follow p_d = n_d^(1/T) / sum_e n_e^(1/T), computed here
    weights = {d: n ** (1 / 3.0) for d, n in sizes.items()}
    expected = {d: w / sum(weights.values()) for d, w in weights.items()}
    seen = Counter(directions[i] for e in range(20) for i in sampler.indices(e))
    total = sum(seen.values())
    assert total == 20 * len(sampler)
    for d, p in expected.items():
        assert abs(seen[d] / total - p) < 0.005, (d, seen[d] / total, p)
    # far from the data's own proportions (the smallest direction is 2.2 % of the data)
    assert seen[("qad", "qaa")] / total > 0.1
    with pytest.raises(ConfigError, match="temperature"):
        TemperatureSampler(directions, 0.0, seed=0)


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
    from xlt.lslo.trainer import (LSLoTrainer, LSLoTrainingConfig, PruningCallback, TemperatureSampler,
                                  TranslationCollator, encode_pairs)
    from xlt.testing import tiny_model

    torch.set_num_threads(1)
    model = tiny_model("m2m100", tokenizer, seed=0)
    lslo = apply_lslo(model, LSLoConfig(languages=TOY_LANGS, tiers={"qac": "low"}, dim="model"))
    model.enable_input_require_grads()
    pairs = toy_pairs(2, seed=0)
    rows = encode_pairs(tokenizer, pairs, TOY_LANGS, max_source_length=32, max_target_length=32)
    args = LSLoTrainingConfig(output_dir=str(tmp_path / "run"), use_cpu=True, num_train_epochs=2,
                              per_device_train_batch_size=12, disable_tqdm=True, learning_rate=1e-2,
                              warmup_steps=0, lr_scheduler_type="constant", gradient_checkpointing=True)
    schedule = PruningSchedule(t1=1, t2=1, target=0.5, pool="language")
    collator = TranslationCollator(tokenizer.pad_token_id, tokenizer.eos_token_id)
    fed: list[int] = []
    position = {id(r): k for k, r in enumerate(rows)}

    def recording(batch_rows):
        fed.extend(position[id(r)] for r in batch_rows)
        return collator(batch_rows)

    sampler = TemperatureSampler([(p.src_lang, p.tgt_lang) for p in pairs], 5.0, seed=3, size=len(rows) // 2)
    trainer = LSLoTrainer(model=lslo, args=args, train_dataset=rows, data_collator=recording,
                          processing_class=tokenizer, callbacks=[PruningCallback(schedule)], train_sampler=sampler)
    trainer.train()
    # the Trainer fed each epoch's own draw, in the sampler's order
    half = len(rows) // 2
    assert fed[:half] == sampler.indices(0) and fed[half:] == sampler.indices(1)
    assert set(fed[:half]) != set(fed[half:])
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


def test_causal_rows_mask_the_prompt_and_collate(bpe_tokenizer):
    from xlt.translation import TranslationPrompt
    from xlt.lslo.trainer import CausalTranslationCollator, encode_causal_pairs

    tok = bpe_tokenizer
    pairs = toy_pairs(1, seed=0)[:4]
    prompt = TranslationPrompt(language_names={"qab": "Second"})
    rows = encode_causal_pairs(tok, pairs, TOY_LANGS, prompt, max_source_length=64, max_target_length=64)
    for pair, row in zip(pairs, rows):
        n_prompt = sum(1 for v in row["labels"] if v == -100)
        assert row["labels"][:n_prompt] == [-100] * n_prompt
        assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
        tgt_name = "Second" if pair.tgt_lang == "qab" else pair.tgt_lang
        src_name = "Second" if pair.src_lang == "qab" else pair.src_lang
        assert row["input_ids"][0] == tok.bos_token_id
        assert tok.decode(row["input_ids"][1:n_prompt]) == f"{src_name}: {pair.src}\n{tgt_name}:"
        assert row["input_ids"][-1] == tok.eos_token_id
        assert tok.decode(row["input_ids"][n_prompt:-1]) == " " + pair.tgt
        assert (row["src_lang_ids"], row["tgt_lang_ids"]) == (TOY_LANGS.index(pair.src_lang),
                                                              TOY_LANGS.index(pair.tgt_lang))
    batch = CausalTranslationCollator(tok.pad_token_id)(rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert bool((batch["labels"][batch["attention_mask"] == 0] == -100).all())  # padding carries no loss
    assert torch.equal(batch["attention_mask"].sum(1), torch.tensor([len(r["input_ids"]) for r in rows]))
    # an over-long source loses its end, never the template's target-language cue
    long = prompt.encode_prompts(tok, [(" ".join(["word"] * 80), "qaa", "qab")], 24)[0]
    assert len(long) <= 24 and tok.decode(long).endswith("\nSecond:")
    with pytest.raises(ConfigError, match=r"no \{src\} placeholder"):
        TranslationPrompt(template="{tgt_lang}:")
    with pytest.raises(ConfigError, match="unknown placeholder"):
        TranslationPrompt(template="{src} {lang}")


def test_causal_trainer_smooths_the_shifted_labels(bpe_tokenizer, tmp_path):
    from xlt.lslo import LSLoConfig, apply_lslo
    from xlt.lslo.model import load_lslo
    from xlt.lslo.trainer import (CausalLSLoTrainer, CausalTranslationCollator, LSLoTrainingConfig,
                                  encode_causal_pairs)
    from xlt.testing import tiny_model

    torch.set_num_threads(1)
    lslo = apply_lslo(tiny_model("llama", bpe_tokenizer, seed=0),
                      LSLoConfig(languages=TOY_LANGS, decoder_directions="src*2,tgt*2"))
    rows = encode_causal_pairs(bpe_tokenizer, toy_pairs(1, seed=0)[:6], TOY_LANGS,
                               max_source_length=64, max_target_length=64)
    batch = CausalTranslationCollator(bpe_tokenizer.pad_token_id)(rows)
    args = LSLoTrainingConfig(output_dir=str(tmp_path / "run"), use_cpu=True, disable_tqdm=True)
    trainer = CausalLSLoTrainer(model=lslo, args=args, train_dataset=rows,
                                data_collator=CausalTranslationCollator(bpe_tokenizer.pad_token_id))
    with torch.no_grad():
        loss = trainer.compute_loss(lslo, dict(batch))
        logits = lslo(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      src_lang_ids=batch["src_lang_ids"], tgt_lang_ids=batch["tgt_lang_ids"]).logits
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             batch["labels"][:, 1:].reshape(-1), ignore_index=-100,
                                             label_smoothing=0.2)
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    trainer.save_model(str(tmp_path / "saved"))
    again = load_lslo(tiny_model("llama", bpe_tokenizer, seed=0), tmp_path / "saved")
    assert again.lslo_config.decoder_directions == ["src", "src", "tgt", "tgt"]


@pytest.mark.parametrize("state_epoch,one_based", [(0.0, 1), (1.0, 2), (1.4, 2), (1.6, 2), (2.0, 3), (2.5, 3)])
def test_pruning_callback_uses_the_epoch_that_holds_a_resumed_step(state_epoch, one_based):
    # the Trainer calls on_epoch_begin with the checkpoint's fractional epoch when it resumes
    # mid-epoch: 1.6 is inside the second epoch, whose ratio is pruning_ratio(2, ...), not (3, ...)
    from transformers import TrainerState

    from xlt.lslo.trainer import PruningCallback

    seen = []

    class Recorder:
        def begin_epoch(self, model, epoch):
            seen.append(epoch)

    PruningCallback(Recorder()).on_epoch_begin(None, TrainerState(epoch=state_epoch), None, model=object())
    assert seen == [one_based]
