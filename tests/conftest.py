"""Shared offline fixtures: tokenizers trained in-process, tiny random models saved to disk.

Nothing here touches the network. Fixtures are session-scoped so the suite pays for imports
and model construction once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers():
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one torch thread (intra-op threads only add synchronisation,
    badly so on a busy machine); a module opts in with ``pytest.mark.usefixtures("one_thread")``
    and the setting is restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def bpe_tokenizer():
    from xlt.testing import train_bpe_tokenizer

    return train_bpe_tokenizer()


@pytest.fixture(scope="session")
def nllb_tokenizer():
    from xlt.testing import train_nllb_tokenizer

    return train_nllb_tokenizer(["eng_Latn", "deu_Latn", "fra_Latn"])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bpe_tokenizer, nllb_tokenizer):
    """``tiny_model_dir("llama")`` -> a directory with a saved tiny model and its tokenizer."""
    from xlt.testing import save_tiny_model

    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            tokenizer = nllb_tokenizer if arch == "m2m100" else bpe_tokenizer
            cache[arch] = save_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}"), tokenizer=tokenizer)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_dir):
    return tiny_model_dir("llama")


def run_xlt(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``xlt`` command line in a subprocess and capture its output."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(SRC) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "xlt", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def xlt_cli():
    """The :func:`run_xlt` helper as a fixture."""
    return run_xlt

