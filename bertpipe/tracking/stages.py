"""What each stage logs to MLflow, and the runs of one pipeline run.

A ``PipelineRun`` is one parent MLflow run (a flow run, or a sweep) with one child run per
stage, opened before the stage starts and closed with its result: the stage's config as
params, its fingerprint, its counts as metrics and the artifacts ``ARTIFACTS`` names for its
kind. A stage served from cache still gets a child run, tagged as a cache hit and linked to
the run that built it, so every result stays traceable. Pretraining logs its curves live
through ``metric_logger`` while it trains.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset
from mlflow.tracking import MlflowClient

from bertpipe.core.stage import StageResult
from bertpipe.tracking import tags
from bertpipe.tracking.lineage import code_tags, log_datasets
from bertpipe.tracking.runs import client_for, experiment_id, finish, flatten, log_metrics, producer_of, start_run


def _manifest(client: MlflowClient, run_id: str, result: StageResult, cached: bool) -> None:
    client.log_artifact(run_id, str(result.path / "manifest.json"))


def _vocabulary(client: MlflowClient, run_id: str, result: StageResult, cached: bool) -> None:
    client.log_artifact(run_id, str(result.path / "vocab.txt"))


def _pretrained(client: MlflowClient, run_id: str, result: StageResult, cached: bool) -> None:
    """Curves, and the model in HF format where one exists (summed embeddings); once, by the run that trained it."""
    if cached:
        return
    for png in result.manifest.get("plots", []):
        client.log_artifact(run_id, str(result.file(png)), "plots")
    final = result.file(result.manifest["final"])
    if json.loads((final / "config.json").read_text()).get("embedding_fusion", "sum") == "sum":
        from bertpipe.model.hf import export_hf

        with tempfile.TemporaryDirectory() as tmp:
            client.log_artifacts(run_id, str(export_hf(final, Path(tmp) / "hf")), "model-hf")


def _finetuned(client: MlflowClient, run_id: str, result: StageResult, cached: bool) -> None:
    """Scores, and per-example results (``examples.json``, for bootstrap intervals) where the output has them."""
    client.log_artifact(run_id, str(result.path / "metrics.json"))
    if (result.path / "examples.json").is_file():
        client.log_artifact(run_id, str(result.path / "examples.json"))


# Artifacts by stage kind (``StageResult.stage``; phase-2 shards are a "shards" output).
ARTIFACTS: dict[str, Callable[[MlflowClient, str, StageResult, bool], None]] = {
    "ingest": _manifest, "wordpiece": _vocabulary, "shards": _manifest, "pretrain": _pretrained, "finetune": _finetuned,
}


def _register_encoder(run: PipelineRun, run_id: str, result: StageResult) -> None:
    """A new version of ``bertpipe-<experiment>``; one continued from other weights names them."""
    from bertpipe.tracking.models import log_encoder

    experiment = run.client.get_experiment(run.exp).name
    log_encoder(run.uri, run_id, result.file(result.manifest["final"]), experiment, result.fingerprint,
                parent=(result.manifest.get("init") or {}).get("source"))


def init_inputs(client: MlflowClient, run_id: str, result: StageResult) -> list[Dataset]:
    """A pretraining's starting weights as its input: tags with the source and digest, the
    weights as a dataset, and a registered model version as MLflow's own model input."""
    init = result.manifest.get("init") if result.stage == "pretrain" else None
    if not init:
        return []
    from bertpipe.tracking.lineage import files_dataset

    client.set_tag(run_id, tags.INIT, init["source"])
    client.set_tag(run_id, tags.INIT_DIGEST, init["digest"])
    if init["source"].startswith("models:/"):
        from mlflow.entities import LoggedModelInput

        name, _, version = init["source"].removeprefix("models:/").partition("/")
        v = client.get_model_version(name, version)
        # MLflow 3 logs a model as a LoggedModel (source models:/m-...); its SQL registry leaves model_id unset
        if model_id := v.model_id or (v.source.removeprefix("models:/") if v.source.startswith("models:/m-") else None):
            client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
    weights = [str(Path(init["path"]) / n) for n in ("model.safetensors", "vocab.txt") if (Path(init["path"]) / n).is_file()]
    return [files_dataset("init", weights, source=[init["source"]])]


def _register_finetuned(run: PipelineRun, run_id: str, result: StageResult) -> None:
    """Registered as ``bertpipe-<experiment>-<task>`` (the task's name from the stage run, ``finetune:<task>``);
    the checkpoint is the one the parent run names."""
    from bertpipe.tracking.models import log_finetuned

    checkpoint = run.client.get_run(run.run_id).data.tags.get(tags.CHECKPOINT)
    if checkpoint is None or not (Path(checkpoint) / "config.json").is_file():
        return  # a fine-tuning outside a run that names its checkpoint: nothing to bundle the model with
    experiment = run.client.get_experiment(run.exp).name
    task = run.client.get_run(run_id).data.tags.get(tags.STAGE, "").partition(":")[2]
    log_finetuned(run.uri, run_id, result.path, Path(checkpoint), f"{experiment}-{task}" if task else experiment,
                  result.fingerprint)


# Stage outputs that are models, logged and registered as MLflow models (by stage kind).
MODELS: dict[str, Callable[[PipelineRun, str, StageResult], None]] = {"pretrain": _register_encoder,
                                                                     "finetune": _register_finetuned}


def stage_metrics(result: StageResult) -> dict[str, float]:
    """A stage's figures as MLflow metrics: its counts, and a fine-tuning's scores."""
    out = {f"count_{k}": v for k, v in result.manifest.get("counts", {}).items()}
    if result.stage == "finetune":
        from bertpipe.tasks.finetune import task_metrics

        out |= task_metrics(result.manifest)
    return out


# Throughput figures of the train records, logged under their own names (not train_*): tokens_per_s,
# mfu (model FLOPs utilization) and peak_tflops (its denominator, measured at the start of the run).
THROUGHPUT = ("tokens_per_s", "mfu", "peak_tflops")


@lru_cache(maxsize=16)
def _client(tracking_uri: str) -> MlflowClient:
    return client_for(tracking_uri)


@dataclass(frozen=True)
class MetricLogger:
    """``on_metrics`` for pretraining: its start record's parameter count and matmul peak, and every
    train/eval record (``<split>_<key>``, but ``THROUGHPUT`` under its own names). Plain data, so
    that it travels to a Prefect task or a Dask worker."""

    tracking_uri: str
    run_id: str

    def __call__(self, rec: dict[str, Any]) -> None:
        client = _client(self.tracking_uri)
        if rec.get("event") == "start":
            log_metrics(client, self.run_id, {k: rec[k] for k in ("parameters", "peak_tflops") if k in rec}, step=rec["step"])
        if rec.get("split") in ("train", "eval"):
            log_metrics(client, self.run_id, {k if k in THROUGHPUT else f"{rec['split']}_{k}": v for k, v in rec.items()
                                              if k not in ("split", "step", "phase", "sample_digest")}, step=rec["step"])


metric_logger = MetricLogger  # ``metric_logger(tracking_uri, run_id)``: pretraining's ``on_metrics``


def run_link(tracking_uri: str, run_id: str) -> str:
    """Where a user opens an MLflow run: the UI at ``BERTPIPE_MLFLOW_UI`` (``make ui``'s address by default)."""
    ui = os.environ.get("BERTPIPE_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")
    try:
        exp = client_for(tracking_uri).get_run(run_id).info.experiment_id
    except Exception:  # the store is busy or gone: still name the run
        return f"run {run_id}"
    return f"{ui}/#/experiments/{exp}/runs/{run_id}"


def prefect_tags(flow_run_id: str) -> dict[str, str]:
    """Link an MLflow run to the Prefect flow run that made it (the UI address from the environment)."""
    ui = os.environ.get("PREFECT_UI_URL") or os.environ.get("PREFECT_API_URL", "").removesuffix("/api")
    return {tags.FLOW_RUN_ID: flow_run_id, tags.FLOW_RUN_URL: f"{ui}/runs/flow-run/{flow_run_id}" if ui else ""}


def pipeline_tags(fingerprints: dict[str, str], preset: str | None = None) -> dict[str, str]:
    """The fingerprint planned for each stage of a pipeline run, and the preset it started from."""
    return ({tags.PRESET: preset} if preset else {}) | {tags.PLANNED + name: fp for name, fp in fingerprints.items()}


def preset_tags(preset: str) -> dict[str, str]:
    """Tags naming the preset a run started from (a deployment passes them)."""
    return {tags.PRESET: preset}


def checkpoint_tags(checkpoint: str) -> dict[str, str]:
    """A fine-tuning run's starting model."""
    return {tags.CHECKPOINT: checkpoint}


class PipelineRun:
    """A parent MLflow run and its stages' child runs (a child left open by a failure ends FAILED)."""

    def __init__(self, tracking_uri: str, experiment: str, name: str, run_tags: dict[str, str],
                 params: dict[str, Any], parent_run_id: str | None = None) -> None:
        self.uri, self.client = tracking_uri, client_for(tracking_uri)
        self.exp = experiment_id(self.client, experiment)
        self.run_id = start_run(self.client, self.exp, name, code_tags() | run_tags | ({tags.PARENT: parent_run_id} if parent_run_id else {}),
                                flatten("", params))
        self.open: set[str] = set()

    def open_stage(self, name: str, fingerprint: str, config: dict[str, Any]) -> str:
        """A child run for a stage about to run; returns its id."""
        run_tags = code_tags() | {tags.PARENT: self.run_id, tags.STAGE: name, tags.FINGERPRINT: fingerprint, tags.CACHE_HIT: "false"}
        run_id = start_run(self.client, self.exp, name, run_tags, flatten(name, config))
        self.open.add(run_id)
        return run_id

    def close_stage(self, run_id: str, result: StageResult, cached: bool, inputs: list[Dataset] | None = None) -> StageResult:
        """Record the stage's outcome: its input datasets, cache hit (and who built it), path, figures, artifacts."""
        log_datasets(self.client, run_id, (inputs or []) + init_inputs(self.client, run_id, result))
        self.client.set_tag(run_id, tags.CACHE_HIT, str(cached).lower())
        self.client.set_tag(run_id, tags.PATH, str(result.path))
        if cached:
            name = self.client.get_run(run_id).data.tags.get(tags.RUN_NAME, result.stage)
            self.client.set_tag(run_id, tags.RUN_NAME, f"{name} (cached)")
            exps = [e.experiment_id for e in self.client.search_experiments()]
            if (producer := producer_of(self.client, exps, result.fingerprint)) is not None:
                self.client.set_tag(run_id, tags.PRODUCED_BY, producer)
        log_metrics(self.client, run_id, stage_metrics(result))
        ARTIFACTS[result.stage](self.client, run_id, result, cached)
        if result.stage in MODELS and not cached:  # a new model: a new registered version
            MODELS[result.stage](self, run_id, result)
        finish(self.client, run_id)
        self.open.discard(run_id)
        return result

    def log(self, metrics: dict[str, Any], step: int = 0) -> None:
        log_metrics(self.client, self.run_id, metrics, step)

    def finish(self, ok: bool) -> None:
        for run_id in self.open:
            finish(self.client, run_id, ok=False)
        finish(self.client, self.run_id, ok)


def stage_inputs(stage: str, upstream: list[StageResult], corpus: list[str] | None = None) -> list[Dataset]:
    """The datasets a stage consumes: the corpus files for ingest (directories and globs expanded
    as ingest reads them), its upstream outputs otherwise."""
    from bertpipe.data.ingest import expand_inputs
    from bertpipe.tracking.lineage import files_dataset, output_dataset

    if stage == "ingest" and corpus:
        return [files_dataset("corpus", [str(path) for path, _ in expand_inputs(corpus)[0]], source=corpus)]
    return [output_dataset(r) for r in upstream]


def finetune_inputs(checkpoint: str, train: str, eval_: str) -> list[Dataset]:
    """A fine-tuning consumes a checkpoint and two task files."""
    from bertpipe.tracking.lineage import files_dataset

    weights = [str(Path(checkpoint) / n) for n in ("model.safetensors", "vocab.txt") if (Path(checkpoint) / n).is_file()]
    return [files_dataset("checkpoint", weights), files_dataset("train", [train]), files_dataset("eval", [eval_])]


def track_finetune(tracking_uri: str, result: StageResult, checkpoint: str, train: str, eval_: str,
                   config: dict[str, Any], experiment: str = "finetune") -> str:
    """One MLflow run for a fine-tuning started from the command line; returns its id."""
    run = PipelineRun(tracking_uri, experiment, f"finetune {Path(train).parent.name}",
                      {tags.STAGE: "finetune", tags.FINGERPRINT: result.fingerprint, tags.CHECKPOINT: checkpoint},
                      {"checkpoint": checkpoint, "train": train, "eval": eval_, **config})
    log_datasets(run.client, run.run_id, finetune_inputs(checkpoint, train, eval_))
    run.log(stage_metrics(result))
    ARTIFACTS["finetune"](run.client, run.run_id, result, result.cached)
    run.finish(True)
    return run.run_id
