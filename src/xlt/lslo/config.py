"""Configuration of language-specific LoRA (LSLo).

One :class:`LSLoConfig` describes which linear layers carry per-language low-rank subspaces,
the rank of each language (directly or through resource tiers), and, per layer, whether the
example's source or target language picks the subspace. Defaults follow the paper's released
configuration (``--high-rank 2 --med-rank 2 --low-rank 8``, encoder ``src x 9, tgt x 3`` of 12
layers, decoder ``tgt`` throughout).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from xlt.errors import ConfigError

#: The paper's tier -> rank table (README: ``--high-rank 2 --med-rank 2 --low-rank 8``).
PAPER_TIER_RANKS: dict[str, int] = {"high": 2, "med": 2, "low": 8}

#: Linear layers adapted in M2M-100 / NLLB, as in the paper: encoder q,k,v,fc1,fc2; decoder
#: q,k,v, cross-attention q,k,v, fc1, fc2 (``out_proj`` is never adapted).
M2M100_TARGET_MODULES: list[str] = [
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
    "encoder_attn.q_proj", "encoder_attn.k_proj", "encoder_attn.v_proj", "fc1", "fc2"]

#: Decoder-only analogue (Llama / Qwen / Mistral / Gemma): q,k,v; gate and up as fc1; down as fc2.
CAUSAL_TARGET_MODULES: list[str] = [
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

DIRECTIONS = ("src", "tgt")


def default_directions(num_layers: int, src_fraction: float = 0.75) -> list[str]:
    """``src`` for the bottom ``ceil(src_fraction * n)`` layers, ``tgt`` above (paper: 9 + 3 of 12)."""
    n_src = math.ceil(src_fraction * num_layers)
    return ["src"] * n_src + ["tgt"] * (num_layers - n_src)


def parse_directions(value: Any, *, name: str) -> list[str] | None:
    """Accept a list of ``"src"``/``"tgt"``, or a string ``"src_src_tgt"`` / ``"src*9,tgt*3"``."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[str] = []
        for part in value.replace("_", ",").replace(" ", ",").split(","):
            if not part:
                continue
            if "*" in part:
                word, _, count = part.partition("*")
                try:
                    items += [word] * int(count)
                except ValueError:
                    raise ConfigError(f"{name}: cannot read {part!r} (expected e.g. 'src*9')") from None
            else:
                items.append(part)
        value = items
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name}: expected a list of 'src'/'tgt', got {type(value).__name__}")
    out = [str(v).strip().lower() for v in value]
    bad = [v for v in out if v not in DIRECTIONS]
    if bad:
        raise ConfigError(f"{name}: {bad[0]!r} is not a direction (expected 'src' or 'tgt')")
    return out


def parse_mapping(value: Any, *, name: str, cast=str) -> dict[str, Any]:
    """A mapping from a dict, or from a list / comma-separated string of ``key=value`` items."""
    if value is None:
        return {}
    if isinstance(value, dict):
        items = list(value.items())
    else:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", ",").split(",") if v]
        items = []
        for entry in value:
            key, sep, val = str(entry).partition("=")
            if not sep or not key or not val:
                raise ConfigError(f"{name}: cannot read {entry!r} (expected key=value)")
            items.append((key.strip(), val.strip()))
    out = {}
    for key, val in items:
        try:
            out[str(key)] = cast(val)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: value of {key!r} must be {cast.__name__}, got {val!r}") from None
    return out


@dataclass
class LSLoConfig:
    """What LSLo adapts, with which ranks, routed by which language in which layer.

    Fields (paper values from the reference README in brackets):

    * ``languages``: the language inventory; ``src_lang_ids`` / ``tgt_lang_ids`` index it.
    * ``ranks``: rank per language (``{"en": 2, ...}``); languages not listed take the rank of
      their tier in ``tier_ranks`` [high 2, med 2, low 8].
    * ``tiers``: resource tier per language (``{"oc": "low", ...}``); unlisted languages are
      ``default_tier``. Tiers also group the MT evaluation table.
    * ``target_modules``: module-path suffixes to adapt (``"fc1"``, ``"encoder_attn.k_proj"``)
      [M2M-100: :data:`M2M100_TARGET_MODULES`]. ``None`` picks the architecture's default.
    * ``encoder_directions`` / ``decoder_directions``: one ``"src"``/``"tgt"`` per layer
      [encoder src x 9 + tgt x 3, decoder tgt x 12]. ``None``: encoder bottom 3/4 src, rest tgt;
      decoder of a seq2seq model all tgt; decoder-only models bottom 3/4 src, rest tgt.
    * ``encoder_layers`` / ``decoder_layers``: the (0-based) layers of each stack that get LSLo;
      the other layers stay plain linears [reference ``--encoder-lora-layer`` /
      ``--decoder-lora-layer``: all 12 + 12]. ``None``: every layer.
    * ``dim`` / ``start_idx``: the reference's feature slice. With ``dim=d`` every adapter is
      square (d x d) on features ``[start_idx, start_idx + d)`` of input and output; ``"model"``
      means d = d_model [the paper: 1024 = d_model, start 0]. ``None``: rectangular adapters
      ``A: (in, r)``, ``B: (r, out)`` over the whole matrix (ordinary LoRA shapes).
    * ``shared``: a baseline with one subspace for every language (``shared_rank``, default the
      sum of the per-language ranks, so the parameter count equals LSLo's).
    """

    languages: list[str] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, str] = field(default_factory=dict)
    tier_ranks: dict[str, int] = field(default_factory=lambda: dict(PAPER_TIER_RANKS))
    default_tier: str = "high"
    target_modules: list[str] | None = None
    encoder_directions: list[str] | None = None
    decoder_directions: list[str] | None = None
    encoder_layers: list[int] | None = None
    decoder_layers: list[int] | None = None
    dim: int | str | None = None
    start_idx: int = 0
    shared: bool = False
    shared_rank: int | None = None

    def __post_init__(self):
        if isinstance(self.languages, str):
            self.languages = [v for v in self.languages.replace(" ", ",").split(",") if v]
        self.languages = [str(v) for v in self.languages]
        if not self.languages:
            raise ConfigError("LSLo: 'languages' is empty (expected at least one language code)")
        dupes = sorted({v for v in self.languages if self.languages.count(v) > 1})
        if dupes:
            raise ConfigError(f"LSLo: language {dupes[0]!r} listed twice in 'languages'")
        self.ranks = parse_mapping(self.ranks, name="ranks", cast=int)
        self.tiers = parse_mapping(self.tiers, name="tiers")
        self.tier_ranks = parse_mapping(self.tier_ranks, name="tier_ranks", cast=int)
        for name, mapping in (("ranks", self.ranks), ("tiers", self.tiers)):
            for lang in mapping:
                if lang not in self.languages:
                    raise ConfigError(f"LSLo: {name} names language {lang!r}, which is not in "
                                      f"languages ({', '.join(self.languages)})")
        for lang in self.languages:
            if lang not in self.ranks:
                tier = self.tiers.get(lang, self.default_tier)
                if tier not in self.tier_ranks:
                    raise ConfigError(f"LSLo: tier {tier!r} of language {lang!r} has no rank in "
                                      f"tier_ranks ({', '.join(self.tier_ranks) or 'empty'})")
        for lang, rank in self.rank_table().items():
            if rank < 1:
                raise ConfigError(f"LSLo: rank of {lang!r} must be >= 1, got {rank}")
        if isinstance(self.target_modules, str):
            self.target_modules = [v for v in self.target_modules.replace(" ", ",").split(",") if v]
        self.encoder_directions = parse_directions(self.encoder_directions, name="encoder_directions")
        self.decoder_directions = parse_directions(self.decoder_directions, name="decoder_directions")
        for name in ("encoder_layers", "decoder_layers"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str):
                value = [v for v in value.replace(" ", ",").split(",") if v]
            try:
                layers = sorted({int(v) for v in value})
            except (TypeError, ValueError):
                raise ConfigError(f"LSLo: {name} must be layer indices, got {value!r}") from None
            if not layers or layers[0] < 0:
                raise ConfigError(f"LSLo: {name} must be a non-empty list of layer indices >= 0, got {value!r}")
            setattr(self, name, layers)
        if isinstance(self.dim, str) and self.dim not in ("model", "full"):
            try:
                self.dim = int(self.dim)
            except ValueError:
                raise ConfigError(f"LSLo: dim must be an integer, 'model' or 'full', got {self.dim!r}") from None
        if self.dim == "full":
            self.dim = None
        if isinstance(self.dim, int) and self.dim < 1:
            raise ConfigError(f"LSLo: dim must be >= 1, got {self.dim}")
        if self.start_idx < 0:
            raise ConfigError(f"LSLo: start_idx must be >= 0, got {self.start_idx}")
        if self.shared_rank is not None and self.shared_rank < 1:
            raise ConfigError(f"LSLo: shared_rank must be >= 1, got {self.shared_rank}")

    # ----------------------------------------------------------------------------------------
    def tier_of(self, lang: str) -> str:
        """The resource tier of ``lang``."""
        return self.tiers.get(lang, self.default_tier)

    def rank_of(self, lang: str) -> int:
        """The rank of ``lang``'s subspace (its own rank, else its tier's)."""
        if lang in self.ranks:
            return int(self.ranks[lang])
        return int(self.tier_ranks[self.tier_of(lang)])

    def rank_table(self) -> dict[str, int]:
        """``{language: rank}`` in inventory order."""
        return {lang: self.rank_of(lang) for lang in self.languages}

    def subspaces(self) -> list[tuple[str, int]]:
        """``(name, rank)`` of each subspace a layer holds: one per language, or one shared."""
        if self.shared:
            return [("shared", self.shared_rank or sum(self.rank_table().values()))]
        return list(self.rank_table().items())

    def language_index(self, lang: str) -> int:
        """Index of ``lang`` in :attr:`languages` (a :class:`ConfigError` if absent)."""
        try:
            return self.languages.index(lang)
        except ValueError:
            raise ConfigError(f"LSLo: language {lang!r} is not in the adapter's languages "
                              f"({', '.join(self.languages)})") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LSLoConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"LSLo config: unknown key(s) {', '.join(unknown)}")
        return cls(**data)
