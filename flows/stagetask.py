"""Running a stage as a Prefect task whose cache key is the stage's fingerprint.

The fingerprint that names the output directory and tags the MLflow run is also Prefect's
cache key, so "cached" means the same thing in Prefect, on disk and in MLflow. Results are
StageResults persisted as JSON (never pickle) beside the stage roots, so the cache outlives
flow runs; a stored result is trusted only while its output is complete on disk, and the
output a stage produced must carry the fingerprint the flow predicted for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from bertpipe.core.stage import StageResult, expect_fingerprint
from bertpipe.core.stagedir import is_complete

RESULTS = "prefect-results-json"  # a folder beside the stage roots (work_dir/prefect-results-json)


def by_fingerprint(context, parameters: dict[str, Any]) -> str:
    return parameters["fp"]


def stage_task(fn=None, *, task_run_name: str | None = None):
    """Decorator: a Prefect task whose first parameter ``fp`` is its cache key."""
    options = dict(cache_key_fn=by_fingerprint, persist_result=True, result_serializer="json", task_run_name=task_run_name)
    return task(fn, **options) if fn is not None else task(**options)


def submit(task_fn, root: Path, fp: str, *args: Any) -> tuple[StageResult, bool]:
    """Run a stage task on the flow's task runner; returns (result, served from a cache).

    A failed stage stops the flow with that stage's own error."""
    root = Path(root)
    future = task_fn.with_options(refresh_cache=not is_complete(root / fp), result_storage=root.parent / RESULTS).submit(fp, *args)
    future.wait()
    result = future.state.result()  # raises the task's exception if it failed
    return expect_fingerprint(result, fp), result.cached or future.state.name == "Cached"
