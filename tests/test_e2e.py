"""End to end, as a user runs it: a real local Prefect server on SQLite, the serve process,
``prefect deployment run pretrain/base`` shrunk to CPU size (BERT-Base architecture, two
steps on a corpus slice), then the MLflow runs it left. Every process started is stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.slow
def test_deployment_run_pretrain_base_end_to_end(tmp_path):
    from mlflow.tracking import MlflowClient

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_UI_URL": f"http://127.0.0.1:{port}", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "2"}
    procs: list[subprocess.Popen] = []
    log = open(tmp_path / "services.log", "w")
    try:
        procs.append(subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_until(lambda: healthy(f"http://127.0.0.1:{port}/api/health"), 120, "the Prefect server")
        procs.append(subprocess.Popen([sys.executable, "deployments/serve.py"], env=env, cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        inspect = [str(BIN / "prefect"), "deployment", "inspect", "pretrain/base"]
        wait_until(lambda: subprocess.run(inspect, env=env, cwd=ROOT, capture_output=True).returncode == 0, 120,
                   "the served deployments")
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        overrides = {
            "corpus": [str(SAMPLE / "the-war-of-the-worlds-part.txt")],
            "work_dir": str(tmp_path / "work"),
            "tracking_uri": uri,
            "wordpiece": {"vocab_size": 2000},
            "shards": {"max_seq_length": 64, "dupe_factor": 1, "eval_fraction": 0.1},
            "phase2": {"max_seq_length": 128, "dupe_factor": 1, "eval_fraction": 0.1,
                       "masking": {"max_predictions_per_seq": 20}},
            "pretrain": {"steps": 2, "batch_size": 2, "phase2_fraction": 0.5, "log_every": 1, "eval_every": 1,
                         "eval_batches": 1, "checkpoint_every": 0, "precision": "fp32",
                         "optim": {"warmup_steps": 1}},
        }
        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "pretrain/base", "--params",
                              json.dumps({"overrides": overrides}), "--watch", "--watch-timeout", "900"],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=960)
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("pretrain")
        parents = client.search_runs([exp.experiment_id], "tags.`bertpipe.preset` = 'base'")
        assert len(parents) == 1
        parent = parents[0]
        assert parent.data.tags["prefect.flow_run_url"].startswith(f"http://127.0.0.1:{port}/runs/flow-run/")
        assert parent.data.params["pretrain.preset"] == "base"
        kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        by_stage = {r.data.tags["bertpipe.stage"]: r for r in kids}
        assert set(by_stage) == {"ingest", "wordpiece", "shards", "phase2", "pretrain"}
        assert all(r.info.status == "FINISHED" for r in kids)
        pre = by_stage["pretrain"]
        assert pre.data.metrics["eval_mlm_loss"] > 0 and pre.data.params["pretrain.preset"] == "base"
        hf_cfg = json.loads(Path(client.download_artifacts(pre.info.run_id, "model-hf/config.json", str(tmp_path))).read_text())
        assert (hf_cfg["num_hidden_layers"], hf_cfg["hidden_size"], hf_cfg["num_attention_heads"]) == (12, 768, 12)
        assert by_stage["shards"].data.metrics["count_rows"] > 0
    finally:
        for p in reversed(procs):
            stop(p)
        log.close()
    assert all(p.poll() is not None for p in procs)
