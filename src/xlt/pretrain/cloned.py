"""Cloned languages, a real second language, language schedules and the reference LR schedule.

A *cloned* language is the original token stream with (part of) the vocabulary shifted into its
own id block: token ``t`` of language ``l`` becomes ``t + l * V`` when ``t`` is cloned and not a
shared id (the paper, arXiv 2404.07982, §1.2 of the method description). The reference shares
its SentencePiece pad id 0 only; ``xlt pretrain`` shares the tokenizer's special ids (with Hugging
Face tokenizers id 0 is often a real token, and a special token belongs to no language). Which
ids are cloned is chosen by Python's ``random.Random(0)`` shuffle of ``range(V)``, not by
frequency; the model vocabulary is ``V * (n_clones + 1)`` for any ``frac_clone``.

A *real* second language (EN-FR in the paper) has its own tokenizer; its ids are merged into the
first language's vocabulary either *disjoint* (every L2 id shifted by ``V1``) or *anchored*
(an L2 piece that exists in the L1 vocabulary reuses the L1 id, the others get new ids ``V1,
V1 + 1, ...`` in increasing L2-id order).

Languages are assigned per sequence; the probability of the non-original language(s) may follow
a schedule string ``"v1_v2_..._vK"`` of K equal stages over the optimizer steps.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from xlt.errors import ConfigError

#: Seed of the stdlib shuffle that picks the cloned ids (fixed in the reference, independent of
#: the run seed).
CLONE_SHUFFLE_SEED = 0

MERGE_MODES = ("disjoint", "anchored")


# --------------------------------------------------------------------------------------------
# Clone masks and id maps


def _check_fraction(frac_clone: float) -> None:
    if isinstance(frac_clone, bool) or not isinstance(frac_clone, (int, float)) \
            or not math.isfinite(frac_clone) or not 0.0 <= frac_clone <= 1.0:
        raise ConfigError(f"frac_clone must be a fraction in [0, 1], got {frac_clone}")


def clone_mask(vocab_size: int, frac_clone: float = 1.0):
    """Boolean mask ``(vocab_size,)`` of the cloned token ids.

    ``ids = list(range(vocab_size))`` is shuffled with ``random.Random(0).shuffle`` and the first
    ``int(frac_clone * vocab_size)`` ids are cloned, exactly as the reference implementation does
    (special ids take part like any other; shared ids are exempt later, in :func:`to_language`).
    Raises :class:`ConfigError` when no id would be cloned.
    """
    import torch

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ConfigError(f"vocab_size must be a positive integer, got {vocab_size}")
    _check_fraction(frac_clone)
    n_cloned = int(frac_clone * vocab_size)
    if n_cloned == 0:
        raise ConfigError(f"frac_clone={frac_clone} clones no token of a {vocab_size}-token "
                          f"vocabulary (int(frac_clone * vocab_size) = 0)")
    ids = list(range(vocab_size))
    random.Random(CLONE_SHUFFLE_SEED).shuffle(ids)
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[torch.tensor(ids[:n_cloned], dtype=torch.long)] = True
    return mask


def mask_sha256(mask) -> str:
    """sha256 of the mask as uint8 bytes in index order (the fingerprint the paper's code gives)."""
    import torch

    return hashlib.sha256(mask.to(dtype=torch.uint8).numpy().tobytes()).hexdigest()


def to_language(ids, language: int, vocab_size: int, mask=None, *, shared_ids: Sequence[int] = (0,)):
    """Map original token ids into language ``language`` (0 = the original, 1..K = clones).

    ``ids``: an integer tensor of any shape with values in ``[0, vocab_size)``. Token ``t``
    becomes ``t + language * vocab_size`` iff ``t`` is not in ``shared_ids`` and ``mask[t]``;
    ``mask=None`` clones every id (``frac_clone = 1``). ``shared_ids`` defaults to the
    reference's SentencePiece pad id 0. Returns a new ``int64`` tensor of the same shape.
    """
    import torch

    ids = torch.as_tensor(ids)
    if ids.dtype == torch.bool or ids.is_floating_point():
        raise ConfigError(f"token ids must be integers, got {ids.dtype}")
    ids = ids.to(torch.long)
    if isinstance(language, bool) or not isinstance(language, int) or language < 0:
        raise ConfigError(f"language must be an integer >= 0, got {language}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ConfigError(f"token ids must lie in [0, {vocab_size}) before mapping into a language, "
                          f"got range [{int(ids.min())}, {int(ids.max())}]")
    if language == 0:
        return ids.clone()
    shift = ~torch.isin(ids, torch.as_tensor(list(shared_ids), dtype=torch.long))
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.numel() != vocab_size:
            raise ConfigError(f"clone mask has {mask.numel()} entries, expected {vocab_size}")
        shift &= mask[ids]
    return ids + shift.to(torch.long) * (language * vocab_size)


def from_language(ids, vocab_size: int):
    """Map ids of any cloned language back to the original ids (``id mod vocab_size``)."""
    import torch

    return torch.as_tensor(ids).to(torch.long) % vocab_size


def merge_vocabularies(l1_vocab: Mapping[str, int], l2_vocab: Mapping[str, int], mode: str,
                       *, shared_ids: Sequence[int] = (0,)) -> tuple[list[int], int]:
    """Map every id of a second tokenizer into one combined vocabulary.

    ``l1_vocab`` / ``l2_vocab``: piece -> id of each tokenizer. L1 ids are never remapped.
    ``mode`` ``"disjoint"``: L2 id ``i`` -> ``i + V1``; ``"anchored"``: an L2 piece present in
    the L1 vocabulary reuses its L1 id, the others get ``V1, V1 + 1, ...`` in increasing L2-id
    order. ``shared_ids`` (the pad id 0 in the reference; the second tokenizer's special ids in
    ``xlt pretrain``) map to the L1 id of the same piece in both modes (the reference's pad 0 -> 0);
    a shared piece the L1 vocabulary lacks is merged like any other.
    Returns ``(id_map, combined_size)`` with ``id_map[i]`` the combined id of L2 id ``i``.
    """
    if mode not in MERGE_MODES:
        raise ConfigError(f"merge_vocab must be one of {', '.join(MERGE_MODES)}, got {mode!r}")
    v1 = max(l1_vocab.values()) + 1 if l1_vocab else 0
    v2 = max(l2_vocab.values()) + 1 if l2_vocab else 0
    pieces = [None] * v2
    for piece, index in l2_vocab.items():
        pieces[index] = piece
    shared = set(int(i) for i in shared_ids)
    id_map: list[int] = []
    next_id = v1
    for index in range(v2):
        if index in shared and pieces[index] is not None and pieces[index] in l1_vocab:
            id_map.append(int(l1_vocab[pieces[index]]))
        elif mode == "disjoint":
            id_map.append(index + v1)
        elif pieces[index] is not None and pieces[index] in l1_vocab:
            id_map.append(int(l1_vocab[pieces[index]]))
        else:
            id_map.append(next_id)
            next_id += 1
    size = v1 + v2 if mode == "disjoint" else next_id
    return id_map, size


# --------------------------------------------------------------------------------------------
# Language sampling


def sample_clone_languages(batch_size: int, n_clones: int, p_clone: float, *, generator=None,
                           seq_len: int | None = None, micro_batches: int = 1):
    """The reference implementation's per-batch language draw, in its exact draw order.

    Draws ``randint(1, K + 1, (batch, 1))``, then ``rand(batch, 1)`` (clone iff ``< p_clone``),
    then the unused ``rand(micro, batch / micro, seq_len + 1)`` the reference leaves in its code
    (only when ``seq_len`` is given). Returns ``(batch,)`` language indices (0 = original).
    Used to check conformance; training uses :class:`LanguageAssignment`.
    """
    import torch

    clones = torch.randint(1, n_clones + 1, (batch_size, 1), generator=generator)
    u = torch.rand(batch_size, 1, generator=generator)
    if seq_len is not None:
        torch.rand(micro_batches, batch_size // micro_batches, seq_len + 1, generator=generator)
    return torch.where(u < p_clone, clones, torch.zeros_like(clones)).squeeze(1)


# --------------------------------------------------------------------------------------------
# Schedules


def parse_schedule(spec: str | float) -> list[float]:
    """``"0.1_0.9_0.5_0.5"`` -> ``[0.1, 0.9, 0.5, 0.5]``; each value a probability."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        values = [float(spec)]
    else:
        text = str(spec).strip()
        try:
            values = [float(part) for part in text.split("_")]
        except ValueError:
            raise ConfigError(f"language_schedule {spec!r} does not parse: expected probabilities "
                              "joined by '_', e.g. 0.1_0.9_0.5_0.5") from None
    for value in values:
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"language_schedule {spec!r}: every value must be a probability in "
                              f"[0, 1], got {value}")
    return values


class LanguageSchedule:
    """Probability of the non-original language(s) per optimizer step.

    ``spec``: ``"v1_v2_..._vK"`` (or a single float); ``total_steps`` N. K equal stages of
    ``E = N // K`` steps, the last stage taking the remainder: the batch at 0-indexed step ``t``
    uses ``v[min(t // E, K - 1)]`` (reference ``LanguageScheduler``). ``initial``: the
    ``p_clone`` / ``p_l2`` given beside the schedule; it must equal ``v1``.
    """

    def __init__(self, spec: str | float, total_steps: int, *, initial: float | None = None):
        self.spec = spec
        self.values = parse_schedule(spec)
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(f"total_steps must be a positive integer, got {total_steps}")
        self.total_steps = total_steps
        if initial is not None and float(initial) != self.values[0]:
            raise ConfigError(f"language_schedule {spec!r} starts at {self.values[0]} but the given "
                              f"probability is {initial}; they must be equal")
        self.stage_steps = total_steps // len(self.values)
        if self.stage_steps == 0:
            raise ConfigError(f"language_schedule {spec!r} has {len(self.values)} stages but training "
                              f"has only {total_steps} steps")

    def p_at(self, step: int) -> float:
        """Probability used by the batch at 0-indexed optimizer step ``step``."""
        return self.values[min(step // self.stage_steps, len(self.values) - 1)]

    def stages(self) -> list[tuple[int, int, float]]:
        """``[(first_step, end_step_exclusive, p), ...]``, one per stage."""
        k = len(self.values)
        return [(i * self.stage_steps, (i + 1) * self.stage_steps if i < k - 1 else self.total_steps,
                 v) for i, v in enumerate(self.values)]

    def mean(self) -> float:
        """Step-weighted mean probability over the whole run."""
        return sum((end - start) * v for start, end, v in self.stages()) / self.total_steps

    def __repr__(self) -> str:
        return f"LanguageSchedule({self.spec!r}, total_steps={self.total_steps})"


# --------------------------------------------------------------------------------------------
# Learning rate


def reference_lr(step: int, *, max_lr: float = 6e-4, min_lr: float = 6e-6, warmup_steps: int = 200,
                 decay_steps: int = 18265) -> float:
    """The reference learning rate of 0-indexed update ``step``.

    ``k = step + 1``; ``lr = min(k, W) / W * (min_lr + (1 + cos(pi * min(k, N) / N)) / 2 *
    (max_lr - min_lr))``: the linear warm-up *multiplies* the already-decaying cosine, so the
    first update uses ``max_lr / W`` (3e-6 with the paper's settings).
    """
    k = step + 1
    warm = min(k, warmup_steps) / warmup_steps if warmup_steps > 0 else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(k, decay_steps) / decay_steps))
    return warm * (min_lr + cosine * (max_lr - min_lr))


# --------------------------------------------------------------------------------------------
# The languages of one pre-training run


@dataclass
class LanguageMap:
    """How each language's token ids map into the model vocabulary (saved as ``languages.json``).

    ``kind`` ``"cloned"``: language ``l`` is the original stream with cloned ids shifted by
    ``l * base_vocab_size`` (``n_clones`` clones, ``frac_clone``), ``shared_ids`` never shifted
    (the reference: ``[0]``; ``xlt pretrain``: the tokenizer's special ids). ``kind`` ``"bilingual"``:
    language 1 comes from a second tokenizer whose ids go through ``l2_id_map`` (``merge_vocab``
    disjoint or anchored). ``kind`` ``"monolingual"``: one language, ids unchanged.
    """

    kind: str
    base_vocab_size: int
    names: list[str]
    n_clones: int = 0
    frac_clone: float = 1.0
    merge_vocab: str | None = None
    l2_id_map: list[int] | None = None
    model_vocab_size: int = 0
    shared_ids: list[int] = field(default_factory=lambda: [0])
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self._mask = None
        self._l2_tensor = None
        self._l2_inverse = None
        if not self.model_vocab_size:
            if self.kind == "cloned":
                self.model_vocab_size = self.base_vocab_size * (self.n_clones + 1)
            elif self.kind == "bilingual":
                self.model_vocab_size = max(self.base_vocab_size, max(self.l2_id_map) + 1)
            else:
                self.model_vocab_size = self.base_vocab_size

    # construction ---------------------------------------------------------------------------
    @classmethod
    def cloned(cls, base_vocab_size: int, n_clones: int, frac_clone: float = 1.0,
               names: Sequence[str] | None = None, *, shared_ids: Sequence[int] = (0,)) -> "LanguageMap":
        if isinstance(n_clones, bool) or not isinstance(n_clones, int) or n_clones < 1:
            raise ConfigError(f"n_clones must be an integer >= 1, got {n_clones}")
        if frac_clone < 1.0 and n_clones != 1:
            # The reference asserts this too: a partial clone is defined for 2 languages only.
            raise ConfigError(f"frac_clone < 1 needs exactly one clone, got n_clones={n_clones}")
        names = list(names or [f"L{i + 1}" for i in range(n_clones + 1)])
        language_map = cls("cloned", base_vocab_size, names, n_clones=n_clones, frac_clone=frac_clone,
                           shared_ids=sorted({int(i) for i in shared_ids}))
        language_map.extra["clone_mask_sha256"] = mask_sha256(language_map.mask)
        return language_map

    @classmethod
    def bilingual(cls, l1_vocab: Mapping[str, int], l2_vocab: Mapping[str, int], merge_vocab: str,
                  *, shared_ids: Sequence[int] = (0,), names: Sequence[str] | None = None) -> "LanguageMap":
        id_map, size = merge_vocabularies(l1_vocab, l2_vocab, merge_vocab, shared_ids=shared_ids)
        v1 = max(l1_vocab.values()) + 1
        return cls("bilingual", v1, list(names or ["L1", "L2"]), merge_vocab=merge_vocab,
                   l2_id_map=id_map, model_vocab_size=size,
                   extra={"shared_pieces": sum(1 for i, j in enumerate(id_map) if j < v1)})

    @classmethod
    def monolingual(cls, base_vocab_size: int, name: str = "L1") -> "LanguageMap":
        return cls("monolingual", base_vocab_size, [name])

    # ids -------------------------------------------------------------------------------------
    @property
    def n_languages(self) -> int:
        return len(self.names)

    @property
    def mask(self):
        if self._mask is None and self.kind == "cloned":
            self._mask = clone_mask(self.base_vocab_size, self.frac_clone)
        return self._mask

    def index(self, language: str | int) -> int:
        """Language index of a name (``"L2"``) or index."""
        if isinstance(language, int) and not isinstance(language, bool):
            if 0 <= language < self.n_languages:
                return language
        elif language in self.names:
            return self.names.index(language)
        raise ConfigError(f"unknown language {language!r} (this model has {', '.join(self.names)})")

    def map_ids(self, ids, language: str | int):
        """Token ids of the language's own tokenizer -> model vocabulary ids (``int64``)."""
        import torch

        index = self.index(language)
        ids = torch.as_tensor(ids).to(torch.long)
        if self.kind == "cloned":
            return to_language(ids, index, self.base_vocab_size, self.mask, shared_ids=self.shared_ids)
        if self.kind == "bilingual" and index == 1:
            if self._l2_tensor is None:
                self._l2_tensor = torch.tensor(self.l2_id_map, dtype=torch.long)
            outside = ids[(ids < 0) | (ids >= len(self.l2_id_map))]  # a negative id would wrap around
            if outside.numel():
                raise ConfigError(f"L2 token id {int(outside[0])} outside its {len(self.l2_id_map)}-token vocabulary")
            return self._l2_tensor[ids]
        return ids.clone()

    def unmap_ids(self, ids, language: str | int):
        """Model vocabulary ids of ``language`` -> ids of that language's own tokenizer."""
        import torch

        index = self.index(language)
        ids = torch.as_tensor(ids).to(torch.long)
        if self.kind == "cloned":
            return ids % self.base_vocab_size
        if self.kind == "bilingual" and index == 1:
            if self._l2_inverse is None:
                inverse = torch.full((self.model_vocab_size,), -1, dtype=torch.long)
                # a shared (anchored) combined id may come from several L2 ids: keep the first
                for l2_id in range(len(self.l2_id_map) - 1, -1, -1):
                    inverse[self.l2_id_map[l2_id]] = l2_id
                self._l2_inverse = inverse
            return self._l2_inverse[ids]
        return ids.clone()

    def tokenizer_index(self, language: str | int) -> int:
        """0 if the language is written with the first tokenizer, 1 for the second."""
        return 1 if self.kind == "bilingual" and self.index(language) == 1 else 0

    # persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "names": self.names, "base_vocab_size": self.base_vocab_size,
               "model_vocab_size": self.model_vocab_size}
        if self.kind == "cloned":
            out.update(n_clones=self.n_clones, frac_clone=self.frac_clone, shared_ids=self.shared_ids,
                       clone_rule="random.Random(0).shuffle(range(V)); first int(frac_clone*V) ids; "
                                  "id -> id + l*V for cloned ids not in shared_ids")
        if self.kind == "bilingual":
            out.update(merge_vocab=self.merge_vocab, l2_id_map=self.l2_id_map)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LanguageMap":
        known = {"kind", "names", "base_vocab_size", "model_vocab_size", "n_clones", "frac_clone",
                 "merge_vocab", "l2_id_map", "shared_ids"}
        try:
            language_map = cls(kind=data["kind"], base_vocab_size=int(data["base_vocab_size"]),
                               names=list(data["names"]), n_clones=int(data.get("n_clones", 0)),
                               frac_clone=float(data.get("frac_clone", 1.0)),
                               merge_vocab=data.get("merge_vocab"), l2_id_map=data.get("l2_id_map"),
                               model_vocab_size=int(data.get("model_vocab_size", 0)),
                               # files written before shared_ids was recorded shared the pad id 0 only
                               shared_ids=[int(i) for i in data.get("shared_ids", [0])],
                               extra={k: v for k, v in data.items() if k not in known and k != "clone_rule"})
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed language description ({exc})") from None
        if language_map.kind not in ("cloned", "bilingual", "monolingual"):
            raise ConfigError(f"unknown language kind {language_map.kind!r}")
        expected = language_map.extra.get("clone_mask_sha256")
        if language_map.kind == "cloned" and expected and mask_sha256(language_map.mask) != expected:
            raise ConfigError("clone mask fingerprint differs from the one recorded at training time")
        return language_map
