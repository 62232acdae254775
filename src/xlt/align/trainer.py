"""``AlignTrainer``: a ``transformers.Trainer`` that adds a contrastive alignment loss.

Schedules (``AlignConfig.schedule``):

* ``task``: the Trainer's own causal-LM loss (SFT).
* ``alternate`` (mid-align): micro-batch ``k`` of the run is a task micro-batch when ``k`` is even
  and an alignment micro-batch when it is odd, ``k = global_step * GA + i`` for the ``i``-th
  micro-batch of an accumulation window (the reference flips a flag before every micro-batch,
  so with GA = 4 each optimizer step sums [task, align, task, align]). With
  ``alternate_streams="separate"`` the train dataset is a :class:`StreamsDataset` whose sampler
  lays out blocks of task examples and blocks of pairs in turn, and each micro-batch's objective
  is the kind it holds.
* ``joint`` (AFP): ``task_weight * CE + alignment_weight * InfoNCE`` on every micro-batch.

Loss scaling. The task CE comes from ``super().compute_loss(..., num_items_in_batch=...)``, so it
is normalised by the number of label tokens of the whole accumulation window (counted over task
micro-batches only) and rescaled for DDP by the base class. Each micro-batch's alignment loss
is divided by the number of micro-batches of the window, and, when candidates are gathered
across processes, its gradient is multiplied by the world size (every process then holds the
gradient of its own rows only, and DDP averages). In the alternate schedule the task CE of a window is weighted
by (task micro-batches / window size), which is the reference's weighting ``½ (CE + A)`` for
GA = 4. The result is independent of how a global batch is split over micro-batches and
processes.

Logging. ``task_loss`` and ``alignment_loss`` are the means, over the micro-batches (of every
process) that computed them since the last log, of each loss as computed on its micro-batch
(unweighted). Evaluation logs ``eval_task_loss`` (the token-mean CE over the dev task examples),
``eval_alignment_loss`` (the mean over dev anchors of InfoNCE within their evaluation batch),
``eval_loss`` (= task_weight * eval_task_loss + alignment_weight * eval_alignment_loss, used for
model selection as in the reference, whatever the lengths of the dev task and pair lists) and
``eval_alignment_retrieval_accuracy`` (anchor -> candidate retrieval over the distinct dev
pairs).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from xlt.align.data import PAIR_KEYS, TASK_KEYS, AlternatingStreamsSampler, StreamsDataset
from xlt.align.layers import layer_states
from xlt.align.losses import _gather_active, alignment_loss, retrieval_accuracy
from xlt.align.pooling import pool
from xlt.engines import missing_gradient_callback
from xlt.models import num_layers
from xlt.training import GuardedTrainerMixin

_OBJECTIVE = "_xlt_objective"


class AlignTrainer(GuardedTrainerMixin, Trainer):
    """Trainer for :class:`~xlt.align.AlignConfig` (SFT, mid-align, AFP); stops on a non-finite loss."""

    #: compute_loss already returns a loss scaled for gradient accumulation
    loss_is_scaled_for_ga = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.args
        self.alignment_layer = None
        if cfg.schedule != "task":
            n = num_layers(self.model)
            self.alignment_layer = n // 2 if cfg.alignment_layer is None else cfg.alignment_layer
            from xlt.align.layers import _check_layer
            _check_layer(self.alignment_layer, n)
        self._metrics: dict[str, dict[str, list]] = {"train": {}, "eval": {}}
        self._window_task_batches = 0
        # every trainable parameter steps every optimizer step, as under DeepSpeed (xlt.engines)
        self.add_callback(missing_gradient_callback(self))

    # ---- batches -------------------------------------------------------------------------
    def _objective(self, index: int) -> str:
        return "task" if index % 2 == 0 else "alignment"

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if isinstance(dataset, StreamsDataset):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return AlternatingStreamsSampler(len(dataset.tasks), len(dataset.pairs), seed=seed,
                                             block=self._train_batch_size * max(1, self.args.world_size))
        return super()._get_train_sampler(train_dataset)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Collect a window of micro-batches; in the alternate schedule tag each with its objective
        and drop the fields it does not use, so only task micro-batches count label tokens."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if self.args.schedule == "alternate":
            start = self.state.global_step * self.args.gradient_accumulation_steps
            for i, batch in enumerate(batches):
                if isinstance(self.train_dataset, StreamsDataset):  # separate streams: the batch says which
                    objective = "task" if "labels" in batch else "alignment"
                else:
                    objective = self._objective(start + i)
                drop = PAIR_KEYS if objective == "task" else TASK_KEYS
                for key in drop:
                    batch.pop(key, None)
                batch[_OBJECTIVE] = objective
        task_batches = [b for b in batches if "labels" in b]
        self._window_task_batches = len(task_batches)
        num_items = self._get_num_items_in_batch(task_batches, device) if task_batches else None
        return batches, num_items

    # ---- loss ----------------------------------------------------------------------------
    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch=None):
        cfg = self.args
        inputs = dict(inputs)
        objective = inputs.pop(_OBJECTIVE, None)
        pair = {k: inputs.pop(k) for k in PAIR_KEYS if k in inputs}
        training = model.training
        split = "train" if training else "eval"
        window = max(1, getattr(self, "current_gradient_accumulation_steps", None) or 1) if training else 1
        do_task = "labels" in inputs and (objective != "alignment" or not training)
        do_align = bool(pair) and cfg.schedule != "task" and (objective != "task" or not training)

        loss = None
        outputs = None
        if do_task:
            ce, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                               num_items_in_batch=num_items_in_batch if training else None)
            by_window = training and self.model_accepts_loss_kwargs and num_items_in_batch is not None
            if training:
                self._record(split, "task_loss", self._micro_batch_ce(ce, inputs["labels"], num_items_in_batch,
                                                                      by_window))
            else:  # the dev set's CE: every label token weighs the same, whatever the batching
                tokens = inputs["labels"][..., 1:].ne(-100).sum()
                self._record(split, "task_loss", (torch.where(tokens > 0, ce.detach(), 0.0), tokens))
            if by_window:  # normalised over the window's task tokens (and rescaled for DDP)
                share = self._window_task_batches / window if cfg.schedule == "alternate" else 1.0
                ce = ce * share
            else:
                ce = ce / window
            loss = cfg.task_weight * ce
        if do_align:
            align = self._alignment_loss(model, pair, training)
            # evaluation: the mean over dev anchors (each scored against the candidates of its batch)
            self._record(split, "alignment_loss", align.detach() if training else
                         (align.detach(), torch.tensor(pair["anchor_input_ids"].shape[0])))
            term = cfg.alignment_weight * align / window
            if training and cfg.alignment_gather and _gather_active():
                # every process holds the same global value but the gradient of its own rows only;
                # DDP averages, so scale the gradient (not the value, which is logged) by the world size
                world = torch.distributed.get_world_size()
                term = term * world - (world - 1) * term.detach()
            loss = term if loss is None else loss + term
        if loss is None:
            raise ValueError("this batch has neither task labels nor pairs for the configured schedule")
        return (loss, outputs) if return_outputs else loss

    def _micro_batch_ce(self, ce, labels, num_items_in_batch, by_window):
        """The unweighted mean CE of this micro-batch, for logging (no host sync)."""
        ce = ce.detach().float()
        if not by_window:
            return ce
        local = labels[..., 1:].ne(-100).sum()
        scale = 1
        if self.args.average_tokens_across_devices:
            scale = self.accelerator.num_processes // self.get_tp_size()
        # a micro-batch without label tokens has no CE to log: weight 0
        return ce * num_items_in_batch / (scale * local.clamp(min=1)), (local > 0).float()

    def _forward_target(self, model):
        """The module the alignment forward runs through: the wrapper the Trainer gave us.

        DDP and FSDP2 must see the pass (DDP's reducer, FSDP2's per-module gather hooks) and
        allow an early exit. A DeepSpeed engine must see the whole forward too: bypassing it
        skips ZeRO-3's backward bookkeeping and leaves the parameters after the alignment
        layer without a gradient, which ZeRO's flat partitions mishandle; :func:`layer_states`
        recognises the engine, refuses the early exit (announced once) and gives those
        parameters a zero gradient.
        """
        return model

    def _alignment_loss(self, model, pair: dict, training: bool) -> torch.Tensor:
        cfg = self.args
        target = self._forward_target(model)
        if cfg.schedule == "joint" and training and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            # The task forward goes through DDP in the same step; a second DDP forward before one
            # backward is not allowed, and the task pass covers every parameter anyway.
            target = model.module
        a_ids, a_mask = pair["anchor_input_ids"], pair["anchor_attention_mask"]
        c_ids, c_mask = pair["candidate_input_ids"], pair["candidate_attention_mask"]
        # One pass over both sides: right padding and causal attention make the padded
        # concatenation value-identical to two separate passes.
        width = max(a_ids.shape[1], c_ids.shape[1])
        pad_id = self._pad_id()
        ids = torch.cat([_right_pad(a_ids, width, pad_id), _right_pad(c_ids, width, pad_id)])
        mask = torch.cat([_right_pad(a_mask, width, 0), _right_pad(c_mask, width, 0)])
        hidden = layer_states(target, ids, mask, self.alignment_layer)
        b = a_ids.shape[0]
        return alignment_loss(hidden[:b], mask[:b], hidden[b:], mask[b:], temperature=cfg.alignment_temperature,
                              pooling=cfg.alignment_pooling, symmetric=cfg.alignment_symmetric,
                              gather=cfg.alignment_gather and training,
                              detach_candidates=cfg.alignment_detach_candidates)

    def _pad_id(self) -> int:
        tok = self.processing_class
        pad = getattr(tok, "pad_token_id", None)
        return 0 if pad is None else int(pad)

    # ---- metrics -------------------------------------------------------------------------
    def _record(self, split: str, name: str, value) -> None:
        """Add one micro-batch's value (or ``(value, weight)``) to the running mean of ``name``."""
        weight = None
        if isinstance(value, tuple):
            value, weight = value
        value = value.detach().float()
        weight = torch.ones_like(value) if weight is None else weight.to(value)
        slot = self._metrics[split].get(name)
        self._metrics[split][name] = [value * weight, weight] if slot is None else \
            [slot[0] + value * weight, slot[1] + weight]

    def _pop_metrics(self, split: str) -> dict[str, float]:
        """Means since the last call, over every process; resets the running sums."""
        names = sorted(self._metrics[split])
        out: dict[str, float] = {}
        if not names:
            return out
        totals = torch.stack([torch.stack([self._metrics[split][n][0], self._metrics[split][n][1]]) for n in names])
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals.to(self.args.device), reduction="sum")
        for n, (total, count) in zip(names, totals.double().cpu().tolist()):
            if count > 0:
                out[n] = total / count
        self._metrics[split] = {}
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and not any(k.startswith("eval_") for k in logs):
            logs = {**logs, **{k: round(v, 6) for k, v in self._pop_metrics("train").items()}}
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        self._metrics["eval"] = {}
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=True,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        losses = self._pop_metrics("eval")
        for name, value in losses.items():
            output.metrics[f"{metric_key_prefix}_{name}"] = value
        if losses:
            # The Trainer's eval_loss is a mean of per-batch sums; rows past the shorter dev list
            # carry one objective only, so that mean drifts toward it. Sum the two dev means instead.
            cfg = self.args
            output.metrics[f"{metric_key_prefix}_loss"] = (
                cfg.task_weight * losses.get("task_loss", 0.0)
                + (cfg.alignment_weight * losses.get("alignment_loss", 0.0) if cfg.schedule != "task" else 0.0))
        pairs = getattr(getattr(dataloader, "dataset", None), "pairs", None)
        if self.args.schedule != "task" and pairs:
            output.metrics[f"{metric_key_prefix}_alignment_retrieval_accuracy"] = self.retrieval_accuracy(pairs)
        return output

    @torch.no_grad()
    def retrieval_accuracy(self, pairs: list[dict]) -> float:
        """Anchor -> candidate retrieval accuracy (cosine of pooled layer states) over ``pairs``."""
        model = self.model
        was_training = model.training
        model.eval()
        device = self.args.device
        pad_id = self._pad_id()
        size = self.args.per_device_eval_batch_size
        vectors = {"anchor": [], "candidate": []}
        try:
            for start in range(0, len(pairs), size):
                chunk = pairs[start:start + size]
                for side in vectors:
                    seqs = [p[f"{side}_input_ids"] for p in chunk]
                    width = max(len(s) for s in seqs)
                    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], device=device)
                    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
                    hidden = layer_states(model, ids, mask, self.alignment_layer)
                    vectors[side].append(pool(hidden.float(), mask, self.args.alignment_pooling))
        finally:
            model.train(was_training)
        return retrieval_accuracy(torch.cat(vectors["anchor"]), torch.cat(vectors["candidate"]))


def _right_pad(t: torch.Tensor, width: int, value: int) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)
