"""Reference-task data for AdaMergeX: plain text cut into (prompt, one-unit completion) chunks.

The paper's reference task is causal language modelling on Wikipedia. Its data cuts the running
text into chunks of ``n_prompt + n_completion`` units (511 + 1): the first ``n_prompt`` units are
the prompt, the rest the completion. Units are whitespace words (the released demo files) or
characters (the released script, configured for Chinese). Text left over at the end of an
article is carried into the next one; the final remainder is dropped.

Article boundaries (``boundary``):

* ``"glue"`` — as released: the carry is concatenated to the next article with no separator,
  and (character units) every newline is deleted; this fuses words across boundaries
  (``"Vulcan CountyPleasant Run"`` in the reference's demo data).
* ``"space"`` (default here) — the carry and the next article are joined by one space and
  newlines become spaces, so no words fuse. For sentence-per-line corpora, where the glued
  form would damage one word per line, this is the only sensible choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from xlt.errors import ConfigError

BOUNDARIES = ("space", "glue")
UNITS = ("word", "char")


@dataclass
class Chunks:
    """``pairs``: (prompt, completion) per chunk, in text order; ``dropped``: the final remainder."""

    pairs: list = field(default_factory=list)
    dropped: str = ""
    articles: int = 0

    @property
    def dropped_units(self) -> int:
        return len(self.dropped.split()) if self.unit == "word" else len(self.dropped)

    unit: str = "word"


def _check(n_prompt: int, n_completion: int, boundary: str) -> None:
    if n_prompt < 1 or n_completion < 1:
        raise ConfigError(f"prompt and completion lengths must be >= 1 unit, got {n_prompt} and {n_completion}")
    if boundary not in BOUNDARIES:
        raise ConfigError(f"unknown boundary {boundary!r} (expected one of {', '.join(BOUNDARIES)})")


def chunk_chars(articles: Iterable[str], n_prompt: int = 511, n_completion: int = 1, *,
                boundary: str = "space") -> Chunks:
    """Character chunks: every ``n_prompt + n_completion`` characters make one (prompt, completion).

    With ``boundary="glue"`` this is the released script's rule exactly: text = carry + article
    with every ``"\\n"`` removed.
    """
    _check(n_prompt, n_completion, boundary)
    size = n_prompt + n_completion
    out = Chunks(unit="char")
    carry = ""
    for article in articles:
        out.articles += 1
        if boundary == "glue":
            text = (carry + article).replace("\n", "")
        else:
            body = " ".join(article.split("\n"))
            text = carry + " " + body if carry and body else carry + body
        full = len(text) // size
        for j in range(full):
            segment = text[j * size:(j + 1) * size]
            out.pairs.append((segment[:n_prompt], segment[n_prompt:]))
        carry = text[full * size:]
    out.dropped = carry
    return out


def chunk_words(articles: Iterable[str], n_prompt: int = 511, n_completion: int = 1, *,
                boundary: str = "space") -> Chunks:
    """Whitespace-word chunks, re-joined with single spaces: ``n_prompt`` words of prompt, then
    ``n_completion`` words of completion (no leading space).

    With ``boundary="glue"`` this is the rule that produced the reference's demo files: the
    carry is glued to the next article without a separator.
    """
    _check(n_prompt, n_completion, boundary)
    size = n_prompt + n_completion
    out = Chunks(unit="word")
    carry = ""
    for article in articles:
        out.articles += 1
        joined = carry + article if boundary == "glue" else carry + " " + article
        words = joined.split()
        full = len(words) // size
        for j in range(full):
            segment = words[j * size:(j + 1) * size]
            out.pairs.append((" ".join(segment[:n_prompt]), " ".join(segment[n_prompt:])))
        carry = " ".join(words[full * size:])
    out.dropped = carry
    return out


def chunk_text(articles: Iterable[str], *, unit: str = "word", n_prompt: int = 511,
               n_completion: int = 1, boundary: str = "space") -> Chunks:
    """Dispatch on ``unit`` (``"word"`` or ``"char"``)."""
    if unit not in UNITS:
        raise ConfigError(f"unknown unit {unit!r} (expected one of {', '.join(UNITS)})")
    fn = chunk_words if unit == "word" else chunk_chars
    return fn(articles, n_prompt, n_completion, boundary=boundary)
