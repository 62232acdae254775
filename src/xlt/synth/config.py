"""The knobs of a synthetic world, with their defaults and validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from xlt.errors import ConfigError

#: Basic word orders a language may have (subject, verb, object).
WORD_ORDERS = ("SVO", "SOV", "VSO", "VOS", "OVS", "OSV")

#: How task labels are verbalised: one set of label words shared by every language (anchors),
#: or each language's own words.
LABEL_WORDS = ("shared", "native")

#: ISO 639-3 reserves qaa-qtz for private use; the world uses qaa, qab, ... qaz.
MAX_LANGUAGES = 26


def language_codes(count: int) -> list[str]:
    """The private-use codes of the first ``count`` languages: ``qaa`` (the source), ``qab``, ..."""
    return [f"qa{chr(ord('a') + k)}" for k in range(count)]


@dataclass(frozen=True)
class WorldConfig:
    """Every setting of a synthetic world. The same config always gives the same bytes.

    Sizes of task and translation splits count *meanings*; each meaning is rendered in every
    language (tasks) or every direction (translation), so a file holds ``size x languages``
    (or ``x directions``) records.
    """

    #: seed of every random choice (lexicons, sound systems, sampled meanings)
    seed: int = 0
    #: number of languages; ``qaa`` is the source, then ``qab``, ``qac``, ...
    languages: int = 4
    #: basic word order of each language, in code order; cycled when shorter than ``languages``.
    #: The default gives a close target (qab: SVO like the source) and two far ones
    #: (qac: SOV, head-final; qad: VSO).
    word_orders: tuple[str, ...] = ("SVO", "SVO", "SOV", "VSO")
    #: share of content concepts whose surface form is identical in every language; numerals
    #: are taken first, then names, then other concepts at random (0: fully disjoint lexicons)
    anchor_share: float = 0.25
    #: "shared": labels of classification tasks are the same anchor words in every language;
    #: "native": each language verbalises labels with its own words
    label_words: str = "shared"
    #: share of events that are negated (negation flips the polarity label)
    negation_share: float = 0.2
    #: total number of monolingual corpus lines over all languages
    corpus_lines: int = 40000
    #: relative share of the corpus per language (normalised); empty = equal shares
    corpus_shares: tuple[float, ...] = ()
    #: share of corpus lines that are task prompts without their answer (so a pre-trained
    #: model knows the surface of the questions in every language, but not the task)
    question_share: float = 0.1
    #: meanings per task split (each rendered in every language; classes balanced)
    task_train: int = 2000
    task_dev: int = 200
    task_test: int = 400
    #: meanings per translation split (each written in every ordered direction)
    translation_train: int = 2000
    translation_dev: int = 100
    translation_test: int = 200
    #: meanings of the parallel training pairs of every language pair (the dev pairs are the
    #: translation dev meanings)
    parallel_train: int = 2000
    #: vocabulary size of the byte-level BPE tokenizer (specials and 256 bytes included)
    vocab_size: int = 1000

    def __post_init__(self):
        self.validate()

    # ----------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` naming the first invalid knob."""
        _int(self, "seed", minimum=0)
        _int(self, "languages", minimum=2)
        if self.languages > MAX_LANGUAGES:
            raise ConfigError(f"languages must be at most {MAX_LANGUAGES} (codes qaa..qaz), "
                              f"got {self.languages}")
        if not isinstance(self.word_orders, (tuple, list)) or not self.word_orders:
            raise ConfigError("word_orders must be a non-empty list such as SVO,SOV")
        for order in self.word_orders:
            if order not in WORD_ORDERS:
                raise ConfigError(f"word_orders: unknown word order {order!r} "
                                  f"(expected one of {', '.join(WORD_ORDERS)})")
        _probability(self, "anchor_share")
        _probability(self, "negation_share")
        _probability(self, "question_share")
        if self.label_words not in LABEL_WORDS:
            raise ConfigError(f"label_words must be one of {', '.join(LABEL_WORDS)}, "
                              f"got {self.label_words!r}")
        _int(self, "corpus_lines", minimum=0)
        if self.corpus_shares:
            if len(self.corpus_shares) != self.languages:
                raise ConfigError(f"corpus_shares has {len(self.corpus_shares)} values, expected one "
                                  f"per language ({self.languages})")
            for value in self.corpus_shares:
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not math.isfinite(value) or value < 0:
                    raise ConfigError(f"corpus_shares must be finite numbers >= 0, got {value}")
            if sum(self.corpus_shares) <= 0:
                raise ConfigError("corpus_shares must not all be 0")
        for name in ("task_train", "task_dev", "task_test", "translation_train",
                     "translation_dev", "translation_test", "parallel_train"):
            _int(self, name, minimum=2)
        _int(self, "vocab_size", minimum=300)
        if self.vocab_size > 65536:
            raise ConfigError(f"vocab_size must be at most 65536, got {self.vocab_size}")

    @property
    def codes(self) -> list[str]:
        """Language codes, source first."""
        return language_codes(self.languages)

    def word_order(self, index: int) -> str:
        return self.word_orders[index % len(self.word_orders)]

    def corpus_counts(self) -> dict[str, int]:
        """Lines per language: ``corpus_lines`` split by ``corpus_shares`` (largest remainder,
        ties to the earlier language), so the counts add up exactly."""
        shares = list(self.corpus_shares) or [1.0] * self.languages
        total = float(sum(shares))
        exact = [self.corpus_lines * s / total for s in shares]
        counts = [math.floor(x) for x in exact]
        rest = self.corpus_lines - sum(counts)
        order = sorted(range(self.languages), key=lambda k: (-(exact[k] - counts[k]), k))
        for k in order[:rest]:
            counts[k] += 1
        return dict(zip(self.codes, counts))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["word_orders"] = list(self.word_orders)
        out["corpus_shares"] = list(self.corpus_shares)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "WorldConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown world setting(s): {', '.join(unknown)}")
        values = dict(values)
        for key in ("word_orders", "corpus_shares"):
            if key in values and isinstance(values[key], list):
                values[key] = tuple(values[key])
        return cls(**values)


def _int(config, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _probability(config, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")


__all__ = ["WorldConfig", "WORD_ORDERS", "LABEL_WORDS", "language_codes", "MAX_LANGUAGES"]
