"""Keeping the libraries' noise out of a user's terminal (``xlt --verbose`` lets it through).

What is filtered, and only when it comes from a library (never a warning of xlt's own, such as a
refused fast path):

- deprecation notices (``FutureWarning``, ``DeprecationWarning``) raised inside transformers,
  peft, torch, accelerate, datasets or huggingface_hub: advice for the code that calls the
  library, which a user of xlt cannot act on (e.g. PEFT reading ``is_gradient_checkpointing``);
- torch's ``pin_memory`` notice on a machine without an accelerator (pinning is then a no-op);
- transformers' log messages in :data:`TRANSFORMERS_NOISE`: advice about calls xlt makes
  deliberately (a padded batch scored through its own masks and positions);
- DeepSpeed's log messages in :data:`DEEPSPEED_NOISE`: its notice, printed on standard output
  by every process that imports it (transformers and accelerate do when it is installed), that
  a machine without a GPU runs DeepSpeed's CPU accelerator.

Causes that are xlt's own are fixed where they arise instead (``loss_type`` set on the models
xlt loads and builds, ``fan_in_fan_out`` for GPT-2's ``Conv1D`` layers); the filters are a
second line, so that a library upgrade does not put the noise back.
"""

from __future__ import annotations

import logging
import sys
import warnings

LIBRARIES = r"(transformers|peft|torch|accelerate|datasets|huggingface_hub)(\..*)?$"

#: substrings of transformers log records that are dropped
TRANSFORMERS_NOISE = (
    "We strongly recommend passing in an `attention_mask`",
    "was set in the config but it is unrecognized. Using the default loss",
)

#: substrings of DeepSpeed log records (its logger is named "DeepSpeed") that are dropped
DEEPSPEED_NOISE = ("Setting accelerator to CPU",)


class _DropNoise(logging.Filter):
    def __init__(self, noise: tuple[str, ...] = TRANSFORMERS_NOISE):
        super().__init__()
        self.noise = noise

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.noise)


_active = False


def quiet_libraries() -> None:
    """Install the filters for this process (the command line does, unless ``--verbose``).

    Python warnings filters are installed at once; the transformers log filter as soon as
    transformers is loaded (:func:`quiet_transformers`, called by :mod:`xlt.models`), so that a
    command which never loads a model does not pay for importing it.
    """
    global _active
    _active = True
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)
    warnings.filterwarnings("ignore", message=r"'pin_memory' argument is set as true but no accelerator",
                            category=UserWarning)
    # DeepSpeed's logger object exists before DeepSpeed is imported (logging.getLogger returns
    # the one it will configure), so the filter needs no import of DeepSpeed
    deepspeed_logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _DropNoise) for f in deepspeed_logger.filters):
        deepspeed_logger.addFilter(_DropNoise(DEEPSPEED_NOISE))
    if "transformers" in sys.modules:
        quiet_transformers()


def quiet_transformers() -> None:
    """Drop :data:`TRANSFORMERS_NOISE` from transformers' log output, if :func:`quiet_libraries`
    was called in this process (idempotent; imports transformers)."""
    if not _active:
        return
    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger("transformers")  # also installs the library's own handler
    for target in (root, *root.handlers):
        if not any(isinstance(f, _DropNoise) for f in target.filters):
            target.addFilter(_DropNoise())
