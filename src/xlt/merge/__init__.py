"""Adapter merging: AdaMergeX (LoRA and (IA)^3), exact linear / task-arithmetic merges, layer swapping.

Public API::

    from xlt.merge import adamergex, linear, task_arithmetic, read_adapter, write_adapter
    result = adamergex("task_en", "lm_sw", "lm_en", t=0.5)            # mode="delta" (exact)
    write_adapter(result.adapter, "task_sw")                           # PeftModel loads it
"""

from xlt.merge.adamergex import (IA3_EPS, MergeResult, adamergex, combine_factors, concat_updates,
                                 ia3_adamergex, lora_delta, merge_ia3_linear, merge_lora,
                                 truncate_rank)
from xlt.merge.adapters import (AdapterState, LoraFactors, check_compatible, lora_modules,
                                read_adapter, write_adapter)
from xlt.merge.layer_swap import (language_weights, layer_swap, layer_swap_adapters,
                                  layer_swap_directories)
from xlt.merge.methods import (MERGE_METHODS, get_merge_method, language_arithmetic, linear,
                               register_merge_method, task_arithmetic)
from xlt.merge.reference_data import chunk_chars, chunk_words

__all__ = [
    "IA3_EPS", "MergeResult", "adamergex", "combine_factors", "concat_updates", "ia3_adamergex",
    "lora_delta", "merge_ia3_linear", "merge_lora", "truncate_rank", "AdapterState", "LoraFactors",
    "check_compatible", "lora_modules", "read_adapter", "write_adapter", "MERGE_METHODS",
    "get_merge_method", "linear", "register_merge_method", "task_arithmetic", "chunk_chars",
    "chunk_words", "language_weights", "layer_swap", "layer_swap_adapters", "layer_swap_directories",
    "language_arithmetic",
]
