"""Prefect tasks keyed by a stage fingerprint, shared by the pretrain and finetune flows.

The cache key of such a task is the fingerprint that also names its output directory and
tags its MLflow run, so "cached" means the same thing in Prefect, on disk and in MLflow.
Results are persisted under ``cache/prefect-results`` so the cache outlives flow runs; a
stored result is trusted only while its fingerprinted directory is still there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.states import State

from bertpipe.pipeline import PROJECT

RESULTS = PROJECT / "cache" / "prefect-results"  # a Path, not a str: Prefect reads a str as a block slug


def by_fingerprint(context, parameters: dict[str, Any]) -> str:
    return parameters["fp"]


def stage_task(name: str):
    """Decorator: a Prefect task whose first parameter ``fp`` is its cache key."""
    return task(name=name, cache_key_fn=by_fingerprint, persist_result=True, result_storage=RESULTS)


def run_stage(task_fn, out_dir: Path, *args) -> State:
    """Run a stage task; Prefect's cache is trusted only while the output directory is there.

    If the fingerprinted directory was deleted, ``refresh_cache`` forces the stage to run again.
    A failed stage stops the flow with that stage's own error.
    """
    present = (out_dir / "manifest.json").is_file()
    future = task_fn.with_options(refresh_cache=not present).submit(*args)  # runs on the flow's task runner
    future.wait()
    if not future.state.is_completed():
        future.state.result()  # raises the task's exception
    return future.state
