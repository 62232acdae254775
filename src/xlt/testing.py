"""Tiny random models and in-process tokenizers: the offline fixtures of tests and benchmarks.

Nothing here touches the network. Tokenizers train in milliseconds on a small corpus; models
are randomly initialised from a seed with a config a few kilobytes in size, for the
architectures xlt supports: Llama, Qwen2, Mistral, Gemma, GPT-2, XGLM, BLOOM (causal) and
M2M-100 (seq2seq, with an NLLB-style tokenizer carrying language codes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

CAUSAL_ARCHS = ("llama", "qwen2", "mistral", "gemma", "gpt2", "xglm", "bloom")
SEQ2SEQ_ARCHS = ("m2m100",)
ARCHS = CAUSAL_ARCHS + SEQ2SEQ_ARCHS

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]

#: A small mixed-script corpus, enough for a tokenizer to cover common characters.
DEFAULT_CORPUS = [
    "The cat sat on the mat.", "Der Hund schläft im Garten.", "Le chat dort sur le lit.",
    "El perro come una manzana.", "猫はマットの上に座った。", "我喜欢吃苹果。", "Кошка спит на диване.",
    "The quick brown fox jumps over the lazy dog.", "Translate into German: good morning",
    "Question: what is two plus three? Answer: five", "Hello world. How are you? Good night.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000", "a b c d e f g h i j k l m n o p q r s t u v w x y z",
]


def train_bpe_tokenizer(corpus: Iterable[str] | None = None, *, vocab_size: int = 512,
                        add_bos: bool = True, extra_special_tokens: Sequence[str] = (),
                        model_max_length: int = 1024):
    """Train a byte-level BPE tokenizer in-process (never yields ``<unk>``, any script works).

    Special tokens: ``<unk>``=0, ``<s>``=1, ``</s>``=2, ``<pad>``=3, then ``extra_special_tokens``.
    With ``add_bos`` every encoded text starts with ``<s>`` (Llama convention).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS + list(extra_special_tokens)
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    raw.train_from_iterator(list(corpus or DEFAULT_CORPUS), trainer)
    if add_bos:
        raw.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", raw.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   extra_special_tokens=list(extra_special_tokens) or None,
                                   model_max_length=model_max_length)


def train_nllb_tokenizer(languages: Sequence[str], corpus: Iterable[str] | None = None, *,
                         vocab_size: int = 512, src_lang: str | None = None, tgt_lang: str | None = None):
    """An ``NllbTokenizer`` over an in-process Metaspace BPE whose language codes are ``languages``.

    ``tok(src, text_target=tgt)`` gives ``[src_lang] ... </s>`` and labels ``[tgt_lang] ... </s>``.
    The BPE is trained with the same Metaspace pre-tokenizer NLLB uses, so no ``<unk>`` appears
    for characters of the corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import NllbTokenizer

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    raw.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  show_progress=False)
    raw.train_from_iterator(list(corpus or DEFAULT_CORPUS), trainer)
    model = json.loads(raw.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    languages = list(languages)
    return NllbTokenizer(vocab=dict(model["vocab"]), merges=merges, src_lang=src_lang or languages[0],
                         tgt_lang=tgt_lang or languages[-1], extra_special_tokens=languages,
                         bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


def tiny_config(arch: str, tokenizer, *, hidden_size: int = 32, num_layers: int = 4,
                num_heads: int = 4, intermediate_size: int | None = None, max_positions: int = 256,
                **overrides):
    """A Hugging Face config for a tiny ``arch`` model sized to ``tokenizer``'s vocabulary."""
    import transformers as tf

    vocab = len(tokenizer)
    ffn = intermediate_size or 2 * hidden_size
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    if arch in ("llama", "qwen2", "mistral"):
        cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig}[arch]
        config = cls(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=ffn,
                     num_hidden_layers=num_layers, num_attention_heads=num_heads,
                     num_key_value_heads=max(1, num_heads // 2), max_position_embeddings=max_positions,
                     tie_word_embeddings=False, **ids)
    elif arch == "gemma":
        config = tf.GemmaConfig(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=ffn,
                                num_hidden_layers=num_layers, num_attention_heads=num_heads,
                                num_key_value_heads=max(1, num_heads // 2),
                                head_dim=hidden_size // num_heads, max_position_embeddings=max_positions,
                                **ids)
    elif arch == "gpt2":
        config = tf.GPT2Config(vocab_size=vocab, n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                               n_inner=ffn, n_positions=max_positions, **ids)
    elif arch == "bloom":
        config = tf.BloomConfig(vocab_size=vocab, hidden_size=hidden_size, n_layer=num_layers,
                                n_head=num_heads, **ids)
    elif arch == "xglm":
        config = tf.XGLMConfig(vocab_size=vocab, d_model=hidden_size, ffn_dim=ffn, num_layers=num_layers,
                               attention_heads=num_heads, max_position_embeddings=max_positions,
                               layerdrop=0.0, decoder_start_token_id=tokenizer.eos_token_id, **ids)
    elif arch == "m2m100":
        config = tf.M2M100Config(vocab_size=vocab, d_model=hidden_size, encoder_layers=num_layers // 2 or 1,
                                 decoder_layers=num_layers // 2 or 1, encoder_attention_heads=num_heads,
                                 decoder_attention_heads=num_heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
                                 max_position_embeddings=max_positions, encoder_layerdrop=0.0,
                                 decoder_layerdrop=0.0, decoder_start_token_id=tokenizer.eos_token_id,
                                 **ids)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r} (expected one of {', '.join(ARCHS)})")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_model(arch: str, tokenizer, *, seed: int = 0, **config_kwargs):
    """A randomly initialised tiny model; the same seed gives the same weights."""
    import torch
    import transformers as tf

    config = tiny_config(arch, tokenizer, **config_kwargs)
    torch.manual_seed(seed)
    cls = tf.AutoModelForSeq2SeqLM if arch in SEQ2SEQ_ARCHS else tf.AutoModelForCausalLM
    model = cls.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model


def save_tiny_model(arch: str, out_dir: str | os.PathLike, *, tokenizer=None, languages=None,
                    seed: int = 0, **config_kwargs) -> Path:
    """Build a tiny ``arch`` model (and tokenizer unless given) and ``save_pretrained`` both."""
    if tokenizer is None:
        if arch in SEQ2SEQ_ARCHS:
            tokenizer = train_nllb_tokenizer(languages or ["eng_Latn", "deu_Latn", "fra_Latn"])
        else:
            tokenizer = train_bpe_tokenizer()
    model = tiny_model(arch, tokenizer, seed=seed, **config_kwargs)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
