"""The ``finetune`` flow: fine-tune and evaluate one checkpoint on a list of tasks, tracked.

Wiring only. Each task is the fine-tuning stage (``bertpipe.tasks.finetune.FinetuneStage``)
run as a Prefect task keyed by its fingerprint (config, checkpoint bytes and task files),
which also names its output directory, so a rerun recomputes nothing and Prefect shows the
task ``Cached``; each gets an MLflow child run under the flow run's parent run. The pretrain
flow calls this flow as a subflow when its ``evaluate`` list is not empty.
"""

from __future__ import annotations

from prefect import flow
from prefect.context import get_run_context

from bertpipe import tracking
from bertpipe.core.settings import resolve
from bertpipe.core.stage import run_stage
from bertpipe.experiments.suite import shared_suite
from bertpipe.tasks.config import EvalTask, FinetuneConfig
from bertpipe.tasks.finetune import FinetuneStage, task_metrics
from flows.progress import StageProgress
from flows.stagetask import stage_task, submit

DEFAULT_TASKS = shared_suite()  # the four tasks of ../shared/data (see its README)


@stage_task(task_run_name="finetune:{name}")
def finetune_task(fp: str, name: str, cfg: FinetuneConfig, checkpoint: str, train: str, eval: str, root: str,
                  tracking_uri: str, run_id: str) -> dict:
    """One fine-tuning, with a progress artifact (steps over all seeds) and its latest scores."""
    progress = StageProgress(f"finetune-{name}")
    result = run_stage(FinetuneStage(cfg, checkpoint, train, eval, on_metrics=progress.training(None, tracking_uri, run_id)), root)
    progress.show(100.0)
    return result.model_dump(mode="json")


@flow(name="finetune", log_prints=True)
def finetune_flow(checkpoint: str, tasks: list[EvalTask], out_dir: str = "cache/finetune", experiment: str = "finetune",
                  tracking_uri: str | None = None, parent_run_id: str | None = None) -> dict[str, dict[str, float]]:
    """Fine-tune ``checkpoint`` on every task; returns each task's eval metrics."""
    flow_run = get_run_context().flow_run
    run = tracking.PipelineRun(tracking_uri or tracking.default_tracking_uri(), experiment, f"finetune {flow_run.name}",
                               tracking.prefect_tags(str(flow_run.id)) | tracking.checkpoint_tags(checkpoint),
                               {"checkpoint": checkpoint}, parent_run_id)
    results: dict[str, dict[str, float]] = {}
    ok = False
    try:
        root = resolve(out_dir)
        for item in tasks:
            train, evaluation = resolve(item.train), resolve(item.eval)
            fp = FinetuneStage(item.config, checkpoint, train, evaluation).fingerprint()
            child = run.open_stage(f"finetune:{item.name}", fp, item.config.model_dump(mode="json"))
            result, cached = submit(finetune_task, root, fp, item.name, item.config, checkpoint, str(train), str(evaluation),
                                    str(root), run.uri, child)
            run.close_stage(child, result, cached, tracking.finetune_inputs(checkpoint, str(train), str(evaluation)))
            results[item.name] = task_metrics(result.manifest)
            run.log({f"{item.name}_{k}": v for k, v in results[item.name].items() if not k.endswith("_std")})
        ok = True
        return results
    finally:
        run.finish(ok)
