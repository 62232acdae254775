"""Meanings and how each language puts them into words.

A :class:`Meaning` is one event: an agent does something to a patient, optionally with an
attribute on either, a number of patients, a place, and negation. Every language renders the
same meaning with its own words (:mod:`xlt.synth.lexicon`) and its own grammar
(:class:`Language`): basic word order, the side of the noun on which adjectives and
numerals stand, where the determiner goes, and prepositions or postpositions.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field

#: The typology that goes with each basic word order: (adjective side, determiner side,
#: adposition kind). Head-initial orders put modifiers after the noun except SVO (English-like);
#: object-before-verb orders are head-final (postpositions, determiner after the noun).
TYPOLOGY = {
    "SVO": ("before", "before", "preposition"),
    "VSO": ("after", "before", "preposition"),
    "VOS": ("after", "before", "preposition"),
    "SOV": ("after", "after", "postposition"),
    "OVS": ("after", "after", "postposition"),
    "OSV": ("after", "after", "postposition"),
}

#: Roles a question of the extraction task can ask for.
ROLES = ("agent", "patient", "place")


@dataclass(frozen=True)
class Meaning:
    """One event of the shared meaning space (concept ids from :mod:`xlt.synth.lexicon`).

    ``count`` is the number of patients (1, or 2..9 rendered with a numeral); names take no
    adjective and no numeral. ``place`` and ``relation`` are both set or both ``None``.
    """

    agent: str
    verb: str
    patient: str
    agent_adjective: str | None = None
    patient_adjective: str | None = None
    count: int = 1
    relation: str | None = None
    place: str | None = None
    negated: bool = False

    def to_dict(self) -> dict:
        return {"agent": self.agent, "verb": self.verb, "patient": self.patient,
                "agent_adjective": self.agent_adjective,
                "patient_adjective": self.patient_adjective, "count": self.count,
                "relation": self.relation, "place": self.place, "negated": self.negated}


@dataclass(frozen=True)
class Language:
    """One language of the world: its code, typology, sound system and lexicon.

    ``lexicon`` maps every concept id (content, function and label) to its surface form.
    """

    code: str
    name: str
    word_order: str
    adjective: str      # "before" / "after" the noun (numerals stand on the same side)
    determiner: str     # "before" / "after" the noun phrase
    adposition: str     # "preposition" / "postposition"
    lexicon: dict
    sounds: dict
    description: str = ""

    @classmethod
    def typology(cls, word_order: str) -> tuple[str, str, str]:
        return TYPOLOGY[word_order]

    def word(self, concept: str) -> str:
        return self.lexicon[concept]

    # -- rendering ---------------------------------------------------------------------------

    def noun_phrase(self, noun: str, adjective: str | None = None, count: int = 1) -> list[str]:
        """Words of a noun phrase. Names stand alone; common nouns take the determiner."""
        if noun.startswith("name:"):
            return [self.word(noun)]
        modifiers = []
        if count > 1:
            modifiers.append(self.word(numeral_concept(count)))
        if adjective is not None:
            modifiers.append(self.word(adjective))
        if self.adjective == "before":
            core = modifiers + [self.word(noun)]
        else:
            core = [self.word(noun)] + modifiers[::-1]
        det = self.word("fn:the")
        return [det] + core if self.determiner == "before" else core + [det]

    def place_phrase(self, meaning: Meaning) -> list[str]:
        """The adpositional phrase of the place ([] when the event has no place)."""
        if meaning.place is None:
            return []
        noun = self.noun_phrase(meaning.place)
        rel = self.word(meaning.relation)
        return [rel] + noun if self.adposition == "preposition" else noun + [rel]

    def role_words(self, meaning: Meaning, role: str) -> list[str]:
        """The words that express ``role`` (agent, patient, place) in a sentence of ``meaning``."""
        if role == "agent":
            return self.noun_phrase(meaning.agent, meaning.agent_adjective)
        if role == "patient":
            return self.noun_phrase(meaning.patient, meaning.patient_adjective, meaning.count)
        if role == "place":
            return self.place_phrase(meaning)
        raise ValueError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")

    def clause_words(self, meaning: Meaning) -> list[str]:
        """The words of the declarative clause, without final punctuation.

        Negation stands right before the verb. The place phrase closes a verb-medial or
        verb-initial clause and stands right before the verb in a verb-final one.
        """
        parts = {"S": self.role_words(meaning, "agent"),
                 "O": self.role_words(meaning, "patient"),
                 "V": ([self.word("fn:not")] if meaning.negated else []) + [self.word(meaning.verb)]}
        blocks = [parts[x] for x in self.word_order]
        place = self.place_phrase(meaning)
        if self.word_order.endswith("V"):
            blocks.insert(len(blocks) - 1, place)
        else:
            blocks.append(place)
        return [w for block in blocks for w in block]

    def sentence(self, meaning: Meaning) -> str:
        """The declarative sentence, e.g. ``"la mefo kuri la tobe ."``."""
        return " ".join(self.clause_words(meaning)) + " ."

    def question(self, meaning: Meaning, question_word: str) -> str:
        """A task prompt: the sentence followed by a question word and ``?``."""
        return f"{self.sentence(meaning)} {self.word(question_word)} ?"

    def to_dict(self) -> dict:
        return {"code": self.code, "name": self.name, "description": self.description,
                "word_order": self.word_order, "adjective": self.adjective,
                "determiner": self.determiner, "adposition": self.adposition,
                "sounds": self.sounds}


def numeral_concept(count: int) -> str:
    from xlt.synth.lexicon import NUMERALS

    return f"numeral:{NUMERALS[count - 2]}"


# --------------------------------------------------------------------------------------------
# Sampling meanings


@dataclass(frozen=True)
class MeaningSpace:
    """The concepts meanings are drawn from, and how often each is drawn.

    Concepts of each kind have Zipf-like frequencies (weight ``1 / rank**0.8`` over a seeded
    ranking), and verbs, adjectives and places have selectional preferences
    (:data:`~xlt.synth.lexicon.VERB_FRAMES` ...): a preferred kind is ``preference`` times as
    likely. Every language shares this distribution, so each word has a co-occurrence profile
    that matches its translations' -- as in real languages, and unlike uniform sampling, under
    which all verbs would be distributionally indistinguishable.
    """

    entities: tuple[str, ...]
    good_verbs: tuple[str, ...]
    bad_verbs: tuple[str, ...]
    adjectives: tuple[str, ...]
    places: tuple[str, ...]
    weights: dict            # concept id -> Zipf weight
    frames: dict             # verb id -> (agent kind, patient kind); adjective id -> noun kind
    place_relation: dict     # place id -> preferred relation id
    relations: tuple[str, ...] = ("rel:in", "rel:near")
    adjective_rate: float = 0.3
    numeral_rate: float = 0.25
    place_rate: float = 0.6
    preference: float = 4.0
    zipf_exponent: float = 0.8
    _tables: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_concepts(cls, concepts, seed: int = 0) -> "MeaningSpace":
        from xlt.synth.lexicon import ADJECTIVE_PREFERENCE, PLACE_RELATION, VERB_FRAMES

        by_kind = lambda *kinds: tuple(c.id for c in concepts.values() if c.kind in kinds)  # noqa: E731
        verbs = [c for c in concepts.values() if c.kind == "verb"]
        rng = random.Random(f"{seed}:frequencies")
        weights = {}
        for group in (by_kind("name", "person", "animal"), by_kind("verb"), by_kind("adjective"),
                      by_kind("place")):
            ranked = list(group)
            rng.shuffle(ranked)
            for rank, cid in enumerate(ranked, 1):
                weights[cid] = 1.0 / rank ** cls.zipf_exponent
        frames = {f"verb:{v}": kinds for v, kinds in VERB_FRAMES.items()}
        frames.update({f"adjective:{a}": kind for a, kind in ADJECTIVE_PREFERENCE.items()})
        return cls(entities=by_kind("name", "person", "animal"),
                   good_verbs=tuple(c.id for c in verbs if c.polarity == "good"),
                   bad_verbs=tuple(c.id for c in verbs if c.polarity == "bad"),
                   adjectives=by_kind("adjective"), places=by_kind("place"), weights=weights,
                   frames=frames,
                   place_relation={f"place:{p}": f"rel:{r}" for p, r in PLACE_RELATION.items()})

    @staticmethod
    def entity_kind(cid: str) -> str:
        return "animal" if cid.startswith("animal:") else "person"

    def _pick(self, rng: random.Random, key, options, prefer=None) -> str:
        """A weighted choice: Zipf weight, times ``preference`` where ``prefer(option)``.
        The cumulative weights of each ``key`` are computed once."""
        table = self._tables.get(key)
        if table is None:
            options = tuple(options() if callable(options) else options)
            cumulative = list(itertools.accumulate(
                self.weights.get(o, 1.0) * (self.preference if prefer and prefer(o) else 1.0)
                for o in options))
            table = self._tables[key] = (options, cumulative, cumulative[-1], len(options) - 1)
        options, cumulative, total, last = table
        return options[bisect.bisect(cumulative, rng.random() * total, 0, last)]

    def _entity(self, rng: random.Random, kind: str, exclude: str | None = None) -> str:
        return self._pick(rng, ("entity", kind, exclude),
                          lambda: [e for e in self.entities if e != exclude],
                          None if kind == "any" else (lambda e: self.entity_kind(e) == kind))

    def _adjective(self, rng: random.Random, noun: str) -> str:
        kind = self.entity_kind(noun)
        return self._pick(rng, ("adjective", kind), self.adjectives,
                          lambda a: self.frames.get(a) in (kind, "any"))

    def sample(self, rng: random.Random, *, negation_share: float, good: bool | None = None,
               with_place: bool | None = None) -> Meaning:
        """Draw one meaning; ``good`` fixes the polarity label (verb polarity XOR negation),
        ``with_place`` whether a place is mentioned."""
        negated = rng.random() < negation_share
        if good is None:
            verb = self._pick(rng, ("verb", None), self.good_verbs + self.bad_verbs)
        else:
            verb_good = good != negated
            verb = self._pick(rng, ("verb", verb_good), self.good_verbs if verb_good else self.bad_verbs)
        agent_kind, patient_kind = self.frames.get(verb, ("any", "any"))
        agent = self._entity(rng, agent_kind)
        patient = self._entity(rng, patient_kind, exclude=agent)
        agent_adj = patient_adj = None
        count = 1
        if not agent.startswith("name:") and rng.random() < self.adjective_rate:
            agent_adj = self._adjective(rng, agent)
        if not patient.startswith("name:"):
            if rng.random() < self.adjective_rate:
                patient_adj = self._adjective(rng, patient)
            if rng.random() < self.numeral_rate:
                count = rng.randint(2, 9)
        if with_place is None:
            with_place = rng.random() < self.place_rate
        relation = place = None
        if with_place:
            place = self._pick(rng, ("place",), self.places)
            preferred = self.place_relation.get(place)
            relation = self._pick(rng, ("relation", place), self.relations, lambda r: r == preferred)
        return Meaning(agent=agent, verb=verb, patient=patient, agent_adjective=agent_adj,
                       patient_adjective=patient_adj, count=count, relation=relation,
                       place=place, negated=negated)

    def describe(self) -> dict:
        """The distribution, for world.json."""
        return {"zipf_exponent": self.zipf_exponent, "preference": self.preference,
                "adjective_rate": self.adjective_rate, "numeral_rate": self.numeral_rate,
                "place_rate": self.place_rate,
                "weights": {k: round(v, 6) for k, v in self.weights.items()},
                "verb_frames": {k: {"agent": v[0], "patient": v[1]} for k, v in self.frames.items()
                                if k.startswith("verb:")},
                "adjective_preferences": {k: v for k, v in self.frames.items()
                                          if k.startswith("adjective:")},
                "place_relations": dict(self.place_relation)}
