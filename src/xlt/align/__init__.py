"""Contrastive representation alignment while fine-tuning a causal LM.

Two published methods share these parts:

* middle-layer alignment ("mid-align", Liu & Niehues, ACL 2025): InfoNCE on mean-pooled states of
  a middle decoder layer, alternated per micro-batch with the task loss;
* AFP (Li et al., NAACL 2024): InfoNCE on last-token states of the first decoder layer, summed
  with a cross-lingual instruction-following LM loss at every step;

plus plain task fine-tuning (SFT) as the baseline. The building blocks are public:
:func:`layer_states` (the raw output of decoder block ``k``, running blocks ``1..k`` only),
:func:`pool` and :func:`info_nce`. :class:`AlignConfig` / :class:`AlignTrainer` put them into a
``transformers.Trainer``; :func:`train` (with :class:`AlignDataArguments`) is what
``xlt train sft | mid-align | afp`` runs: files in, a trained adapter out. Heavy imports
(torch, transformers) happen on first attribute access.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "layer_states": "xlt.align.layers",
    "pool": "xlt.align.pooling",
    "POOLING_METHODS": "xlt.align.pooling",
    "info_nce": "xlt.align.losses",
    "alignment_loss": "xlt.align.losses",
    "retrieval_accuracy": "xlt.align.losses",
    "AlignConfig": "xlt.align.config",
    "PRESETS": "xlt.align.config",
    "preset_defaults": "xlt.align.config",
    "AlignTrainer": "xlt.align.trainer",
    "AlignCollator": "xlt.align.data",
    "AlignDataset": "xlt.align.data",
    "StreamsDataset": "xlt.align.data",
    "AlternatingStreamsSampler": "xlt.align.data",
    "AlignDataArguments": "xlt.align.run",
    "train": "xlt.align.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xlt.align' has no attribute {name!r}")
