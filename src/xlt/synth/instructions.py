"""Instruction data of a world in every language, laid out as Bactrian-X (``xlt data afp`` input).

The world has no natural language to phrase instructions in, so each instruction is built from
the language's own words, the same meaning in every language:

* ``roles``: the world's extraction question on a task *training* meaning
  (``"<sentence> <question word> ?"``, the question word asking for the agent, the patient or
  the place); the output is the words of that role in the same language;
* ``repeat``: a sentence of a parallel *training* meaning; the output is the same sentence.
  Answered in another language (AFP's cross-lingual samples) it is a translation.

Only training meanings are used, so no instruction shares a meaning with a task dev or test
item (the world draws held-out meanings first and keeps every training split away from them).
The polarity question word and the label words never occur: the polarity task is what the
instruction-tuned models are then scored on.

Files: ``DIR/<code>.json``, one JSON array per language of ``{"instruction", "input", "id",
"output"}`` (``input`` always empty), the same ids in the same order in every language
(``roles-00000``..., ``repeat-00000``...): the id names the meaning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xlt.errors import ConfigError

#: The instruction kinds, in file order.
INSTRUCTION_KINDS = ("roles", "repeat")


def instruction_records(world, *, kinds: tuple[str, ...] = INSTRUCTION_KINDS,
                        limit: int | None = None) -> dict[str, list[dict]]:
    """``{code: [{"instruction", "input", "id", "output"}, ...]}`` for every language of ``world``.

    ``limit``: at most this many meanings per kind (the first ones of the split). Record ``k`` of
    every language expresses the same meaning (the same id).
    """
    for kind in kinds:
        if kind not in INSTRUCTION_KINDS:
            raise ConfigError(f"unknown instruction kind {kind!r} (expected one of {', '.join(INSTRUCTION_KINDS)})")
    if limit is not None and limit < 1:
        raise ConfigError(f"instruction limit must be >= 1, got {limit}")
    out: dict[str, list[dict]] = {code: [] for code in world.codes}
    for kind in kinds:
        if kind == "roles":
            items = world.task_items["train"][:limit]
            for lang in world.languages:
                out[lang.code] += [{"instruction": lang.question(it.meaning, f"q:{it.role}"), "input": "",
                                    "id": "roles-%05d" % k, "output": " ".join(lang.role_words(it.meaning, it.role))}
                                   for k, it in enumerate(items)]
        else:
            meanings = world.parallel_train[:limit]
            for lang in world.languages:
                out[lang.code] += [{"instruction": lang.sentence(m), "input": "", "id": "repeat-%05d" % k,
                                    "output": lang.sentence(m)} for k, m in enumerate(meanings)]
    return out


def write_instructions(world, out_dir: str | os.PathLike, *, kinds: tuple[str, ...] = INSTRUCTION_KINDS,
                       limit: int | None = None, overwrite: bool = False) -> dict[str, int]:
    """Write :func:`instruction_records` as ``out_dir/<code>.json`` (atomically, as one
    directory); return ``{file name: records}``. An existing ``out_dir`` without ``overwrite``
    is an :class:`~xlt.errors.OutputExistsError` raised before anything is written."""
    from xlt.io import atomic_dir
    from xlt.synth.writer import _default_permissions

    records = instruction_records(world, kinds=kinds, limit=limit)
    counts = {}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for code, rows in records.items():
            with open(Path(tmp) / f"{code}.json", "w", encoding="utf-8", newline="\n") as handle:
                json.dump(rows, handle, ensure_ascii=False, indent=0)
                handle.write("\n")
            counts[f"{code}.json"] = len(rows)
        _default_permissions(Path(tmp))
    return counts
