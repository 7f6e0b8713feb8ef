"""The ``finetune`` flow: fine-tune and evaluate one checkpoint on a list of tasks, tracked.

Wiring only. The library's ``bertpipe.pipeline.run_finetunes`` runs each task's fine-tuning
stage (``bertpipe.tasks.finetune.FinetuneStage``) as a Prefect task keyed by its fingerprint
(config, checkpoint bytes and task files), which also names its output directory, so a rerun
recomputes nothing and Prefect shows the task ``Cached``; each gets an MLflow child run under
the flow run's parent run. The pretrain flow calls this flow as a subflow when its
``evaluate`` list is not empty.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.context import get_run_context

from bertpipe import tracking
from bertpipe.core.settings import resolve
from bertpipe.experiments.suite import shared_suite
from bertpipe.pipeline import run_finetunes
from bertpipe.tasks.config import EvalTask, eval_tasks
from flows.stagetask import prefect_submit

DEFAULT_TASKS = shared_suite()  # the four tasks of ../shared/data (see its README)


@flow(name="finetune", log_prints=True, validate_parameters=False)  # the library validates the tasks, strictly
def finetune_flow(checkpoint: str, tasks: list[EvalTask], out_dir: str = "cache/finetune", experiment: str = "finetune",
                  tracking_uri: str | None = None, parent_run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Fine-tune ``checkpoint`` on every task; returns each task's eval metrics."""
    tasks = eval_tasks(tasks, source="finetune parameters")
    flow_run = get_run_context().flow_run
    tracker = tracking.MlflowTracker(tracking_uri or tracking.default_tracking_uri(), experiment, f"finetune {flow_run.name}",
                                     tracking.prefect_tags(str(flow_run.id)) | tracking.checkpoint_tags(checkpoint),
                                     parent_run_id)
    return run_finetunes(tasks, checkpoint, resolve(out_dir), submit=prefect_submit(), tracker=tracker)
