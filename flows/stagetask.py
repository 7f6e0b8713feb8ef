"""Running a stage as a Prefect task whose cache key is the stage's fingerprint.

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

from bertpipe.core.stage import StageResult, expect_fingerprint
from bertpipe.core.stagedir import is_complete


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


def submit(task_fn, root: Path, fp: str, *args: Any) -> tuple[StageResult, bool]:
    """Run a stage task (which returns ``StageResult.model_dump(mode="json")``) on the flow's
    task runner; returns (result, served from a cache). A failed stage stops the flow with
    that stage's own error."""
    future = task_fn.with_options(refresh_cache=not is_complete(Path(root) / fp)).submit(fp, *args)
    future.wait()
    result = StageResult.model_validate(future.state.result())  # raises the task's exception if it failed
    return expect_fingerprint(result, fp), result.cached or future.state.name == "Cached"
