"""Language-specific LoRA (LSLo): per-language low-rank subspaces routed by source or target.

Public API: :func:`train` (what ``xlt train lslo`` runs, with :class:`LSLoDataArguments`),
:class:`LSLoConfig`, :func:`apply_lslo`, :class:`LSLoModel`, :func:`load_lslo`,
:func:`merge_direction`, :func:`pruning_ratio`, :func:`prune_step`,
:func:`make_pruning_permanent`, :func:`pruning_report`, :class:`PruningSchedule`.
"""

from xlt.lslo.config import (CAUSAL_TARGET_MODULES, M2M100_TARGET_MODULES, PAPER_TIER_RANKS,
                             LSLoConfig, default_directions)
from xlt.lslo.layer import LSLoLinear, LSLoRoute
from xlt.lslo.model import (LSLoModel, apply_lslo, base_model_of, is_lslo_dir, load_lslo, merge_direction,
                            read_lslo_metadata)
from xlt.lslo.pruning import (PruningSchedule, make_pruning_permanent, plot_pruning_report, pool_sizes,
                              prune_step, pruning_ratio, pruning_report)
from xlt.lslo.run import LSLoDataArguments, train

__all__ = ["CAUSAL_TARGET_MODULES", "M2M100_TARGET_MODULES", "PAPER_TIER_RANKS", "LSLoConfig",
           "default_directions", "LSLoLinear", "LSLoRoute", "LSLoModel", "apply_lslo", "is_lslo_dir",
           "load_lslo", "merge_direction", "read_lslo_metadata", "PruningSchedule",
           "make_pruning_permanent", "plot_pruning_report", "pool_sizes", "prune_step", "pruning_ratio",
           "pruning_report", "LSLoDataArguments", "train", "base_model_of"]
