"""xlt: cross-lingual transfer for large language models.

Five published methods on the Hugging Face stack (middle-layer alignment, AFP, AdaMergeX,
language-specific LoRA, cloned-language pre-training) and a synthetic multilingual world
(:mod:`xlt.synth`) in which each of them can be run and measured on a CPU.

Submodules are imported lazily so that ``import xlt`` and ``xlt --help`` stay fast.
"""

__version__ = "0.1.0"

from xlt.errors import ConfigError, DataError, ModelError, XltError

__all__ = ["__version__", "XltError", "DataError", "ConfigError", "ModelError"]
