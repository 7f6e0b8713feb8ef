"""The Prefect flow with a real Prefect (test harness, then a real local server) and a real
MLflow SQLite store: caching by fingerprint, selective re-runs, validation, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bertpipe.core.stagedir import is_complete
from bertpipe.experiments.sweep import load_sweep
from bertpipe.pipeline import load_pipeline_config
from tests.conftest import ROOT, SAMPLE, SAMPLE_FILES

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
STORAGE = Path(tempfile.mkdtemp(prefix="prefect-storage-"))  # Prefect's own result records, private to the run
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(STORAGE)

TINY_MODEL = {"hidden_size": 36, "num_attention_heads": 3, "num_hidden_layers": 2, "intermediate_size": 72}


def overrides(tmp: Path, **pretrain) -> dict:
    return {
        "corpus": [str(SAMPLE / "the-war-of-the-worlds-part.txt")],
        "work_dir": str(tmp / "work"),
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "wordpiece": {"vocab_size": 1500},
        "shards": {"dupe_factor": 1, "max_seq_length": 64, "workers": 1},
        "ingest": {"workers": 1},
        "pretrain": {"model": TINY_MODEL, "steps": 4, "batch_size": 8, "eval_every": 2, "eval_batches": 2,
                     "log_every": 1, "checkpoint_every": 0, **pretrain},
    }


def children(uri: str, parent: str) -> dict[str, dict[str, str]]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], f"tags.`mlflow.parentRunId` = '{parent}'")
    # stage runs by stage name; a nested flow's run (the finetune subflow) by its run name's first word
    return {r.data.tags.get("bertpipe.stage", r.info.run_name.split()[0]): r.data.tags | {"run_id": r.info.run_id} for r in runs}


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_rerun_is_cached_and_a_masking_change_reruns_only_shards_and_pretraining(harness, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.pretrain import pretrain_flow

    ov = overrides(tmp_path)
    uri = ov["tracking_uri"]
    first = pretrain_flow(load_pipeline_config("tiny", ov))
    built = children(uri, first["mlflow_run_id"])
    assert set(built) == {"ingest", "wordpiece", "shards", "pretrain"}
    assert all(t["bertpipe.cache_hit"] == "false" for t in built.values())
    c = MlflowClient(uri)
    pre = c.get_run(built["pretrain"]["run_id"])
    assert "train_mlm_loss" in pre.data.metrics and "eval_mlm_acc" in pre.data.metrics
    assert len(c.get_metric_history(pre.info.run_id, "train_loss")) == 4, "a per-step training curve"
    arts = {a.path for a in c.list_artifacts(pre.info.run_id)}
    assert {"plots", "model-hf"} <= arts
    assert {a.path for a in c.list_artifacts(built["wordpiece"]["run_id"])} == {"vocab.txt"}
    assert (Path(first["model"]) / "model.safetensors").is_file()

    # lineage: each stage run's inputs as MLflow datasets, the code version on every run
    inputs = {s: [(d.dataset.name, d.dataset.digest) for d in c.get_run(t["run_id"]).inputs.dataset_inputs]
              for s, t in built.items()}
    assert inputs["ingest"][0][0] == "corpus"
    assert inputs["wordpiece"] == [("documents", first["ingest"])]
    assert inputs["shards"] == [("documents", first["ingest"]), ("vocabulary", first["wordpiece"])]
    assert inputs["pretrain"] == [("shards", first["shards"])]
    for run in [c.get_run(first["mlflow_run_id"]), *(c.get_run(t["run_id"]) for t in built.values())]:
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40 and run.data.tags["bertpipe.git_dirty"] in ("true", "false")
        assert {"bertpipe.version.torch", "bertpipe.version.tokenizers", "bertpipe.version.prefect",
                "bertpipe.version.mlflow", "bertpipe.version.bertpipe"} <= set(run.data.tags)

    # the encoder is a registered model version that loads with MLflow and gives bertpipe's own outputs
    import mlflow
    import numpy as np
    import torch

    from bertpipe.model import hf

    (version,) = c.search_model_versions("name = 'bertpipe-pretrain'")
    assert version.run_id == built["pretrain"]["run_id"] and version.tags["bertpipe.fingerprint"] == first["pretrain"]
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/bertpipe-pretrain/{version.version}")
    ids = torch.randint(5, 1500, (3, 17), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    types = torch.zeros_like(ids)
    types[:, 8:] = 1  # a sentence pair
    ours = hf.load_checkpoint(first["model"]).eval().bert(ids, types, mask).last_hidden_state.detach().numpy()
    theirs = loaded.predict({"input_ids": ids.numpy(), "token_type_ids": types.numpy(), "attention_mask": mask.numpy()})
    assert theirs.shape == ours.shape == (3, 17, 36) and np.abs(theirs - ours).max() <= 1e-5

    # Prefect's records of the stages are plain data in Prefect's own storage, none in the shared cache
    records = {p.name: json.loads(p.read_text()) for p in STORAGE.iterdir()}
    assert {first[s] for s in ("ingest", "wordpiece", "shards", "pretrain")} <= set(records)
    assert all(r["metadata"]["serializer"] == {"type": "bertpipe-json"} and "__class__" not in r["result"]
               for r in records.values())
    assert not [p for p in (tmp_path / "work").rglob("*") if "prefect" in p.name]

    # the command line's pretraining of the same config on the flow's shards lands in a directory of the same name

    (tmp_path / "pretrain.json").write_text(load_pipeline_config("tiny", ov).pretrain.model_dump_json())
    cli_root = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "bertpipe.cli.main", "pretrain", built["shards"]["bertpipe.path"],
                           "--out", str(cli_root), "--config", str(tmp_path / "pretrain.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert is_complete(cli_root / first["pretrain"]) and Path(built["pretrain"]["bertpipe.path"]).name == first["pretrain"]

    t0 = time.perf_counter()
    second = pretrain_flow(load_pipeline_config("tiny", ov))
    elapsed = time.perf_counter() - t0
    again = children(uri, second["mlflow_run_id"])
    assert all(t["bertpipe.cache_hit"] == "true" for t in again.values()), again
    assert all(again[s]["bertpipe.produced_by"] == built[s]["run_id"] for s in built)
    assert second["pretrain"] == first["pretrain"]
    print(f"fully cached rerun: {elapsed:.1f} s")
    assert elapsed < 15

    ov["shards"]["masking"] = {"masked_lm_prob": 0.3, "max_predictions_per_seq": 20}
    third = children(uri, pretrain_flow(load_pipeline_config("tiny", ov))["mlflow_run_id"])
    ran = {s for s, t in third.items() if t["bertpipe.cache_hit"] == "false"}
    assert ran == {"shards", "pretrain"}


@pytest.mark.parametrize("bad,message", [
    ({"pretrain": {"steps": -3}}, "greater than or equal to 0"),
    ({"shards": {"masking": {"mask_split": [0.5, 0.5, 0.5]}}}, "summing to 1"),
    ({"corpus": ["/no/such/corpus.txt"]}, "no such file"),
    ({"evaluate_steps": [2]}, "`evaluate_steps` needs tasks"),
    ({"pretrain": {"model": {"embedding_fusion": "product"}}}, "'sum' or 'concat'"),
    ({"shards": {"masking": {"masked_lm_probability": 0.4}}},
     "pretrain parameters: `shards.masking.masked_lm_probability` is not a field; did you mean `masked_lm_prob`?"),
    ({"overrides": {"pretrain": {"optim": {"warmup_step": 3}}}},
     "pretrain parameters: `pretrain.optim.warmup_step` is not a field; did you mean `warmup_steps` or `warmup_ratio`?"),
])
def test_invalid_parameters_fail_before_any_stage(harness, tmp_path, bad, message):
    from prefect.client.orchestration import get_client

    from bertpipe.core.keys import deep_merge
    from flows.pretrain import pretrain_flow

    config = load_pipeline_config("tiny", overrides(tmp_path)).model_dump(mode="json")
    if "overrides" in bad:  # `prefect deployment run pretrain/X --params '{"overrides": ...}'`
        state = pretrain_flow(config, bad["overrides"], return_state=True)
    else:  # the run form: the whole config, edited
        state = pretrain_flow(deep_merge(config, bad), return_state=True)
    assert state.is_failed() and message in str(state.message) + repr(state.result(raise_on_failure=False))
    assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists()

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def task_runs():
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            return await client.read_task_runs(flow_run_filter=flt)

    import asyncio

    assert asyncio.run(task_runs()) == []


def test_evaluate_steps_fine_tune_kept_checkpoints_and_report_progress(harness, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.sweep import sweep_flow

    ov = overrides(tmp_path, steps=4, checkpoint_every=1, keep_checkpoints=1)
    f = str(ROOT / "tests" / "fixtures" / "tasks" / "finefoods.tsv")
    ov["evaluate"] = [{"name": "ff", "train": f, "eval": f,
                       "config": {"task": "classify", "epochs": 1, "batch_size": 4, "max_seq_length": 32}}]
    ov["evaluate_steps"] = [2]
    out = sweep_flow(load_sweep("nsp", seeds=[1], grid={"pretrain.model.causal": [False, True]}, experiment="progress",
                                preset="tiny"), "nsp", ov)
    client = MlflowClient(ov["tracking_uri"])
    for rid in out["runs"]:
        hist = client.get_metric_history(rid, "ff_accuracy")
        assert sorted(h.step for h in hist) == [2, 4]
        pre = children(ov["tracking_uri"], rid)["pretrain"]
        kept = sorted(p.name for p in (Path(pre["bertpipe.path"]) / "checkpoints").iterdir())
        assert kept == ["step-0000002", "step-0000004"], "the rolling window keeps one; step 2 is kept for evaluation"
    assert "## Downstream score against pretraining steps" in out["report"]
    assert "| causal=True | " in out["report"] and "step 2 | step 4" in out["report"]
    with pytest.raises(ValueError, match="between 0 and `pretrain.steps`"):
        load_pipeline_config("tiny", {**ov, "evaluate_steps": [4]})
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        load_pipeline_config("nope")


def test_sweep_reports_from_mlflow_and_a_rerun_recomputes_nothing(harness, tmp_path):
    import csv

    from mlflow.tracking import MlflowClient

    from flows.sweep import sweep_flow

    ov = overrides(tmp_path, steps=3)
    f = str(ROOT / "tests" / "fixtures" / "tasks" / "finefoods.tsv")
    ov["evaluate"] = [{"name": "ff", "train": f, "eval": f,
                       "config": {"task": "classify", "epochs": 1, "batch_size": 4, "max_seq_length": 32}}]
    grid = {"pretrain.model.embedding_fusion": ["sum", "concat"], "finetune.pooling": ["cls", "mean"]}
    out = sweep_flow(load_sweep("fusion", seeds=[1, 2], grid=grid, experiment="sweep-test", preset="tiny"), "fusion", ov)
    client = MlflowClient(ov["tracking_uri"])
    assert len(out["runs"]) == 8
    runs = [client.get_run(r) for r in out["runs"]]
    assert all(r.data.tags["mlflow.parentRunId"] == out["mlflow_run_id"] for r in runs)
    assert {(r.data.tags["bertpipe.variant"], r.data.tags["bertpipe.seed"]) for r in runs} == {
        (f"embedding_fusion={e}, pooling={p}", s) for e in ("sum", "concat") for p in ("cls", "mean") for s in ("1", "2")}
    # pooling only changes fine-tuning: one pretraining per (fusion, seed), served from cache for the other pooling
    pre = [children(ov["tracking_uri"], r.info.run_id)["pretrain"]["bertpipe.cache_hit"] for r in runs]
    assert pre.count("false") == 4 and pre.count("true") == 4

    arts = {a.path for a in client.list_artifacts(out["mlflow_run_id"], "report")}
    assert arts == {f"report/{n}" for n in ("report.md", "runs.csv", "summary.csv", "differences.csv", "metrics.png", "curves.png")}
    summary = list(csv.DictReader(open(client.download_artifacts(out["mlflow_run_id"], "report/summary.csv", str(tmp_path)))))
    assert [r["variant"] for r in summary] == ["embedding_fusion=sum, pooling=cls", "embedding_fusion=sum, pooling=mean",
                                               "embedding_fusion=concat, pooling=cls", "embedding_fusion=concat, pooling=mean"]
    for row in summary:  # mean over the two seeds' MLflow metrics
        mine = [r for r in runs if r.data.tags["bertpipe.variant"] == row["variant"]]
        for m in ("final_mlm_loss", "ff_accuracy"):
            assert float(row[f"{m}_mean"]) == pytest.approx(sum(r.data.metrics[m] for r in mine) / 2)
        assert row["n"] == "2"
    params = {r["variant"].split(",")[0]: float(r["parameters_mean"]) for r in summary}
    assert params["embedding_fusion=concat"] > params["embedding_fusion=sum"], "concatenated embeddings add a projection"
    assert "| embedding_fusion=sum, pooling=cls | 1,2 |" in out["report"]

    # the report regenerates from MLflow alone, into a fresh folder
    from bertpipe.cli.main import main as cli

    cli(["report", "sweep-test", "--tracking-uri", ov["tracking_uri"], "--out", str(tmp_path / "again"), "--no-log"])
    assert list(csv.DictReader(open(tmp_path / "again" / "summary.csv"))) == summary
    assert (tmp_path / "again" / "curves.png").stat().st_size > 10_000

    # a finished sweep re-run recomputes nothing and reproduces the table
    again = sweep_flow(load_sweep("fusion", seeds=[1, 2], grid=grid, experiment="sweep-test", preset="tiny"), "fusion", ov)
    for rid in again["runs"]:
        kids = children(ov["tracking_uri"], rid)
        tuned = children(ov["tracking_uri"], kids.pop("finetune")["run_id"])
        assert set(kids) == {"ingest", "wordpiece", "shards", "pretrain"} and set(tuned) == {"finetune:ff"}
        assert all(t["bertpipe.cache_hit"] == "true" for t in [*kids.values(), *tuned.values()])
    table = [{k: v for k, v in r.items()} for r in csv.DictReader(open(
        client.download_artifacts(again["mlflow_run_id"], "report/summary.csv", str(tmp_path / "b"))))]
    assert table == summary


def test_a_failed_run_fails_the_sweep_with_its_message_after_the_others_finish(harness, tmp_path):
    from mlflow.tracking import MlflowClient

    from bertpipe.core.config import ConfigError
    from bertpipe.experiments.sweep import Variant
    from flows.sweep import sweep_flow

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    ov = overrides(tmp_path, steps=2)
    spec = load_sweep("fusion", seeds=[1], grid={}, experiment="failing", preset="tiny",
                      variants=[Variant(label="bad corpus", changes={"corpus": [str(bad)], "ingest.on_bad_file": "error"}),
                                Variant(label="good")])
    with pytest.raises(RuntimeError, match=r"(?s)1 of 2 runs failed.*variant 'bad corpus' seed 1: .*bad.jsonl"):
        sweep_flow(spec, "failing", ov)
    client = MlflowClient(ov["tracking_uri"])
    done = client.search_runs([client.get_experiment_by_name("failing").experiment_id], "tags.`bertpipe.stage` = 'pretrain'")
    assert len(done) == 1 and done[0].info.status == "FINISHED"  # the good variant trained after the bad one failed
    with pytest.raises(ConfigError, match="max_parallel=2 needs .* a `deployment`"):
        sweep_flow(spec, "failing", ov, max_parallel=2)


def test_data_stage_units_spread_over_a_dask_cluster_with_the_local_pools_bytes(harness, tmp_path):
    from distributed import Client, LocalCluster, get_task_stream
    from prefect_dask import DaskTaskRunner

    from bertpipe.pipeline import load_pipeline_config, run_pipeline
    from flows.pretrain import pretrain_flow

    def config(where: str, workers: int) -> dict:
        ov = overrides(tmp_path / where)
        ov["corpus"] = [str(p) for p in SAMPLE_FILES]  # two files: two ingest units
        ov["ingest"]["workers"] = ov["shards"]["workers"] = workers
        ov["shards"]["block_chars"] = 20_000  # about 15 blocks: 15 shard units
        return ov

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client, get_task_stream(client) as stream:
        workers = set(client.scheduler_info()["workers"])
        on_dask = pretrain_flow.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))(
            load_pipeline_config("tiny", config("dask", 1)))
    ran = {}
    for t in stream.data:
        if "-unit-" in t["key"]:
            ran.setdefault(t["key"].split("-unit-")[0], set()).add(t["worker"])
    assert ran == {"ingest": workers, "shards": workers} and len(workers) == 2, ran  # Dask's own record of where units ran

    outputs = {"dask": {s: tmp_path / "dask" / "work" / d / on_dask[s] for s, d in (("ingest", "docs"), ("shards", "shards"))}}
    for workers_ in (1, 2):  # the local pool, without Prefect: the same planned stages
        cfg = load_pipeline_config("tiny", config(f"local{workers_}", workers_))
        done = run_pipeline(cfg, until="shards").stages
        assert {s: r.fingerprint for s, r in done.items()} == {s: on_dask[s] for s in done}
        outputs[f"local{workers_}"] = {s: done[s].path for s in ("ingest", "shards")}
    for stage in ("ingest", "shards"):
        files = {k: sorted(p for p in v[stage].glob("*.parquet")) for k, v in outputs.items()}
        assert len(files["dask"]) >= 2 and {k: [p.name for p in f] for k, f in files.items()} == {k: [p.name for p in files["dask"]] for k in files}
        for name in files["dask"]:
            assert len({(v[stage] / name.name).read_bytes() for v in outputs.values()}) == 1, f"{stage}/{name.name} differs"


def test_two_devices_launch_torchrun_and_track_the_run(harness, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.pretrain import pretrain_flow

    ov = overrides(tmp_path, steps=4, devices=2)
    out = pretrain_flow(load_pipeline_config("tiny", ov))
    run = MlflowClient(ov["tracking_uri"]).get_run(children(ov["tracking_uri"], out["mlflow_run_id"])["pretrain"]["run_id"])
    records = [json.loads(line) for line in (Path(out["model"]).parent / "metrics.jsonl").open()]
    assert next(r for r in records if r.get("event") == "start")["world_size"] == 2
    assert run.data.metrics["train_world_size"] == 2 and "eval_mlm_loss" in run.data.metrics


@pytest.mark.slow
def test_a_killed_pretraining_task_is_retried_and_resumes_to_the_same_weights(harness, tmp_path):
    import threading

    import torch
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    from bertpipe.model import hf
    from flows.pretrain import pretrain_flow
    from tests.train.test_restarts import rank_pid, trained_steps

    run = {"steps": 120, "devices": 2, "checkpoint_every": 40, "eval_every": 0, "log_every": 1}
    reference = pretrain_flow(load_pipeline_config("tiny", overrides(tmp_path / "reference", **run)))
    ov = overrides(tmp_path / "killed", **run, retries=1)  # max_restarts 0: the task fails, Prefect retries it
    work, killed = Path(ov["work_dir"]) / "pretrain", []

    def kill_rank_1_after_step_50() -> None:
        deadline = time.monotonic() + 300
        while trained_steps(work) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(rank_pid(work, 1), 9)
        killed.append(True)

    killer = threading.Thread(target=kill_rank_1_after_step_50)
    killer.start()
    state = pretrain_flow(load_pipeline_config("tiny", ov), return_state=True)
    killer.join()
    assert killed and state.is_completed()
    out = state.result()
    records = [json.loads(ln) for ln in (Path(out["model"]).parent / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r.get("event") == "start"] == [0, 40]  # resumed at the step-40 checkpoint
    with get_client(sync_client=True) as client:
        (task_run,) = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
                                            task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["pretrain"])))
    assert task_run.run_count == 2 and task_run.state.is_completed()
    a, b = hf.load_state_dict(Path(out["model"])), hf.load_state_dict(Path(reference["model"]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_then_finetune_subflow_tracks_downstream_scores(harness, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.pretrain import pretrain_flow

    ov = overrides(tmp_path, steps=2)
    f = str(ROOT / "tests" / "fixtures" / "tasks" / "finefoods.tsv")
    ov["evaluate"] = [{"name": "finefoods", "train": f, "eval": f,
                       "config": {"task": "classify", "epochs": 1, "batch_size": 4, "max_seq_length": 32}}]
    out = pretrain_flow(load_pipeline_config("tiny", ov))
    client = MlflowClient(ov["tracking_uri"])
    parent = client.get_run(out["mlflow_run_id"])
    ft_parent = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   f"tags.`mlflow.parentRunId` = '{out['mlflow_run_id']}' and tags.`bertpipe.checkpoint` = '{out['model']}'")
    assert len(ft_parent) == 1
    kids = children(ov["tracking_uri"], ft_parent[0].info.run_id)
    assert set(kids) == {"finetune:finefoods"}
    run = client.get_run(kids["finetune:finefoods"]["run_id"])
    assert run.data.metrics["accuracy"] == parent.data.metrics["finefoods_accuracy"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "examples.json"}  # the model: MLflow's logged model
    assert run.data.tags["bertpipe.cache_hit"] == "false"

    # the fine-tuned model is a registered MLflow model that answers raw text as the evaluation did
    import mlflow
    import pandas as pd

    from bertpipe.tasks.data import read_single_tsv

    (version,) = client.search_model_versions("name = 'bertpipe-pretrain-finefoods'")
    assert version.run_id == run.info.run_id and version.tags["bertpipe.fingerprint"] == kids["finetune:finefoods"]["bertpipe.fingerprint"]
    mlflow.set_tracking_uri(ov["tracking_uri"])
    rows = read_single_tsv(f)
    answers = mlflow.pyfunc.load_model(f"models:/bertpipe-pretrain-finefoods/{version.version}").predict(
        pd.DataFrame({"text": [r.text_a for r in rows]}))
    assert set(answers.columns) == {"label", "probability"} and ((answers["probability"] >= 0.5) & (answers["probability"] <= 1)).all()
    assert np.mean(answers["label"] == [r.label for r in rows]) == pytest.approx(run.data.metrics["accuracy"])

    again = pretrain_flow(load_pipeline_config("tiny", ov))  # everything cached, fine-tuning included
    kids = children(ov["tracking_uri"], client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`mlflow.parentRunId` = '{again['mlflow_run_id']}' and tags.`bertpipe.checkpoint` = '{out['model']}'")[0].info.run_id)
    rerun = client.get_run(kids["finetune:finefoods"]["run_id"])
    assert rerun.data.tags["bertpipe.cache_hit"] == "true" and rerun.data.tags["bertpipe.produced_by"] == run.info.run_id
    assert rerun.data.metrics["accuracy"] == run.data.metrics["accuracy"]

    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    async def finetune_states():
        async with get_client() as c:
            runs = await c.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="finetune:")))
            return [r.state.name for r in sorted(runs, key=lambda r: r.created)]

    assert asyncio.run(finetune_states())[-2:] == ["Completed", "Cached"]  # Prefect's cache key is the fine-tune's fingerprint

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def artifacts(key: str):
        async with get_client() as c:
            return await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    assert [float(a.data) for a in asyncio.run(artifacts("finetune-finefoods-progress"))][:1] == [100.0]  # the run that trained
    (scores,) = asyncio.run(artifacts("finetune-finefoods-held-out"))
    assert f"| accuracy | {run.data.metrics['accuracy']:.4f} |" in scores.data


def test_a_running_pretraining_shows_progress_that_advances(harness, tmp_path):
    import asyncio
    import threading

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.pretrain import pretrain_flow

    ov = overrides(tmp_path, steps=300, log_every=3, eval_every=100)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(out=pretrain_flow(load_pipeline_config("tiny", ov))))

    async def latest(key: str):
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                                sort=ArtifactSort.CREATED_DESC, limit=1)
            return found[0] if found else None

    before = asyncio.run(latest("pretrain-progress"))
    runner.start()
    seen = []
    while runner.is_alive():
        art = asyncio.run(latest("pretrain-progress"))
        if art is not None and (before is None or art.id != before.id):
            seen.append(float(art.data))
        time.sleep(0.3)
    runner.join()
    assert "out" in result
    during = [p for p in seen if 0 < p < 100]
    assert len(set(during)) >= 3 and during == sorted(during), seen  # advancing while the run is in progress
    assert seen[-1] == 100.0
    held_out = asyncio.run(latest("pretrain-held-out"))
    assert "Held-out figures at step 300 of 300" in held_out.data and "MLflow run:" in held_out.data
    assert float(asyncio.run(latest("shards-progress")).data) == 100.0  # data stages report units done
