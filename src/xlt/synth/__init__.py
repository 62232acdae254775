"""The synthetic multilingual world: N artificial languages over one meaning space.

Each language has its own lexicon (with a knob for anchor words identical everywhere), its own
word order and function words; every language expresses the same meanings, so parallel data
and cross-lingual task splits come for free. See ``docs/synth.md``.

Example::

    from xlt.synth import WorldConfig, generate_world, write_world
    world = generate_world(WorldConfig(seed=0))
    meaning = world.translation["test"][0]
    world.render(meaning, "qaa"), world.render(meaning, "qac")   # SVO source, SOV target
    write_world(world, "world/")                                  # the files of `xlt synth`
"""

from xlt.synth.config import LABEL_WORDS, WORD_ORDERS, WorldConfig, language_codes
from xlt.synth.grammar import ROLES, Language, Meaning
from xlt.synth.tasks import TASKS, TaskItem, polarity_label
from xlt.synth.world import SPLITS, World, generate_world
from xlt.synth.writer import train_world_tokenizer, write_world

__all__ = [
    "WorldConfig", "World", "Language", "Meaning", "TaskItem", "generate_world", "write_world",
    "train_world_tokenizer", "polarity_label", "language_codes", "TASKS", "SPLITS", "ROLES",
    "WORD_ORDERS", "LABEL_WORDS",
]
