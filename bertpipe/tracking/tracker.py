"""The MLflow ``Tracker`` of a pipeline run (``bertpipe.pipeline.runner``): a parent run and one child run per stage.

``MlflowTracker`` adapts ``PipelineRun`` (what each stage logs) to the runner's protocol: it
opens the parent run with the planned fingerprints as tags and the config as params and as
the ``config/pipeline.json`` artifact that ``bertpipe reproduce`` reads back, gives each stage
a child run with its inputs as MLflow datasets, sends pretraining's records there live
(``MetricLogger``, plain data so that it can travel to a Prefect task or a Dask worker), and
nests the fine-tunings of each checkpoint in a run of their own under the parent.
"""

from __future__ import annotations

from typing import Any

from bertpipe.core.settings import resolve
from bertpipe.core.stage import StageResult
from bertpipe.pipeline.graph import FinetuneJob, Job
from bertpipe.tracking.runs import log_config
from bertpipe.tracking.stages import (
    MetricLogger,
    PipelineRun,
    checkpoint_tags,
    finetune_inputs,
    pipeline_tags,
    stage_inputs,
)


class MlflowTracker:
    """A ``Tracker`` writing to the MLflow store at ``tracking_uri`` (see the module docstring)."""

    def __init__(self, tracking_uri: str, experiment: str, name: str, run_tags: dict[str, str] | None = None,
                 parent_run_id: str | None = None) -> None:
        self.uri, self.experiment, self.name = tracking_uri, experiment, name
        self.tags, self.parent = dict(run_tags or {}), parent_run_id
        self.run: PipelineRun | None = None

    @property
    def run_id(self) -> str | None:
        return self.run.run_id if self.run is not None else None

    def start(self, config: dict[str, Any], fingerprints: dict[str, str]) -> None:
        self.run = PipelineRun(self.uri, self.experiment, self.name, pipeline_tags(fingerprints) | self.tags, config, self.parent)
        if fingerprints:  # a pipeline run: its whole config, as `bertpipe reproduce` reads it back
            log_config(self.run.client, self.run.run_id, config)

    def open_stage(self, job: Job | FinetuneJob) -> str:
        return self._run.open_stage(job.name, job.planned.fingerprint, job.planned.config.model_dump(mode="json"))

    def metrics(self, handle: str) -> MetricLogger:
        return MetricLogger(self.uri, handle)

    def close_stage(self, handle: str, job: Job | FinetuneJob, result: StageResult) -> None:
        if isinstance(job, FinetuneJob):
            inputs = finetune_inputs(job.checkpoint, str(resolve(job.task.train)), str(resolve(job.task.eval)))
        else:
            inputs = stage_inputs(job.name, list(job.upstream.values()), job.cfg.corpus_paths())
        self._run.close_stage(handle, result, result.cached, inputs)

    def log(self, metrics: dict[str, Any], step: int = 0) -> None:
        self._run.log(metrics, step)

    def finetuning(self, checkpoint: str) -> MlflowTracker:
        return MlflowTracker(self.uri, self.experiment, f"finetune {self.name}", checkpoint_tags(checkpoint), self.run_id)

    def finish(self, ok: bool) -> None:
        if self.run is not None:
            self.run.finish(ok)

    @property
    def _run(self) -> PipelineRun:
        if self.run is None:
            raise RuntimeError("the tracker was not started")
        return self.run
