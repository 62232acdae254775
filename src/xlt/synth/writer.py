"""Writing a world to disk, and the world's tokenizer.

Layout (``docs/synth.md``)::

    DIR/world.json                              every setting, languages, lexicons, file counts
    DIR/tokenizer/                              byte-level BPE (AutoTokenizer loads it)
    DIR/corpus/<lang>.txt                       monolingual lines
    DIR/tasks/<task>/{train,dev,test}.jsonl     TaskExample records, all languages
    DIR/tasks/<task>/{train,dev,test}.choice.jsonl   MultipleChoiceItem (classification tasks)
    DIR/parallel/<a>-<b>.{train,dev}.jsonl      ParallelPair, each unordered pair (a < b)
    DIR/translation/{train,dev,test}.jsonl      ParallelPair, every ordered direction

The whole directory is written into a temporary sibling and renamed into place.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from xlt.formats import write_jsonl
from xlt.io import atomic_dir
from xlt.synth.tasks import TASK_INFO, TASKS
from xlt.synth.world import SPLITS, World


def train_world_tokenizer(world: World, vocab_size: int | None = None):
    """Train the world's byte-level BPE tokenizer on :meth:`World.tokenizer_texts`.

    Specials ``<unk>``=0 ``<s>``=1 ``</s>``=2 ``<pad>``=3; every encoded text starts with
    ``<s>``. The trainer is deterministic for a given input (same texts, same merges).
    """
    from xlt.testing import train_bpe_tokenizer

    return train_bpe_tokenizer(world.tokenizer_texts(), vocab_size=vocab_size or world.config.vocab_size,
                               add_bos=True, model_max_length=512)


def write_world(world: World, out_dir: str | os.PathLike, *, overwrite: bool = False,
                tokenizer: bool = True) -> dict[str, int]:
    """Write ``world`` to ``out_dir`` atomically; return ``{relative path: records}``.

    With ``overwrite=False`` an existing ``out_dir`` is an
    :class:`~xlt.errors.OutputExistsError` raised before anything is written.
    """
    counts: dict[str, int] = {}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        tmp = Path(tmp)

        def records(rel: str, items) -> None:
            items = list(items)
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(path, items)
            counts[rel] = len(items)

        (tmp / "corpus").mkdir()
        for code in world.codes:
            lines = world.corpus[code]
            with open(tmp / "corpus" / f"{code}.txt", "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(line + "\n" for line in lines)
            counts[f"corpus/{code}.txt"] = len(lines)
        for task in TASKS:
            for split in SPLITS:
                records(f"tasks/{task}/{split}.jsonl", world.task_examples(task, split))
                if TASK_INFO[task]["kind"] == "classification":
                    records(f"tasks/{task}/{split}.choice.jsonl", world.choice_items(task, split))
        for a, b in itertools.combinations(world.codes, 2):
            for split in ("train", "dev"):
                records(f"parallel/{a}-{b}.{split}.jsonl", world.parallel_pairs(a, b, split))
        for split in SPLITS:
            records(f"translation/{split}.jsonl", world.translation_pairs(split))

        description = world.describe()
        if tokenizer:
            tok = train_world_tokenizer(world)
            tok.save_pretrained(tmp / "tokenizer")
            description["tokenizer"] = {
                "path": "tokenizer", "type": "byte-level BPE", "vocab_size": len(tok),
                "special_tokens": {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3},
                "adds_bos": True,
                "trained_on": "corpus/*.txt and the training prompts + completions of every task",
            }
        description["files"] = dict(sorted(counts.items()))
        with open(tmp / "world.json", "w", encoding="utf-8", newline="\n") as handle:
            json.dump(description, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        _default_permissions(tmp)
    return counts


def _default_permissions(root: Path) -> None:
    """Give the tree the permissions of ordinary files (the temporary directory and the
    atomically written files start private, 0700/0600), minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o777 & ~umask)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~umask)
