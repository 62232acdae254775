"""Pre-training runs: the Trainer path in-process, resume, and the real CLI (including errors)."""

from __future__ import annotations

import json

import pytest

from _versions_helpers import assert_records_versions
import torch

from _pretrain_helpers import small_tokenizer, write_corpus
from xlt.errors import ConfigError
from xlt.pretrain import reference_lr
from xlt.pretrain.train import PRESETS, PretrainConfig, build_language_map, model_config, pretrain
from xlt.pretrain.data import tokenize_corpus


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    tokenizer = small_tokenizer()
    tokenizer.save_pretrained(root / "tok")
    corpus = write_corpus(root / "corpus.txt", 600)
    empty = root / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    return {"root": root, "tokenizer": tokenizer, "corpus": corpus, "empty": empty}


def _config(world, out, **overrides):
    values = dict(corpus=[str(world["corpus"])], tokenizer=str(world["root"] / "tok"), output_dir=str(out),
                  preset="pico", max_steps=12, n_clones=1, p_clone=0.5, per_device_train_batch_size=4,
                  warmup_steps=3, logging_steps=4, save_steps=6, report_to="none", disable_tqdm=True,
                  seq_len=32)
    values.update(overrides)
    return PretrainConfig(**values)


def test_presets_follow_the_paper():
    small = model_config("small", "gpt2", 16384)
    n_params = sum(p.numel() for p in __import__("transformers").GPT2LMHeadModel(small).parameters())
    # The paper's count (110,615,040) has no position table beyond 512 rows and separate Q/K/V:
    # HF GPT-2 has the same parameters (fused c_attn), so the totals agree.
    assert n_params == 110_615_040
    assert PRESETS["small"] == dict(layers=12, d_model=768, heads=12, mlp=3072, context=512)
    assert small.tie_word_embeddings is False and small.resid_pdrop == 0.0


@pytest.mark.slow
def test_training_uses_the_reference_lr_and_language_schedule(world, tmp_path):
    config = _config(world, tmp_path / "run", language_schedule="0.5_0.1", max_steps=12)
    stores = [tokenize_corpus(config.corpus, world["tokenizer"], tmp_path / "cache")]
    language_map = build_language_map(config, world["tokenizer"])
    lrs = []

    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            lrs.append(optimizer.param_groups[0]["lr"])

    trainer, summary = pretrain(config, stores, language_map, tokenizer=world["tokenizer"],
                                callbacks=[Record()])
    expected = [reference_lr(t, max_lr=6e-4, min_lr=6e-6, warmup_steps=3, decay_steps=12) for t in range(12)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert summary["steps"] == 12
    assert trainer.model.config.vocab_size == 2 * len(world["tokenizer"])
    langs = trainer.language_assignment.languages.reshape(12, 4)
    assert sum(summary["sequences_per_language"].values()) == 48
    assert summary["sequences_per_language"]["L2"] == int(langs.sum())
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(losses)))
    p_logged = [entry["p_lang"] for entry in trainer.state.log_history if "p_lang" in entry]
    assert p_logged == [0.5, 0.1, 0.1]  # logged at steps 4, 8, 12: stage switch at step 6


def test_resume_gives_the_same_weights(world, tmp_path):
    stores = [tokenize_corpus([str(world["corpus"])], world["tokenizer"], tmp_path / "cache")]
    full_config = _config(world, tmp_path / "full", save_strategy="no")
    language_map = build_language_map(full_config, world["tokenizer"])
    full, _ = pretrain(full_config, stores, language_map, tokenizer=world["tokenizer"])
    first = _config(world, tmp_path / "half", max_steps=12)
    trainer, _ = pretrain(first, stores, language_map, tokenizer=world["tokenizer"])
    checkpoint = tmp_path / "half" / "checkpoint-6"
    assert checkpoint.is_dir()
    resumed, _ = pretrain(_config(world, tmp_path / "half"), stores, language_map,
                          tokenizer=world["tokenizer"], resume_from_checkpoint=str(checkpoint))
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize("overrides, message", [
    (dict(p_clone=1.5), "p_clone must be a probability"),
    (dict(language_schedule="0.1_x"), "does not parse"),
    (dict(language_schedule="0.1_0.9"), "starts at 0.1 but the given probability is 0.5"),
    (dict(max_steps=-1), "max_steps must be > 0"),
    (dict(preset="huge"), "unknown preset"),
])
def test_bad_options(world, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _config(world, tmp_path / "bad", **overrides)


@pytest.mark.slow
def test_cli_run_writes_a_loadable_model(world, tmp_path, xlt_cli):
    out = tmp_path / "cli-run"
    result = xlt_cli("pretrain", "--corpus", world["corpus"], "--tokenizer", world["root"] / "tok",
                     "--output_dir", out, "--preset", "pico", "--max_steps", "6", "--n_clones", "1",
                     "--p_clone", "0.1", "--seq_len", "32", "--per_device_train_batch_size", "4",
                     "--warmup_steps", "2", "--save_steps", "100", "--disable_tqdm", "true")
    assert result.returncode == 0, result.stderr
    from xlt.models import load_model, load_tokenizer

    model = load_model(out)
    languages = json.loads((out / "languages.json").read_text())
    assert languages["kind"] == "cloned" and languages["names"] == ["L1", "L2"]
    assert model.config.vocab_size == languages["model_vocab_size"] == 2 * len(load_tokenizer(out))
    assert json.loads((out / "pretrain_config.json").read_text())["method"]["p_clone"] == 0.1
    assert_records_versions(json.loads((out / "pretrain_config.json").read_text()))
    again = xlt_cli("pretrain", "--corpus", world["corpus"], "--tokenizer", world["root"] / "tok",
                    "--output_dir", out, "--max_steps", "2", "--n_clones", "1")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("extra, message", [
    (["--language_schedule", "0.2_0.8"], "starts at 0.2 but the given probability is 0.5"),
    (["--frac_clone", "0.001"], "clones no token"),
    (["--language_schedule", "half_half"], "does not parse"),
])
def test_cli_errors_are_one_line(world, tmp_path, capsys, extra, message):
    # The dispatcher in-process (the subprocess path is covered below): exit status 2, one line.
    from xlt.cli import main

    status = main(["pretrain", "--corpus", str(world["corpus"]), "--tokenizer", str(world["root"] / "tok"),
                   "--output_dir", str(tmp_path / "o"), "--max_steps", "2", "--n_clones", "1",
                   "--disable_tqdm", "true", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err[-1].startswith("xlt: error:") and message in err[-1], err
    assert not (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.slow
def test_cli_bad_probability_and_empty_corpus_in_a_subprocess(world, tmp_path, xlt_cli):
    result = xlt_cli("pretrain", "--corpus", world["corpus"], "--tokenizer", world["root"] / "tok",
                     "--output_dir", tmp_path / "o", "--max_steps", "2", "--n_clones", "1",
                     "--p_clone", "-0.2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "xlt: error: xlt pretrain: p_clone must be a probability in [0, 1], got -0.2"
    from xlt.cli import main

    assert main(["pretrain", "--corpus", str(world["empty"]), "--tokenizer", str(world["root"] / "tok"),
                 "--output_dir", str(tmp_path / "o"), "--max_steps", "2", "--n_clones", "1"]) == 2


def test_yaml_config_with_command_line_overrides(world, tmp_path):
    from xlt.config import parse_dataclasses

    yaml_file = tmp_path / "pretrain.yaml"
    yaml_file.write_text(f"corpus: [{world['corpus']}]\ntokenizer: {world['root'] / 'tok'}\n"
                         f"output_dir: {tmp_path / 'o'}\nmax_steps: 100\nn_clones: 1\np_clone: 0.1\n"
                         "language_schedule: 0.1_0.9\n", encoding="utf-8")
    (config,) = parse_dataclasses([PretrainConfig], ["--config", str(yaml_file), "--max_steps", "40"],
                                  prog="xlt pretrain")
    assert config.max_steps == 40 and config.p_clone == 0.1 and config.mode == "cloned"
    assert config.schedule().p_at(19) == 0.1 and config.schedule().p_at(20) == 0.9
    assert config.learning_rate == 6e-4 and config.adam_beta2 == 0.95 and config.max_grad_norm == 0.0
    with pytest.raises(ConfigError, match="starts at 0.1 but the given probability is 0.3"):
        parse_dataclasses([PretrainConfig], ["--config", str(yaml_file), "--p_clone", "0.3"], prog="xlt pretrain")


def _gpt2_style_tokenizer():
    """A word-level tokenizer whose id 0 is a real token ("!"), specials at the end, as in GPT-2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["!", "a", "b", "c", "d", "<unk>", "<|endoftext|>", "<pad>"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<pad>")


@pytest.mark.parametrize("make_tokenizer", [small_tokenizer, _gpt2_style_tokenizer])
def test_cloned_and_bilingual_maps_keep_exactly_the_tokenizer_special_ids(tmp_path, make_tokenizer):
    tokenizer = make_tokenizer()
    vocab = tokenizer.get_vocab()
    specials = {vocab[t] for t in (tokenizer.unk_token, tokenizer.eos_token, tokenizer.bos_token,
                                   tokenizer.pad_token) if t is not None}
    ids = torch.arange(len(tokenizer))
    world = {"corpus": tmp_path / "c.txt", "root": tmp_path}
    cloned = build_language_map(_config(world, tmp_path / "run"), tokenizer)
    unchanged = set(ids[cloned.map_ids(ids, "L2") == ids].tolist())
    assert unchanged == specials
    again = cloned.from_dict(json.loads(json.dumps(cloned.to_dict())))  # as saved in languages.json
    assert torch.equal(again.map_ids(ids, "L2"), cloned.map_ids(ids, "L2"))
    # a real second language written with the same tokenizer: the same ids are shared
    bilingual = build_language_map(_config(world, tmp_path / "run", n_clones=0, corpus_l2=[str(world["corpus"])]),
                                   tokenizer, tokenizer)
    assert set(ids[bilingual.map_ids(ids, "L2") == ids].tolist()) == specials
