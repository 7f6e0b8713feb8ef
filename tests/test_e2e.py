"""End to end, as a user runs it: a real local Prefect server on SQLite, the serve process,
``prefect deployment run pretrain/base`` shrunk to CPU size (BERT-Base architecture, two
steps on a corpus slice), then the MLflow runs it left. Every process started is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bertpipe.pipeline import load_pipeline_config
from tests.conftest import ROOT, SAMPLE
from benchmarks.services import BIN, call, free_port, healthy, stop, wait_until


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

        # The run form: the deployment's parameters are the typed pipeline config, defaults = the preset.
        api = f"http://127.0.0.1:{port}/api"
        dep = call(f"{api}/deployments/name/pretrain/base")
        schema = dep["parameter_openapi_schema"]
        defs = schema.get("definitions") or schema["$defs"]
        prob = defs["MaskingConfig"]["properties"]["masked_lm_prob"]
        assert (prob["type"], prob["exclusiveMinimum"], prob["exclusiveMaximum"]) == ("number", 0.0, 1.0) and prob["description"]
        fusion = defs["ModelOverrides"]["properties"]["embedding_fusion"]["anyOf"][0]
        assert fusion["enum"] == ["sum", "concat"]
        assert dep["parameters"]["config"] == load_pipeline_config("base").model_dump(mode="json")
        form = dep["parameters"]["config"]  # what the form opens with, then edited field by field as a user would
        form["corpus"], form["work_dir"], form["tracking_uri"] = overrides["corpus"], str(tmp_path / "form"), uri
        form["experiment"] = "form-run"
        form["wordpiece"]["vocab_size"], form["phase2"] = 2000, None
        form["shards"] |= {"max_seq_length": 64, "dupe_factor": 1, "eval_fraction": 0.1}
        form["shards"]["masking"] |= {"masked_lm_prob": 0.4, "max_predictions_per_seq": 26}
        form["pretrain"]["model"]["embedding_fusion"] = "concat"
        form["pretrain"] |= {"steps": 2, "batch_size": 2, "eval_every": 1, "eval_batches": 1, "checkpoint_every": 0,
                             "precision": "fp32"}
        form["pretrain"]["optim"] |= {"warmup_steps": 1}
        flow_run = call(f"{api}/deployments/{dep['id']}/create_flow_run", {"parameters": {"config": form}})
        wait_until(lambda: call(f"{api}/flow_runs/{flow_run['id']}")["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED"),
                   600, "the form's flow run")
        assert call(f"{api}/flow_runs/{flow_run['id']}")["state"]["type"] == "COMPLETED"
        (run,) = client.search_runs([client.get_experiment_by_name("form-run").experiment_id], "tags.`bertpipe.preset` = 'base'")
        assert run.data.params["shards.masking.masked_lm_prob"] == "0.4"
        assert run.data.params["pretrain.model.embedding_fusion"] == "concat"

        # A misspelt key, in the form's config or in `--params` overrides, is let through by the schema and fails the
        # flow run with the library's message, before any stage writes anything.
        typo_form = json.loads(json.dumps(form))
        typo_form["work_dir"] = str(tmp_path / "typo-form")
        typo_form["shards"]["masking"]["masked_lm_probability"] = 0.4
        typo_params = {"overrides": {**overrides, "work_dir": str(tmp_path / "typo-params"),
                                     "pretrain": {**overrides["pretrain"], "optim": {"warmup_step": 1}}}}
        for params, work, key, near in (({"config": typo_form}, "typo-form", "shards.masking.masked_lm_probability",
                                         "did you mean `masked_lm_prob`?"),
                                        (typo_params, "typo-params", "pretrain.optim.warmup_step",
                                         "did you mean `warmup_steps` or `warmup_ratio`?")):
            failed = call(f"{api}/deployments/{dep['id']}/create_flow_run", {"parameters": params})
            wait_until(lambda: call(f"{api}/flow_runs/{failed['id']}")["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED"),
                       300, "the misspelt run")
            state = call(f"{api}/flow_runs/{failed['id']}")["state"]
            assert state["type"] == "FAILED" and f"`{key}` is not a field; {near}" in state["message"], state
            assert not (tmp_path / work).exists()
            tasks = call(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [failed["id"]]}}})
            assert tasks == [], tasks

        form["shards"]["masking"]["masked_lm_prob"] = 1.5  # refused when the run is created: no run, no stage
        with pytest.raises(urllib.error.HTTPError) as refused:
            call(f"{api}/deployments/{dep['id']}/create_flow_run", {"parameters": {"config": form}})
        assert refused.value.code in (409, 422) and "masked_lm_prob" in refused.value.read().decode()
    finally:
        for p in reversed(procs):
            stop(p)
        log.close()
    assert all(p.poll() is not None for p in procs)
