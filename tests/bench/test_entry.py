"""``bertpipe bench``'s entry (``bertpipe/cli/bench.py``) and where the benchmarks find their data.

The benchmarks live in ``benchmarks/`` beside the library, a distribution of their own; the
command only parses flags and imports ``benchmarks.<module>`` when it runs (the wheel's side of
this, without the benchmarks installed, is in ``tests/test_package.py``).
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys

import pytest

import bertpipe.cli.bench as entry
from tests.conftest import FIXTURES, ROOT


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter outside the checkout, importing the checkout under test first."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_parsing_the_bench_flags_imports_neither_torch_nor_the_benchmarks():
    done = run_python("import argparse, sys\n"
                      "from bertpipe.cli.bench import add_commands\n"
                      "parser = argparse.ArgumentParser(); add_commands(parser.add_subparsers(dest='command'))\n"
                      "args = parser.parse_args(['bench', 'train', '--steps', '2'])\n"
                      "print(args.steps, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'benchmarks')))")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["2", "[]"]


def benchmark_calls() -> list[tuple[str, str]]:
    """(module, attribute) of every ``benchmark("module").attribute`` and ``m = benchmark("module"); m.attribute``."""
    tree = ast.parse((ROOT / "bertpipe" / "cli" / "bench.py").read_text())
    out = []
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("_cmd_")):
        local = {}  # name bound to benchmark("module") -> module
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "benchmark":
                if isinstance(node.targets[0], ast.Name):
                    local[node.targets[0].id] = node.value.args[0].value
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute):
                v = node.value
                if isinstance(v, ast.Call) and getattr(v.func, "id", "") == "benchmark":
                    out.append((v.args[0].value, node.attr))
                elif isinstance(v, ast.Name) and v.id in local:
                    out.append((local[v.id], node.attr))
    return out


def test_every_subcommand_calls_a_function_the_benchmarks_have():
    calls = benchmark_calls()
    assert {m for m, _ in calls} == {"data", "scale", "wiki", "train", "gpu", "tiny", "quality", "finetune", "dedup", "compressed", "sweep"}
    for module, attr in calls:
        assert hasattr(importlib.import_module(f"benchmarks.{module}"), attr), f"benchmarks.{module}.{attr}"


def test_without_the_benchmarks_one_line_and_status_2(monkeypatch, capsys):
    for name in [m for m in sys.modules if m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "benchmarks", None)  # `import benchmarks` now fails as if not installed
    with pytest.raises(SystemExit) as e:
        entry.benchmark("train")
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bertpipe bench: error: the benchmarks are not installed") and "pip install -e ./benchmarks" in line


def test_a_benchmark_missing_its_peer_is_not_called_uninstalled(monkeypatch):
    def missing_peer(name):
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(entry.importlib, "import_module", missing_peer)
    with pytest.raises(ModuleNotFoundError, match="transformers"):
        entry.benchmark("train")


def test_the_paths_point_into_the_checkout_and_the_shared_data_can_move(tmp_path):
    from benchmarks import paths

    assert paths.CHECKOUT == ROOT and paths.FIXTURES == FIXTURES and (paths.SAMPLE / "sotu.jsonl.gz").is_file()
    code = "from benchmarks import paths, wikidump; print(paths.SHARED_DATA); print(wikidump.SHARED)"
    default = run_python(code, BERTPIPE_SHARED_DATA="")
    assert default.stdout.split() == [str(ROOT.parent / "shared" / "data"), str(ROOT.parent / "shared" / "data" / "corpora")]
    moved = run_python(code, BERTPIPE_SHARED_DATA=str(tmp_path))
    assert moved.stdout.split() == [str(tmp_path), str(tmp_path / "corpora")], moved.stderr[-3000:]


def test_absent_shared_data_stops_with_a_clear_message(tmp_path):
    done = run_python("from benchmarks.data import default_corpus; default_corpus()", BERTPIPE_SHARED_DATA=str(tmp_path))
    assert done.returncode == 1
    assert f"bench data: no corpus given and {tmp_path / 'corpora'} is absent; pass --corpus FILE..." in done.stderr


def test_python_m_benchmarks_is_bertpipe_bench():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "tiny", "--help"], cwd=ROOT.parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--preset" in done.stdout and "--overrides" in done.stdout, done.stderr[-3000:]
