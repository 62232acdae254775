"""Evaluation: multilingual in-context multiple choice, task accuracy, lm-evaluation-harness.

Public API (imported lazily, so ``import xlt.eval`` stays light):

* :func:`evaluate_icl` — multiple-choice ICL accuracy per language (:mod:`xlt.eval.icl`)
* :func:`evaluate_task` — exact-match accuracy of greedy completions (:mod:`xlt.eval.task`)
* :func:`load_template` — a shipped or YAML prompt template (:mod:`xlt.eval.templates`)
* :func:`run_lm_eval` — lm-evaluation-harness on an in-memory model (:mod:`xlt.eval.lm_eval_bridge`)
* :func:`xlt.eval.mt.evaluate` — what ``xlt eval mt`` runs: every direction, BLEU / chrF per system
* :func:`compare_runs` — suite runs side by side, paired bootstrap intervals (:mod:`xlt.eval.compare`)
* :func:`evaluate_mgsm` — MGSM direct answers, the harness's number exact match (:mod:`xlt.eval.mgsm`)
* :func:`wrong_language_rate` — share of outputs not in the expected language (:mod:`xlt.eval.language_id`)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate_icl": "xlt.eval.icl",
    "score_items": "xlt.eval.icl",
    "accuracy_table": "xlt.eval.icl",
    "select_demonstrations": "xlt.eval.icl",
    "prepare_choice_items": "xlt.eval.icl",
    "prepare_template_items": "xlt.eval.icl",
    "prepare_icl_items": "xlt.eval.icl",
    "evaluate_task": "xlt.eval.task",
    "generate_completions": "xlt.eval.task",
    "load_template": "xlt.eval.templates",
    "parse_template": "xlt.eval.templates",
    "encode_lm_eval": "xlt.eval.scoring",
    "afp_sequence_scores": "xlt.eval.scoring",
    "run_lm_eval": "xlt.eval.lm_eval_bridge",
    "wrong_language_rate": "xlt.eval.language_id",
    "compare_runs": "xlt.eval.compare",
    "bootstrap_difference": "xlt.eval.compare",
    "evaluate_mgsm": "xlt.eval.mgsm",
    "identify_languages": "xlt.eval.language_id",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xlt.eval' has no attribute {name!r}")
