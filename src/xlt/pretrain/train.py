"""Pre-training a causal LM from scratch with cloned or real second languages (Trainer-based).

:class:`PretrainConfig` extends ``transformers.TrainingArguments`` with the method's options
and the paper's defaults (Adam 0.9/0.95, no weight decay, no clipping, lr 6e-4 -> 6e-6 cosine
with a 200-step warm-up that multiplies the cosine); :class:`PretrainTrainer` reads the packed
windows in training order (the language of a sequence depends on its step) and installs the
reference learning-rate schedule. Checkpointing, resuming (exact: the data order is a pure
function of the sequence index), progress and logging are the Trainer's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from transformers import Trainer, TrainingArguments

from xlt.config import require_positive, require_probability
from xlt.errors import ConfigError
from xlt.pretrain.cloned import MERGE_MODES, LanguageMap, LanguageSchedule, reference_lr
from xlt.pretrain.data import LanguageAssignment, PretrainDataset, TokenStore, collate_windows
from xlt.training import GuardedTrainerMixin, graceful_stop_callback, schedule_check_callback

#: Model sizes: (layers, d_model, heads, mlp, context). "mini" ... "medium" are the paper's
#: Languini GPT sizes; "pico", "nano" and "micro" are CPU-scale sizes for the synthetic world.
PRESETS: dict[str, dict[str, int]] = {
    "pico": dict(layers=2, d_model=32, heads=2, mlp=128, context=64),
    "nano": dict(layers=2, d_model=64, heads=4, mlp=256, context=128),
    "micro": dict(layers=4, d_model=128, heads=4, mlp=512, context=128),
    "mini": dict(layers=4, d_model=512, heads=8, mlp=2048, context=512),
    "tiny": dict(layers=4, d_model=768, heads=12, mlp=3072, context=512),
    "small": dict(layers=12, d_model=768, heads=12, mlp=3072, context=512),
    "medium": dict(layers=24, d_model=1024, heads=16, mlp=4096, context=512),
}

ARCHS = ("gpt2", "llama")


def model_config(preset: str, arch: str, vocab_size: int, *, seq_len: int | None = None,
                 pad_token_id: int | None = None, bos_token_id: int | None = None,
                 eos_token_id: int | None = None):
    """A Hugging Face config for a from-scratch model of size ``preset``.

    ``arch`` ``"gpt2"``: the paper's GPT-2 style (pre-LN, learned positions, tanh-GELU MLP,
    biases, LayerNorm eps 1e-5, no dropout, untied head). ``"llama"``: RMSNorm, RoPE, SwiGLU,
    untied head. ``seq_len`` larger than the preset's context raises the position limit.
    """
    import transformers as tf

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (expected one of {', '.join(PRESETS)})")
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r} (expected one of {', '.join(ARCHS)})")
    size = PRESETS[preset]
    positions = max(size["context"], seq_len or 0)
    ids = dict(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
               loss_type="ForCausalLM")
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_positions=positions, n_embd=size["d_model"],
                             n_layer=size["layers"], n_head=size["heads"], n_inner=size["mlp"],
                             activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                             attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=False,
                             **ids)
    return tf.LlamaConfig(vocab_size=vocab_size, hidden_size=size["d_model"],
                          intermediate_size=size["mlp"], num_hidden_layers=size["layers"],
                          num_attention_heads=size["heads"], num_key_value_heads=size["heads"],
                          max_position_embeddings=positions, tie_word_embeddings=False, **ids)


@dataclass
class PretrainConfig(TrainingArguments):
    """Options of ``xlt pretrain``: the method's fields, then the Trainer's (paper defaults)."""

    corpus: Optional[list[str]] = field(default=None, metadata={
        "help": "text file(s) of the (first) language, one document per line"})
    tokenizer: Optional[str] = field(default=None, metadata={
        "help": "tokenizer directory or hub id of the (first) language"})
    corpus_l2: Optional[list[str]] = field(default=None, metadata={
        "help": "text file(s) of a real second language (enables bilingual pre-training)"})
    tokenizer_l2: Optional[str] = field(default=None, metadata={
        "help": "tokenizer of the second language (default: the first tokenizer)"})
    preset: str = field(default="nano", metadata={
        "help": f"model size: {', '.join(PRESETS)} (mini..medium are the paper's sizes)"})
    arch: str = field(default="gpt2", metadata={"help": "gpt2 (the paper's style) or llama"})
    seq_len: Optional[int] = field(default=None, metadata={
        "help": "training window length (default: the preset's context; the paper uses 512)"})
    n_clones: int = field(default=0, metadata={
        "help": "number of cloned languages of the first language (0 = none)"})
    p_clone: float = field(default=0.5, metadata={
        "help": "per-sequence probability of a cloned language (split uniformly among clones)"})
    frac_clone: float = field(default=1.0, metadata={
        "help": "fraction of the vocabulary that is cloned (the rest are shared anchors)"})
    p_l2: float = field(default=0.5, metadata={
        "help": "per-sequence probability of the real second language"})
    merge_vocab: str = field(default="disjoint", metadata={
        "help": "second-language vocabulary: disjoint (ids shifted) or anchored (shared pieces reuse L1 ids)"})
    language_schedule: Optional[str] = field(default=None, metadata={
        "help": "stages of p_clone / p_l2 over training, e.g. 0.1_0.9_0.5_0.5; the first value "
                "must equal p_clone / p_l2"})
    language_seed: int = field(default=0, metadata={
        "help": "seed of the generator that assigns languages to sequences"})
    language_names: Optional[list[str]] = field(default=None, metadata={
        "help": "names of the languages (default L1, L2, ...)"})
    min_lr: float = field(default=6e-6, metadata={"help": "final learning rate of the cosine"})
    lr_schedule: str = field(default="reference", metadata={
        "help": "reference (warm-up multiplies the cosine, as in the paper) or hf (lr_scheduler_type)"})
    data_cache: Optional[str] = field(default=None, metadata={
        "help": "directory of the tokenised corpus cache (default: OUTPUT_DIR/token_cache)"})
    shuffle_windows: bool = field(default=True, metadata={
        "help": "visit each stream's windows in a seeded random order per epoch"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing finished model"})

    # the paper's training defaults (Trainer fields)
    learning_rate: float = field(default=6e-4, metadata={"help": "peak learning rate"})
    warmup_steps: float = field(default=200, metadata={"help": "linear warm-up steps"})
    adam_beta2: float = field(default=0.95, metadata={"help": "Adam beta2"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay"})
    max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping (0 = none)"})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "sequences per device and micro-batch"})
    logging_steps: float = field(default=10, metadata={"help": "log every N steps"})
    save_steps: float = field(default=500, metadata={"help": "checkpoint every N steps"})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "seed of the model initialisation and window order"})

    def __post_init__(self):
        if self.output_dir is None:
            raise ConfigError("--output_dir is required")
        super().__post_init__()
        import torch

        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning only helps host-to-GPU copies
        self.validate()

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for an invalid combination."""
        if not self.corpus:
            raise ConfigError("--corpus is required (one or more text files)")
        if not self.tokenizer:
            raise ConfigError("--tokenizer is required")
        if self.max_steps is None or self.max_steps <= 0:
            raise ConfigError(f"--max_steps must be > 0 (pre-training is step-based), got {self.max_steps}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r} (expected one of {', '.join(PRESETS)})")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch {self.arch!r} (expected one of {', '.join(ARCHS)})")
        require_probability("p_clone", self.p_clone)
        require_probability("p_l2", self.p_l2)
        if self.n_clones < 0:
            raise ConfigError(f"n_clones must be >= 0, got {self.n_clones}")
        if self.n_clones and self.corpus_l2:
            raise ConfigError("choose cloned languages (--n_clones) or a real second language "
                              "(--corpus_l2), not both")
        if self.merge_vocab not in MERGE_MODES:
            raise ConfigError(f"merge_vocab must be one of {', '.join(MERGE_MODES)}, got {self.merge_vocab!r}")
        if self.lr_schedule not in ("reference", "hf"):
            raise ConfigError(f"lr_schedule must be reference or hf, got {self.lr_schedule!r}")
        require_positive("min_lr", self.min_lr, allow_zero=True)
        if self.seq_len is not None:
            require_positive("seq_len", self.seq_len)
        if self.language_schedule is not None and not (self.n_clones or self.corpus_l2):
            raise ConfigError("--language_schedule needs cloned languages (--n_clones) or --corpus_l2")
        self.schedule()  # parses and checks the schedule against p_clone / p_l2

    @property
    def mode(self) -> str:
        return "cloned" if self.n_clones else "bilingual" if self.corpus_l2 else "monolingual"

    @property
    def window_length(self) -> int:
        return self.seq_len or PRESETS[self.preset]["context"]

    def schedule(self) -> LanguageSchedule:
        """The language probability per step (a constant unless ``language_schedule``)."""
        p = self.p_clone if self.mode == "cloned" else self.p_l2 if self.mode == "bilingual" else 0.0
        if self.language_schedule is None:
            return LanguageSchedule(p, self.max_steps)
        return LanguageSchedule(self.language_schedule, self.max_steps, initial=p)

    def method_options(self) -> dict[str, Any]:
        """The method's own options (everything that is not a Trainer field)."""
        names = ["corpus", "tokenizer", "corpus_l2", "tokenizer_l2", "preset", "arch", "seq_len",
                 "n_clones", "p_clone", "frac_clone", "p_l2", "merge_vocab", "language_schedule",
                 "language_seed", "language_names", "min_lr", "lr_schedule", "shuffle_windows"]
        return {name: getattr(self, name) for name in names}


def special_ids(tokenizer) -> list[int]:
    """The ids of the tokenizer's special tokens (pad, unk, BOS, EOS, added special tokens):
    the ids no language owns, shared by every language of a run."""
    return sorted({int(i) for i in tokenizer.all_special_ids if i is not None})


def build_language_map(config: PretrainConfig, tokenizer, tokenizer_l2=None) -> LanguageMap:
    """The languages of a run: clones of the first tokenizer, a merged second tokenizer, or one.

    Both paths share the same ids across languages: the tokenizer's special ids (a clone leaves
    them unchanged; a second tokenizer's special token maps to the first's token of the same text).
    """
    names = config.language_names
    vocab_size = len(tokenizer)
    if config.mode == "cloned":
        if names and len(names) != config.n_clones + 1:
            raise ConfigError(f"--language_names needs {config.n_clones + 1} names, got {len(names)}")
        return LanguageMap.cloned(vocab_size, config.n_clones, config.frac_clone, names=names,
                                  shared_ids=special_ids(tokenizer))
    if config.mode == "bilingual":
        if names and len(names) != 2:
            raise ConfigError(f"--language_names needs 2 names, got {len(names)}")
        second = tokenizer_l2 if tokenizer_l2 is not None else tokenizer
        return LanguageMap.bilingual(tokenizer.get_vocab(), second.get_vocab(), config.merge_vocab,
                                     shared_ids=special_ids(second), names=names)
    if names and len(names) != 1:
        raise ConfigError(f"--language_names needs 1 name, got {len(names)}")
    return LanguageMap.monolingual(vocab_size, (names or ["L1"])[0])


class PretrainTrainer(GuardedTrainerMixin, Trainer):
    """A Trainer that reads windows in training order and uses the reference LR schedule.

    It stops on a non-finite loss before the update (``xlt.training``).

    ``language_schedule``: logged as ``p_lang`` with every log line.
    """

    def __init__(self, *args, language_schedule: LanguageSchedule | None = None, **kwargs):
        self.language_schedule = language_schedule
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        from torch.utils.data import SequentialSampler

        # The dataset is already in training order (languages depend on the step).
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        args = self.args
        if self.lr_scheduler is None and getattr(args, "lr_schedule", "hf") == "reference":
            from torch.optim.lr_scheduler import LambdaLR

            optimizer = optimizer if optimizer is not None else self.optimizer
            max_lr, min_lr = args.learning_rate, args.min_lr
            warmup = int(args.get_warmup_steps(num_training_steps))

            def factor(step: int) -> float:
                return reference_lr(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup,
                                    decay_steps=num_training_steps) / max_lr

            self.lr_scheduler = LambdaLR(optimizer, factor)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.language_schedule is not None and "loss" in logs:
            logs["p_lang"] = self.language_schedule.p_at(max(0, self.state.global_step - 1))
        super().log(logs, start_time)


def global_batch_size(config: TrainingArguments) -> int:
    """Sequences per optimizer step over all processes and accumulation steps."""
    return config.per_device_train_batch_size * config.gradient_accumulation_steps * max(1, config.world_size)


def build_trainer(config: PretrainConfig, stores: Sequence[TokenStore], language_map: LanguageMap,
                  *, tokenizer=None, callbacks=None, model=None) -> PretrainTrainer:
    """Model (from the preset, unless given), dataset and Trainer of one pre-training run."""
    import transformers as tf

    schedule = config.schedule()
    assignment = LanguageAssignment(language_map, schedule, global_batch_size(config), seed=config.language_seed)
    dataset = PretrainDataset(stores, language_map, assignment, config.window_length, seed=config.seed,
                              shuffle=config.shuffle_windows)
    from xlt.models import set_loss_type

    if model is None:
        tf.set_seed(config.seed)
        ids = {}
        if tokenizer is not None:
            ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
        model_cfg = model_config(config.preset, config.arch, language_map.model_vocab_size,
                                 seq_len=config.window_length, **ids)
        # The class itself, not AutoModelForCausalLM.from_config: under DeepSpeed ZeRO-3 the latter
        # builds inside zero.Init, which initialises the modules in another order (other random
        # weights for the same seed). Built whole, the model is the same under every engine, and
        # the engine partitions it when it starts (the presets are small enough to exist whole).
        model = {"gpt2": tf.GPT2LMHeadModel, "llama": tf.LlamaForCausalLM}[config.arch](model_cfg)
    set_loss_type(model)
    callbacks = list(callbacks or []) + [graceful_stop_callback(), schedule_check_callback()]
    trainer = PretrainTrainer(model=model, args=config, train_dataset=dataset, data_collator=collate_windows,
                              callbacks=callbacks, language_schedule=schedule)
    trainer.language_assignment = assignment
    return trainer


def pretrain(config: PretrainConfig, stores: Sequence[TokenStore], language_map: LanguageMap, *,
             tokenizer=None, resume_from_checkpoint: str | bool | None = None, callbacks=None):
    """Train; return ``(trainer, summary)``. Saving is the caller's job (see the CLI)."""
    from xlt.engines import num_parameters

    trainer = build_trainer(config, stores, language_map, tokenizer=tokenizer, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    steps = trainer.state.global_step
    counts = trainer.language_assignment.counts(steps)
    summary = {
        "steps": steps,
        "train_loss": result.training_loss,
        "tokens_seen": steps * global_batch_size(config) * config.window_length,
        "sequences_per_language": dict(zip(language_map.names, counts)),
        "n_parameters": num_parameters(trainer.model),  # ZeRO-3 keeps empty placeholders
        "schedule_mean_p": config.schedule().mean(),
    }
    return trainer, summary
