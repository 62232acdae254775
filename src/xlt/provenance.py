"""What a result was computed with: the versions of Python, xlt and the stack under it.

Every command that writes results records :func:`package_versions` (train: ``train_config.json``
and ``pretrain_config.json``; eval, merge and demo: their JSON reports) under the key
:data:`VERSIONS_KEY`, so a number can always be traced to the releases that produced it.
"""

from __future__ import annotations

import platform
from importlib import metadata

VERSIONS_KEY = "xlt_versions"
STACK = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers")


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """``{"python": ..., "xlt": ..., "torch": ..., ...}``: the installed distribution versions of
    xlt and its stack (plus ``extra`` names); None for one that is not installed."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("xlt",) + STACK + tuple(extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
