"""Pretraining under torchrun (two gloo processes on CPU): the curves reach MLflow while it runs."""

from __future__ import annotations

import threading
import time

from mlflow.tracking import MlflowClient

from bertpipe.tracking import MetricLogger
from bertpipe.train.stage import pretrain_stage
from tests.train.conftest import tiny_cfg


def test_a_two_process_runs_curves_reach_mlflow_while_it_trains(static_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("live")).info.run_id
    cfg = tiny_cfg(devices=2, steps=150, log_every=5, eval_every=0, batch_size=8, checkpoint_every=0)
    done: dict = {}
    trainer = threading.Thread(target=lambda: done.update(result=pretrain_stage(
        static_dir, cfg, tmp_path / "out", on_metrics=MetricLogger(uri, run_id))))
    t0 = time.perf_counter()
    trainer.start()
    seen = []  # (seconds since start, train_loss points in MLflow)
    while trainer.is_alive():
        seen.append((time.perf_counter() - t0, len(client.get_metric_history(run_id, "train_loss"))))
        time.sleep(0.5)
    trainer.join()
    total = time.perf_counter() - t0
    assert "result" in done
    final = len(client.get_metric_history(run_id, "train_loss"))
    assert final == 150 // 5
    counts = sorted({n for _, n in seen} - {0})
    first = next(t for t, n in seen if n > 0)
    # live: points arrive through the run, not in one burst at its end (forwarding after torchrun
    # exits would show the first point in the last few percent of the run's time)
    assert len(counts) >= 3 and first < 0.8 * total, (first, total, seen)
