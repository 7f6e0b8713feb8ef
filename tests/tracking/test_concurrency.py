"""Four pipelines logging to one SQLite store at the same time: no metric lost, no run left open."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from mlflow.tracking import MlflowClient

from bertpipe.tracking import tags
from tests.conftest import ROOT, SAMPLE

STEPS = 40
SCRIPT = """
import json, sys
from bertpipe.pipeline import pipeline_config, run_pipeline
from bertpipe.tracking import MlflowTracker
cfg = pipeline_config(json.loads(sys.argv[1]), source="test")
tracker = MlflowTracker(cfg.tracking_uri, cfg.experiment, sys.argv[2])
run_pipeline(cfg, tracker=tracker, until="pretrain")
print(tracker.run_id)
"""


def config(tmp, i: int) -> dict:
    return {"corpus": [str(SAMPLE / "the-war-of-the-worlds-part.txt")], "work_dir": str(tmp / f"work-{i}"),
            "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "concurrent",
            "wordpiece": {"vocab_size": 800}, "ingest": {"workers": 1},
            "shards": {"dupe_factor": 1, "max_seq_length": 32, "workers": 1, "eval_fraction": 0.1},
            "pretrain": {"model": {"hidden_size": 12, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 24},
                         "steps": STEPS, "batch_size": 4, "seed": i, "log_every": 1, "eval_every": 10, "eval_batches": 1,
                         "checkpoint_every": 0, "precision": "fp32"}}


def test_four_pipelines_at_once_on_one_sqlite_store_lose_no_metric(tmp_path):
    import json

    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(config(tmp_path, i)), f"run {i}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                   "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(tmp_path)}) for i in range(4)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("concurrent").experiment_id
    for out, _ in outs:
        parent = out.split()[-1]
        assert client.get_run(parent).info.status == "FINISHED"
        kids = {r.data.tags[tags.STAGE]: r for r in client.search_runs([exp], f"tags.`{tags.PARENT}` = '{parent}'")}
        assert set(kids) == {"ingest", "wordpiece", "shards", "pretrain"} and all(r.info.status == "FINISHED" for r in kids.values())
        pre = kids["pretrain"].info.run_id
        assert [m.step for m in client.get_metric_history(pre, "train_loss")] == list(range(1, STEPS + 1))
        assert [m.step for m in client.get_metric_history(pre, "eval_loss")] == list(range(0, STEPS + 1, 10))


def test_runs_logging_the_same_dataset_at_once_all_link_it(tmp_path):
    """Runs that reach a shared stage together log its dataset at the same moment: MLflow's insert
    of a dataset row races (UNIQUE constraint), and the loser's retry links the winner's row."""
    import threading

    from mlflow.entities import Dataset

    from bertpipe.tracking.lineage import log_datasets
    from bertpipe.tracking.runs import experiment_id

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = experiment_id(client, "race")
    for round_ in range(4):
        data = Dataset(name="docs", digest=f"d{round_}", source_type="local", source="{}")
        runs = [client.create_run(exp).info.run_id for _ in range(6)]
        barrier, errors = threading.Barrier(len(runs)), []

        def log(run_id: str) -> None:
            barrier.wait()
            try:
                log_datasets(client, run_id, [data])
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)

        threads = [threading.Thread(target=log, args=(r,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all([d.dataset.digest for d in client.get_run(r).inputs.dataset_inputs] == [f"d{round_}"] for r in runs)
