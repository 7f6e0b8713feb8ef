"""bertpipe.data's modules form a DAG with every import among bertpipe modules at the top: each
module imports first in a fresh interpreter, none reaches another bertpipe module from inside a
function body (a circle held together that way breaks as soon as someone moves the import),
and the import graph, function-level imports included, has no circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter

import pytest

from tests.conftest import ROOT

DATA = ROOT / "bertpipe" / "data"
MODULES = sorted(p.stem for p in DATA.glob("*.py") if p.stem != "__init__")
# function-body imports kept on purpose, none closing a circle, as (module, imported module):
# the loader reads the tokenizer only for whole-word masking
LAZY = {("loader", "bertpipe.data.wordpiece")}


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The bertpipe modules an import statement names (``from bertpipe.data import x``: x too)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative, from inside bertpipe/data
            base = ".".join(["bertpipe", "data"][: max(0, 3 - node.level)] + ([base] if base else []))
        package = ROOT.joinpath(*base.split(".")).is_dir()  # then the names may be its modules
        names = [base] + ([f"{base}.{a.name}" for a in node.names] if package else [])
    return [n for n in names if n == "bertpipe" or n.startswith("bertpipe.")]


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(every bertpipe module ``module`` imports, those imported inside a function body)."""
    tree = ast.parse((DATA / f"{module}.py").read_text())
    every, inner = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            every.update(_imported(node))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    inner.update(_imported(sub))
    return every, inner


def _graph() -> dict[str, set[str]]:
    """bertpipe.data module -> the bertpipe.data modules it imports, anywhere in it."""
    return {m: {i.rsplit(".", 1)[1] for i in _imports(m)[0] if i.startswith("bertpipe.data.")} & set(MODULES)
            for m in MODULES}


@pytest.mark.parametrize("first", MODULES)
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    order = [first] + [m for m in reversed(MODULES) if m != first]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module('bertpipe.data.' + m)\n"
    proc = subprocess.run([sys.executable, "-c", code, *order], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_no_module_imports_bertpipe_inside_a_function():
    inner = {(m, imp) for m in MODULES for imp in _imports(m)[1]}
    assert inner == LAZY, f"imports inside function bodies: {sorted(inner - LAZY)}; move them to the top"


def test_the_import_graph_has_no_circle():
    graph = _graph()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        pytest.fail(f"bertpipe.data imports in a circle: {' -> '.join(e.args[1])}")
    assert graph["readers"] >= {"formats", "spans", "wiki"}
    assert order.index("formats") < order.index("spans") < order.index("wiki") < order.index("readers") < order.index("ingest")


def test_the_checks_catch_a_function_body_import_and_a_circle(tmp_path, monkeypatch):
    import tests.data.test_imports as me

    (tmp_path / "a.py").write_text("from bertpipe.data.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from bertpipe.data import a\n")
    monkeypatch.setattr(me, "DATA", tmp_path)
    assert me._imports("b") == ({"bertpipe.data", "bertpipe.data.a"}, {"bertpipe.data", "bertpipe.data.a"})
    monkeypatch.setattr(me, "MODULES", ["a", "b"])
    with pytest.raises(AssertionError, match="inside function bodies"):
        me.test_no_module_imports_bertpipe_inside_a_function()
    with pytest.raises(CycleError):
        list(TopologicalSorter(me._graph()).static_order())
