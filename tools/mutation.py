"""Mutation testing of xlt's core modules: do the tests fail when the code is wrong?

A mutant is the module with one small change (``<`` -> ``<=``, ``+`` -> ``-``, ``0`` -> ``1``,
``.mean()`` -> ``.sum()``, a ``raise`` removed, an ``if`` negated ...). A mutant is *killed* when
at least one test that executes the changed line fails (or runs past the time limit), and
*survives* otherwise. Equivalent mutants (ones no test could tell from the original) are listed
with a reason in ``tools/mutation_equivalent.txt`` and left out of the ratio.

    python tools/mutation.py                               # every core module, 30 mutants each
    python tools/mutation.py --modules src/xlt/align/pooling.py --sample 0   # all of one module
    python tools/mutation.py --list --modules src/xlt/align/pooling.py       # ids only

How it runs:

1. Which test runs which line. The tests mapped to a module (``TEST_FILES``) run once with a
   line tracer (``sys.settrace`` restricted to the core files); each test's executed lines are
   kept in ``build/mutation/`` (reused while src/ and tests/ are unchanged). A test that fails
   unmutated is reported and never used.
2. The mutants. Each module's AST gives every mutation site; ``--sample N --seed S`` draws N of
   them per module with ``random.Random(S)``, so a run is reproducible. Strings, f-strings,
   docstrings and annotations are not mutated.
3. Each mutant is written into a private copy of ``src/`` and ``tests/`` (the working tree is
   never edited), and the tests that execute its line run there with ``pytest -x``. To avoid
   paying torch's import for every mutant, one process imports the heavy third-party packages
   once and forks a child per mutant; the child imports xlt from the copy.

Mutants of a signature's default run the tests that execute the function's body; mutants at
module or class level (dataclass defaults, constants) run every test that executes the module.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = ROOT / "tools" / "mutation_equivalent.txt"
CACHE = ROOT / "build" / "mutation"

CORE_MODULES = [
    "src/xlt/align/layers.py",
    "src/xlt/align/pooling.py",
    "src/xlt/align/losses.py",
    "src/xlt/lslo/layer.py",
    "src/xlt/lslo/pruning.py",
    "src/xlt/pretrain/cloned.py",
    "src/xlt/merge/adamergex.py",
    "src/xlt/eval/scoring.py",
]

_ALIGN = ["tests/test_align_conformance.py", "tests/test_align_layers.py", "tests/test_align_trainer.py",
          "tests/test_align_edge_cases.py"]
_LSLO = ["tests/test_lslo_conformance.py", "tests/test_lslo_model.py", "tests/test_lslo_trainer.py",
         "tests/test_lslo_batching.py", "tests/test_fastpaths.py", "tests/test_reliability_properties.py",
         "tests/test_lslo_edge_cases.py"]
TEST_FILES = {
    "src/xlt/align/layers.py": _ALIGN,
    "src/xlt/align/pooling.py": _ALIGN,
    "src/xlt/align/losses.py": _ALIGN,
    "src/xlt/lslo/layer.py": _LSLO,
    "src/xlt/lslo/pruning.py": _LSLO,
    "src/xlt/pretrain/cloned.py": ["tests/test_pretrain_cloned.py", "tests/test_pretrain_data.py",
                                   "tests/test_pretrain_language_map.py"],
    "src/xlt/merge/adamergex.py": ["tests/test_merge_conformance.py", "tests/test_merge_cli.py",
                                   "tests/test_fastpaths.py", "tests/test_reliability_properties.py",
                                   "tests/test_merge_edge_cases.py"],
    "src/xlt/eval/scoring.py": ["tests/test_eval_icl.py", "tests/test_eval_scoring_edge_cases.py"],
}
# Tests that start other processes (torchrun) are not traced and are too slow to repeat.
PYTEST_SELECT = ["-m", "not multiprocess"]

# Packages imported once by the parent so that each forked mutant starts warm.
WARM_IMPORTS = ["numpy", "torch", "transformers", "peft", "safetensors", "datasets", "hypothesis",
                "matplotlib", "matplotlib.pyplot", "pytest", "yaml", "tokenizers"]


# ----------------------------------------------------------------------------------------------
# Mutation operators
# ----------------------------------------------------------------------------------------------

CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn,
            ast.NotIn: ast.In}
BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
            ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.MatMult: ast.Mult}
METHOD_SWAP = {"mean": "sum", "sum": "mean", "max": "min", "min": "max", "amax": "amin",
               "amin": "amax", "argmax": "argmin", "argmin": "argmax", "any": "all", "all": "any"}
OP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
           ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+",
           ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
           ast.Pow: "**", ast.MatMult: "@", ast.And: "and", ast.Or: "or"}


@dataclass
class Mutant:
    """One change to one module. ``id`` is stable while the line does not move."""

    module: str            # path relative to the repository root
    line: int
    operator: str          # CMP, BINOP, CONST, BOOL, LOGIC, NOT, NEG, METHOD, IF, RAISE, RETURN
    original: str
    replacement: str
    start: int             # byte offsets of the replaced segment in the module's source
    end: int
    text: str              # the replacement source text
    scope: str             # "line", "body" (signature default) or "module"
    lines: list[int]       # the lines whose tests run this mutant
    index: int = 0         # occurrence of the same (line, operator, original -> replacement)

    @property
    def id(self) -> str:
        tail = f"#{self.index}" if self.index else ""
        return f"{self.module}:{self.line}:{self.operator}:{self.original} -> {self.replacement}{tail}"


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


class _Sites(ast.NodeVisitor):
    """Walks a module and collects (node, operator, new_text, original, replacement, scope)."""

    def __init__(self, source: str, guarded: set[int]):
        self.source = source
        self.guarded = guarded                    # ids of returns inside an ``if``
        self.sites: list[tuple] = []
        self.function: ast.AST | None = None      # innermost enclosing function
        self.in_body = False                      # inside a function's body (not its signature)
        self.statement: ast.stmt | None = None

    # -- context ------------------------------------------------------------------------------
    def visit_FunctionDef(self, node):  # noqa: N802
        outer = (self.function, self.in_body)
        for dec in node.decorator_list:
            self.visit(dec)
        self.function, self.in_body = node, False
        for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
            self.visit(default)
        self.in_body = True
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]                       # docstring
        for stmt in body:
            self.visit(stmt)
        self.function, self.in_body = outer

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_ClassDef(self, node):  # noqa: N802
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        for stmt in body:
            self.visit(stmt)

    def visit_AnnAssign(self, node):  # noqa: N802  (annotations are never evaluated here)
        if node.value is not None:
            self._statement(node, [node.value])

    def visit_JoinedStr(self, node):  # noqa: N802  (f-strings: positions are unreliable)
        return

    def visit_If(self, node):  # noqa: N802
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        self._add(node.test, "IF", f"not ({self._seg(node.test)})", self._seg(node.test),
                  f"not ({self._seg(node.test)})")
        self.generic_visit(node)

    def visit_Assert(self, node):  # noqa: N802
        return

    def visit_Expr(self, node):  # noqa: N802
        if isinstance(node.value, ast.Constant):  # a bare string
            return
        self.generic_visit(node)

    def visit_Raise(self, node):  # noqa: N802
        if self.in_body:
            self._add(node, "RAISE", "pass", "raise ...", "pass")
        # the exception's message is not mutated

    def visit_Return(self, node):  # noqa: N802
        if self.in_body and id(node) in self.guarded and node.value is not None:
            self._add(node, "RETURN", "pass", "return ...", "pass")
        self.generic_visit(node)

    def visit_Assign(self, node):  # noqa: N802
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self.generic_visit(node)

    def visit_Call(self, node):  # noqa: N802
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("warning", "warn", "info", "debug"):
            return                                # log messages
        if isinstance(func, ast.Attribute) and func.attr in METHOD_SWAP:
            new = ast.Attribute(value=func.value, attr=METHOD_SWAP[func.attr], ctx=ast.Load())
            self._add(func, "METHOD", ast.unparse(new), f".{func.attr}()", f".{METHOD_SWAP[func.attr]}()")
        self.generic_visit(node)

    def generic_visit(self, node):
        if isinstance(node, ast.stmt):
            previous, self.statement = self.statement, node
            super().generic_visit(node)
            self.statement = previous
        else:
            super().generic_visit(node)

    def _statement(self, node, children):
        previous, self.statement = self.statement, node
        for child in children:
            self.visit(child)
        self.statement = previous

    # -- expression operators -----------------------------------------------------------------
    def visit_Compare(self, node):  # noqa: N802
        for i, op in enumerate(node.ops):
            swap = CMP_SWAP.get(type(op))
            if swap is None:
                continue
            ops = list(node.ops)
            ops[i] = swap()
            new = ast.Compare(left=node.left, ops=ops, comparators=node.comparators)
            self._add(node, "CMP", f"({ast.unparse(new)})", OP_TEXT[type(op)], OP_TEXT[swap])
        self.generic_visit(node)

    def visit_BinOp(self, node):  # noqa: N802
        swap = BIN_SWAP.get(type(node.op))
        if swap is not None and not self._string_format(node):
            new = ast.BinOp(left=node.left, op=swap(), right=node.right)
            self._add(node, "BINOP", f"({ast.unparse(new)})", OP_TEXT[type(node.op)], OP_TEXT[swap])
        self.generic_visit(node)

    def visit_AugAssign(self, node):  # noqa: N802
        swap = BIN_SWAP.get(type(node.op))
        if swap is not None:
            new = ast.AugAssign(target=node.target, op=swap(), value=node.value)
            self._add(node, "BINOP", ast.unparse(new), OP_TEXT[type(node.op)] + "=", OP_TEXT[swap] + "=")
        self.generic_visit(node)

    def visit_BoolOp(self, node):  # noqa: N802
        swap = ast.Or if isinstance(node.op, ast.And) else ast.And
        new = ast.BoolOp(op=swap(), values=node.values)
        self._add(node, "LOGIC", f"({ast.unparse(new)})", OP_TEXT[type(node.op)], OP_TEXT[swap])
        self.generic_visit(node)

    def visit_UnaryOp(self, node):  # noqa: N802
        if isinstance(node.op, ast.Not):
            self._add(node, "NOT", f"({ast.unparse(node.operand)})", "not x", "x")
        elif isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
            self._add(node, "NEG", f"({ast.unparse(node.operand)})", "-x", "x")
        self.generic_visit(node)

    def visit_IfExp(self, node):  # noqa: N802
        self._add(node.test, "IF", f"(not ({self._seg(node.test)}))", self._seg(node.test),
                  f"not ({self._seg(node.test)})")
        self.generic_visit(node)

    def visit_Constant(self, node):  # noqa: N802
        value = node.value
        if isinstance(value, bool):
            self._add(node, "BOOL", repr(not value), repr(value), repr(not value))
        elif isinstance(value, int):
            new = {0: 1, 1: 0}.get(value, value + 1)
            self._add(node, "CONST", repr(new), repr(value), repr(new))
        elif isinstance(value, float):
            new = 1.0 if value == 0.0 else 0.0
            self._add(node, "CONST", repr(new), repr(value), repr(new))

    # -- helpers ------------------------------------------------------------------------------
    def _string_format(self, node) -> bool:
        return isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
            and isinstance(node.left.value, str)

    def _seg(self, node) -> str:
        return ast.get_source_segment(self.source, node) or ast.unparse(node)

    def _add(self, node, operator, text, original, replacement):
        if self.function is None:
            scope = "module"
        else:
            scope = "line" if self.in_body else "body"
        stmt = self.statement if self.statement is not None else node
        lines = sorted({*range(node.lineno, node.end_lineno + 1), stmt.lineno})
        if scope == "body":
            body = self.function.body
            lines = list(range(body[0].lineno, body[-1].end_lineno + 1))
        self.sites.append((node, operator, text, _short(original), _short(replacement), scope, lines))


def _mark_guarded_returns(tree: ast.AST) -> set[int]:
    """ids of Return nodes that sit (directly or not) inside an ``if`` within their function."""
    guarded: set[int] = set()

    def walk(node, inside_if):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(child, False)
            elif isinstance(child, ast.Return):
                if inside_if:
                    guarded.add(id(child))
            else:
                walk(child, inside_if or isinstance(child, ast.If))
    walk(tree, False)
    return guarded


def mutants_of(module: str) -> list[Mutant]:
    """Every mutant of ``module`` (a path relative to the repository root), in source order."""
    source = (ROOT / module).read_text(encoding="utf-8")
    tree = ast.parse(source)
    visitor = _Sites(source, _mark_guarded_returns(tree))
    visitor.visit(tree)
    raw = source.encode("utf-8")
    starts = [0]
    for line in raw.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    out: list[Mutant] = []
    seen: dict[tuple, int] = {}
    for node, operator, text, original, replacement, scope, lines in visitor.sites:
        start = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        key = (node.lineno, operator, original, replacement)
        index = seen.get(key, 0)
        seen[key] = index + 1
        out.append(Mutant(module, node.lineno, operator, original, replacement, start, end, text,
                          scope, lines, index))
    out.sort(key=lambda m: (m.start, m.operator, m.index))
    return out


def mutated_source(mutant: Mutant) -> bytes:
    raw = (ROOT / mutant.module).read_bytes()
    return raw[: mutant.start] + mutant.text.encode("utf-8") + raw[mutant.end:]


# ----------------------------------------------------------------------------------------------
# Which test executes which line
# ----------------------------------------------------------------------------------------------

class _LineTracer:
    """A pytest plugin recording, per test, the lines of ``targets`` it executes."""

    def __init__(self, targets: dict[str, str]):
        self.targets = targets        # absolute file -> module path relative to the root
        self.current: dict[str, set[int]] | None = None
        self.lines: dict[str, dict[str, list[int]]] = {}
        self.outcome: dict[str, str] = {}
        self.duration: dict[str, float] = {}

    def _local(self, frame, event, arg):
        if event == "line":
            self.current[self.targets[frame.f_code.co_filename]].add(frame.f_lineno)
        return self._local

    def _global(self, frame, event, arg):
        module = self.targets.get(frame.f_code.co_filename)
        if module is None:
            return None
        self.current[module].add(frame.f_lineno)
        return self._local

    def pytest_runtest_protocol(self, item, nextitem):
        import threading
        self.current = {m: set() for m in self.targets.values()}
        sys.settrace(self._global)
        threading.settrace(self._global)
        return None

    def pytest_runtest_logreport(self, report):
        if report.failed or (report.when == "call" and report.nodeid not in self.outcome):
            self.outcome[report.nodeid] = report.outcome
        self.duration[report.nodeid] = self.duration.get(report.nodeid, 0.0) + report.duration
        if report.when == "teardown":
            import threading
            sys.settrace(None)
            threading.settrace(None)
            self.lines[report.nodeid] = {m: sorted(s) for m, s in self.current.items() if s}
            self.outcome.setdefault(report.nodeid, report.outcome)


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _tree_files() -> list[Path]:
    return [p for d in ("src", "tests") for p in (ROOT / d).rglob("*") if p.is_file()
            and "__pycache__" not in p.parts and p.suffix in (".py", ".yaml", ".json", ".txt")]


def line_map(modules: list[str], workdir: Path, log) -> dict:
    """{"lines": {nodeid: {module: [line, ...]}}, "outcome": {...}, "duration": {...}} for the
    tests mapped to ``modules``; cached in build/mutation/ under a hash of src/ and tests/."""
    tests = sorted({t for m in modules for t in TEST_FILES[m]})
    key = _fingerprint(_tree_files()) + "-" + hashlib.sha256("|".join(tests).encode()).hexdigest()[:8]
    cache = CACHE / f"lines-{key}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    log(f"tracing {len(tests)} test files to learn which test runs which line "
        f"(once; cached in {cache.relative_to(ROOT)})")
    targets = {str(workdir / m): m for m in CORE_MODULES}
    result_file = workdir / "line-map.json"
    pid = os.fork()
    if pid == 0:  # child: run the tests under the tracer
        code = 1
        try:
            _child_environment(workdir)
            import pytest
            tracer = _LineTracer(targets)
            pytest.main(["-q", "-p", "no:cacheprovider", *PYTEST_SELECT, *tests], plugins=[tracer])
            result_file.write_text(json.dumps({"lines": tracer.lines, "outcome": tracer.outcome,
                                               "duration": tracer.duration}))
            code = 0
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:
        os.killpg(pid, signal.SIGKILL)
        raise
    if not result_file.exists():
        sys.exit(f"mutation: the tracing run failed (status {status})")
    data = json.loads(result_file.read_text())
    CACHE.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(data))
    return data


# ----------------------------------------------------------------------------------------------
# Running mutants
# ----------------------------------------------------------------------------------------------

def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "*.egg-info")
    for name in ("src", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml",):
        shutil.copy2(ROOT / name, dest / name)


def _child_environment(workdir: Path) -> None:
    """In a forked child: import xlt (and run xlt subprocesses) from ``workdir``'s copy."""
    os.setpgid(0, 0)
    os.chdir(workdir)
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    os.environ["PYTHONPATH"] = str(workdir / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    sys.path.insert(0, str(workdir / "src"))
    assert not any(name == "xlt" or name.startswith("xlt.") for name in sys.modules)


def _start(mutant: Mutant, tests: list[str], workdir: Path) -> int:
    target = workdir / mutant.module
    target.write_bytes(mutated_source(mutant))
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            _child_environment(workdir)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest
            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                                    *tests]))
        finally:
            os._exit(code)
    return pid


@dataclass
class Result:
    mutant: Mutant
    status: str                    # killed, survived, timeout, untested, equivalent
    tests: int = 0
    seconds: float = 0.0


@dataclass
class _Slot:
    workdir: Path
    pid: int = 0
    mutant: Mutant | None = None
    tests: list = field(default_factory=list)
    started: float = 0.0
    limit: float = 0.0


def _tests_for(mutant: Mutant, data: dict) -> list[str]:
    wanted = set(mutant.lines)
    chosen = []
    for nodeid, modules in data["lines"].items():
        if data["outcome"].get(nodeid) != "passed":
            continue
        lines = modules.get(mutant.module)
        if not lines:
            continue
        if mutant.scope == "module" or wanted.intersection(lines):
            chosen.append(nodeid)
    # fastest first, so that -x stops early
    return sorted(chosen, key=lambda n: data["duration"].get(n, 0.0))


def run_mutants(mutants: list[Mutant], data: dict, jobs: int, workroot: Path, log,
                factor: float, slack: float, results: list[Result] | None = None) -> list[Result]:
    """Run ``mutants``, appending a :class:`Result` per mutant to ``results`` as each ends."""
    slots = []
    for i in range(jobs):
        workdir = workroot / f"worker{i}"
        _copy_tree(workdir)
        slots.append(_Slot(workdir))
    queue = list(mutants)
    results = [] if results is None else results
    done_before = len(results)
    total = len(queue) + done_before

    def finish(slot: _Slot, status: str):
        results.append(Result(slot.mutant, status, len(slot.tests), time.perf_counter() - slot.started))
        shutil.copy2(ROOT / slot.mutant.module, slot.workdir / slot.mutant.module)
        log(f"[{len(results)}/{total}] {status:8s} {slot.mutant.id} "
            f"({len(slot.tests)} tests, {results[-1].seconds:.0f}s)")
        slot.pid, slot.mutant = 0, None

    try:
        _drain(slots, queue, data, total, results, finish, log, factor, slack)
    finally:  # interrupted: stop the children still running
        for slot in slots:
            if slot.pid:
                try:
                    os.killpg(slot.pid, signal.SIGKILL)
                    os.waitpid(slot.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
    return results


def _drain(slots, queue, data, total, results, finish, log, factor, slack) -> None:
    while queue or any(s.pid for s in slots):
        for slot in slots:
            if slot.pid or not queue:
                continue
            mutant = queue.pop(0)
            tests = _tests_for(mutant, data)
            if not tests:
                results.append(Result(mutant, "untested"))
                log(f"[{len(results)}/{total}] untested {mutant.id}")
                continue
            slot.mutant, slot.tests = mutant, tests
            slot.limit = factor * sum(data["duration"].get(t, 1.0) for t in tests) + slack
            slot.started = time.perf_counter()
            slot.pid = _start(mutant, tests, slot.workdir)
        busy = [s for s in slots if s.pid]
        if not busy:
            continue
        time.sleep(0.05)
        for slot in busy:
            pid, status = os.waitpid(slot.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                # 1: a test failed; 2: collection failed; 3: internal error; 4: the conftest or a
                # test module did not import (the test ids come from pytest itself, so they exist)
                finish(slot, "survived" if code in (0, 5) else "killed")
            elif time.perf_counter() - slot.started > slot.limit:
                try:
                    os.killpg(slot.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(slot.pid, 0)
                finish(slot, "timeout")


# ----------------------------------------------------------------------------------------------
# Equivalent mutants and the report
# ----------------------------------------------------------------------------------------------

def read_equivalent(path: Path) -> dict[str, str]:
    """``id  # reason`` per line; blank lines and lines starting with ``#`` are skipped."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "  # " not in line:
            sys.exit(f"{path}:{number}: expected 'ID  # reason'")
        ident, reason = line.split("  # ", 1)
        out[ident.strip()] = reason.strip()
    return out


def report(results: list[Result], equivalent: dict[str, str], stale: list[str], log) -> dict:
    rows = {}
    for r in results:
        row = rows.setdefault(r.mutant.module, {"mutants": 0, "killed": 0, "timeout": 0, "survived": 0,
                                                "untested": 0, "equivalent": 0})
        row["mutants"] += 1
        row[r.status] += 1
    log("")
    log(f"{'module':32s} {'mutants':>7s} {'equiv':>5s} {'killed':>6s} {'timeout':>7s} "
        f"{'survived':>8s} {'untested':>8s} {'kill ratio':>10s}")
    for module, row in rows.items():
        judged = row["mutants"] - row["equivalent"]
        dead = row["killed"] + row["timeout"]
        row["kill_ratio"] = round(dead / judged, 3) if judged else None
        ratio = f"{dead / judged:.2f}" if judged else "-"
        log(f"{module.removeprefix('src/xlt/'):32s} {row['mutants']:7d} {row['equivalent']:5d} "
            f"{row['killed']:6d} {row['timeout']:7d} {row['survived']:8d} {row['untested']:8d} {ratio:>10s}")
    survivors = [r for r in results if r.status in ("survived", "untested")]
    log("")
    log(f"kill ratio = (killed + timeout) / (mutants - equivalent); "
        f"{sum(r.status == 'equivalent' for r in results)} equivalent mutants excluded "
        f"(listed in {EQUIVALENT_FILE.relative_to(ROOT)})")
    if survivors:
        log(f"\nsurvivors ({len(survivors)}):")
        for r in survivors:
            log(f"  {r.status:8s} {r.mutant.id}")
    if stale:
        log(f"\nentries of {EQUIVALENT_FILE.name} that match no mutant of the modules run "
            f"(moved or gone; update them): ")
        for ident in stale:
            log(f"  {ident}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=CORE_MODULES, metavar="PATH",
                        help="modules to mutate (paths relative to the repository root)")
    parser.add_argument("--sample", type=int, default=30,
                        help="mutants drawn per module (0: all of them)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the draw")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at the same time")
    parser.add_argument("--timeout-factor", type=float, default=3.0,
                        help="a mutant times out after FACTOR x the unmutated tests' time + SLACK")
    parser.add_argument("--timeout-slack", type=float, default=30.0)
    parser.add_argument("--equivalent", type=Path, default=EQUIVALENT_FILE)
    parser.add_argument("--list", action="store_true", help="print the sampled mutants' ids and stop")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--rerun", type=Path, metavar="JSON",
                        help="a previous run's --json: run again only its survivors (after tests were "
                             "added), keep its other verdicts, and report the whole sample")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up children and temp dirs

    for module in args.modules:
        if module not in TEST_FILES:
            parser.error(f"--modules: {module} is not a core module (one of {', '.join(CORE_MODULES)})")

    def log(message: str) -> None:
        print(message, flush=True)

    equivalent = read_equivalent(args.equivalent)
    sampled: list[Mutant] = []
    all_ids: set[str] = set()
    for module in args.modules:
        every = mutants_of(module)
        all_ids.update(m.id for m in every)
        chosen = every if args.sample <= 0 or args.sample >= len(every) else \
            sorted(random.Random(args.seed).sample(every, args.sample), key=lambda m: m.start)
        log(f"{module}: {len(chosen)} of {len(every)} mutants (seed {args.seed})")
        sampled.extend(chosen)
    stale = sorted(i for i in equivalent if i.split(":", 1)[0] in args.modules and i not in all_ids)
    if args.list:
        for m in sampled:
            note = "  [equivalent]" if m.id in equivalent else ""
            log(f"  {m.id}{note}")
        return 0

    results = [Result(m, "equivalent") for m in sampled if m.id in equivalent]
    pending = [m for m in sampled if m.id not in equivalent]
    if args.rerun:
        # killed mutants stay killed while tests are only added; the survivors run again
        previous = {r["id"]: r for r in json.loads(args.rerun.read_text())["results"]}
        by_id = {m.id: m for m in pending}
        sampled_ids = {m.id for m in sampled}
        missing = [i for i in previous if i not in sampled_ids and i.split(":", 1)[0] in args.modules]
        if missing:
            log(f"{len(missing)} mutants of {args.rerun} are not in this sample (lines moved, or another "
                f"--sample/--seed/--modules): {missing[0]} ...")
        pending = []
        for m in by_id.values():
            before = previous.get(m.id)
            if before is not None and before["status"] in ("killed", "timeout"):
                results.append(Result(m, before["status"], before["tests"], before["seconds"]))
            else:
                pending.append(m)
        log(f"--rerun: {len(pending)} mutants run (survivors of {args.rerun}, and any it did not have)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xlt-mutation-") as tmp:
        workroot = Path(tmp)
        tracing = workroot / "trace"
        _copy_tree(tracing)
        for name in WARM_IMPORTS:
            try:
                __import__(name)
            except ImportError:
                pass
        data = line_map(args.modules, tracing, log)
        broken = sorted(n for n, o in data["outcome"].items() if o != "passed")
        if broken:
            log(f"{len(broken)} tests do not pass unmutated and are not used: {', '.join(broken[:5])}"
                + (" ..." if len(broken) > 5 else ""))
        try:
            run_mutants(pending, data, args.jobs, workroot, log, args.timeout_factor,
                        args.timeout_slack, results)
        finally:  # interrupted too: keep what was learnt
            if args.json:
                _write_json(args.json, {}, results)
    order = {id(m): i for i, m in enumerate(sampled)}
    results.sort(key=lambda r: order[id(r.mutant)])
    rows = report(results, equivalent, stale, log)
    log(f"\n{len(results)} mutants in {time.perf_counter() - started:.0f}s, seed {args.seed}, "
        f"sample {args.sample or 'all'}, jobs {args.jobs}, load {os.getloadavg()[0]:.1f}")
    if args.json:
        _write_json(args.json, rows, results)
    return 0


def _write_json(path: Path, rows: dict, results: list[Result]) -> None:
    path.write_text(json.dumps({"modules": rows, "results": [
        {**asdict(r.mutant), "id": r.mutant.id, "status": r.status, "tests": r.tests,
         "seconds": round(r.seconds, 1)} for r in results]}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
