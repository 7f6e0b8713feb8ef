"""The layout's rules, checked on the source: the library never imports Prefect or the
benchmarks (``benchmarks/``, outside the package; ``bertpipe bench`` loads them by name when
run), subpackages import one way along the data flow, and flows are wiring only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# each subpackage may import itself and those before it, never those after
ORDER = ["core", "data", "model", "train", "tasks", "pipeline", "tracking", "experiments", "cli"]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, function-level ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
            if node.module == "bertpipe":
                out += [(node.lineno, f"bertpipe.{a.name}") for a in node.names]
    return out


LIBRARY = sorted((ROOT / "bertpipe").rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_prefect_and_imports_one_way(path):
    rel = path.relative_to(ROOT / "bertpipe").parts
    own = ORDER.index(rel[0]) if len(rel) > 1 else len(ORDER)
    for line, mod in imports(path):
        assert mod.split(".")[0] not in ("prefect", "prefect_dask", "flows", "benchmarks"), f"{path.name}:{line} imports {mod}"
        parts = mod.split(".")
        if parts[0] == "bertpipe" and len(parts) > 1 and parts[1] in ORDER:
            assert ORDER.index(parts[1]) <= own, f"{'/'.join(rel)}:{line}: {rel[0]} imports {mod}, which comes after it"


FLOWS = sorted((ROOT / "flows").glob("*.py"))


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_flows_are_wiring_only(path):
    text = path.read_text()
    assert len(text.splitlines()) < 150, f"{path.name} has {len(text.splitlines())} lines, 150 or more"
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            assert name != "open" and not name.startswith("write_"), f"{path.name}:{node.lineno} calls {name}"
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "stage":
            pytest.fail(f"{path.name}:{node.lineno} switches on the stage")
    assert all(mod.split(".")[0] != "subprocess" for _, mod in imports(path)), f"{path.name} imports subprocess"


@pytest.mark.parametrize("source,message", [
    ("import subprocess\n", "subprocess"),
    ("def f(p):\n    p.write_text('x')\n", "calls write_text"),
    ("def f():\n    return open('x').read()\n", "calls open"),
    ("def f(stage):\n    if stage == 'pretrain':\n        return 1\n", "switches on the stage"),
    ("x = 1\n" * 150, "150"),
])
def test_the_wiring_rule_catches_each_breach(tmp_path, source, message):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        test_flows_are_wiring_only(bad)


def test_the_import_rule_catches_prefect_and_backward_imports(tmp_path, monkeypatch):
    import tests.test_layout as me

    monkeypatch.setattr(me, "ROOT", tmp_path)
    (tmp_path / "bertpipe" / "data").mkdir(parents=True)
    for source, message in (("from bertpipe.tracking import tags\n", "data imports bertpipe.tracking, which comes after it"),
                            ("def f():\n    from prefect import flow\n", "imports prefect"),
                            ("def f():\n    from benchmarks.train import bench_train\n", "imports benchmarks")):
        bad = tmp_path / "bertpipe" / "data" / "bad.py"
        bad.write_text(source)
        with pytest.raises(AssertionError, match=message):
            test_the_library_never_imports_prefect_and_imports_one_way(bad)
