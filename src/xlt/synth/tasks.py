"""The tasks of the world: their labels and answers follow from the meaning alone.

* ``polarity`` (classification): was the event good or bad for the patient? The answer is the
  verb's polarity (help, feed, heal... are good; bite, rob, hit... are bad), flipped when the
  event is negated. No single surface cue decides it: the model has to know what each verb
  means and whether it is negated, in the language of the prompt.
* ``roles`` (extraction): a question word asks for the agent ("who did it?"), the patient
  ("to whom?") or the place ("where?"); the answer is the words of that role, copied from the
  sentence. Where the role stands differs between word orders, so the answer needs the roles,
  not a position.

Prompts are in the record's language, built from that language's own question words:
``"<sentence> <question word> ?"``; completions start with a space (``" <answer>"``), so
prompt + completion tokenise like running text.
"""

from __future__ import annotations

from dataclasses import dataclass

from xlt.formats import MultipleChoiceItem, TaskExample
from xlt.synth.grammar import ROLES, Language, Meaning
from xlt.synth.lexicon import LABELS

TASKS = ("polarity", "roles")

#: Task kind and a one-line description, for world.json and the docs.
TASK_INFO = {
    "polarity": {"kind": "classification",
                 "question": "q:polarity",
                 "description": "Was the event good or bad for the patient? Verb polarity, "
                                "flipped by negation. Labels: " + ", ".join(LABELS) + "."},
    "roles": {"kind": "extraction",
              "question": {role: f"q:{role}" for role in ROLES},
              "description": "Who did it / to whom / where? The answer is the words of the "
                             "asked role (agent, patient or place phrase) in the prompt's language."},
}


@dataclass(frozen=True)
class TaskItem:
    """One meaning of a task split with the role its extraction question asks for."""

    meaning: Meaning
    role: str


def polarity_label(meaning: Meaning, verb_polarity: dict[str, str]) -> int:
    """Label index: 0 = good for the patient, 1 = bad. ``verb_polarity`` maps verb ids to
    ``"good"``/``"bad"``."""
    good = (verb_polarity[meaning.verb] == "good") != meaning.negated
    return 0 if good else 1


def label_words(language: Language) -> list[str]:
    """The verbalisation of each label in ``language`` (anchors when labels are shared)."""
    return [language.word(label) for label in LABELS]


def polarity_example(language: Language, item: TaskItem,
                     verb_polarity: dict[str, str]) -> TaskExample:
    label = polarity_label(item.meaning, verb_polarity)
    return TaskExample(lang=language.code, prompt=language.question(item.meaning, "q:polarity"),
                       completion=" " + label_words(language)[label])


def polarity_choice(language: Language, item: TaskItem,
                    verb_polarity: dict[str, str]) -> MultipleChoiceItem:
    return MultipleChoiceItem(lang=language.code,
                              context=language.question(item.meaning, "q:polarity"),
                              choices=tuple(" " + w for w in label_words(language)),
                              label=polarity_label(item.meaning, verb_polarity))


def roles_example(language: Language, item: TaskItem) -> TaskExample:
    return TaskExample(lang=language.code,
                       prompt=language.question(item.meaning, f"q:{item.role}"),
                       completion=" " + " ".join(language.role_words(item.meaning, item.role)))
