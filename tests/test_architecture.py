"""The package layering of docs/architecture.md: a lower module never imports a higher one.

Every import statement of every module under ``src/xlt`` (function-level imports included) is
read with ``ast``; an import of another top-level unit must go strictly down the ranks below,
and no module but a command-line adapter imports a command-line adapter (``*/cli.py``,
``*_cli.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: rank of each top-level unit of xlt (a module ``xlt/x.py`` or a package ``xlt/x/``); an
#: import from one unit to another must go to a strictly lower rank
RANKS = {
    "errors": 0,
    "xlt": 1, "io": 1, "provenance": 1, "fastpath": 1, "quiet": 1,  # "xlt": the package's own __init__
    "config": 2, "formats": 2, "models": 2, "training": 2, "translation": 2, "testing": 2, "engines": 2,
    "synth": 3, "align": 3, "afp": 3, "merge": 3, "lslo": 3, "pretrain": 3,
    "eval": 4, "analysis": 4,
    "demo": 5,
    "cli": 6,
    "__main__": 7,  # python -m xlt
}


def module_sources(root: Path) -> dict[str, str]:
    """``{dotted module name: source}`` for every ``.py`` file of the ``xlt`` package under ``root``."""
    sources = {}
    for path in sorted((root / "xlt").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def imported_modules(name: str, source: str, known: set[str]) -> set[str]:
    """The xlt modules that module ``name`` imports (``from xlt import io`` counts as ``xlt.io``)."""
    found = set()
    package = name if name in known and any(k.startswith(name + ".") for k in known) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t == "xlt" or t.startswith("xlt."))
    return found


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "xlt"


def is_cli(module: str) -> bool:
    last = module.rpartition(".")[2]
    return last in ("cli", "__main__") or last.endswith("_cli")


def layering_violations(sources: dict[str, str]) -> list[str]:
    """One line per import that breaks the layering (empty when the tree is clean)."""
    known = set(sources)
    problems = []
    for name, source in sources.items():
        for target in sorted(imported_modules(name, source, known)):
            a, b = unit_of(name), unit_of(target)
            if a not in RANKS or b not in RANKS:
                problems.append(f"{name} -> {target}: unit {a if a not in RANKS else b!r} has no rank")
            elif a != b and RANKS[b] >= RANKS[a]:
                problems.append(f"{name} -> {target}: {a} (rank {RANKS[a]}) imports {b} (rank {RANKS[b]})")
            if is_cli(target) and not is_cli(name) and target != name:
                problems.append(f"{name} -> {target}: only a command-line adapter imports one")
    return problems


def test_no_module_imports_a_higher_layer():
    sources = module_sources(SRC)
    assert "xlt.translation" in sources and "xlt.lslo.trainer" in sources  # the tree was found
    assert layering_violations(sources) == []


def test_every_unit_has_a_rank():
    units = {unit_of(name) for name in module_sources(SRC)}
    assert units <= set(RANKS), sorted(units - set(RANKS))


def test_the_check_catches_upward_imports():
    sources = module_sources(SRC)
    # lslo (rank 3) taking the translation prompt from eval (rank 4), as it once did
    bad = dict(sources)
    bad["xlt.lslo.trainer"] += "\n\ndef _prompt():\n    from xlt.eval.mt import TranslationPrompt\n"
    assert layering_violations(bad) == ["xlt.lslo.trainer -> xlt.eval.mt: lslo (rank 3) imports eval (rank 4)"]
    # a method reaching into another method of the same rank
    bad = dict(sources)
    bad["xlt.merge.methods"] += "\nimport xlt.align.losses\n"
    assert layering_violations(bad) == ["xlt.merge.methods -> xlt.align.losses: merge (rank 3) imports align (rank 3)"]
    # the demo calling a command with an argv list, as it once did
    bad = dict(sources)
    bad["xlt.demo.experiments"] += "\nfrom xlt.lslo.cli import train_command\n"
    assert layering_violations(bad) == ["xlt.demo.experiments -> xlt.lslo.cli: only a command-line adapter imports one"]
    # the "from xlt import module" form counts as importing that module
    bad = dict(sources)
    bad["xlt.models"] += "\nfrom xlt import formats\n"
    assert layering_violations(bad) == ["xlt.models -> xlt.formats: models (rank 2) imports formats (rank 2)"]
