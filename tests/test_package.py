"""bertpipe as a user installs it: a built wheel, not the source tree, from another directory.

The wheel is built from a copy of the sources (nothing is written into the checkout),
installed with ``pip --target`` into a fresh folder that comes first on ``PYTHONPATH`` (the
venv's editable install is a meta-path finder searched after it), and used from an unrelated
working directory: the shipped ``tiny`` preset loads from package data and its planned stages
run ingest → wordpiece → shards → a 5-step pretraining on a small corpus.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, SAMPLE

SCRIPT = textwrap.dedent("""
    import json, sys
    import bertpipe
    from bertpipe.core.stage import expect_fingerprint, run_stage
    from bertpipe.experiments.pipeline import build_stage, load_pipeline_config, plan
    from bertpipe.experiments.sweep import load_sweep

    model = {"hidden_size": 36, "num_attention_heads": 3, "num_hidden_layers": 2, "intermediate_size": 72}
    cfg = load_pipeline_config("tiny", {
        "corpus": [sys.argv[1]], "work_dir": "work", "ingest": {"workers": 1}, "wordpiece": {"vocab_size": 700},
        "shards": {"dupe_factor": 1, "workers": 1, "max_seq_length": 64},
        "pretrain": {"model": model, "steps": 5, "batch_size": 8, "eval_every": 5, "eval_batches": 2,
                     "log_every": 1, "checkpoint_every": 0}})
    done = {}
    for st in plan(cfg):
        done[st.name] = expect_fingerprint(run_stage(build_stage(cfg, st.name, done), st.root), st.fingerprint)
    print(json.dumps({"module": bertpipe.__file__, "sweep_preset": load_sweep("nsp").preset,
                      **{name: str(r.path) for name, r in done.items()}, "step": done["pretrain"].manifest["step"]}))
""")


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_pipeline_from_elsewhere(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(ROOT / "bertpipe", src / "bertpipe", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)], check=True)
    (wheel,) = (tmp_path / "dist").glob("bertpipe-*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    assert (target / "bertpipe" / "experiments" / "presets" / "tiny.json").is_file(), "presets ship as package data"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "run.py").write_text(SCRIPT)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "run.py", str(SAMPLE / "the-war-of-the-worlds-part.txt")], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["module"].startswith(str(target)), "the installed copy, not the checkout"
    assert out["sweep_preset"] == "tiny-shared" and out["step"] == 5
    for stage in ("ingest", "wordpiece", "shards", "pretrain"):
        assert out[stage].startswith(str(elsewhere / "work")) and (elsewhere / "work").is_dir()
