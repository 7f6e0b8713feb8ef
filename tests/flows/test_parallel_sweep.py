"""A sweep on a work pool, as ``bertpipe bench sweep`` sets it up: a real Prefect server,
``deployments/serve.py --pool`` and two process workers (one thread each) train a 2 variants
x 2 seeds sweep at once; the shared data stages are built once, and the report equals that of
the same sweep run one after another in the serve process."""

from __future__ import annotations

import pytest

from benchmarks.services import call, free_port, prefect_env, processes, start_prefect_server
from benchmarks.sweep import POOL, overlapping, pool_runs, report_tables, run_sweep, stage_builds, start_team, sweep_params
from tests.conftest import ROOT, SAMPLE
from tests.flows.test_flows import TINY_MODEL

CORPUS = [str(SAMPLE / "the-war-of-the-worlds-part.txt")]


@pytest.mark.slow
def test_a_sweep_on_two_pool_workers_runs_in_parallel_and_reports_as_the_sequential_run(tmp_path):
    port = free_port()
    env = prefect_env(tmp_path, port, PREFECT_WORKER_QUERY_SECONDS="2")
    api = env["PREFECT_API_URL"]
    with processes(tmp_path / "services.log", env, ROOT) as start:
        start_prefect_server(start, port)
        start_team(start, env, workers=2)
        assert call(f"{api}/deployments/name/pretrain/tiny")["work_pool_name"] == POOL
        assert call(f"{api}/deployments/name/sweep/fusion")["work_pool_name"] is None  # served: holds no worker

        run_sweep(env, sweep_params(tmp_path / "parallel", [1, 2], 6, CORPUS, TINY_MODEL, max_parallel=2,
                                    deployment="pretrain/tiny"))
        runs = pool_runs(api)
        assert len(runs) == 4 and all(r["state"] == "COMPLETED" for r in runs), runs
        assert {r["worker"] for r in runs} == {"worker-1", "worker-2"}
        assert overlapping(runs), runs
        # each shared data stage was built by one of the four runs; the other three waited and reused it
        built = stage_builds(f"sqlite:///{tmp_path / 'parallel' / 'mlflow.db'}")
        assert {k: built[k] for k in ("ingest", "wordpiece", "shards")} == {k: ["false", "true", "true", "true"]
                                                                              for k in ("ingest", "wordpiece", "shards")}
        assert built["pretrain"] == ["false"] * 4
        for stage in ("docs", "tokenizer", "shards"):  # one output on disk per shared stage
            assert len([p for p in (tmp_path / "parallel" / "work" / stage).iterdir() if not p.name.startswith(".")
                        and p.name != "latest"]) == 1

        run_sweep(env, sweep_params(tmp_path / "sequential", [1, 2], 6, CORPUS, TINY_MODEL))
        assert len(pool_runs(api)) == 4  # the sequential sweep ran in the serve process, not on the pool
    par = report_tables(f"sqlite:///{tmp_path / 'parallel' / 'mlflow.db'}", tmp_path / "par-report")
    seq = report_tables(f"sqlite:///{tmp_path / 'sequential' / 'mlflow.db'}", tmp_path / "seq-report")
    assert [r["variant"] for r in par["summary.csv"]] == ["embedding_fusion=sum", "embedding_fusion=concat"]
    assert par == seq
