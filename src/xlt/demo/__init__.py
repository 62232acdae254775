"""``xlt demo``: the toolkit's methods side by side in a synthetic world, with a report.

Steps (each a function of the public API, resumable): generate a world (``xlt.synth``),
pre-train a tiny base model (``xlt.pretrain``), task transfer with SFT / mid-align / AFP
(``xlt.align``, evaluated with ``xlt.eval``), AdaMergeX (``xlt.merge``), LSLo against a shared
LoRA (``xlt.lslo``, ``xlt eval mt``), cloned-language pre-training (``xlt.pretrain``,
``xlt.eval.ppl``, ``xlt.analysis``); then ``report.md``, ``results.json`` and plots.
"""

from __future__ import annotations


def demo_command(argv: list[str], prog: str) -> int:
    """Entry point of ``xlt demo`` (see :mod:`xlt.demo.runner`)."""
    from xlt.demo.runner import demo_command as run

    return run(argv, prog)


__all__ = ["demo_command"]
