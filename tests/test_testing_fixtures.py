"""The offline fixtures themselves: tokenizers trained in-process and seeded tiny models."""

from __future__ import annotations

import torch

from xlt.models import load_tokenizer
from xlt.testing import tiny_model, train_bpe_tokenizer


def test_bpe_tokenizer_adds_bos_and_roundtrips(tmp_path, bpe_tokenizer):
    ids = bpe_tokenizer("Der Hund schläft.").input_ids
    assert ids[0] == bpe_tokenizer.bos_token_id == 1
    assert bpe_tokenizer.unk_token_id not in ids  # byte level: never <unk>
    assert bpe_tokenizer.decode(ids, skip_special_tokens=True) == "Der Hund schläft."
    bpe_tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path)("Der Hund schläft.").input_ids == ids


def test_bpe_training_is_deterministic():
    corpus = ["alpha beta gamma", "beta gamma delta", "gamma delta alpha"] * 5
    a = train_bpe_tokenizer(corpus, vocab_size=300).backend_tokenizer.to_str()
    b = train_bpe_tokenizer(corpus, vocab_size=300).backend_tokenizer.to_str()
    assert a == b


def test_nllb_tokenizer_language_codes(tmp_path, nllb_tokenizer):
    enc = nllb_tokenizer("hello world", text_target="hallo")
    assert (nllb_tokenizer.src_lang, nllb_tokenizer.tgt_lang) == ("eng_Latn", "fra_Latn")
    codes = nllb_tokenizer.convert_tokens_to_ids(["eng_Latn", "fra_Latn"])
    assert enc.input_ids[0] == codes[0] and enc.input_ids[-1] == nllb_tokenizer.eos_token_id
    assert enc["labels"][0] == codes[1] and enc["labels"][-1] == nllb_tokenizer.eos_token_id
    assert nllb_tokenizer.unk_token_id not in enc.input_ids
    nllb_tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert type(again).__name__ == "NllbTokenizer"
    assert again("hello world").input_ids == enc.input_ids


def test_tiny_models_are_seeded(bpe_tokenizer):
    a = tiny_model("qwen2", bpe_tokenizer, seed=3)
    b = tiny_model("qwen2", bpe_tokenizer, seed=3)
    c = tiny_model("qwen2", bpe_tokenizer, seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_m2m100_generation_forces_the_target_language(nllb_tokenizer):
    model = tiny_model("m2m100", nllb_tokenizer)
    target = nllb_tokenizer.convert_tokens_to_ids("fra_Latn")
    out = model.generate(**nllb_tokenizer(["hello"], return_tensors="pt"), forced_bos_token_id=target,
                         max_new_tokens=4)
    assert out[0, 0].item() == model.config.decoder_start_token_id and out[0, 1].item() == target
