"""Running a stage as a Prefect task whose cache key is the stage's fingerprint.

``prefect_submit`` is the ``submit`` the flows give ``bertpipe.pipeline.run_pipeline`` and
``run_finetunes``: each planned job (a pipeline stage or a fine-tuning) runs as the ``stage``
task, with a progress artifact, its units on the Dask cluster when there is one, and its
training records sent to its MLflow run and to the flow-run page as they come.

The fingerprint that names the output directory and tags the MLflow run is also Prefect's
cache key, so "cached" means the same thing in Prefect, on disk and in MLflow. A task returns
its StageResult as plain JSON data (``DataOnlyJSON``: no class names, nothing imported or
unpickled on a cache hit), and Prefect keeps those records in its own local storage
(``PREFECT_HOME``), never in the shared stage cache: whoever can write the shared cache can
change data, not run code. A user whose Prefect has no record of a stage still reuses its
complete output on disk (the stage returns at once, marked cached). A stored record is
trusted only while its output is complete on disk, and the output a stage produced must
carry the fingerprint the flow predicted for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.serializers import Serializer

from bertpipe import tracking
from bertpipe.core.executors import units_executor
from bertpipe.core.stage import StageResult, expect_fingerprint
from bertpipe.core.stagedir import is_complete
from bertpipe.pipeline import FinetuneJob, Job, Submit
from bertpipe.pipeline.graph import MetricsSink
from flows.progress import StageProgress


class DataOnlyJSON(Serializer):
    """Plain ``json``: unlike Prefect's JSON serializer, it imports no class named in a record."""

    type: Literal["bertpipe-json"] = "bertpipe-json"

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def loads(self, blob: bytes) -> Any:
        return json.loads(blob)


def by_fingerprint(context, parameters: dict[str, Any]) -> str:
    return parameters["fp"]


def stage_task(fn=None, *, task_run_name: str | None = None):
    """Decorator: a Prefect task whose first parameter ``fp`` is its cache key."""
    options = dict(cache_key_fn=by_fingerprint, persist_result=True, result_serializer=DataOnlyJSON(),
                   task_run_name=task_run_name)
    return task(fn, **options) if fn is not None else task(**options)


def submit(task_fn, root: Path, fp: str, *args: Any, retries: int = 0) -> tuple[StageResult, bool]:
    """Run a stage task (which returns ``StageResult.model_dump(mode="json")``) on the flow's
    task runner; returns (result, served from a cache). A failed stage stops the flow with
    that stage's own error, after ``retries`` more attempts (each resumes what the last left)."""
    future = task_fn.with_options(refresh_cache=not is_complete(Path(root) / fp), retries=retries,
                                  retry_delay_seconds=2).submit(fp, *args)
    future.wait()
    result = StageResult.model_validate(future.state.result())  # raises the task's exception if it failed
    return expect_fingerprint(result, fp), result.cached or future.state.name == "Cached"


@stage_task(task_run_name="{name}")
def stage(fp: str, name: str, job: Job | FinetuneJob, sink: MetricsSink | None, dask_address: str | None) -> dict:
    """One job into ``root/<fp>``: units on the Dask cluster at ``dask_address`` (or the one this
    task runs on) for the data stages, training records to ``sink`` and the flow-run page."""
    progress = StageProgress(name)
    link = tracking.run_link(sink.tracking_uri, sink.run_id) if isinstance(sink, tracking.MetricLogger) else ""
    live = progress.training(getattr(job.planned.config, "steps", None), link)

    def on_metrics(rec: dict[str, Any]) -> None:
        if sink is not None:
            sink(rec)
        live(rec)

    result = job.run(on_metrics=on_metrics, on_unit=progress.units, executor=lambda st: units_executor(st, dask_address))
    progress.show(100.0)
    return result.model_dump(mode="json")


def prefect_submit(dask_address: str | None = None) -> Submit:
    """A ``submit`` for the library's runner: each job as the cached ``stage`` task."""
    def run(job: Job | FinetuneJob, sink: MetricsSink | None) -> StageResult:
        retries = getattr(job.planned.config, "retries", 0)  # the pretraining's (PretrainConfig.retries)
        result, cached = submit(stage, job.planned.root, job.planned.fingerprint, job.name, job, sink, dask_address,
                                retries=retries)
        return result.model_copy(update={"cached": cached})

    return run
