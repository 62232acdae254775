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


# --------------------------------------------------------------------------------------------
# Bits per byte


def _word_level_tokenizer(vocab: list[str], pre_tokenizer):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({piece: i for i, piece in enumerate(["<unk>", "</s>"] + vocab)},
                                     unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>")


DOCS = ["héllo wörld", "中文 ok"]  # 2-byte and 3-byte characters: bytes are not characters


def char_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    chars = sorted(set("".join(DOCS)))
    return _word_level_tokenizer(chars, pre_tokenizers.Split(Regex("."), behavior="isolated"))


def word_tokenizer():
    from tokenizers import pre_tokenizers

    words = sorted({w for doc in DOCS for w in doc.split()})
    return _word_level_tokenizer(words, pre_tokenizers.WhitespaceSplit())


class BigramModel(torch.nn.Module):
    """p(next | previous token) from a fixed table: the window's context cannot change a score."""

    def __init__(self, vocab_size: int, seed: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab_size, vocab_size,
                                                    generator=torch.Generator().manual_seed(seed)))

    def forward(self, input_ids):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])


def _plain_bits(table: torch.Tensor, ids: list[int], positions) -> float:
    """-log2 p of the targets at ``positions``, one softmax at a time in plain Python floats."""
    rows = table.tolist()
    bits = 0.0
    for t in positions:
        row = rows[ids[t - 1]]
        log_norm = math.log(sum(math.exp(v) for v in row))
        bits -= (row[ids[t]] - log_norm) / math.log(2)
    return bits


@pytest.mark.parametrize("granularity", ["char", "word"])
def test_bits_per_byte_against_a_plain_loop(granularity):
    from xlt.eval.ppl import token_stream

    tokenizer = char_tokenizer() if granularity == "char" else word_tokenizer()
    vocab = tokenizer.get_vocab()
    eos = vocab["</s>"]
    if granularity == "char":
        # stream: h é l l o ␠ w ö r l d </s> 中 文 ␠ o k </s>  (18 tokens, one per character)
        expected_ids = [vocab[c] for c in "héllo wörld"] + [eos] + [vocab[c] for c in "中文 ok"] + [eos]
        # context 4, last_n 2: targets 3..17 are scored; "hél" (4 bytes) is context only
        context, last_n, scored_text = 4, 2, "lo wörld\n中文 ok\n"
    else:
        # stream: héllo wörld </s> 中文 ok </s>; a dropped space goes to the word after it
        expected_ids = [vocab["héllo"], vocab["wörld"], eos, vocab["中文"], vocab["ok"], eos]
        # context 1: every target but the first token is scored
        context, last_n, scored_text = 1, 1, " wörld\n中文 ok\n"
    ids, token_bytes = token_stream(DOCS, tokenizer, with_bytes=True)
    assert ids.tolist() == expected_ids
    assert int(token_bytes.sum()) == len("\n".join(DOCS).encode()) + 1  # the whole text file
    model = BigramModel(len(vocab), seed=3)
    got = sliding_window_perplexity(model, ids, context=context, last_n=last_n, token_bytes=token_bytes)
    positions = range(len(expected_ids) - got["n_tokens"], len(expected_ids))
    bits = _plain_bits(model.table.detach(), expected_ids, positions)
    assert got["n_bytes"] == len(scored_text.encode("utf-8"))
    assert got["bits_per_byte"] == pytest.approx(bits / len(scored_text.encode("utf-8")), rel=1e-6)
    assert got["ppl"] == pytest.approx(2 ** (bits / got["n_tokens"]), rel=1e-6)


def test_bits_per_byte_of_a_uniform_model_at_two_granularities():
    """A model that spreads its mass uniformly over a V-token vocabulary spends log2 V bits per
    token (token perplexity V whatever the text): bits per byte charges each tokenizer for the
    number of tokens it spends on the same bytes."""
    from xlt.eval.ppl import token_stream

    out = {}
    for name, tokenizer in (("char", char_tokenizer()), ("word", word_tokenizer())):
        ids, token_bytes = token_stream(DOCS * 3, tokenizer, with_bytes=True)
        model = BigramModel(len(tokenizer.get_vocab()), seed=0)
        with torch.no_grad():
            model.table.zero_()
        out[name] = sliding_window_perplexity(model, ids, context=1, last_n=1, token_bytes=token_bytes)
        # everything but the first token is scored: the first word or character's bytes are not
        first = DOCS[0][0] if name == "char" else DOCS[0].split()[0]
        assert out[name]["n_bytes"] == 3 * len("\n".join(DOCS).encode() + b"\n") - len(first.encode())
        v = len(tokenizer.get_vocab())
        assert out[name]["bits_per_byte"] == pytest.approx(
            (len(ids) - 1) * math.log2(v) / out[name]["n_bytes"], rel=1e-6)  # float32 logits
        assert out[name]["ppl"] == pytest.approx(v, rel=1e-6)
    assert out["char"]["n_tokens"] > 2 * out["word"]["n_tokens"]


def test_byte_counts_of_a_byte_level_tokenizer(bpe_tokenizer):
    """Byte-level BPE splits a CJK character or an emoji into pieces that share its span: the
    character counts once, and every line's bytes (plus its newline) are accounted for."""
    from xlt.eval.ppl import token_byte_counts, token_stream
    from xlt.testing import DEFAULT_CORPUS

    lines = DEFAULT_CORPUS + ["猫 😀 ok  two  spaces "]
    ids, token_bytes = token_stream(lines, bpe_tokenizer, with_bytes=True)
    assert len(ids) == len(token_bytes)
    assert int(token_bytes.sum()) == sum(len(line.encode()) + 1 for line in lines)
    # per document, by prefix decoding (an independent route where no character is split)
    for line in ("The cat sat on the mat.", "  two  spaces "):
        enc = bpe_tokenizer(line, add_special_tokens=False, return_offsets_mapping=True)
        counts = token_byte_counts(line, enc["offset_mapping"])
        by_prefix = [len(bpe_tokenizer.decode(enc["input_ids"][:i + 1]).encode())
                     - len(bpe_tokenizer.decode(enc["input_ids"][:i]).encode()) for i in range(len(enc["input_ids"]))]
        assert counts[:-1] == by_prefix and counts[-1] == 1
    # a 4-byte emoji split in byte pieces: the pieces before the last stand for nothing
    enc = bpe_tokenizer("😀", add_special_tokens=False, return_offsets_mapping=True)
    counts = token_byte_counts("😀", enc["offset_mapping"], separated=False)
    assert len(counts) > 1 and counts[-1] == 4 and sum(counts) == 4
    ids, token_bytes = token_stream(lines, bpe_tokenizer, with_bytes=True, max_tokens=20)
    assert len(ids) == len(token_bytes) == 20


def test_bits_per_byte_needs_offsets():
    from types import SimpleNamespace

    from xlt.eval.ppl import token_stream

    slow = SimpleNamespace(is_fast=False, eos_token_id=2)
    with pytest.raises(ConfigError, match="fast tokenizer"):
        token_stream(["a"], slow, with_bytes=True)
    with pytest.raises(ConfigError, match="token_bytes has 3 counts for 100 tokens"):
        sliding_window_perplexity(BigramModel(40, 0), torch.arange(100) % 40, context=8, last_n=4,
                                  token_bytes=[1, 1, 1])


def test_cli_unit_byte(tmp_path, xlt_cli):
    """``--unit byte``: the bytes scored are the corpus file's minus those of the unscored prefix."""
    import transformers as tf

    tokenizer = small_tokenizer()
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1,
                                     n_head=2)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    corpus = write_corpus(tmp_path / "en.txt", 20, seed=4)
    out = tmp_path / "ppl.json"
    result = xlt_cli("eval", "ppl", "--model", model_dir, "--corpus", f"en={corpus}", "--context", "32",
                     "--last_n", "8", "--unit", "byte", "--output", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "bits/byte" in result.stdout
    report = json.loads(out.read_text())
    assert report["unit"] == "byte"
    en = report["languages"]["en"]
    # context 32, last_n 8: targets 25.. are scored; tokens 0..24 are context only, and their
    # bytes are found by decoding them (ASCII text: no character is split between tokens)
    lines = corpus.read_text().splitlines()
    stream = []
    for line in lines:
        stream += tokenizer(line, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prefix = tokenizer.decode(stream[:25]).replace(tokenizer.eos_token, "\n")
    assert en["n_bytes"] == len(corpus.read_bytes()) - len(prefix.encode())
    assert en["bits_per_byte"] == pytest.approx(en["nll"] / math.log(2) / en["n_bytes"], rel=1e-9)
    assert en["n_tokens"] == len(stream) - 25
