"""Generating a world in memory: languages, sampled meanings, and the records built from them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from xlt.errors import ConfigError
from xlt.formats import MultipleChoiceItem, ParallelPair, TaskExample
from xlt.synth.config import WorldConfig
from xlt.synth.grammar import ROLES, TYPOLOGY, Language, Meaning, MeaningSpace
from xlt.synth.lexicon import (LABELS, Concept, SoundSystem, build_concepts, choose_anchors,
                               make_form)
from xlt.synth.tasks import (TASK_INFO, TASKS, TaskItem, label_words, polarity_choice,
                             polarity_example, polarity_label, roles_example)

SPLITS = ("train", "dev", "test")

#: Version of the generator's output: bumped whenever the same config would give other bytes.
GENERATOR_VERSION = 1


@dataclass
class World:
    """A generated world, fully in memory (records are built on request).

    ``task_items[split]`` and ``translation[split]`` hold the sampled meanings of each split;
    every language renders the same meanings. ``corpus[code]`` holds the monolingual lines.
    """

    config: WorldConfig
    concepts: dict[str, Concept]
    anchors: list[str]
    languages: list[Language]
    task_items: dict[str, list[TaskItem]]
    translation: dict[str, list[Meaning]]
    parallel_train: list[Meaning]
    corpus: dict[str, list[str]]
    space: MeaningSpace | None = None
    _by_code: dict[str, Language] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._by_code = {lang.code: lang for lang in self.languages}

    # -- languages ---------------------------------------------------------------------------

    @property
    def codes(self) -> list[str]:
        return [lang.code for lang in self.languages]

    @property
    def source(self) -> Language:
        return self.languages[0]

    def language(self, code: str) -> Language:
        try:
            return self._by_code[code]
        except KeyError:
            raise ConfigError(f"unknown language code {code!r} (expected one of "
                              f"{', '.join(self.codes)})") from None

    @property
    def verb_polarity(self) -> dict[str, str]:
        return {c.id: c.polarity for c in self.concepts.values() if c.kind == "verb"}

    # -- rendering ---------------------------------------------------------------------------

    def render(self, meaning: Meaning, code: str) -> str:
        """The sentence that expresses ``meaning`` in language ``code``."""
        return self.language(code).sentence(meaning)

    def label(self, meaning: Meaning) -> int:
        """Polarity label of ``meaning``: 0 = good for the patient, 1 = bad."""
        return polarity_label(meaning, self.verb_polarity)

    # -- records -----------------------------------------------------------------------------

    def task_examples(self, task: str, split: str, codes: list[str] | None = None) -> list[TaskExample]:
        """TaskExample records of ``task`` for ``split``, language by language (source first)."""
        _check(task, TASKS, "task")
        _check(split, SPLITS, "split")
        polarity = self.verb_polarity
        out = []
        for code in codes or self.codes:
            lang = self.language(code)
            for item in self.task_items[split]:
                if task == "polarity":
                    out.append(polarity_example(lang, item, polarity))
                else:
                    out.append(roles_example(lang, item))
        return out

    def choice_items(self, task: str, split: str, codes: list[str] | None = None) -> list[MultipleChoiceItem]:
        """MultipleChoiceItem records of a classification task (``polarity``)."""
        if TASK_INFO.get(task, {}).get("kind") != "classification":
            raise ConfigError(f"task {task!r} has no multiple-choice form (only classification "
                              "tasks do: polarity)")
        _check(split, SPLITS, "split")
        polarity = self.verb_polarity
        return [polarity_choice(self.language(code), item, polarity)
                for code in codes or self.codes for item in self.task_items[split]]

    def parallel_pairs(self, a: str, b: str, split: str) -> list[ParallelPair]:
        """Pairs of language ``a`` and ``b`` (train: the parallel meanings, dev: translation dev)."""
        _check(split, ("train", "dev"), "parallel split")
        meanings = self.parallel_train if split == "train" else self.translation["dev"]
        la, lb = self.language(a), self.language(b)
        return [ParallelPair(src_lang=a, tgt_lang=b, src=la.sentence(m), tgt=lb.sentence(m))
                for m in meanings]

    def translation_pairs(self, split: str) -> list[ParallelPair]:
        """Translation records of ``split`` for every ordered direction (source-major order)."""
        _check(split, SPLITS, "split")
        out = []
        rendered = {code: [self.language(code).sentence(m) for m in self.translation[split]]
                    for code in self.codes}
        for a in self.codes:
            for b in self.codes:
                if a != b:
                    out.extend(ParallelPair(src_lang=a, tgt_lang=b, src=s, tgt=t)
                               for s, t in zip(rendered[a], rendered[b]))
        return out

    def tokenizer_texts(self) -> list[str]:
        """The texts the world's tokenizer is trained on: every corpus line and the training
        prompts + completions of every task."""
        texts = [line for code in self.codes for line in self.corpus[code]]
        for task in TASKS:
            texts.extend(r.prompt + r.completion for r in self.task_examples(task, "train"))
        return texts

    # -- description -------------------------------------------------------------------------

    def describe(self) -> dict:
        """The content of ``world.json`` (without the file counts and tokenizer facts)."""
        counts = self.config.corpus_counts()
        languages = []
        for lang in self.languages:
            entry = lang.to_dict()
            entry["corpus_lines"] = counts[lang.code]
            languages.append(entry)
        return {
            "format": "xlt-synth-world",
            "generator_version": GENERATOR_VERSION,
            "seed": self.config.seed,
            "source_language": self.source.code,
            "settings": self.config.to_dict(),
            "languages": languages,
            "anchors": list(self.anchors),
            "concepts": {cid: c.to_dict() for cid, c in self.concepts.items()},
            "lexicon": {lang.code: dict(lang.lexicon) for lang in self.languages},
            "meaning_distribution": self.space.describe() if self.space is not None else None,
            "tasks": {
                task: dict(TASK_INFO[task], **({
                    "labels": list(LABELS),
                    "label_words": {lang.code: label_words(lang) for lang in self.languages},
                } if TASK_INFO[task]["kind"] == "classification" else {"roles": list(ROLES)}),
                    sizes={split: len(self.task_items[split]) for split in SPLITS})
                for task in TASKS},
        }


def _check(value: str, allowed, what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r} (expected one of {', '.join(allowed)})")


# --------------------------------------------------------------------------------------------
# Generation


def build_languages(config: WorldConfig, concepts: dict[str, Concept],
                    anchors: list[str]) -> list[Language]:
    """Sound systems and lexicons of every language; anchors share one form everywhere.

    Forms are drawn anchors first, then language by language in code order, each from its own
    seeded stream, so adding a language leaves the earlier ones unchanged.
    """
    taken: set[str] = set()
    shared: dict[str, str] = {}
    anchor_rng = random.Random(f"{config.seed}:anchor-forms")
    neutral = SoundSystem.neutral()
    shared_ids = list(anchors) + (list(LABELS) if config.label_words == "shared" else [])
    for cid in shared_ids:
        shared[cid] = make_form(neutral, anchor_rng, concepts[cid].kind, taken)
    source_typology = None
    languages = []
    for index, code in enumerate(config.codes):
        rng = random.Random(f"{config.seed}:language:{code}")
        sounds = SoundSystem.sample(rng)
        name = make_form(sounds, rng, "name", taken)
        lexicon = {}
        for cid, concept in concepts.items():
            lexicon[cid] = shared[cid] if cid in shared else make_form(sounds, rng, concept.kind, taken)
        order = config.word_order(index)
        adjective, determiner, adposition = TYPOLOGY[order]
        typology = (order, adjective, determiner, adposition)
        grammar = (f"{order} word order, adjectives and numerals {adjective} the noun, determiner "
                   f"{determiner} the noun phrase, {adposition}s")
        if index == 0:
            source_typology = typology
            description = f"The source language. {grammar}."
        elif typology == source_typology:
            description = f"A close target: the source's grammar ({grammar}) with its own words."
        else:
            description = f"A far target: {grammar}; its own words."
        languages.append(Language(code=code, name=name, word_order=order, adjective=adjective,
                                  determiner=determiner, adposition=adposition, lexicon=lexicon,
                                  sounds=sounds.to_dict(), description=description))
    return languages


_MAX_TRIES = 10000


def _exhausted(name: str, size: int) -> ConfigError:
    return ConfigError(f"cannot draw {size} distinct meanings for {name}: the meaning space is "
                       "nearly exhausted (ask for smaller splits)")


def _draw_task_split(space: MeaningSpace, config: WorldConfig, name: str, size: int,
                     avoid: set[Meaning]) -> list[TaskItem]:
    """``size`` distinct meanings not in ``avoid`` (then added to it): labels alternate
    good/bad and extraction roles cycle, so both are balanced; the order is then shuffled."""
    rng = random.Random(f"{config.seed}:task:{name}")
    items = []
    for k in range(size):
        good = k % 2 == 0
        role = ROLES[(k // 2) % len(ROLES)]
        for _ in range(_MAX_TRIES):
            meaning = space.sample(rng, negation_share=config.negation_share, good=good,
                                   with_place=True if role == "place" else None)
            if meaning not in avoid:
                break
        else:
            raise _exhausted(name, size)
        avoid.add(meaning)
        items.append(TaskItem(meaning, role))
    rng.shuffle(items)
    return items


def _draw_meanings(space: MeaningSpace, config: WorldConfig, name: str, size: int,
                   avoid: set[Meaning], unique: bool = True) -> list[Meaning]:
    rng = random.Random(f"{config.seed}:meanings:{name}")
    out, seen = [], set()
    misses = 0
    while len(out) < size:
        meaning = space.sample(rng, negation_share=config.negation_share)
        if meaning in avoid or (unique and meaning in seen):
            misses += 1
            if misses > _MAX_TRIES + size:
                raise _exhausted(name, size)
            continue
        seen.add(meaning)
        out.append(meaning)
    if unique:
        avoid.update(seen)
    return out


def _corpus_lines(space: MeaningSpace, config: WorldConfig, language: Language, count: int,
                  held_out: set[Meaning]) -> list[str]:
    """Monolingual lines: declarative sentences, and a ``question_share`` of task prompts
    without their answers; never a held-out (dev/test) meaning."""
    rng = random.Random(f"{config.seed}:corpus:{language.code}")
    lines = []
    while len(lines) < count:
        meaning = space.sample(rng, negation_share=config.negation_share)
        if meaning in held_out:
            continue
        if rng.random() < config.question_share:
            questions = ["q:polarity", "q:agent", "q:patient"] + (["q:place"] if meaning.place else [])
            lines.append(language.question(meaning, rng.choice(questions)))
        else:
            lines.append(language.sentence(meaning))
    return lines


def generate_world(config: WorldConfig | None = None) -> World:
    """Generate the world described by ``config`` (default: :class:`WorldConfig()`), in memory.

    Held-out meanings (task dev/test, translation dev/test) are drawn first, disjoint from each
    other; every training split and the corpus avoid them. Each part draws from its own
    seeded stream, so e.g. a larger ``task_train`` leaves the test sets unchanged.
    """
    config = config or WorldConfig()
    config.validate()
    concepts = build_concepts()
    anchors = choose_anchors(concepts, config.anchor_share, config.seed)
    languages = build_languages(config, concepts, anchors)
    space = MeaningSpace.from_concepts(concepts, config.seed)

    held_out: set[Meaning] = set()
    task_items = {"test": _draw_task_split(space, config, "test", config.task_test, held_out),
                  "dev": _draw_task_split(space, config, "dev", config.task_dev, held_out)}
    translation = {"test": _draw_meanings(space, config, "translation-test",
                                          config.translation_test, held_out),
                   "dev": _draw_meanings(space, config, "translation-dev",
                                         config.translation_dev, held_out)}
    task_items["train"] = _draw_task_split(space, config, "train", config.task_train, set(held_out))
    translation["train"] = _draw_meanings(space, config, "translation-train",
                                          config.translation_train, set(held_out))
    parallel_train = _draw_meanings(space, config, "parallel-train", config.parallel_train,
                                    set(held_out))
    counts = config.corpus_counts()
    corpus = {lang.code: _corpus_lines(space, config, lang, counts[lang.code], held_out)
              for lang in languages}
    return World(config=config, concepts=concepts, anchors=anchors, languages=languages,
                 task_items=task_items, translation=translation, parallel_train=parallel_train,
                 corpus=corpus, space=space)
