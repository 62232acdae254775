"""Training configuration: :class:`AlignConfig` and the three presets (SFT, mid-align, AFP).

Each preset is a subclass whose field defaults are the paper's (``MidAlignConfig``: Liu &
Niehues, ACL 2025; ``AFPConfig``: Li et al., NAACL 2024; ``SFTConfig``: mid-align's task-only
baseline). Scale-dependent settings (batch 32 x 4, 10 epochs, 5,000 steps, bf16, DeepSpeed) live
in ``examples/`` rather than in the defaults, so that a laptop run stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from xlt.align.pooling import POOLING_METHODS
from xlt.errors import ConfigError

SCHEDULES = ("task", "alternate", "joint")
ALTERNATE_STREAMS = ("shared", "separate")
ANCHOR_SIDES = ("src", "tgt")


@dataclass
class AlignConfig(TrainingArguments):
    """``TrainingArguments`` plus the alignment objective, LoRA and data settings.

    The loss of a micro-batch is ``task_weight * CE`` (task micro-batches),
    ``alignment_weight * InfoNCE`` (alignment micro-batches), or their sum (``joint``), scaled so
    that gradient accumulation and multi-process training give the same update as one large
    batch.
    """

    # --- objective -------------------------------------------------------------------------
    schedule: str = field(default="task", metadata={
        "help": "task: task loss only (SFT); alternate: micro-batches alternate task / alignment "
                "(mid-align, flipped before every micro-batch); joint: task_weight * CE + "
                "alignment_weight * InfoNCE on every micro-batch (AFP)",
        "choices": list(SCHEDULES)})
    alternate_streams: str = field(default="shared", metadata={
        "help": "alternate schedule: shared = one stream of rows holding a task example and a pair, "
                "each row feeding its micro-batch's objective (the reference: about half of each per "
                "epoch); separate = task and alignment micro-batches drawn from two shuffled streams, "
                "every example and every pair each epoch (twice the micro-batches per epoch)",
        "choices": list(ALTERNATE_STREAMS)})
    alignment_layer: int | None = field(default=None, metadata={
        "help": "decoder block whose output is aligned (1-based; 0 = input to the first block; "
                "num_layers = last block before the final norm). Default: num_layers // 2"})
    alignment_pooling: str = field(default="mean", metadata={
        "help": "sentence vector: mean over real tokens, last real token, or first real token",
        "choices": list(POOLING_METHODS)})
    alignment_temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature (> 0)"})
    alignment_weight: float = field(default=1.0, metadata={"help": "weight of the alignment loss"})
    task_weight: float = field(default=1.0, metadata={"help": "weight of the task (LM) loss"})
    alignment_symmetric: bool = field(default=False, metadata={
        "help": "average both retrieval directions (neither paper does)"})
    alignment_gather: bool = field(default=False, metadata={
        "help": "use the pairs of every process as in-batch negatives (AFP gathers; mid-align does not)"})
    alignment_detach_candidates: bool = field(default=False, metadata={
        "help": "stop the gradient into the candidate side (mid-align's unidirectional option)"})
    alignment_anchors: str = field(default="tgt", metadata={
        "help": "which side of a toolkit ParallelPair is the InfoNCE anchor (the other side holds "
                "the candidates); reference-format files keep their own order (side 0 / sent0)",
        "choices": list(ANCHOR_SIDES)})
    # --- data ------------------------------------------------------------------------------
    max_length: int = field(default=2048, metadata={"help": "truncate every sequence to this many tokens"})
    pad_to_multiple_of: int = field(default=8, metadata={"help": "pad batch lengths to a multiple of this"})
    packing: bool = field(default=False, metadata={
        "help": "concatenate the task examples of a micro-batch into rows of max_length tokens, "
                "without attention masks between them, dropping the remainder (AFP's packing)"})
    completion_only_loss: bool = field(default=True, metadata={
        "help": "loss on the completion only (the prompt's tokens are masked); false: loss on every "
                "token, prompt included, as plain causal LM (AdaMergeX's reference-task adapters)"})
    append_eos: bool = field(default=True, metadata={
        "help": "append the tokenizer's EOS to each toolkit-format completion (reference-format "
                "rows are used as written)"})
    # --- LoRA ------------------------------------------------------------------------------
    use_lora: bool = field(default=True, metadata={"help": "train a LoRA adapter (else full fine-tuning)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] | None = field(default=None, metadata={
        "help": "module names to adapt; default: attention and MLP projections of the architecture",
        "nargs": "+"})
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "stop after this many evaluations without improvement of metric_for_best_model "
                "(the paper: 5, with load_best_model_at_end and eval_loss)"})
    # --- TrainingArguments defaults that this trainer needs ----------------------------------
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "keep the pair columns (the alignment loss needs them)"})

    #: name of the preset whose defaults these are (not an option: the command picks it)
    preset: str = field(default="custom", init=False)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.alignment_pooling not in POOLING_METHODS:
            raise ConfigError(f"alignment_pooling must be one of {', '.join(POOLING_METHODS)}, "
                              f"got {self.alignment_pooling!r}")
        if self.alternate_streams not in ALTERNATE_STREAMS:
            raise ConfigError(f"alternate_streams must be shared or separate, got {self.alternate_streams!r}")
        if self.alternate_streams == "separate" and self.schedule != "alternate":
            raise ConfigError(f"alternate_streams=separate needs the alternate schedule, not {self.schedule!r}")
        if self.alignment_anchors not in ANCHOR_SIDES:
            raise ConfigError(f"alignment_anchors must be src or tgt, got {self.alignment_anchors!r}")
        t = self.alignment_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t < float("inf")):
            raise ConfigError(f"alignment_temperature must be a finite number > 0, got {t}")
        for name in ("alignment_weight", "task_weight"):
            value = getattr(self, name)
            if not (value >= 0):
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if self.alignment_layer is not None and self.alignment_layer < 0:
            raise ConfigError(f"alignment_layer must be >= 0, got {self.alignment_layer}")
        if self.max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {self.max_length}")
        if self.use_lora and (self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1):
            raise ConfigError("LoRA needs lora_r >= 1, lora_alpha > 0 and 0 <= lora_dropout < 1")
        if self.schedule == "alternate" and self.ddp_find_unused_parameters is None:
            # alignment micro-batches stop after block k: later blocks get no gradient
            self.ddp_find_unused_parameters = True
        if self.deepspeed:
            import importlib.util
            from pathlib import Path

            if isinstance(self.deepspeed, str) and not Path(self.deepspeed).is_file():
                raise ConfigError(f"deepspeed: config file {self.deepspeed} not found")
            if importlib.util.find_spec("deepspeed") is None:
                raise ConfigError("deepspeed: the deepspeed package is not installed "
                                  "(pip install 'xlt[deepspeed]'); drop --deepspeed to train without it")
        if self.label_names is None:
            self.label_names = ["labels"]
        super().__post_init__()
        if self.activation_checkpointing and not self.activation_checkpointing_kwargs:
            # the reference forces non-reentrant checkpointing
            self.activation_checkpointing_kwargs = {"use_reentrant": False}


@dataclass
class SFTConfig(AlignConfig):
    """Task fine-tuning only: mid-align's baseline (the mid-align reference: LoRA r 8, alpha 16, dropout
    0.1 on q,k,v,o,gate,up,down; lr 5e-4, inverse_sqrt, warmup ratio 0.03, weight decay 0;
    5 epochs at batch 32 x 4 in the paper)."""

    preset: str = field(default="sft", init=False)
    schedule: str = field(default="task", metadata={"help": "task / alternate / joint", "choices": list(SCHEDULES)})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate (paper: 5e-4)"})
    lr_scheduler_type: str = field(default="inverse_sqrt", metadata={"help": "LR schedule (paper: inverse_sqrt)"})
    warmup_steps: float = field(default=0.03, metadata={"help": "warmup steps, or a ratio if < 1 (paper: 0.03)"})
    seed: int = field(default=1, metadata={"help": "random seed (paper: 1)"})


@dataclass
class MidAlignConfig(SFTConfig):
    """Middle-layer alignment (Liu & Niehues, ACL 2025; the mid-align reference).

    Alignment at the middle decoder block (layer 16 of Llama-3-8B's 32; ``None`` = num_layers // 2),
    masked-mean pooling of the raw sentence (BOS included), one-directional InfoNCE with
    τ = 0.1 and weight 1, side 0 (the non-English / non-source sentence) as anchors, in-batch
    negatives of the process only; micro-batches alternate task / alignment; LoRA as for SFT.
    The paper doubles the epochs (5 -> 10) since each row feeds one objective per epoch.
    """

    preset: str = field(default="mid-align", init=False)
    schedule: str = field(default="alternate", metadata={"help": "task / alternate / joint",
                                                          "choices": list(SCHEDULES)})
    alignment_layer: int | None = field(default=None, metadata={
        "help": "decoder block to align (paper: 16 of 32; default num_layers // 2)"})
    alignment_pooling: str = field(default="mean", metadata={"help": "paper: mean", "choices": list(POOLING_METHODS)})
    alignment_temperature: float = field(default=0.1, metadata={"help": "paper: 0.1"})
    alignment_weight: float = field(default=1.0, metadata={"help": "paper: 1.0"})
    alignment_anchors: str = field(default="tgt", metadata={
        "help": "anchor side of toolkit pairs (paper: the non-English sentence)", "choices": list(ANCHOR_SIDES)})


@dataclass
class AFPConfig(AlignConfig):
    """AFP (Li et al., NAACL 2024; the AFP reference).

    ``1.0 * InfoNCE + 1.5 * CLM`` on every step; InfoNCE on the last real token of decoder
    block 1, τ = 0.05, sent0 (the pivot / source language) as anchors, candidates gathered
    across processes; the CLM examples of a micro-batch packed into rows of ``max_length`` = 512
    tokens; full fine-tuning with lr 1e-5, cosine schedule, warmup ratio 0.03, weight decay 0, seed 0
    (xglm-564m, 5,000 steps at per-device batch 2 in the paper).
    """

    preset: str = field(default="afp", init=False)
    schedule: str = field(default="joint", metadata={"help": "task / alternate / joint", "choices": list(SCHEDULES)})
    alignment_layer: int | None = field(default=1, metadata={"help": "decoder block to align (paper: 1)"})
    alignment_pooling: str = field(default="last", metadata={"help": "paper: last", "choices": list(POOLING_METHODS)})
    alignment_temperature: float = field(default=0.05, metadata={"help": "paper: 0.05"})
    alignment_weight: float = field(default=1.0, metadata={"help": "paper: 1.0 (cl_weight)"})
    task_weight: float = field(default=1.5, metadata={"help": "paper: 1.5 (clm_weight)"})
    alignment_gather: bool = field(default=True, metadata={"help": "paper: gathers across GPUs"})
    alignment_anchors: str = field(default="src", metadata={
        "help": "anchor side of toolkit pairs (paper: sent0 = the pivot language)", "choices": list(ANCHOR_SIDES)})
    max_length: int = field(default=512, metadata={"help": "sequence length and packing block (paper: 512)"})
    packing: bool = field(default=True, metadata={"help": "pack task examples per micro-batch (paper: yes)"})
    use_lora: bool = field(default=False, metadata={"help": "paper: full fine-tuning"})
    learning_rate: float = field(default=1e-5, metadata={"help": "paper: 1e-5"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "paper: cosine (DeepSpeed runs: linear decay)"})
    warmup_steps: float = field(default=0.03, metadata={"help": "paper: ratio 0.03"})
    seed: int = field(default=0, metadata={"help": "paper: 0"})


PRESETS: dict[str, type[AlignConfig]] = {"sft": SFTConfig, "mid-align": MidAlignConfig, "afp": AFPConfig}


def preset_defaults(name: str) -> dict:
    """The fields whose defaults a preset changes, with their values."""
    import dataclasses

    cls = PRESETS[name]
    base = {f.name: f.default for f in dataclasses.fields(AlignConfig)}
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING and base.get(f.name) != f.default}
