"""The tiny pipeline against an MLflow tracking server on a real PostgreSQL (Debian's package),
compared with the same pipeline on the default SQLite store: the same runs, datasets and model."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bertpipe.pipeline import pipeline_config, run_pipeline
from bertpipe.tracking import MlflowTracker, tags
from tests.conftest import SAMPLE

PG = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
pytestmark = pytest.mark.skipif(not PG, reason="PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres():
    """A private cluster on a free port (trust authentication, 127.0.0.1 only), removed after."""
    bin_dir, port = PG[-1].parent, _port()
    root = Path(tempfile.mkdtemp(prefix="bertpipe-pg-"))  # not under pytest's root-only folder: postgres must reach it
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                                 f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"]), check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"]),
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """``mlflow server`` on the PostgreSQL store, artifacts proxied to a local folder."""
    port, arts = _port(), tmp_path_factory.mktemp("artifacts")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", postgres,
                             "--artifacts-destination", str(arts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"},
                            stdout=subprocess.DEVNULL, stderr=open(arts / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"mlflow server did not start: {(arts / 'server.log').read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _pipeline(tmp: Path, uri: str) -> str:
    cfg = pipeline_config({"corpus": [str(SAMPLE / "the-war-of-the-worlds-part.txt")], "work_dir": str(tmp), "tracking_uri": uri,
                           "experiment": "team", "wordpiece": {"vocab_size": 800}, "ingest": {"workers": 1},
                           "shards": {"dupe_factor": 1, "max_seq_length": 32, "workers": 1, "eval_fraction": 0.1},
                           "pretrain": {"model": {"hidden_size": 12, "num_attention_heads": 2, "num_hidden_layers": 1,
                                                  "intermediate_size": 24}, "steps": 6, "batch_size": 4, "log_every": 1,
                                        "eval_every": 3, "eval_batches": 1, "checkpoint_every": 0, "precision": "fp32"}},
                          source="test")
    tracker = MlflowTracker(uri, "team", "team run")
    run_pipeline(cfg, tracker=tracker, until="pretrain")
    return tracker.run_id


def _what_a_user_sees(uri: str, parent: str) -> dict:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("team").experiment_id
    kids = client.search_runs([exp], f"tags.`{tags.PARENT}` = '{parent}'")
    top = client.get_run(parent)
    return {"parent": (top.info.status, sorted(top.data.params)),
            "stages": sorted((r.data.tags[tags.STAGE], r.info.status, r.data.tags[tags.FINGERPRINT], sorted(r.data.metrics),
                              sorted(d.dataset.name for d in r.inputs.dataset_inputs)) for r in kids),
            "models": sorted((m.name, len(client.search_model_versions(f"name = '{m.name}'"))) for m in client.search_registered_models()),
            "artifacts": sorted(a.path for r in kids for a in client.list_artifacts(r.info.run_id))}


def test_the_pipeline_tracks_alike_on_a_postgresql_server_and_on_sqlite(mlflow_server, tmp_path):
    on_server = _what_a_user_sees(mlflow_server, _pipeline(tmp_path / "a", mlflow_server))
    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"
    on_sqlite = _what_a_user_sees(sqlite, _pipeline(tmp_path / "b", sqlite))
    assert on_server == on_sqlite
    assert [s[0] for s in on_server["stages"]] == ["ingest", "pretrain", "shards", "wordpiece"]
    assert on_server["models"] and on_server["models"][0][1] == 1 and "manifest.json" in on_server["artifacts"]
