"""MLflow client helpers: stores, experiments, runs, params and metrics by explicit run id.

Everything goes through ``MlflowClient`` with explicit run ids rather than MLflow's "active
run" globals, so stages running in worker threads (Prefect's task runner) cannot log into
each other's runs. The default store is SQLite in the base directory (``sqlite:///mlflow.db``)
with artifacts beside it (``mlartifacts/``); any tracking URI works through
``MLFLOW_TRACKING_URI`` or the ``tracking_uri`` argument.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from bertpipe.core.keys import flatten as dotted_keys
from bertpipe.core.settings import base_dir, default_tracking_uri  # noqa: F401  (default_tracking_uri: re-exported)
from bertpipe.tracking import tags


_WAL: set[str] = set()  # SQLite stores this process has switched to write-ahead logging
SQLITE_RETRIES = 8  # tries of one write to a SQLite store another process holds locked (backing off to ~13 s in all)


def client_for(tracking_uri: str | None = None) -> MlflowClient:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        sqlite_wal(uri)
    return MlflowClient(tracking_uri=uri)


def sqlite_wal(uri: str) -> None:
    """Switch a SQLite store to write-ahead logging (once per process and file; the mode stays
    in the file): readers (the MLflow UI, a report) no longer block writers, and concurrent
    pipelines' writers wait for each other instead of failing at once. Local disks only: WAL
    does not work on network file systems, which is where a shared store wants PostgreSQL."""
    path = uri.removeprefix("sqlite:///")
    if path in _WAL or path == ":memory:":
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.lock", "w") as lock:  # one process at a time creates or upgrades MLflow's tables
            fcntl.flock(lock, fcntl.LOCK_EX)     # (four pipelines started at once on a new store collided there)
            with closing(sqlite3.connect(path, timeout=60)) as db:
                db.execute("PRAGMA journal_mode=WAL")
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except (OSError, sqlite3.OperationalError):  # a read-only folder or copy: read the store as it is
        pass
    _WAL.add(path)


# A row another process inserted between our check and our insert (two runs logging the same
# dataset at once): the retry finds it and links it. SQLite's wording, then PostgreSQL's.
RACED_INSERT = ("UNIQUE constraint failed", "duplicate key value violates unique constraint")


def retrying(write: Callable[[], Any], transient: tuple[str, ...] = ()) -> Any:
    """``write()``, again after a pause while SQLite reports its store locked by another writer
    (or while the error holds one of the ``transient`` phrases)."""
    for attempt in range(SQLITE_RETRIES):
        try:
            return write()
        except Exception as e:  # MlflowException wrapping sqlalchemy's OperationalError
            if not any(p in str(e) for p in ("database is locked", *transient)) or attempt == SQLITE_RETRIES - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    return None


def experiment_id(client: MlflowClient, name: str, artifact_root: Path | None = None) -> str:
    """The experiment's id, created if needed with artifacts under ``artifact_root`` (default:
    ``mlartifacts/`` beside a SQLite store; MLflow's own default is ``./mlruns`` in the cwd)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    uri = client.tracking_uri
    if artifact_root is None and uri.startswith("sqlite:///"):
        artifact_root = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    location = (artifact_root / name).resolve().as_uri() if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another run
        return client.get_experiment_by_name(name).experiment_id


def flatten(prefix: str, obj: Any) -> dict[str, str]:
    """Nested config → MLflow params (``shards.masking.masked_lm_prob``), values as strings."""
    return {k: json.dumps(v) if isinstance(v, list | tuple) else str(v) for k, v in dotted_keys(obj, prefix).items()}


def start_run(client: MlflowClient, exp_id: str, name: str, run_tags: dict[str, str], params: dict[str, str]) -> str:
    run = client.create_run(exp_id, run_name=name, tags=run_tags)
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    items = [Param(k[:250], v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        retrying(lambda i=i: client.log_batch(run_id, params=items[i : i + 100]))


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
    """Numeric, finite-or-inf values only (NaN, None, strings and bools are left out)."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, int | float) and not isinstance(v, bool) and v == v]
    for i in range(0, len(items), 500):
        retrying(lambda i=i: client.log_batch(run_id, metrics=items[i : i + 500]))


def producer_of(client: MlflowClient, exp_ids: Iterable[str], fingerprint: str) -> str | None:
    """The child run that built (not reused) the output with this fingerprint, if tracked."""
    runs = client.search_runs(list(exp_ids), f"tags.`{tags.FINGERPRINT}` = '{fingerprint}' and tags.`{tags.CACHE_HIT}` = 'false' "
                              "and attributes.status = 'FINISHED'",
                              max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0].info.run_id if runs else None


# A pipeline run's whole config as JSON: its params are flattened strings (None and "None", 1 and
# "1" look alike, values past 6,000 characters are cut); this is what `bertpipe reproduce` reads back.
CONFIG_ARTIFACT = "config/pipeline.json"


def log_config(client: MlflowClient, run_id: str, config: dict[str, Any]) -> None:
    client.log_dict(run_id, config, CONFIG_ARTIFACT)


def finish(client: MlflowClient, run_id: str, ok: bool = True) -> None:
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))
