"""The tiny models, seeding recipes and inputs of the LSLo conformance cases (paper configuration)."""

from __future__ import annotations

import math

import torch

LANGS = ["en", "fr", "it", "de", "nl", "zh", "ja", "ko", "oc", "or", "sd", "wo"]
TIERS = {**{l: "high" for l in LANGS[:4]}, **{l: "med" for l in LANGS[4:8]},
         **{l: "low" for l in LANGS[8:]}}
RANKS = [2] * 8 + [8] * 4

INPUT_IDS = [[50, 5, 9, 17, 33, 2], [58, 7, 11, 2, 1, 1], [55, 12, 40, 41, 13, 2]]
ATTENTION_MASK = [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
DECODER_INPUT_IDS = [[2, 51, 20, 21], [2, 56, 30, 31], [2, 61, 22, 23]]
SRC_IDS = [0, 8, 5]
TGT_IDS = [1, 6, 11]

CAUSAL_INPUT_IDS = [[50, 5, 9, 17, 2, 51, 20, 21], [58, 7, 11, 12, 2, 56, 30, 31],
                    [55, 12, 40, 41, 2, 61, 22, 23]]


def init_base(model) -> None:
    """Seed 0, std 0.1 for every parameter in sorted-name order; norms set to 1 / 0."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("norm.bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def tiny_m2m100():
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    config = M2M100Config(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.0,
                          attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
                          decoder_layerdrop=0.0, activation_function="relu", scale_embedding=True,
                          pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                          tie_word_embeddings=True)
    torch.manual_seed(0)
    model = M2M100ForConditionalGeneration(config)
    init_base(model)
    return model.eval()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
                         mlp_bias=False, hidden_act="silu", rope_theta=10000.0, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    init_base(model)
    return model.eval()


def paper_config(**overrides):
    from xlt.lslo import LSLoConfig

    kwargs = dict(languages=LANGS, tiers=TIERS, dim=32, start_idx=0,
                  encoder_directions=["src", "tgt"], decoder_directions=["tgt", "tgt"])
    kwargs.update(overrides)
    return LSLoConfig(**kwargs)


def seed_lslo(lslo, seed: int = 1) -> None:
    """Seed 1; modules in sorted path order; per language A = (rand*2-1)/sqrt(r), then B = randn*0.1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in sorted(lslo.lslo_layers.items()):
            for l, r in enumerate(layer.ranks):
                a, b = layer.pair(l)
                a.copy_((torch.rand(a.shape[0], r, generator=g) * 2 - 1) / math.sqrt(r))
                b.copy_(torch.randn(r, b.shape[1], generator=g) * 0.1)


def seq2seq_inputs():
    return dict(input_ids=torch.tensor(INPUT_IDS), attention_mask=torch.tensor(ATTENTION_MASK),
                decoder_input_ids=torch.tensor(DECODER_INPUT_IDS))


def summary(logits: torch.Tensor) -> dict:
    return {"sums": logits.sum(dim=(1, 2)).tolist(), "abs": logits.abs().sum(dim=(1, 2)).tolist(),
            "last4": logits[:, -1, :4].tolist(), "argmax": logits[:, -1].argmax(-1).tolist()}


# ---------------------------------------------------------------------------------------------
# A toy multilingual translation world (until the synthetic world is available in a test)

TOY_LANGS = ["qaa", "qab", "qac", "qad"]
_WORDS = ["cat", "dog", "sun", "tree", "house", "river", "bird", "stone", "red", "big", "sees", "eats",
          "runs", "small", "green", "old"]


def _word(word: str, lang: str) -> str:
    k = TOY_LANGS.index(lang)
    if k == 0:
        return word
    shift = {1: 1, 2: 7, 3: 13}[k]
    letters = "".join(chr((ord(c) - 97 + shift) % 26 + 97) for c in word)
    return letters + ["", "a", "on", "ik"][k]


def toy_sentence(meaning: list[str], lang: str) -> str:
    words = [_word(w, lang) for w in meaning]
    if lang == "qad":  # the far language: reversed word order
        words = words[::-1]
    return " ".join(words)


def toy_pairs(n_meanings: int = 12, seed: int = 0, languages=TOY_LANGS):
    """ParallelPairs for every ordered direction of ``languages`` over the same meanings."""
    import random

    from xlt.formats import ParallelPair

    rng = random.Random(seed)
    meanings = [[rng.choice(_WORDS) for _ in range(rng.randint(2, 5))] for _ in range(n_meanings)]
    out = []
    for m in meanings:
        for s in languages:
            for t in languages:
                if s != t:
                    out.append(ParallelPair(s, t, toy_sentence(m, s), toy_sentence(m, t)))
    return out


def toy_corpus(languages=TOY_LANGS):
    return [toy_sentence([w], l) for l in languages for w in _WORDS] + \
           [toy_sentence(_WORDS[k:k + 4], l) for l in languages for k in range(0, len(_WORDS), 4)]


def write_engine_world(root) -> None:
    """``root/model`` (a tiny M2M-100 without dropout, its tokenizer) and ``root/train.jsonl`` (8
    qaa <-> qab pairs: one epoch of 8 rows) for the engine-equality runs."""
    from pathlib import Path

    from xlt.formats import write_jsonl
    from xlt.testing import save_tiny_model, train_nllb_tokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "train.jsonl", toy_pairs(4, seed=0, languages=["qaa", "qab"]))
    tokenizer = train_nllb_tokenizer(["qaa", "qab"], toy_corpus(["qaa", "qab"]), vocab_size=200)
    save_tiny_model("m2m100", root / "model", tokenizer=tokenizer, hidden_size=32, num_layers=4, dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0)
