"""``bertpipe bench sweep``: one sweep's wall time, one run after another vs on two Prefect workers.

Set up before any clock starts, as a team would have it: a private Prefect server (SQLite),
``deployments/serve.py --pool POOL`` (the pretrain deployments on a process work pool, the
sweeps served) and two workers, ``prefect worker start --pool POOL --limit 1``, each with one
OpenMP thread (a core each, as a GPU each on a real team). Timed: the whole
``prefect deployment run sweep/fusion --watch`` command a user types, for
- ``sequential-1t``: the sweep's runs one after another in the serve process, one thread
  (the same per-run work as a worker's);
- ``sequential-2t``: the same with two threads, the whole machine to one run at a time (a
  served process restarted with ``OMP_NUM_THREADS=2``);
- ``parallel``: ``max_parallel 2`` on ``deployment pretrain/tiny``: the pool's two workers.

Each sweep gets its own work directory and MLflow store, so every one builds everything
(data stages included). The sweep is ``fusion`` (2 variants) x ``--seeds`` at the tiny preset
on the bundled sample corpus with ``--steps``. Checked: the parallel sweep ran on both workers
at overlapping times, each shared data stage was built once, and its report tables equal the
one-thread sequential run's. CPU seconds are not given (the work runs in worker
subprocesses); the 1-minute load before each run is. Served deployments and workers poll for
runs every 2 s and the CLI watches every second (Prefect's defaults, 10 s and 5 s, add the same
few seconds of latency to every command). A benchmark, not a test: check the load.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.services import BIN, call, free_port, prefect_env, processes, start_prefect_server, wait_until

ROOT = Path(__file__).resolve().parents[1]
POOL = "bertpipe-bench"
GRID = {"pretrain.model.embedding_fusion": ["sum", "concat"]}


def sweep_params(work: Path, seeds: list[int], steps: int, corpus: list[str], model: dict | None = None,
                 **extra: Any) -> dict[str, Any]:
    """The ``sweep/fusion`` run's parameters: 2 variants x ``seeds`` at the tiny preset, ``steps``
    steps, its own work directory and MLflow store under ``work``."""
    from bertpipe.experiments.sweep import load_sweep

    spec = load_sweep("fusion", seeds=seeds, grid=GRID, experiment="sweep", preset="tiny")
    pretrain = {"steps": steps, "eval_every": max(steps // 2, 1), "eval_batches": 4, "log_every": 10,
                "checkpoint_every": 0, **({"model": model} if model else {})}
    ov = {"corpus": corpus, "work_dir": str(work / "work"), "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
          "ingest": {"workers": 1}, "shards": {"dupe_factor": 1, "workers": 1}, "pretrain": pretrain}
    return {"spec": spec.model_dump(mode="json"), "name": "fusion", "overrides": ov, **extra}


def run_sweep(env: dict[str, str], params: dict[str, Any]) -> float:
    """``prefect deployment run sweep/fusion --watch`` with ``params``; its wall seconds."""
    t0 = time.perf_counter()
    run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "sweep/fusion", "--params", json.dumps(params),
                          "--watch", "--watch-interval", "1", "--watch-timeout", "3000"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=3100)
    seconds = time.perf_counter() - t0
    if run.returncode != 0 or "Completed" not in run.stdout:
        raise RuntimeError(f"the sweep did not complete:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return seconds


def start_team(start, env: dict[str, str], workers: int, threads: int = 1) -> list[subprocess.Popen]:
    """``deployments/serve.py --pool POOL`` (its runs at ``threads``) and ``workers`` workers of one
    thread each; returns the processes once the deployments exist."""
    procs = [start([sys.executable, "deployments/serve.py", "--pool", POOL], OMP_NUM_THREADS=str(threads))]
    inspect = [str(BIN / "prefect"), "deployment", "inspect", "sweep/fusion"]
    wait_until(lambda: subprocess.run(inspect, env=env, cwd=ROOT, capture_output=True).returncode == 0, 180,
               "the served deployments")
    for i in range(workers):
        procs.append(start([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process", "--limit", "1",
                            "--name", f"worker-{i + 1}"], OMP_NUM_THREADS="1"))
    return procs


def pool_runs(api: str) -> list[dict[str, Any]]:
    """The flow runs the pool's workers ran (Prefect's records): name, worker, start, end, state."""
    runs = call(f"{api}/flow_runs/filter", {"work_pools": {"name": {"any_": [POOL]}}})
    return [{"name": r["name"], "worker": r["labels"].get("prefect.worker.name"), "state": r["state"]["type"],
             "start": r["start_time"], "end": r["end_time"]} for r in runs]


def overlapping(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of runs on different workers whose [start, end] intervals overlap."""
    def span(r):
        return datetime.fromisoformat(r["start"]), datetime.fromisoformat(r["end"])

    return [(a["name"], b["name"]) for a in runs for b in runs if a["start"] and b["start"] and a["end"] and b["end"]
            and (a["worker"] or "") < (b["worker"] or "") and span(a)[0] < span(b)[1] and span(b)[0] < span(a)[1]]


def stage_builds(uri: str) -> dict[str, list[str]]:
    """Per stage, the cache-hit tag of every run of it in the store ("false": this run built it)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep").experiment_id
    out: dict[str, list[str]] = {}
    for r in client.search_runs([exp], "tags.`bertpipe.stage` != ''", max_results=10_000):
        out.setdefault(r.data.tags["bertpipe.stage"], []).append(r.data.tags["bertpipe.cache_hit"])
    return {k: sorted(v) for k, v in out.items()}


def report_tables(uri: str, dest: Path) -> dict[str, list[dict[str, str]]]:
    """The sweep report's summary and differences tables, read back from its MLflow run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep").experiment_id
    (top,) = client.search_runs([exp], "tags.`bertpipe.sweep` = 'true'")
    return {name: list(csv.DictReader(open(client.download_artifacts(top.info.run_id, f"report/{name}", str(dest)))))
            for name in ("summary.csv", "differences.csv")}


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def bench_sweep(work: str | Path, steps: int = 300, seeds: list[int] | None = None) -> dict[str, Any]:
    """Time the three sweeps (module docstring) and check the parallel one; returns the figures."""
    work = Path(work).absolute()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seeds = seeds or [1, 2]
    corpus = [str(ROOT / "data" / "sample")]
    out: dict[str, Any] = {"runs": 2 * len(seeds), "steps": steps, "seeds": seeds}
    runs: list[dict[str, Any]] = []
    for threads, workers, labels in ((2, 0, ["sequential-2t"]), (1, 2, ["sequential-1t", "parallel"])):
        port = free_port()  # a fresh server each time: its deployments are served by this set-up's processes
        # runs are picked up within 2 s (Prefect's defaults: 10 s for served deployments, 10 s for workers)
        env = prefect_env(work / f"prefect-{threads}t", port, PREFECT_WORKER_QUERY_SECONDS="2",
                          PREFECT_RUNNER_POLL_FREQUENCY="2")
        with processes(work / f"services-{threads}t.log", env, ROOT) as start:
            start_prefect_server(start, port)
            start_team(start, env, workers=workers, threads=threads)
            for label in labels:
                extra = {"max_parallel": 2, "deployment": "pretrain/tiny"} if label == "parallel" else {}
                print(f"{label}: load {_load():.2f}", flush=True)
                out[label] = run_sweep(env, sweep_params(work / label, seeds, steps, corpus, **extra))
                print(f"{label}: {out[label]:.1f} s", flush=True)
            runs = pool_runs(env["PREFECT_API_URL"])
    out["workers"] = sorted({r["worker"] for r in runs if r["worker"]})
    out["overlapping_pairs"] = len(overlapping(runs))
    out["built_by"] = stage_builds(f"sqlite:///{work / 'parallel' / 'mlflow.db'}")
    tables = {k: report_tables(f"sqlite:///{work / k / 'mlflow.db'}", work / k / "report")
              for k in ("sequential-1t", "parallel")}
    out["report_equal"] = tables["sequential-1t"] == tables["parallel"]
    out["ratio_parallel_to_sequential_1t"] = out["parallel"] / out["sequential-1t"]
    out["ratio_parallel_to_sequential_2t"] = out["parallel"] / out["sequential-2t"]
    print(f"{out['runs']} runs of {steps} steps: sequential {out['sequential-1t']:.1f} s (1 thread), "
          f"{out['sequential-2t']:.1f} s (2 threads); 2 workers {out['parallel']:.1f} s = "
          f"{out['ratio_parallel_to_sequential_1t']:.2f} / {out['ratio_parallel_to_sequential_2t']:.2f} of them; "
          f"workers {out['workers']}, {out['overlapping_pairs']} overlapping pairs, report equal: {out['report_equal']}")
    print("stage builds (false = built by that run):", json.dumps(out["built_by"]))
    return out
