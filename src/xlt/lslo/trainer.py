"""Training LSLo on translation data with ``Seq2SeqTrainer``.

:class:`LSLoTrainingConfig` extends ``Seq2SeqTrainingArguments`` with the method's options (the
paper's values as defaults, section numbers of the reference README in the help);
:func:`sample_directions` draws the training set by temperature sampling over directions;
:func:`encode_pairs` and :class:`TranslationCollator` make batches that mix directions and carry
``src_lang_ids`` / ``tgt_lang_ids``; :class:`LSLoTrainer` saves LSLo adapters instead of full
models and runs the gradual pruning schedule per epoch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from xlt.errors import ConfigError
from xlt.training import GuardedTrainerMixin

PRUNING_CHOICES = ("none", "language", "layer")


@dataclass
class LSLoTrainingConfig(Seq2SeqTrainingArguments):
    """``Seq2SeqTrainingArguments`` plus LSLo, pruning and data options.

    Defaults follow the reference README where they are scale-independent: Adam betas (0.9,
    0.98), lr 3e-3 with an inverse-square-root schedule after 1 warm-up update (the first update
    runs at lr 0, as in fairseq), label smoothing 0.2, no gradient clipping, seed 2, sampling
    temperature 5, ranks high/med/low = 2/2/8, pruning t1 = 2, t2 = 10, target 0.9.
    """

    # --- LSLo ----------------------------------------------------------------------------------
    languages: list[str] | None = field(default=None, metadata={
        "help": "language inventory (ids index it); default: the languages of the training data, sorted",
        "nargs": "+"})
    tiers: list[str] | None = field(default=None, metadata={
        "help": "resource tier per language, as lang=tier (high, med, low); unlisted languages: "
                "default_tier", "nargs": "+"})
    default_tier: str = field(default="high", metadata={"help": "tier of languages not in --tiers"})
    tier_ranks: list[str] = field(default_factory=lambda: ["high=2", "med=2", "low=8"], metadata={
        "help": "rank of each tier, as tier=rank (paper: high=2 med=2 low=8)", "nargs": "+"})
    ranks: list[str] | None = field(default=None, metadata={
        "help": "rank per language, as lang=rank (overrides its tier's rank)", "nargs": "+"})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "module-path suffixes to adapt; default (M2M-100/NLLB): self_attn.{q,k,v}_proj, "
                "encoder_attn.{q,k,v}_proj, fc1, fc2", "nargs": "+"})
    encoder_directions: str | None = field(default=None, metadata={
        "help": "per encoder layer src/tgt, e.g. 'src*9,tgt*3' or 'src_src_tgt'; default: bottom 3/4 "
                "src, the rest tgt (paper: src*9,tgt*3 of 12)"})
    decoder_directions: str | None = field(default=None, metadata={
        "help": "per decoder layer src/tgt; default all tgt (paper)"})
    lslo_dim: str = field(default="model", metadata={
        "help": "adapter shape: 'model' = square d_model x d_model adapters on features "
                "[start_idx, start_idx + d_model) as the reference (fc1 writes / fc2 reads only the "
                "first d_model hidden units); an integer for another square side; 'full' = "
                "rectangular (in x r, r x out) adapters over whole matrices"})
    start_idx: int = field(default=0, metadata={"help": "first feature of the adapter slice"})
    shared: bool = field(default=False, metadata={
        "help": "baseline: one LoRA subspace shared by all languages, of rank shared_rank (default: "
                "the sum of the per-language ranks, i.e. LSLo's parameter count)"})
    shared_rank: int | None = field(default=None, metadata={"help": "rank of the shared subspace"})
    full_finetune: bool = field(default=False, metadata={
        "help": "baseline: fine-tune every parameter of the base model (no LSLo; the paper's "
                "full-parameter fine-tuning); writes a plain Hugging Face model"})
    # --- pruning -------------------------------------------------------------------------------
    pruning: str = field(default="none", metadata={
        "help": "gradual magnitude pruning of B: none, language (one pool per language across "
                "layers; reference --cross-language False) or layer (one pool per layer across "
                "languages; --cross-language True)", "choices": list(PRUNING_CHOICES)})
    pruning_t1: int = field(default=2, metadata={"help": "first pruning epoch (1-based; ratio 0 there)"})
    pruning_t2: int = field(default=10, metadata={"help": "epochs to reach the target ratio"})
    target_pruning_ratio: float = field(default=0.9, metadata={"help": "final fraction of B pruned"})
    # --- data ----------------------------------------------------------------------------------
    sampling_temperature: float = field(default=5.0, metadata={
        "help": "language-pair sampling: direction d is drawn with probability proportional to "
                "n_d^(1/T) (T=1: proportional to size; large T: uniform)"})
    directions: list[str] | None = field(default=None, metadata={
        "help": "train only these directions (src-tgt); default: every direction in the data",
        "nargs": "+"})
    max_source_length: int = field(default=128, metadata={"help": "source tokens incl. language tag and </s>"})
    max_target_length: int = field(default=128, metadata={"help": "target tokens incl. language tag and </s>"})
    # --- TrainingArguments defaults of the reference -------------------------------------------
    learning_rate: float = field(default=3e-3, metadata={"help": "peak learning rate (reference 3e-3)"})
    lr_scheduler_type: str = field(default="inverse_sqrt", metadata={
        "help": "learning-rate schedule (reference: inverse_sqrt, 1 warm-up update)"})
    warmup_steps: float = field(default=1, metadata={"help": "warm-up updates (reference 1)"})
    adam_beta2: float = field(default=0.98, metadata={"help": "Adam beta2 (reference 0.98)"})
    label_smoothing_factor: float = field(default=0.2, metadata={"help": "label smoothing (reference 0.2)"})
    max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping (reference: none)"})
    seed: int = field(default=2, metadata={"help": "random seed (reference 2)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep the language-id columns"})
    save_strategy: str = field(default="no", metadata={"help": "checkpointing (the adapter is always saved at the end)"})

    def __post_init__(self):
        super().__post_init__()
        if self.pruning not in PRUNING_CHOICES:
            raise ConfigError(f"pruning must be one of {', '.join(PRUNING_CHOICES)}, got {self.pruning!r}")
        if self.sampling_temperature <= 0:
            raise ConfigError(f"sampling_temperature must be > 0, got {self.sampling_temperature}")
        if self.pruning != "none":
            from xlt.lslo.pruning import pruning_ratio

            pruning_ratio(self.pruning_t1, self.pruning_t1, self.pruning_t2, self.target_pruning_ratio)
        if self.full_finetune and (self.shared or self.pruning != "none"):
            raise ConfigError("full_finetune trains the base model itself: it cannot be combined with "
                              "shared or pruning")
        if self.max_source_length < 3 or self.max_target_length < 3:
            raise ConfigError("max_source_length and max_target_length must be >= 3")

    def lslo_config(self, languages: Sequence[str]):
        """The :class:`~xlt.lslo.LSLoConfig` these options describe."""
        from xlt.lslo.config import LSLoConfig

        dim: Any = self.lslo_dim
        if isinstance(dim, str) and dim not in ("model", "full"):
            try:
                dim = int(dim)
            except ValueError:
                raise ConfigError(f"lslo_dim must be 'model', 'full' or an integer, got {dim!r}") from None
        return LSLoConfig(languages=list(languages), ranks=self.ranks or {}, tiers=self.tiers or {},
                          tier_ranks=self.tier_ranks, default_tier=self.default_tier,
                          target_modules=self.target_modules,
                          encoder_directions=self.encoder_directions,
                          decoder_directions=self.decoder_directions,
                          dim=None if dim == "full" else dim, start_idx=self.start_idx,
                          shared=self.shared, shared_rank=self.shared_rank)


# --------------------------------------------------------------------------------------------
# Data


def temperature_probabilities(sizes: dict[Any, int], temperature: float) -> dict[Any, float]:
    """``p_d = n_d^(1/T) / sum_e n_e^(1/T)`` (fairseq's temperature sampling)."""
    weights = {k: float(n) ** (1.0 / temperature) for k, n in sizes.items() if n > 0}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def sample_directions(pairs: Sequence[Any], temperature: float, *, seed: int,
                      size: int | None = None) -> list[Any]:
    """Draw a training set of ``size`` (default: ``len(pairs)``) examples over directions.

    Direction ``d`` gets ``round(size * p_d)`` examples (largest remainders so they sum to
    ``size``), ``p_d`` from :func:`temperature_probabilities`; within a direction examples are
    drawn without replacement, cycling through shuffled copies when upsampled. The reference
    redraws every epoch; here one draw (seeded) serves the whole run, and the trainer shuffles it
    per epoch. Returns the examples in a shuffled order, so batches mix directions.
    """
    from xlt.eval.mt import group_directions

    groups = group_directions(pairs)
    size = len(pairs) if size is None else size
    probs = temperature_probabilities({d: len(v) for d, v in groups.items()}, temperature)
    exact = {d: size * p for d, p in probs.items()}
    counts = {d: int(v) for d, v in exact.items()}
    remainder = size - sum(counts.values())
    for d in sorted(exact, key=lambda d: (-(exact[d] - counts[d]), d))[:remainder]:
        counts[d] += 1
    rng = random.Random(seed)
    out: list[Any] = []
    for d in groups:
        members = groups[d]
        need = counts.get(d, 0)
        while need > 0:
            order = list(range(len(members)))
            rng.shuffle(order)
            take = order[:need]
            out.extend(members[i] for i in take)
            need -= len(take)
    rng.shuffle(out)
    return out


def encode_pairs(tokenizer, pairs: Sequence[Any], languages: Sequence[str], *, max_source_length: int,
                 max_target_length: int) -> list[dict[str, Any]]:
    """Tokenize ParallelPairs: ``input_ids = [src] ... </s>``, ``labels = [tgt] ... </s>``, ids.

    Returns one dict per pair with ``input_ids``, ``labels``, ``src_lang_ids``, ``tgt_lang_ids``
    (indices into ``languages``).
    """
    from xlt.eval.mt import encode_texts

    index = {lang: k for k, lang in enumerate(languages)}
    rows: list[dict[str, Any] | None] = [None] * len(pairs)
    by_src: dict[str, list[int]] = {}
    by_tgt: dict[str, list[int]] = {}
    for k, p in enumerate(pairs):
        by_src.setdefault(p.src_lang, []).append(k)
        by_tgt.setdefault(p.tgt_lang, []).append(k)
    sources: dict[int, list[int]] = {}
    targets: dict[int, list[int]] = {}
    for lang, ks in by_src.items():
        for k, ids in zip(ks, encode_texts(tokenizer, [pairs[k].src for k in ks], lang, max_source_length)):
            sources[k] = ids
    for lang, ks in by_tgt.items():
        for k, ids in zip(ks, encode_texts(tokenizer, [pairs[k].tgt for k in ks], lang, max_target_length)):
            targets[k] = ids
    for k, p in enumerate(pairs):
        rows[k] = {"input_ids": sources[k], "labels": targets[k],
                   "src_lang_ids": index[p.src_lang], "tgt_lang_ids": index[p.tgt_lang]}
    return rows  # type: ignore[return-value]


class TranslationCollator:
    """Pad a list of :func:`encode_pairs` rows into a batch (right padding).

    Produces ``input_ids``, ``attention_mask`` ``(batch, src_len)``, ``labels`` (padding = -100),
    ``decoder_input_ids`` (labels shifted right behind ``decoder_start_token_id``, M2M-100's
    convention) ``(batch, tgt_len)`` and ``src_lang_ids`` / ``tgt_lang_ids`` ``(batch,)``.
    """

    def __init__(self, pad_token_id: int, decoder_start_token_id: int, language_ids: bool = True):
        self.pad = int(pad_token_id)
        self.start = int(decoder_start_token_id)
        self.language_ids = language_ids

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        n = len(rows)
        src_len = max(len(r["input_ids"]) for r in rows)
        tgt_len = max(len(r["labels"]) for r in rows)
        input_ids = torch.full((n, src_len), self.pad, dtype=torch.long)
        attention = torch.zeros((n, src_len), dtype=torch.long)
        labels = torch.full((n, tgt_len), -100, dtype=torch.long)
        decoder = torch.full((n, tgt_len), self.pad, dtype=torch.long)
        for i, r in enumerate(rows):
            s, t = r["input_ids"], r["labels"]
            input_ids[i, :len(s)] = torch.tensor(s)
            attention[i, :len(s)] = 1
            labels[i, :len(t)] = torch.tensor(t)
            decoder[i, 0] = self.start
            decoder[i, 1:len(t)] = torch.tensor(t[:-1])
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels,
                 "decoder_input_ids": decoder}
        if self.language_ids:
            batch["src_lang_ids"] = torch.tensor([r["src_lang_ids"] for r in rows], dtype=torch.long)
            batch["tgt_lang_ids"] = torch.tensor([r["tgt_lang_ids"] for r in rows], dtype=torch.long)
        return batch


# --------------------------------------------------------------------------------------------
# Trainer


class PruningCallback(TrainerCallback):
    """Masks at every epoch start (1-based epoch ``e`` uses ``pruning_ratio(e, t1, t2, P)``);
    permanent at every epoch end, as the reference's ``begin_epoch`` / ``begin_valid_epoch``."""

    def __init__(self, schedule):
        self.schedule = schedule

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        epoch = int(round(state.epoch or 0)) + 1
        self.schedule.begin_epoch(_lslo_of(model), epoch)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.schedule.end_epoch(_lslo_of(model))


def _lslo_of(model):
    from xlt.lslo.model import LSLoModel

    while not isinstance(model, LSLoModel) and hasattr(model, "module"):
        model = model.module
    return model


class FullFinetuneTrainer(GuardedTrainerMixin, Seq2SeqTrainer):
    """The full-parameter fine-tuning baseline (a plain guarded ``Seq2SeqTrainer``)."""


class LSLoTrainer(GuardedTrainerMixin, Seq2SeqTrainer):
    """``Seq2SeqTrainer`` for an :class:`~xlt.lslo.LSLoModel`: saves the adapter, not the model."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.label_names is None:  # the wrapper's forward(**kwargs) hides "labels"
            self.label_names = ["labels"]

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        lslo = _lslo_of(self.accelerator.unwrap_model(self.model))
        lslo.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        from safetensors.torch import load_file

        from xlt.lslo.model import WEIGHTS_NAME

        lslo = _lslo_of(self.accelerator.unwrap_model(model or self.model))
        lslo.load_lslo_state_dict(load_file(str(Path(resume_from_checkpoint) / WEIGHTS_NAME)),
                                  source=str(resume_from_checkpoint))
