"""The GPU check's code on a CPU at tiny sizes: every part runs and reports, a failing part is
recorded without stopping the others, and the command's last line is the JSON it writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from benchmarks.gpu import PARTS, Sizes, bench_gpu, predictions
from tests.conftest import ROOT, SAMPLE_FILES


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny models gain nothing from 2 threads, and OpenMP threads crawl when other processes hold a core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the torchrun part's process
    yield
    torch.set_num_threads(n)


def test_every_part_runs_on_cpu_at_tiny_size(tmp_path, one_thread):
    out = tmp_path / "gpu-check.json"
    res = bench_gpu(device="cpu", work=tmp_path / "work", out=out, corpus=SAMPLE_FILES)
    assert json.loads(out.read_text()) == res
    assert res["tiny"] and res["device_type"] == "cpu" and res["ok"], {p: res[p] for p in res.get("failed", [])}
    assert set(PARTS) <= set(res) and all(res[p]["ok"] for p in PARTS)

    t = res["throughput"]
    sizes = Sizes.tiny()
    grid = {(e["model"], e["length"], e["precision"]) for e in t["entries"]}
    assert grid == {(m, n, p) for m in ("base", "large") for n in sizes.lengths for p in ("bf16", "fp16")}
    for e in t["entries"]:
        assert e["sequences_per_s"] > 0 and e["peak_tflops"] > 0 and 0 < e["mfu"] < 5 and e["mfu_datasheet"] is None
        assert e["predictions"] == predictions(e["length"]) and e["batch"] * e["length"] == 256
    # the anchor by our count: 580 seq/s x 240.6 GFLOP per BERT-Large sequence at 128 / 312 TFLOP/s
    assert t["anchor"]["mfu"] == pytest.approx(0.447, abs=0.001) and t["anchor"]["here_mfu"] > 0

    p = res["pretrain"]
    assert p["steps"] == 200 and p["last_loss"] < p["first_loss"] - 0.5 and p["mfu"] > 0 and p["tokens_per_s"] > 0
    c = res["compile"]
    assert c["backend"] == "aot_eager" and c["compiled_loss"] == pytest.approx(c["eager_loss"], rel=1e-3)
    r = res["torchrun"]
    assert r["steps"] == sizes.torchrun_steps and r["world_size"] == 1 and r["device"] == "cpu"


def test_predictions_follow_berts_max_predictions_per_seq():
    assert [predictions(n) for n in (128, 512, 32, 64)] == [20, 80, 5, 10]


def test_the_command_reports_a_failing_part_and_still_runs_the_others(tmp_path, one_thread):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, "-m", "bertpipe.cli.main", "bench", "gpu", "--device", "cpu", "--parts", "pretrain",
                           "compile", "--corpus", str(tmp_path / "missing.txt"), "--work", str(tmp_path / "w"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last == json.loads(out.read_text())
    assert last["failed"] == ["pretrain"] and "missing.txt" in last["pretrain"]["error"] and last["compile"]["ok"]
    assert "throughput" not in last and not last["ok"]
