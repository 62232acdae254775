"""Training LSLo on translation data with ``Seq2SeqTrainer`` (or ``Trainer`` for decoder-only models).

:class:`LSLoTrainingConfig` extends ``Seq2SeqTrainingArguments`` with the method's options (the
paper's values as defaults); :class:`TemperatureSampler` redraws the training rows every epoch by
temperature sampling over directions, as the reference does; :func:`encode_pairs` /
:class:`TranslationCollator` (encoder-decoder) and :func:`encode_causal_pairs` /
:class:`CausalTranslationCollator` (decoder-only: a prompt without loss, then the target) make
batches that mix directions and carry ``src_lang_ids`` / ``tgt_lang_ids``; :class:`LSLoTrainer`
and :class:`CausalLSLoTrainer` save LSLo adapters instead of full models;
:class:`PruningCallback` runs the gradual pruning schedule per epoch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Sampler
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainerCallback

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
    lslo_dim: str = field(default="auto", metadata={
        "help": "adapter shape: 'model' = square d_model x d_model adapters on features "
                "[start_idx, start_idx + d_model) as the reference (fc1 writes / fc2 reads only the "
                "first d_model hidden units); an integer for another square side; 'full' = "
                "rectangular (in x r, r x out) adapters over whole matrices; 'auto' (default) = "
                "'model' for encoder-decoder models, 'full' for decoder-only ones (whose GQA k/v "
                "projections are narrower than d_model)"})
    start_idx: int = field(default=0, metadata={"help": "first feature of the adapter slice"})
    shared: bool = field(default=False, metadata={
        "help": "baseline: one LoRA subspace shared by all languages, of rank shared_rank (default: "
                "the sum of the per-language ranks, i.e. LSLo's parameter count)"})
    shared_rank: int | None = field(default=None, metadata={"help": "rank of the shared subspace"})
    full_finetune: bool = field(default=False, metadata={
        "help": "baseline: fine-tune every parameter of the base model (no LSLo; the paper's "
                "full-parameter fine-tuning); writes a plain Hugging Face model"})
    # --- decoder-only models ------------------------------------------------------------------
    prompt_template: str = field(default="{src_lang}: {src}\\n{tgt_lang}:", metadata={
        "help": "decoder-only models: the prompt the model continues with ' <target></s>'; "
                "placeholders {src_lang}, {tgt_lang} (language names) and {src}; '\\n' is a newline. "
                "The prompt carries no loss"})
    language_names: list[str] | None = field(default=None, metadata={
        "help": "decoder-only models: names shown in the prompt, as code=name (e.g. fra_Latn=French); "
                "default: the code", "nargs": "+"})
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
    max_tokens: int | None = field(default=None, metadata={
        "help": "fairseq's --max-tokens: batches of at most this many tokens, counted as rows x the "
                "longest row's max(source, target) length (padding included), of rows of similar "
                "length, reshuffled every epoch; per_device_train_batch_size is then unused and "
                "gradient_accumulation_steps is fairseq's --update-freq (reference: 4000 x 4)"})
    encoder_lora_layers: list[int] | None = field(default=None, metadata={
        "help": "encoder layers (0-based) that get LSLo; the others stay plain (reference "
                "--encoder-lora-layer; default: all)", "nargs": "+"})
    decoder_lora_layers: list[int] | None = field(default=None, metadata={
        "help": "decoder layers (0-based) that get LSLo (reference --decoder-lora-layer; default: all)",
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
        if not math.isfinite(self.sampling_temperature) or self.sampling_temperature <= 0:
            raise ConfigError(f"sampling_temperature must be a finite number > 0, got {self.sampling_temperature}")
        if self.pruning != "none":
            from xlt.lslo.pruning import pruning_ratio

            pruning_ratio(self.pruning_t1, self.pruning_t1, self.pruning_t2, self.target_pruning_ratio)
        if self.full_finetune and (self.shared or self.pruning != "none"):
            raise ConfigError("full_finetune trains the base model itself: it cannot be combined with "
                              "shared or pruning")
        if self.max_source_length < 3 or self.max_target_length < 3:
            raise ConfigError("max_source_length and max_target_length must be >= 3")
        if self.max_tokens is not None:
            longest = max(self.max_source_length, self.max_target_length)
            if isinstance(self.max_tokens, bool) or self.max_tokens < longest:
                raise ConfigError(f"max_tokens must be >= max(max_source_length, max_target_length) = "
                                  f"{longest}, got {self.max_tokens}")

    def translation_prompt(self):
        """The :class:`~xlt.translation.TranslationPrompt` of decoder-only training."""
        from xlt.translation import TranslationPrompt
        from xlt.lslo.config import parse_mapping

        return TranslationPrompt(template=self.prompt_template,
                                 language_names=parse_mapping(self.language_names, name="language_names"))

    def lslo_config(self, languages: Sequence[str], *, seq2seq: bool = True):
        """The :class:`~xlt.lslo.LSLoConfig` these options describe (``seq2seq``: the model kind)."""
        from xlt.lslo.config import LSLoConfig

        dim: Any = self.lslo_dim
        if dim == "auto":
            dim = "model" if seq2seq else "full"
        if isinstance(dim, str) and dim not in ("model", "full"):
            try:
                dim = int(dim)
            except ValueError:
                raise ConfigError(f"lslo_dim must be 'auto', 'model', 'full' or an integer, got {dim!r}") from None
        return LSLoConfig(languages=list(languages), ranks=self.ranks or {}, tiers=self.tiers or {},
                          tier_ranks=self.tier_ranks, default_tier=self.default_tier,
                          target_modules=self.target_modules,
                          encoder_directions=self.encoder_directions,
                          decoder_directions=self.decoder_directions,
                          encoder_layers=self.encoder_lora_layers, decoder_layers=self.decoder_lora_layers,
                          dim=None if dim == "full" else dim, start_idx=self.start_idx,
                          shared=self.shared, shared_rank=self.shared_rank)


# --------------------------------------------------------------------------------------------
# Data


def temperature_probabilities(sizes: dict[Any, int], temperature: float) -> dict[Any, float]:
    """``p_d = n_d^(1/T) / sum_e n_e^(1/T)`` (fairseq's temperature sampling)."""
    weights = {k: float(n) ** (1.0 / temperature) for k, n in sizes.items() if n > 0}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def reference_epoch_size(sizes: Sequence[int], probabilities: Sequence[float], max_scale_up: float = 1.5) -> int:
    """Rows per epoch as the reference's sampled multi-dataset sizes it (fairseq's default).

    Every direction is scaled relative to the largest one, which keeps its own size:
    ``sum_d (p_d / p_max) * n_max`` with ``max`` the largest direction, capped at
    ``max_scale_up * sum_d n_d``. Equal-sized directions give exactly the data size; with ``T > 1``
    and skewed sizes the small directions are upsampled (never the large one downsampled).
    """
    if not sizes:
        return 0
    largest = max(range(len(sizes)), key=lambda k: (sizes[k], -k))
    n_max, p_max = sizes[largest], probabilities[largest]
    virtual = sum(p / p_max * n_max for p in probabilities)
    cap = sum(sizes) * max_scale_up
    return int(virtual if virtual < cap else cap)


class TemperatureSampler(Sampler):
    """Temperature sampling over directions, redrawn every epoch (the reference's behaviour).

    ``directions[i]`` is the direction of dataset row ``i`` (any hashable, e.g. ``(src, tgt)``).
    Each epoch yields ``size`` row indices (default :func:`reference_epoch_size`): direction ``d``
    gets ``round(size * p_d)`` of them (largest remainders, so they sum to ``size``), ``p_d`` from
    :func:`temperature_probabilities`. Within a direction rows are drawn without replacement,
    cycling through fresh permutations when a direction is upsampled (so every row appears before
    any repeats); the epoch's rows are then shuffled together, so batches mix directions.

    The draw for epoch ``e`` uses a generator seeded with ``(seed, e)``: the same seed gives the
    same rows in the same order, epoch by epoch, and the Trainer's ``set_epoch`` (called before
    every epoch, including the one a checkpoint resumes in) selects it.
    """

    def __init__(self, directions: Sequence[Any], temperature: float, *, seed: int, size: int | None = None):
        if not math.isfinite(temperature) or temperature <= 0:
            raise ConfigError(f"sampling temperature must be a finite number > 0, got {temperature}")
        groups: dict[Any, list[int]] = {}
        for i, d in enumerate(directions):
            groups.setdefault(d, []).append(i)
        self.groups = groups
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.probabilities = temperature_probabilities({d: len(v) for d, v in groups.items()}, temperature)
        keys = list(groups)
        if size is None:
            size = reference_epoch_size([len(groups[d]) for d in keys], [self.probabilities[d] for d in keys])
        if size < 0:
            raise ConfigError(f"sampling epoch size must be >= 0, got {size}")
        self.size = int(size)
        exact = {d: self.size * p for d, p in self.probabilities.items()}
        counts = {d: int(v) for d, v in exact.items()}
        remainder = self.size - sum(counts.values())
        order = sorted(exact, key=lambda d: (-(exact[d] - counts[d]), keys.index(d)))
        for d in order[:remainder]:
            counts[d] += 1
        self.counts = counts
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of ``epoch`` (0-based, as the Trainer counts)."""
        self.epoch = int(epoch)

    def indices(self, epoch: int | None = None) -> list[int]:
        """The row indices of ``epoch`` (default: the current one), in training order."""
        import numpy as np

        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed % 2 ** 32, epoch % 2 ** 32])
        out: list[int] = []
        for d, members in self.groups.items():
            need = self.counts.get(d, 0)
            while need > 0:
                take = rng.permutation(len(members))[:need]
                out.extend(members[int(i)] for i in take)
                need -= len(take)
        return [out[int(i)] for i in rng.permutation(len(out))]

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return self.size


def sample_directions(pairs: Sequence[Any], temperature: float, *, seed: int, epoch: int = 0,
                      size: int | None = None) -> list[Any]:
    """The ParallelPairs :class:`TemperatureSampler` draws for ``epoch`` (a list of ``size`` pairs)."""
    sampler = TemperatureSampler([(p.src_lang, p.tgt_lang) for p in pairs], temperature, seed=seed, size=size)
    return [pairs[i] for i in sampler.indices(epoch)]


def encode_pairs(tokenizer, pairs: Sequence[Any], languages: Sequence[str], *, max_source_length: int,
                 max_target_length: int) -> list[dict[str, Any]]:
    """Tokenize ParallelPairs: ``input_ids = [src] ... </s>``, ``labels = [tgt] ... </s>``, ids.

    Returns one dict per pair with ``input_ids``, ``labels``, ``src_lang_ids``, ``tgt_lang_ids``
    (indices into ``languages``).
    """
    from xlt.translation import encode_texts

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


def encode_causal_pairs(tokenizer, pairs: Sequence[Any], languages: Sequence[str], prompt=None, *,
                        max_source_length: int, max_target_length: int) -> list[dict[str, Any]]:
    """Tokenize ParallelPairs for a decoder-only model: a prompt, then the target to learn.

    ``prompt`` is a :class:`~xlt.translation.TranslationPrompt` (default: its default template,
    ``"{src_lang}: {src}\\n{tgt_lang}:"``). Returns one dict per pair with ``input_ids`` (prompt
    ids, at most ``max_source_length``, then target ids and EOS, at most ``max_target_length``),
    ``labels`` (``-100`` over the prompt, so only the target is learned), ``src_lang_ids``,
    ``tgt_lang_ids`` (indices into ``languages``).
    """
    from xlt.translation import TranslationPrompt

    prompt = prompt or TranslationPrompt()
    index = {lang: k for k, lang in enumerate(languages)}
    prompts = prompt.encode_prompts(tokenizer, [(p.src, p.src_lang, p.tgt_lang) for p in pairs], max_source_length)
    targets = prompt.encode_targets(tokenizer, [p.tgt for p in pairs], max_target_length)
    return [{"input_ids": ids + tgt, "labels": [-100] * len(ids) + tgt,
             "src_lang_ids": index[p.src_lang], "tgt_lang_ids": index[p.tgt_lang]}
            for p, ids, tgt in zip(pairs, prompts, targets)]


class CausalTranslationCollator:
    """Pad :func:`encode_causal_pairs` rows into a batch (right padding).

    Produces ``input_ids``, ``attention_mask``, ``labels`` (``-100`` on the prompt and padding;
    the model shifts them) ``(batch, len)`` and ``src_lang_ids`` / ``tgt_lang_ids`` ``(batch,)``.
    """

    def __init__(self, pad_token_id: int, language_ids: bool = True):
        self.pad = int(pad_token_id)
        self.language_ids = language_ids

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        n = len(rows)
        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((n, width), self.pad, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            input_ids[i, :k] = torch.tensor(r["input_ids"])
            attention[i, :k] = 1
            labels[i, :k] = torch.tensor(r["labels"])
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if self.language_ids:
            batch["src_lang_ids"] = torch.tensor([r["src_lang_ids"] for r in rows], dtype=torch.long)
            batch["tgt_lang_ids"] = torch.tensor([r["tgt_lang_ids"] for r in rows], dtype=torch.long)
        return batch


# --------------------------------------------------------------------------------------------
# Trainer


class PruningCallback(TrainerCallback):
    """Masks at every epoch start (1-based epoch ``e`` uses ``pruning_ratio(e, t1, t2, P)``, also
    when a run resumes inside epoch ``e``);
    permanent at every epoch end, as the reference's ``begin_epoch`` / ``begin_valid_epoch``."""

    def __init__(self, schedule):
        self.schedule = schedule

    def check(self, args, state) -> str | None:
        """The warning when the run's epochs end before the target ratio (for
        :func:`~xlt.training.schedule_check_callback`)."""
        return self.schedule.shortfall(int(math.ceil(state.num_train_epochs or 0)))

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        # state.epoch is whole at a fresh epoch start but fractional when a run resumes mid-epoch
        # (1.6 lies in the second epoch): floor, never round
        epoch = math.floor(state.epoch or 0) + 1
        self.schedule.begin_epoch(_lslo_of(model), epoch)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.schedule.end_epoch(_lslo_of(model))


def _lslo_of(model):
    from xlt.lslo.model import LSLoModel

    while not isinstance(model, LSLoModel) and hasattr(model, "module"):
        model = model.module
    return model


class SampledTrainerMixin:
    """Mix into a ``Trainer`` to draw the training rows with a given sampler (``train_sampler=``)
    or whole batches with a batch sampler (``train_batch_sampler=``, e.g. a
    :class:`~xlt.lslo.batching.TokenBatchSampler`).

    With a :class:`TemperatureSampler` the Trainer's per-epoch ``set_epoch`` call redraws the
    rows every epoch; without one the Trainer's own shuffling applies. The Trainer fixes the
    number of updates per epoch from the first epoch's batches; token batches of later epochs
    number the same whenever the epoch's rows have the same lengths (every row once per epoch,
    as with equally sized directions).
    """

    def __init__(self, *args, train_sampler: Sampler | None = None, train_batch_sampler=None, **kwargs):
        self._train_sampler = train_sampler
        self._train_batch_sampler = train_batch_sampler
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self):
        if self._train_batch_sampler is None:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader

        collator = self._get_collator_with_removed_columns(self.data_collator, description="Training")
        loader = DataLoader(self.train_dataset, batch_sampler=self._train_batch_sampler, collate_fn=collator,
                            num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset=None):
        if self._train_sampler is not None and (train_dataset is None or train_dataset is self.train_dataset):
            return self._train_sampler
        return super()._get_train_sampler(train_dataset)


class LSLoTrainerMixin(SampledTrainerMixin):
    """What an :class:`~xlt.lslo.LSLoModel` needs from any ``Trainer``: checkpoints and the final
    save hold the adapter (``lslo_config.json`` + ``lslo_model.safetensors``), not the model.
    ``adapter_metadata`` (e.g. ``base_model_path``, ``translation_prompt``) goes into every
    checkpoint's ``lslo_config.json``."""

    def __init__(self, *args, adapter_metadata: dict[str, Any] | None = None, **kwargs):
        self.adapter_metadata = dict(adapter_metadata or {})
        super().__init__(*args, **kwargs)
        if self.args.label_names is None:  # the wrapper's forward(**kwargs) hides "labels"
            self.label_names = ["labels"]

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # the Trainer calls this on every process; the weights are gathered on all of them (ZeRO-3
        # partitions them) and written by the main one
        output_dir = output_dir or self.args.output_dir
        lslo = _lslo_of(self.accelerator.unwrap_model(self.model))
        lslo.save_pretrained(output_dir, is_main_process=self.args.should_save, **self.adapter_metadata)
        if self.processing_class is not None and self.args.should_save:
            self.processing_class.save_pretrained(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        from safetensors.torch import load_file

        from xlt.lslo.model import WEIGHTS_NAME

        lslo = _lslo_of(self.accelerator.unwrap_model(model or self.model))
        lslo.load_lslo_state_dict(load_file(str(Path(resume_from_checkpoint) / WEIGHTS_NAME)),
                                  source=str(resume_from_checkpoint))


class FullFinetuneTrainer(SampledTrainerMixin, GuardedTrainerMixin, Seq2SeqTrainer):
    """The full-parameter fine-tuning baseline (a plain guarded ``Seq2SeqTrainer``)."""


class CausalFullFinetuneTrainer(SampledTrainerMixin, GuardedTrainerMixin, Trainer):
    """The full-parameter fine-tuning baseline for decoder-only models (a guarded ``Trainer``)."""


class LSLoTrainer(LSLoTrainerMixin, GuardedTrainerMixin, Seq2SeqTrainer):
    """``Seq2SeqTrainer`` for an :class:`~xlt.lslo.LSLoModel`: saves the adapter, not the model."""


class CausalLSLoTrainer(LSLoTrainerMixin, GuardedTrainerMixin, Trainer):
    """``Trainer`` for an :class:`~xlt.lslo.LSLoModel` over a decoder-only model.

    Label smoothing shifts the labels as for any causal LM (the Trainer recognises causal models
    by class name, which the wrapper hides, so the smoother is given ``shift_labels=True`` here).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.label_smoother is not None and self.compute_loss_func is None:
            self.compute_loss_func = functools.partial(self.label_smoother, shift_labels=True)
