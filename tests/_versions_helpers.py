"""Checks shared by the tests of commands that record package versions."""

from __future__ import annotations


def assert_records_versions(doc: dict) -> None:
    """``doc`` records the versions of the stack that is running (read independently here)."""
    from importlib import metadata

    import torch
    import transformers

    versions = doc["xlt_versions"]
    assert versions["transformers"] == transformers.__version__
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    for name in ("peft", "accelerate", "datasets", "tokenizers"):
        assert versions[name] == metadata.version(name), name
