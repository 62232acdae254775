"""tools/mutation.py: the mutants it makes (docs/testing.md). Running them is `make mutation`."""

import ast
import importlib.util
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("xlt_mutation_tool", ROOT / "tools" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_mutant_compiles_changes_the_code_and_has_a_unique_id(mutation):
    for path in mutation.CORE_MODULES:
        original = ast.dump(ast.parse((ROOT / path).read_text(encoding="utf-8")))
        mutants = mutation.mutants_of(path)
        assert len({m.id for m in mutants}) == len(mutants), path
        for m in random.Random(0).sample(mutants, min(25, len(mutants))):
            tree = ast.parse(mutation.mutated_source(m))  # compiles
            assert ast.dump(tree) != original, m.id
        assert set(mutation.TEST_FILES[path]) <= {str(p.relative_to(ROOT)) for p in ROOT.glob("tests/test_*.py")}


def test_the_operators_on_a_known_module(mutation):
    mutants = {(m.operator, m.original, m.replacement) for m in mutation.mutants_of("src/xlt/align/pooling.py")}
    for expected in [("CMP", "!=", "=="), ("CMP", "==", "!="), ("METHOD", ".sum()", ".mean()"),
                     ("METHOD", ".max()", ".min()"), ("BINOP", "/", "*"), ("CONST", "1", "0"),
                     ("RAISE", "raise ...", "pass"), ("RETURN", "return ...", "pass")]:
        assert expected in mutants, expected
    # docstrings are never mutated
    tree = ast.parse((ROOT / "src/xlt/align/pooling.py").read_text(encoding="utf-8"))
    docstrings = set()
    for node in [tree, *[n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]]:
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            docstrings.update(range(first.lineno, first.end_lineno + 1))
    assert docstrings and not docstrings & {m.line for m in mutation.mutants_of("src/xlt/align/pooling.py")}


def test_the_sample_is_reproducible(mutation, capsys):
    args = ["--modules", "src/xlt/align/losses.py", "--sample", "5", "--seed", "3", "--list"]
    assert mutation.main(args) == 0
    first = capsys.readouterr().out
    assert mutation.main(args) == 0
    assert capsys.readouterr().out == first
    assert len([line for line in first.splitlines() if line.startswith("  src/")]) == 5
    assert mutation.main(args[:-2] + ["4", "--list"]) == 0
    assert capsys.readouterr().out != first


def test_equivalent_list_format(mutation, tmp_path):
    listed = mutation.read_equivalent(mutation.EQUIVALENT_FILE)
    assert listed and all(reason for reason in listed.values())
    bad = tmp_path / "eq.txt"
    bad.write_text("src/xlt/align/pooling.py:1:CONST:1 -> 0 no reason\n")
    with pytest.raises(SystemExit, match="eq.txt:1: expected 'ID  # reason'"):
        mutation.read_equivalent(bad)


def test_tests_are_chosen_by_the_lines_they_execute(mutation):
    def mutant(scope, lines):
        return mutation.Mutant("src/xlt/m.py", lines[0], "CMP", "<", "<=", 0, 1, "x", scope, lines)

    data = {"lines": {"a": {"src/xlt/m.py": [10, 11]}, "b": {"src/xlt/m.py": [20]}, "c": {"src/xlt/m.py": [10]},
                      "d": {"src/xlt/other.py": [10]}, "e": {"src/xlt/m.py": [10]}},
            "outcome": {"a": "passed", "b": "passed", "c": "passed", "d": "passed", "e": "failed"},
            "duration": {"a": 2.0, "b": 1.0, "c": 0.5, "d": 0.1, "e": 0.1}}
    assert mutation._tests_for(mutant("line", [10]), data) == ["c", "a"]  # fastest first; e fails unmutated
    assert mutation._tests_for(mutant("body", [19, 20, 21]), data) == ["b"]
    assert mutation._tests_for(mutant("module", [1]), data) == ["c", "b", "a"]
    assert mutation._tests_for(mutant("line", [30]), data) == []


def test_the_ratio_leaves_equivalent_mutants_out(mutation):
    m = mutation.Mutant("src/xlt/m.py", 1, "CMP", "<", "<=", 0, 1, "x", "line", [1])
    results = [mutation.Result(m, s) for s in ["killed", "killed", "timeout", "survived", "untested", "equivalent"]]
    lines = []
    rows = mutation.report(results, {}, [], lines.append)
    assert rows["src/xlt/m.py"]["kill_ratio"] == 0.6  # (2 + 1) / (6 - 1)
    assert any("1 equivalent mutants excluded" in line for line in lines)
    assert sum("src/xlt/m.py:1:CMP:< -> <=" in line for line in lines) == 2  # the two survivors
