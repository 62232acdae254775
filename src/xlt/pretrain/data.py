"""The pre-training data path: a memory-mapped token store and packed, language-tagged windows.

Text is tokenised once into a flat ``uint16`` (``uint32`` for vocabularies over 65,535 ids) binary
file next to a small JSON index; later runs map the file into memory and read windows without
copying the corpus. Each non-empty line is one document, followed by the end-of-document id
(the reference puts ``<D>`` between documents). Training windows are ``seq_len + 1`` tokens
with stride ``seq_len``, so consecutive windows share one token and every token is a target once
(the reference's Languini stream geometry).

This module is the token-cache layer of the toolkit: it is the one place below the CLI that
writes and reads files (the token store), in the way ``datasets`` keeps its Arrow cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from xlt.errors import DataError
from xlt.pretrain.cloned import LanguageMap, LanguageSchedule

STORE_VERSION = 1


class TokenStore:
    """A flat token stream, memory-mapped from ``<prefix>.bin`` with ``<prefix>.json`` beside it.

    ``tokens``: a read-only ``np.memmap`` (or an in-memory array for :meth:`from_array`) of
    ``n_tokens`` ids; ``meta``: the index (dtype, counts, sources, tokenizer fingerprint).
    """

    def __init__(self, tokens: np.ndarray, meta: dict):
        self.tokens = tokens
        self.meta = meta

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def __len__(self) -> int:
        return self.n_tokens

    @classmethod
    def from_array(cls, tokens: Sequence[int] | np.ndarray, **meta) -> "TokenStore":
        """An in-memory store (tests, benchmarks)."""
        array = np.asarray(tokens)
        return cls(array, {"n_tokens": int(array.shape[0]), "dtype": str(array.dtype), **meta})

    @classmethod
    def open(cls, prefix: str | os.PathLike) -> "TokenStore":
        prefix = Path(prefix)
        index = prefix.with_suffix(".json")
        binary = prefix.with_suffix(".bin")
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read token store index ({exc})", path=index) from None
        if meta.get("version") != STORE_VERSION:
            raise DataError(f"token store version {meta.get('version')} (expected {STORE_VERSION})", path=index)
        n_tokens = int(meta["n_tokens"])
        if not binary.is_file() or binary.stat().st_size != n_tokens * np.dtype(meta["dtype"]).itemsize:
            raise DataError("token store binary is missing or truncated", path=binary)
        tokens = np.memmap(binary, dtype=meta["dtype"], mode="r", shape=(n_tokens,)) if n_tokens else \
            np.zeros(0, dtype=meta["dtype"])
        return cls(tokens, meta)

    @classmethod
    def build(cls, prefix: str | os.PathLike, documents: Iterable[str],
              encode_batch: Callable[[list[str]], list[list[int]]], *, vocab_size: int,
              separator_id: int | None, meta: dict | None = None, chunk: int = 2048) -> "TokenStore":
        """Tokenise ``documents`` (one string each) into ``<prefix>.bin`` + ``<prefix>.json``.

        ``encode_batch`` maps a list of strings to lists of ids (no special tokens);
        ``separator_id`` is appended after every document. Written atomically (temporary
        files renamed into place).
        """
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
        binary = prefix.with_suffix(".bin")
        tmp_bin = binary.with_name(f".{binary.name}.tmp-{os.getpid()}")
        n_tokens = n_docs = 0
        try:
            with open(tmp_bin, "wb") as handle:
                batch: list[str] = []

                def flush():
                    nonlocal n_tokens, n_docs
                    if not batch:
                        return
                    pieces = []
                    for ids in encode_batch(batch):
                        if separator_id is not None:
                            ids = list(ids) + [separator_id]
                        pieces.append(np.asarray(ids, dtype=np.int64))
                    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
                    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
                        raise DataError(f"token id {int(flat.max())} outside the tokenizer's "
                                        f"{vocab_size}-token vocabulary")
                    handle.write(flat.astype(dtype).tobytes())
                    n_tokens += int(flat.size)
                    n_docs += len(batch)
                    batch.clear()

                for document in documents:
                    batch.append(document)
                    if len(batch) >= chunk:
                        flush()
                flush()
            info = {"version": STORE_VERSION, "dtype": np.dtype(dtype).name, "n_tokens": n_tokens,
                    "n_documents": n_docs, "vocab_size": vocab_size, "separator_id": separator_id,
                    **(meta or {})}
            os.replace(tmp_bin, binary)
        except BaseException:
            tmp_bin.unlink(missing_ok=True)
            raise
        index = prefix.with_suffix(".json")
        tmp_index = index.with_name(f".{index.name}.tmp-{os.getpid()}")
        tmp_index.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp_index, index)
        return cls.open(prefix)


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash identifying a tokenizer's vocabulary and rules."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def iter_lines(paths: Sequence[str | os.PathLike]) -> Iterable[str]:
    """Non-empty lines (one document each, newline stripped) of the given text files."""
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    line = line.rstrip("\n").rstrip("\r")
                    if line.strip():
                        yield line
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None


def tokenize_corpus(paths: Sequence[str | os.PathLike], tokenizer, cache_dir: str | os.PathLike, *,
                    separator_id: int | None = None) -> TokenStore:
    """Tokenise text files once into a cached :class:`TokenStore` and return it memory-mapped.

    The cache key covers the files (path, size, modification time) and the tokenizer, so an
    edited corpus or another tokenizer is re-tokenised. ``separator_id`` defaults to the
    tokenizer's EOS id. A corpus without a single token is a :class:`DataError`.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no corpus file given")
    for path in paths:
        if not path.is_file():
            raise DataError("no such corpus file", path=path)
    if separator_id is None:
        separator_id = tokenizer.eos_token_id
    key_parts = [tokenizer_fingerprint(tokenizer), str(separator_id)]
    for path in paths:
        stat = path.stat()
        key_parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    key = hashlib.sha256("|".join(key_parts).encode("utf-8")).hexdigest()[:16]
    prefix = Path(cache_dir) / f"{paths[0].stem}-{key}"
    if prefix.with_suffix(".json").is_file() and prefix.with_suffix(".bin").is_file():
        store = TokenStore.open(prefix)
    else:
        def encode_batch(texts: list[str]) -> list[list[int]]:
            return tokenizer(texts, add_special_tokens=False)["input_ids"]

        store = TokenStore.build(prefix, iter_lines(paths), encode_batch, vocab_size=len(tokenizer),
                                 separator_id=separator_id,
                                 meta={"sources": [str(p) for p in paths],
                                       "tokenizer": tokenizer_fingerprint(tokenizer)})
    if store.n_tokens == 0:
        raise DataError("corpus has no tokens (every line is empty)", path=", ".join(map(str, paths)))
    return store


# --------------------------------------------------------------------------------------------
# Windows and language assignment


def num_windows(n_tokens: int, seq_len: int) -> int:
    """Full training windows of ``seq_len + 1`` tokens at stride ``seq_len`` in a stream."""
    return max(0, (n_tokens - 1) // seq_len)


def window(tokens: np.ndarray, index: int, seq_len: int) -> np.ndarray:
    """Window ``index``: stream tokens ``[index * seq_len, index * seq_len + seq_len]``."""
    start = index * seq_len
    return tokens[start:start + seq_len + 1]


class LanguageAssignment:
    """One language per training sequence, drawn once from a seeded ``torch.Generator``.

    Sequence ``k`` (in consumption order) belongs to optimizer step ``k // global_batch``, whose
    probability ``p`` comes from ``schedule``. Cloned runs: draw ``randint(1, K + 1)`` for every
    sequence, then ``rand``; clone iff ``u < p``. Bilingual runs: ``rand`` only; L2 iff
    ``u <= p`` (with ``seed = 0`` this is exactly the reference's private-generator pattern,
    since draws do not depend on step boundaries). ``languages``: ``(total,)`` int64.
    """

    def __init__(self, language_map: LanguageMap, schedule: LanguageSchedule, global_batch: int,
                 *, seed: int = 0):
        import torch

        self.global_batch = global_batch
        self.schedule = schedule
        total = schedule.total_steps * global_batch
        generator = torch.Generator().manual_seed(seed)
        steps = torch.arange(total) // global_batch
        stage = torch.clamp(steps // schedule.stage_steps, max=len(schedule.values) - 1)
        p = torch.tensor(schedule.values, dtype=torch.float64)[stage]
        if language_map.kind == "cloned":
            clones = torch.randint(1, language_map.n_clones + 1, (total,), generator=generator)
            u = torch.rand(total, generator=generator, dtype=torch.float64)
            self.languages = torch.where(u < p, clones, torch.zeros_like(clones))
        elif language_map.kind == "bilingual":
            u = torch.rand(total, generator=generator)
            self.languages = (u <= p.to(u.dtype)).to(torch.long)
        else:
            self.languages = torch.zeros(total, dtype=torch.long)
        self.n_languages = language_map.n_languages

    def counts(self, steps: int | None = None) -> list[int]:
        """Sequences per language over the first ``steps`` optimizer steps (all by default)."""
        import torch

        end = len(self.languages) if steps is None else steps * self.global_batch
        return torch.bincount(self.languages[:end], minlength=self.n_languages).tolist()


class PretrainDataset:
    """Map-style dataset of packed, language-tagged training windows (a ``torch`` Dataset).

    Item ``k`` is the ``k``-th sequence in training order (read it with a sequential sampler):
    its language comes from :class:`LanguageAssignment`, its window from the language's stream
    (cloned runs share one stream, partitioned at random between the languages; bilingual runs
    advance one cursor per language), in a seeded per-epoch permutation of windows when
    ``shuffle``. Returns ``{"input_ids": (seq_len,), "labels": (seq_len,), "shift_labels":
    (seq_len,)}`` in model vocabulary ids; ``shift_labels`` are the next tokens, so all
    ``seq_len`` positions are scored (``labels`` only switches the loss on).
    """

    def __init__(self, stores: Sequence[TokenStore], language_map: LanguageMap,
                 assignment: LanguageAssignment, seq_len: int, *, seed: int = 0, shuffle: bool = True):
        import torch

        expected = 2 if language_map.kind == "bilingual" else 1
        if len(stores) != expected:
            raise DataError(f"{language_map.kind} pre-training needs {expected} token stream(s), got {len(stores)}")
        self.stores = list(stores)
        self.language_map = language_map
        self.assignment = assignment
        self.seq_len = seq_len
        self.seed = seed
        self.shuffle = shuffle
        self.n_windows = [num_windows(s.n_tokens, seq_len) for s in self.stores]
        for store, count in zip(self.stores, self.n_windows):
            if count == 0:
                sources = ", ".join(store.meta.get("sources", ["<in memory>"]))
                raise DataError(f"corpus has {store.n_tokens} tokens, fewer than one training window "
                                f"of {seq_len + 1}", path=sources)
        languages = assignment.languages
        if language_map.kind == "bilingual":
            stream = languages.clone()
            position = torch.zeros_like(languages)
            for s in range(2):
                where = (stream == s).nonzero().squeeze(1)
                position[where] = torch.arange(len(where))
        else:
            stream = torch.zeros_like(languages)
            position = torch.arange(len(languages))
        self._stream = stream.tolist()
        self._position = position.tolist()
        self._languages = languages.tolist()
        self._tables = [self._lookup(i) for i in range(language_map.n_languages)]
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _lookup(self, language: int):
        import torch

        source = len(self.language_map.l2_id_map) if self.language_map.tokenizer_index(language) == 1 \
            else self.language_map.base_vocab_size
        return self.language_map.map_ids(torch.arange(source), language)

    def _window_index(self, stream: int, position: int) -> int:
        count = self.n_windows[stream]
        epoch, offset = divmod(position, count)
        if not self.shuffle:
            return offset
        key = (stream, epoch)
        perm = self._perms.get(key)
        if perm is None:
            rng = np.random.default_rng([self.seed, stream, epoch])
            perm = rng.permutation(count)
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[key] = perm
        return int(perm[offset])

    def __len__(self) -> int:
        return len(self._languages)

    def language_of(self, index: int) -> int:
        return self._languages[index]

    def __getitem__(self, index: int) -> dict:
        import torch

        stream = self._stream[index]
        row = window(self.stores[stream].tokens, self._window_index(stream, self._position[index]),
                     self.seq_len)
        ids = self._tables[self._languages[index]][torch.from_numpy(row.astype(np.int64))]
        return {"input_ids": ids[:-1], "labels": ids[:-1], "shift_labels": ids[1:]}


def collate_windows(items: list[dict]) -> dict:
    """Stack equal-length windows into ``(batch, seq_len)`` tensors."""
    import torch

    return {key: torch.stack([item[key] for item in items]) for key in items[0]}
