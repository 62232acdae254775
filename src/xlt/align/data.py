"""Task examples and parallel pairs -> tokenised training rows -> padded (or packed) batches.

Inputs are plain Python records (the CLI reads the files):

* task examples: ``(prompt, completion)`` texts, from toolkit ``TaskExample`` records, from
  mid-align's ``{prefix, text}`` fields, or from AFP's ``{clm_text, clm_prompt_len}`` fields;
* pairs: ``(anchor, candidate)`` sentences, from toolkit ``ParallelPair`` records (which side is
  the anchor is a setting), mid-align's ``text_parallel_0 / text_parallel_1`` or AFP's
  ``sent0 / sent1`` (side 0 is the anchor, as in both papers).

Tokenisation follows the references: a task text is ``prompt + completion`` tokenised as one
string with the tokenizer's default special tokens; the prompt's tokens (the longest common
prefix of the tokenisations of ``prompt + completion`` and of ``prompt``, the AFP reference) are
masked out of the labels. A pair side is the raw sentence with the tokenizer's default special
tokens (BOS for Llama-3, ``</s>`` for XGLM, nothing for Qwen), no template, no EOS.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from xlt.errors import DataError

IGNORE_INDEX = -100
PAIR_KEYS = ("anchor_input_ids", "anchor_attention_mask", "candidate_input_ids", "candidate_attention_mask")
TASK_KEYS = ("input_ids", "attention_mask", "labels")

#: Fields that identify the reference implementations' own file formats.
REFERENCE_FORMATS = {
    "mid-align": ("text_parallel_0", "text_parallel_1", "prefix", "text"),
    "afp": ("sent0", "sent1", "clm_text", "clm_prompt_len"),
}


@dataclass(frozen=True)
class TaskText:
    """A task example as text: the model learns ``completion`` after ``prompt``."""

    prompt: str
    completion: str
    append_eos: bool = True


@dataclass(frozen=True)
class PairText:
    """A sentence (the InfoNCE anchor) and its translation (the matching candidate)."""

    anchor: str
    candidate: str


def detect_format(row: Any) -> str:
    """``"mid-align"``, ``"afp"`` or ``"xlt"`` from the keys of a raw row."""
    if isinstance(row, dict):
        for name, keys in REFERENCE_FORMATS.items():
            if keys[0] in row and keys[1] in row:
                return name
    return "xlt"


def _text(row: dict, key: str, where: dict, *, allow_empty: bool = False) -> str:
    value = row.get(key)
    if value is None:
        raise DataError("missing", field=key, **where)
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", field=key, **where)
    if not allow_empty and not value.strip():
        raise DataError("empty text (a parallel pair needs both sides)" if "parallel" in key or key.startswith("sent")
                        else "empty text", field=key, **where)
    return value


def reference_row(row: Any, fmt: str, *, path=None, line=None, item=None) -> tuple[TaskText | None, PairText]:
    """One row of a reference file -> (task example or None, pair), validated.

    ``mid-align``: ``{text_parallel_0, text_parallel_1, prefix, text}`` (JSON Lines; the task part
    may be absent for an alignment-only file). ``afp``: ``{sent0, sent1, clm_text, clm_prompt_len}``
    (``clm_prompt_len`` counts characters of ``clm_text``; it may equal ``len(clm_text)``: an
    empty response, whose only supervised tokens are the BOS / EOS tokens under packing).
    """
    where = dict(path=path, line=line, item=item)
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}", **where)
    if fmt == "mid-align":
        pair = PairText(_text(row, "text_parallel_0", where), _text(row, "text_parallel_1", where))
        if "prefix" not in row and "text" not in row:
            return None, pair
        prefix = _text(row, "prefix", where, allow_empty=True)
        text = _text(row, "text", where)
        return TaskText(prefix, text, append_eos=False), pair
    if fmt == "afp":
        pair = PairText(_text(row, "sent0", where), _text(row, "sent1", where))
        if "clm_text" not in row:
            return None, pair
        text = _text(row, "clm_text", where)
        length = row.get("clm_prompt_len")
        # length == len(text) is an empty response: both reference generators write such rows when
        # an instruction's output is empty, and the reference trains on them (special tokens only)
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= len(text):
            raise DataError(f"expected an integer in 0..{len(text)} (characters of clm_text before "
                            f"the response), got {length!r}", field="clm_prompt_len", **where)
        return TaskText(text[:length], text[length:], append_eos=False), pair
    raise ValueError(f"unknown reference format {fmt!r}")


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists (the AFP reference, C3)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_task(tokenizer, examples: Sequence[TaskText], max_length: int, *,
                  completion_only_loss: bool = True) -> list[dict]:
    """``[{"input_ids", "labels", "prompt_length"}]``: prompt + completion tokenised as one string.

    ``completion_only_loss`` (TRL's name): the prompt's tokens are masked (-100) in the labels;
    ``False``: every token carries the loss, as for plain causal LM (``prompt_length`` 0, so
    packing keeps the prompt's labels too). AdaMergeX's reference-task adapters train this way.
    """
    if not examples:
        return []
    full = tokenizer([e.prompt + e.completion for e in examples], add_special_tokens=True)["input_ids"]
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    rows = []
    for example, ids, prompt_ids in zip(examples, full, prompts):
        p = common_prefix_length(ids, prompt_ids) if example.prompt and completion_only_loss else 0
        ids = list(ids)
        if example.append_eos and eos is not None and (not ids or ids[-1] != eos):
            ids = ids[:max_length - 1] + [eos]
        else:
            ids = ids[:max_length]
        labels = [IGNORE_INDEX] * min(p, len(ids)) + ids[p:]
        rows.append({"input_ids": ids, "labels": labels, "prompt_length": p})
    return rows


def tokenize_pairs(tokenizer, pairs: Sequence[PairText], max_length: int) -> list[dict]:
    """``[{"anchor_input_ids", "candidate_input_ids"}]``: raw sentences, default special tokens."""
    if not pairs:
        return []
    kw = dict(add_special_tokens=True, truncation=True, max_length=max_length)
    anchors = tokenizer([p.anchor for p in pairs], **kw)["input_ids"]
    candidates = tokenizer([p.candidate for p in pairs], **kw)["input_ids"]
    return [{"anchor_input_ids": list(a), "candidate_input_ids": list(c)} for a, c in zip(anchors, candidates)]


class AlignDataset(torch.utils.data.Dataset):
    """Rows that carry a task example, a pair, or both.

    With both kinds, row ``i`` holds task example ``i`` and pair ``i`` (the reference's combined
    rows; the mid-align reference). When the two lists differ in length, the shorter one is cycled
    through seeded permutations up to the length of the longer one, so every example and every
    pair is in at least one row per epoch. A row feeds both objectives in the ``joint`` schedule
    but only its micro-batch's objective in the ``alternate`` one (about half of each list per
    epoch; :class:`StreamsDataset` uses all of both). ``pairs`` keeps the distinct tokenised
    pairs (used for retrieval accuracy).
    """

    def __init__(self, tasks: list[dict], pairs: list[dict], *, seed: int = 0, cycle: bool = True):
        self.tasks, self.pairs = tasks, pairs
        n = max(len(tasks), len(pairs))
        if n == 0:
            raise DataError("no training rows: neither task examples nor parallel pairs")
        if cycle:
            rng = random.Random(seed)
            self.task_index = _cycled(len(tasks), n, rng)
            self.pair_index = _cycled(len(pairs), n, rng)
        else:  # evaluation: each example and pair once; rows past the shorter list carry one kind
            self.task_index = list(range(len(tasks))) + [None] * (n - len(tasks)) if tasks else None
            self.pair_index = list(range(len(pairs))) + [None] * (n - len(pairs)) if pairs else None
        self.length = n

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        row: dict = {}
        if self.task_index is not None and self.task_index[i] is not None:
            row.update(self.tasks[self.task_index[i]])
        if self.pair_index is not None and self.pair_index[i] is not None:
            row.update(self.pairs[self.pair_index[i]])
        return row


class StreamsDataset(torch.utils.data.Dataset):
    """Task examples and pairs as two streams, for the alternate schedule with separate streams.

    Index ``i < len(tasks)`` is a row holding task example ``i`` only; index ``len(tasks) + j`` a
    row holding pair ``j`` only. :class:`AlternatingStreamsSampler` orders them into task and
    alignment micro-batches.
    """

    def __init__(self, tasks: list[dict], pairs: list[dict]):
        if not tasks or not pairs:
            raise DataError("separate alternate streams need both task examples and parallel pairs")
        self.tasks, self.pairs = tasks, pairs

    def __len__(self) -> int:
        return len(self.tasks) + len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        return dict(self.tasks[i]) if i < len(self.tasks) else dict(self.pairs[i - len(self.tasks)])


class AlternatingStreamsSampler(torch.utils.data.Sampler):
    """Indices of a :class:`StreamsDataset` in blocks of ``block`` = batch size x processes:
    a block of task examples, a block of pairs, a block of task examples, ...

    Each epoch shuffles both streams (a generator seeded with ``(seed, epoch)``) and cycles the
    shorter one through fresh permutations up to ``M * block`` items, ``M = ceil(max(n_tasks,
    n_pairs) / block)``; a stream's last block is completed the same way. So every task example
    and every pair is used at least once per epoch, an epoch has ``2 M`` blocks, and, since
    ``accelerate`` deals the batches of a block out to the processes one each, micro-batch ``k``
    of every process holds the same kind (task for even ``k``).
    """

    def __init__(self, n_tasks: int, n_pairs: int, *, block: int, seed: int = 0):
        if n_tasks < 1 or n_pairs < 1 or block < 1:
            raise DataError(f"separate alternate streams need task examples, pairs and a block >= 1, "
                            f"got {n_tasks}, {n_pairs} and {block}")
        self.n_tasks, self.n_pairs, self.block = n_tasks, n_pairs, block
        self.seed = int(seed)
        self.blocks = -(-max(n_tasks, n_pairs) // block)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (0-based, as the Trainer counts)."""
        self.epoch = int(epoch)

    def indices(self, epoch: int | None = None) -> list[int]:
        """The dataset indices of ``epoch`` (default: the current one), in training order."""
        epoch = self.epoch if epoch is None else int(epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        length = self.blocks * self.block
        streams = []
        for count, offset in ((self.n_tasks, 0), (self.n_pairs, self.n_tasks)):
            order: list[int] = []
            while len(order) < length:
                order.extend(int(i) + offset for i in torch.randperm(count, generator=generator))
            streams.append(order[:length])
        out: list[int] = []
        for q in range(self.blocks):
            for stream in streams:
                out.extend(stream[q * self.block:(q + 1) * self.block])
        return out

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return 2 * self.blocks * self.block


def _cycled(count: int, length: int, rng: random.Random) -> list[int] | None:
    if count == 0:
        return None
    if count == length:
        return list(range(count))
    out: list[int] = []
    while len(out) < length:
        order = list(range(count))
        rng.shuffle(order)
        out.extend(order)
    return out[:length]


def build_dataset(tokenizer, tasks: Iterable[TaskText], pairs: Iterable[PairText], *, max_length: int,
                  seed: int = 0, cycle: bool = True, completion_only_loss: bool = True,
                  streams: bool = False) -> AlignDataset | StreamsDataset:
    """Tokenise ``tasks`` and ``pairs`` and zip them into an :class:`AlignDataset`.

    ``cycle=False`` (evaluation) uses every example and pair exactly once instead of cycling the
    shorter list (repeated pairs in a batch would be false negatives). ``completion_only_loss``:
    see :func:`tokenize_task`. ``streams=True`` keeps them apart in a :class:`StreamsDataset`
    (the alternate schedule's separate streams).
    """
    task_rows = tokenize_task(tokenizer, list(tasks), max_length, completion_only_loss=completion_only_loss)
    if streams:
        return StreamsDataset(task_rows, tokenize_pairs(tokenizer, list(pairs), max_length))
    return AlignDataset(task_rows,
                        tokenize_pairs(tokenizer, list(pairs), max_length), seed=seed, cycle=cycle)


def _pad(seqs: list[list[int]], value: int, multiple: int | None) -> torch.Tensor:
    length = max(len(s) for s in seqs)
    if multiple and multiple > 1:
        length = -(-length // multiple) * multiple
    return torch.tensor([list(s) + [value] * (length - len(s)) for s in seqs], dtype=torch.long)


def pack_documents(docs: Sequence[Sequence[int]], prompt_lengths: Sequence[int], block_size: int,
                   *, bos_token_id: int | None, eos_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """AFP's packing (the AFP reference, C4): ``(input_ids, labels)`` of shape ``(rows, block)``.

    The documents are concatenated in order. Labels are the tokens at positions ``>= p`` of each
    document and every BOS / EOS token, else -100. A total of at least ``block_size`` tokens is cut
    into ``total // block_size`` rows and the remainder is dropped; a shorter total stays one short
    row. A row with no label at positions >= 1 gets its last label restored (the reference's
    guard against an all-ignored row).
    """
    tokens: list[int] = []
    labels: list[int] = []
    specials = {t for t in (bos_token_id, eos_token_id) if t is not None}
    for doc, p in zip(docs, prompt_lengths):
        for k, token in enumerate(doc):
            tokens.append(token)
            labels.append(token if k >= p or token in specials else IGNORE_INDEX)
    total = len(tokens)
    if total >= block_size:
        rows = total // block_size
        tokens, labels = tokens[:rows * block_size], labels[:rows * block_size]
        ids = torch.tensor(tokens, dtype=torch.long).view(rows, block_size)
        lab = torch.tensor(labels, dtype=torch.long).view(rows, block_size)
    else:
        ids = torch.tensor([tokens], dtype=torch.long)
        lab = torch.tensor([labels], dtype=torch.long)
    for r in range(lab.shape[0]):
        if not bool((lab[r, 1:] != IGNORE_INDEX).any()):
            lab[r, -1] = ids[r, -1]
    return ids, lab


class AlignCollator:
    """Pad task fields and the two pair sides, each to its own batch maximum (right padding,
    rounded up to ``pad_to_multiple_of``; mid-align.md C11), or pack task examples (AFP)."""

    def __init__(self, pad_token_id: int, *, pad_to_multiple_of: int | None = 8, packing: bool = False,
                 block_size: int = 512, bos_token_id: int | None = None, eos_token_id: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.packing = packing
        self.block_size = block_size
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        all_rows = rows
        rows = [r for r in all_rows if "input_ids" in r]  # evaluation rows may carry one kind only
        if rows:
            if self.packing:
                docs = [r["input_ids"] for r in rows]
                prompts = [r.get("prompt_length", 0) for r in rows]
                ids, labels = pack_documents(docs, prompts, self.block_size, bos_token_id=self.bos_token_id,
                                             eos_token_id=self.eos_token_id)
                batch["input_ids"], batch["labels"] = ids, labels
            else:
                ids = [r["input_ids"] for r in rows]
                batch["input_ids"] = _pad(ids, self.pad_token_id, self.pad_to_multiple_of)
                batch["attention_mask"] = _pad([[1] * len(s) for s in ids], 0, self.pad_to_multiple_of)
                batch["labels"] = _pad([r["labels"] for r in rows], IGNORE_INDEX, self.pad_to_multiple_of)
        rows = [r for r in all_rows if "anchor_input_ids" in r]
        for side in ("anchor", "candidate"):
            key = f"{side}_input_ids"
            if rows:
                seqs = [r[key] for r in rows]
                batch[key] = _pad(seqs, self.pad_token_id, self.pad_to_multiple_of)
                batch[f"{side}_attention_mask"] = _pad([[1] * len(s) for s in seqs], 0, self.pad_to_multiple_of)
        return batch
