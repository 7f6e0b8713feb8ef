"""The ``finetune`` flow: fine-tune/evaluate one checkpoint on a list of tasks, tracked.

Each task is a Prefect task around ``bertpipe.finetune.finetune_cached`` plus an MLflow child
run (config as params, eval metrics with their usual names, ``metrics.json`` as an artifact)
under one parent run per flow run. The task's cache key is the fine-tune's fingerprint
(config, checkpoint bytes and task files), which also names its result directory, so a
rerun recomputes nothing and Prefect shows the task ``Cached``. The pretrain flow calls this
flow as a subflow when its ``evaluate`` list is not empty, so a pretraining run ends with its
downstream scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.context import get_run_context

from bertpipe import tracking
from bertpipe.finetune import EvalTask, finetune_cached, finetune_fingerprint
from bertpipe.pipeline import PROJECT, resolve
from flows.stagetask import run_stage, stage_task

SHARED = "../shared/data"
DEFAULT_TASKS = [  # the evaluation suite over ../shared/data (see its README)
    EvalTask(name="finefoods", train=f"{SHARED}/classify/finefoods/train.tsv", eval=f"{SHARED}/classify/finefoods/test.tsv",
             config={"task": "classify"}),
    EvalTask(name="bible-paraphrase", train=f"{SHARED}/pairs/bible-paraphrase/train.tsv",
             eval=f"{SHARED}/pairs/bible-paraphrase/dev.tsv", config={"task": "pair"}),
    EvalTask(name="wnut16-ner", train=f"{SHARED}/ner/wnut16/train.conll", eval=f"{SHARED}/ner/wnut16/dev.conll",
             config={"task": "tag"}),
    EvalTask(name="wnut16-qa", train=f"{SHARED}/qa/wnut16-qa/train.json", eval=f"{SHARED}/qa/wnut16-qa/dev.json",
             config={"task": "qa", "max_seq_length": 384}),
]


@stage_task("finetune-task")
def finetune_task(fp: str, item: EvalTask, checkpoint: str, root: str) -> tuple[dict[str, Any], str, bool]:
    summary, out, cached = finetune_cached(item.config, checkpoint, resolve(item.train), resolve(item.eval), root, fp)
    return summary, str(out), cached


@flow(name="finetune", log_prints=True)
def finetune_flow(checkpoint: str, tasks: list[EvalTask], out_dir: str = "cache/finetune", experiment: str = "finetune",
                  tracking_uri: str | None = None, parent_run_id: str | None = None) -> dict[str, dict[str, float]]:
    """Fine-tune ``checkpoint`` on every task; returns each task's eval metrics."""
    uri = tracking_uri or tracking.default_tracking_uri(PROJECT)
    client = tracking.client_for(uri)
    exp_id = tracking.experiment_id(client, experiment, PROJECT / "mlartifacts")
    flow_run = get_run_context().flow_run
    tags = {"prefect.flow_run_id": str(flow_run.id), "bertpipe.checkpoint": str(checkpoint)}
    if parent_run_id:
        tags[tracking.PARENT] = parent_run_id
    parent = tracking.start_parent(client, exp_id, f"finetune {flow_run.name}", tags, {"checkpoint": str(checkpoint)})
    results: dict[str, dict[str, float]] = {}
    ok = False
    try:
        root = resolve(out_dir)
        for item in tasks:
            fp = finetune_fingerprint(item.config, checkpoint, resolve(item.train), resolve(item.eval))
            st = run_stage(finetune_task, root / fp, fp, item, str(checkpoint), str(root))
            summary, out, cached = st.result()
            cached = cached or st.name == "Cached"
            run = tracking.start_stage(client, exp_id, parent, f"finetune:{item.name}", Path(out).name, cached,
                                       tracking.flatten(item.name, item.config.model_dump(mode="json")))
            scores = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            tracking.log_metrics(client, run, scores)
            tracking.log_metrics(client, parent, {f"{item.name}_{k}": v for k, v in scores.items() if not k.endswith("_std")})
            client.log_artifact(run, str(Path(out) / "metrics.json"))
            tracking.finish(client, run)
            results[item.name] = scores
        ok = True
        return results
    finally:
        tracking.finish(client, parent, ok)
