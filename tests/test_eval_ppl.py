"""Sliding-window perplexity: window geometry, metrics, an independent computation, the CLI."""

from __future__ import annotations

import json
import math

import pytest

from _versions_helpers import assert_records_versions
import torch

from _pretrain_helpers import small_tokenizer, write_corpus
from xlt.errors import ConfigError, DataError
from xlt.eval.ppl import perplexity_from_nll, scored_targets, sliding_window_perplexity, window_starts


def test_scored_positions_of_the_paper_geometry():
    windows = scored_targets(2000, 512, 128)
    assert [(w.start, w.stop - 1) for w in windows[:3]] == [(385, 512), (513, 640), (641, 768)]
    # consecutive windows tile the stream: every target after 384 scored exactly once
    scored = [t for w in windows for t in w]
    assert scored == list(range(385, 2000))  # up to the last token: the final partial window too
    assert window_starts(513, 512, 128) == [0] and window_starts(512, 512, 128) == []
    # 1,000 tokens: full windows 0..3 (starts 0..384) score 385..896; window 4 (start 512) ends at
    # token 999, inside its scored slots 897..1024, so it scores 897..999
    assert [(w.start, w.stop - 1) for w in scored_targets(1000, 512, 128)][-2:] == [(769, 896), (897, 999)]
    assert len(scored_targets(897, 512, 128)) == 4  # the stream ends before window 4 scores anything


def test_metric_formulas():
    out = perplexity_from_nll(1000.0, 300, 1200)
    assert out["ppl"] == pytest.approx(28.0316, abs=1e-4)
    assert out["normalised_ppl"] == pytest.approx(2.30098, abs=1e-5)
    assert out["bits_per_char"] == pytest.approx(1.20225, abs=1e-5)


@pytest.fixture(scope="module")
def tiny_gpt2():
    import transformers as tf

    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    return tf.GPT2LMHeadModel(config).eval()


def test_sliding_window_matches_a_direct_computation(tiny_gpt2):
    ids = torch.randint(0, 40, (100,), generator=torch.Generator().manual_seed(1))
    context, last_n = 16, 4
    got = sliding_window_perplexity(tiny_gpt2, ids, context=context, last_n=last_n, batch_size=3)
    total, count = 0.0, 0
    # 21 full windows (starts 0..80) score targets 13..96; the stream ends inside window 21
    # (start 84, scored slots 97..100), whose real targets 97, 98, 99 are scored as well
    for start in range(0, 88, last_n):
        x = ids[start:min(start + context, 99)].unsqueeze(0)
        with torch.no_grad():
            logp = torch.log_softmax(tiny_gpt2(x).logits[0], -1)
        for pos in range(context - last_n, context):
            if start + pos + 1 < 100:
                total -= float(logp[pos, ids[start + pos + 1]])
                count += 1
    assert got["n_tokens"] == count == 21 * 4 + 3 and got["n_windows"] == 22
    assert got["ppl"] == pytest.approx(math.exp(total / count), rel=1e-5)
    ignored = sliding_window_perplexity(tiny_gpt2, ids, context=context, last_n=last_n, ignore_ids=[int(ids[16])])
    assert ignored["n_tokens"] < got["n_tokens"]


def test_bad_geometry_and_short_streams(tiny_gpt2):
    with pytest.raises(ConfigError, match="last_n"):
        sliding_window_perplexity(tiny_gpt2, torch.arange(40) % 40, context=8, last_n=9)
    with pytest.raises(DataError, match="fewer than one window"):
        sliding_window_perplexity(tiny_gpt2, torch.arange(8), context=8, last_n=4)
    with pytest.raises(ConfigError, match="exceeds the model's 32 positions"):
        sliding_window_perplexity(tiny_gpt2, torch.arange(100) % 40, context=64, last_n=4)


@pytest.mark.slow
def test_cli_scores_every_language_of_a_cloned_model(tmp_path, xlt_cli, capsys):
    import transformers as tf

    from xlt.pretrain import LanguageMap
    from xlt.io import write_json

    tokenizer = small_tokenizer()
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=2 * len(tokenizer), n_positions=64, n_embd=16,
                                             n_layer=2, n_head=2))
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_json(model_dir / "languages.json", LanguageMap.cloned(len(tokenizer), 1).to_dict())
    corpus = write_corpus(tmp_path / "test.txt", 60, seed=5)
    out = tmp_path / "ppl.json"
    result = xlt_cli("eval", "ppl", "--model", model_dir, "--corpus", corpus, "--context", "32",
                     "--last_n", "8", "--output", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert_records_versions(report)
    assert set(report["languages"]) == {"L1", "L2"}
    l1, l2 = report["languages"]["L1"], report["languages"]["L2"]
    assert l1["n_tokens"] == l2["n_tokens"] > 0 and l1["n_chars"] == l2["n_chars"] > 0
    assert l1["ppl"] != l2["ppl"]  # a random model: different embedding rows per language
    from xlt.cli import main

    assert main(["eval", "ppl", "--model", str(model_dir), "--corpus", f"L3={corpus}", "--context", "32"]) == 2
    assert "unknown language 'L3'" in capsys.readouterr().err


def test_bilingual_model_sharing_one_tokenizer(tmp_path, capsys):
    """A real second language written with the first tokenizer (no tokenizer_l2/ saved)."""
    import transformers as tf

    from xlt.cli import main
    from xlt.io import write_json
    from xlt.pretrain import LanguageMap

    tokenizer = small_tokenizer()
    vocab = tokenizer.get_vocab()
    language_map = LanguageMap.bilingual(vocab, vocab, "disjoint", shared_ids=[tokenizer.pad_token_id])
    model_dir = tmp_path / "bi"
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=language_map.model_vocab_size, n_positions=64, n_embd=16,
                                     n_layer=1, n_head=2)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_json(model_dir / "languages.json", language_map.to_dict())
    l1 = write_corpus(tmp_path / "l1.txt", 30, seed=1)
    l2 = write_corpus(tmp_path / "l2.txt", 30, seed=2)
    out = tmp_path / "ppl.json"
    assert main(["eval", "ppl", "--model", str(model_dir), "--corpus", f"L1={l1}", f"L2={l2}",
                 "--context", "32", "--last_n", "8", "--output", str(out), "--device", "cpu"]) == 0, \
        capsys.readouterr().err
    report = json.loads(out.read_text())["languages"]
    assert report["L1"]["n_tokens"] > 0 and report["L2"]["n_tokens"] > 0
