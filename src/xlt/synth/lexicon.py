"""The concept inventory every language shares, and each language's words for it.

A *concept* is a unit of meaning with an English gloss, e.g. ``animal:wolf`` or ``verb:help``.
Content concepts (people, animals, names, verbs, adjectives, places, numerals) carry the
meaning of an event; function concepts (``fn:the``, ``fn:not``, adpositions, question words,
task-prompt words) are grammar and always language-specific. Classification labels
(``label:good``, ``label:bad``) are either anchors or native words (``label_words``).

Surface forms are built from syllables of a per-language sound system (a seeded choice of
consonants, vowels and syllable codas). Anchor concepts get one form, built from a separate
neutral sound system, used verbatim by every language. Every other form is unique across the
whole world, so two languages never share a word by accident.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: English glosses of the content concepts, by kind. Order matters: it fixes ids and forms.
PERSONS = ("farmer", "teacher", "doctor", "child", "king", "soldier", "baker", "sailor")
ANIMALS = ("wolf", "dog", "cat", "horse", "bird", "bear", "fox", "goat")
NAMES = ("Ana", "Bo", "Cira", "Dan", "Eli", "Fen", "Gus", "Hana")
GOOD_VERBS = ("help", "feed", "heal", "praise", "protect", "rescue", "comfort", "thank")
BAD_VERBS = ("bite", "rob", "hit", "chase", "insult", "trick", "scare", "push")
ADJECTIVES = ("big", "small", "old", "young", "happy", "angry", "clever", "tired")
PLACES = ("river", "forest", "market", "village", "field", "house", "garden", "hill")
NUMERALS = ("two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Selectional preferences shared by every language: which kind of agent and patient each verb
#: prefers ("person" covers names), which kind of noun each adjective prefers, which relation
#: each place prefers. They give every concept its own co-occurrence profile, the structure a
#: model can use to align languages from monolingual text alone.
VERB_FRAMES = {
    "help": ("person", "any"), "feed": ("person", "animal"), "heal": ("person", "any"),
    "praise": ("person", "person"), "protect": ("any", "person"), "rescue": ("person", "animal"),
    "comfort": ("any", "person"), "thank": ("person", "person"),
    "bite": ("animal", "any"), "rob": ("person", "person"), "hit": ("person", "any"),
    "chase": ("animal", "animal"), "insult": ("person", "person"), "trick": ("animal", "person"),
    "scare": ("animal", "any"), "push": ("any", "animal"),
}
ADJECTIVE_PREFERENCE = {"big": "animal", "small": "animal", "old": "person", "young": "person",
                        "happy": "any", "angry": "any", "clever": "person", "tired": "animal"}
PLACE_RELATION = {"river": "near", "forest": "in", "market": "in", "village": "in",
                  "field": "in", "house": "in", "garden": "in", "hill": "near"}

#: Function concepts: grammar words and task-prompt words, always language-specific.
FUNCTION_WORDS = {
    "fn:the": "definite determiner",
    "fn:not": "negation particle",
    "rel:in": "adposition 'in'",
    "rel:near": "adposition 'near'",
    "q:agent": "question word 'who did it?' (asks for the agent)",
    "q:patient": "question word 'to whom?' (asks for the patient)",
    "q:place": "question word 'where?' (asks for the place)",
    "q:polarity": "question word 'good or bad for the one it happened to?'",
}

#: Label concepts of the polarity task, in label-index order.
LABELS = ("label:good", "label:bad")

CONSONANTS = "ptkbdgmnlrsfvzhjwy"
VOWELS = "aeiou"
CODAS = "nmlrsk"


@dataclass(frozen=True)
class Concept:
    """One unit of meaning shared by every language."""

    id: str          # "animal:wolf"
    kind: str        # person animal name verb adjective place numeral function label
    gloss: str       # English gloss, for people reading world.json
    polarity: str | None = None   # verbs: "good" / "bad" for the patient
    value: int | None = None      # numerals: 2..9

    @property
    def is_entity(self) -> bool:
        return self.kind in ("person", "animal", "name")

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "gloss": self.gloss}
        if self.polarity is not None:
            out["polarity"] = self.polarity
        if self.value is not None:
            out["value"] = self.value
        return out


def build_concepts() -> dict[str, Concept]:
    """The fixed concept inventory, keyed by id, in a stable order."""
    concepts: list[Concept] = []
    concepts += [Concept(f"numeral:{g}", "numeral", g, value=k + 2) for k, g in enumerate(NUMERALS)]
    concepts += [Concept(f"name:{g}", "name", g) for g in NAMES]
    concepts += [Concept(f"person:{g}", "person", g) for g in PERSONS]
    concepts += [Concept(f"animal:{g}", "animal", g) for g in ANIMALS]
    concepts += [Concept(f"verb:{g}", "verb", g, polarity="good") for g in GOOD_VERBS]
    concepts += [Concept(f"verb:{g}", "verb", g, polarity="bad") for g in BAD_VERBS]
    concepts += [Concept(f"adjective:{g}", "adjective", g) for g in ADJECTIVES]
    concepts += [Concept(f"place:{g}", "place", g) for g in PLACES]
    concepts += [Concept(cid, "function", gloss) for cid, gloss in FUNCTION_WORDS.items()]
    concepts += [Concept(cid, "label", cid.split(":")[1]) for cid in LABELS]
    return {c.id: c for c in concepts}


CONTENT_KINDS = ("numeral", "name", "person", "animal", "verb", "adjective", "place")


def choose_anchors(concepts: dict[str, Concept], share: float, seed: int) -> list[str]:
    """The content concepts whose form is identical in every language.

    ``round(share * number of content concepts)`` of them: numerals first, then names (the
    anchors of real languages), then other content concepts in a seeded random order.
    """
    content = [c.id for c in concepts.values() if c.kind in CONTENT_KINDS]
    count = int(share * len(content) + 0.5)
    preferred = [cid for cid in content if concepts[cid].kind in ("numeral", "name")]
    others = [cid for cid in content if cid not in preferred]
    random.Random(f"{seed}:anchors").shuffle(others)
    return (preferred + others)[:count]


@dataclass(frozen=True)
class SoundSystem:
    """The syllables a language builds its words from."""

    consonants: str
    vowels: str
    codas: str           # consonants that may close a syllable ("" = open syllables only)
    coda_rate: float     # probability that a syllable has a coda

    @classmethod
    def sample(cls, rng: random.Random) -> "SoundSystem":
        consonants = "".join(sorted(rng.sample(CONSONANTS, rng.randint(7, 10))))
        vowels = "".join(sorted(rng.sample(VOWELS, rng.randint(3, 5))))
        codas = "".join(c for c in CODAS if c in consonants)
        coda_rate = round(rng.choice((0.0, 0.15, 0.3)), 2) if codas else 0.0
        return cls(consonants, vowels, codas, coda_rate)

    @classmethod
    def neutral(cls) -> "SoundSystem":
        """The sound system of anchors: every letter, open syllables."""
        return cls(CONSONANTS, VOWELS, "", 0.0)

    def syllable(self, rng: random.Random) -> str:
        text = rng.choice(self.consonants) + rng.choice(self.vowels)
        if self.codas and rng.random() < self.coda_rate:
            text += rng.choice(self.codas)
        return text

    def word(self, rng: random.Random, syllables: int) -> str:
        return "".join(self.syllable(rng) for _ in range(syllables))

    def to_dict(self) -> dict:
        return {"consonants": self.consonants, "vowels": self.vowels, "codas": self.codas,
                "coda_rate": self.coda_rate}


def syllable_range(kind: str) -> tuple[int, int]:
    """How many syllables a word of this kind has: function words are short."""
    if kind == "function":
        return (1, 1)
    if kind in ("numeral", "label"):
        return (1, 2)
    return (2, 3)


def make_form(system: SoundSystem, rng: random.Random, kind: str, taken: set[str]) -> str:
    """A new word for a concept of ``kind``, not in ``taken`` (then added to it)."""
    low, high = syllable_range(kind)
    attempts = 0
    while True:
        syllables = rng.randint(low, high) + attempts // 40  # grow if the short ones run out
        form = system.word(rng, syllables)
        if kind == "name":
            form = form.capitalize()
        if form not in taken and form.lower() not in taken:
            taken.add(form)
            taken.add(form.lower())
            return form
        attempts += 1
