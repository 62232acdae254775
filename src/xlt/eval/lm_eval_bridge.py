"""Run lm-evaluation-harness on a model loaded by xlt (optional extra ``xlt[lm-eval]``).

The model (a path or hub id, optionally with a PEFT adapter on top) is loaded once by
:func:`xlt.models.load_model` and handed to the harness as an in-memory model
(``HFLM(pretrained=model, tokenizer=tokenizer)``), so an adapter trained by xlt is evaluated
exactly as xlt loads it. Tasks are the harness's names (``xnli_de``, ``paws_zh``, ...) or
task YAML files in ``include_path`` folders.
"""

from __future__ import annotations

from typing import Any, Sequence

from xlt.errors import ConfigError


def require_lm_eval():
    """Import ``lm_eval`` or raise a one-line :class:`ConfigError` saying how to install it."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError("lm-evaluation-harness is not installed; install the optional extra: "
                          "pip install 'xlt[lm-eval]'") from None
    return lm_eval


def run_lm_eval(model, tokenizer, tasks: Sequence[str], *, num_fewshot: int | None = None,
                batch_size: int = 8, limit: float | None = None, include_path: Sequence[str] = (),
                log_samples: bool = False, seed: int = 0, max_length: int | None = None) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on an in-memory model; returns the harness's result dict."""
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    manager = TaskManager(include_path=list(include_path) or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"unknown lm-eval task(s) {', '.join(unknown)} (see 'lm-eval ls tasks'; "
                          "local task YAML folders go to --include-path)")
    return simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                           task_manager=manager, log_samples=log_samples, random_seed=seed,
                           numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                           bootstrap_iters=0)


def results_table(results: dict[str, Any]) -> str:
    """The harness's own markdown table of a result dict."""
    from lm_eval.utils import make_table

    return make_table(results)
