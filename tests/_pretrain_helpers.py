"""Small corpora and tokenizers for the pre-training, perplexity and similarity tests."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the cat dog sat on mat a big small red blue runs eats sleeps house garden "
         "bird sings tree green old young walks near under over").split()


def make_lines(n: int, seed: int = 0, words=WORDS) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + "." for _ in range(n)]


def write_corpus(path: Path, n: int, seed: int = 0, words=WORDS) -> Path:
    path.write_text("\n".join(make_lines(n, seed, words)) + "\n", encoding="utf-8")
    return path


def small_tokenizer(lines=None, vocab_size: int = 300):
    from xlt.testing import train_bpe_tokenizer

    return train_bpe_tokenizer(lines or make_lines(400), vocab_size=vocab_size, add_bos=False)
