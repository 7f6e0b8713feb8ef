"""The ``pretrain`` flow: ingest → wordpiece → shards (→ phase-2 shards) → pretrain, tracked.

Wiring only. The flow takes the pipeline config itself, so Prefect's run form shows every
field of every stage with its description, bounds and choices; the config (with any JSON
``overrides``) is validated strictly by the library before anything runs, so a misspelt key
fails the flow run with a message naming its path. The stages run through the library's
``bertpipe.pipeline.run_pipeline``, each as a Prefect task keyed by its fingerprint
(``flows.stagetask.prefect_submit``), tracked by a ``bertpipe.tracking.MlflowTracker`` (an
MLflow parent run with a child run per stage, also when served from cache). When the config
lists ``evaluate`` tasks, the ``finetune`` flow runs on the final checkpoint (and on those at
``evaluate_steps``) as a subflow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from bertpipe import tracking
from bertpipe.experiments.plan import explain_plan, render_markdown
from bertpipe.pipeline import PipelineConfig, pipeline_config, run_pipeline
from flows.finetune import finetune_flow
from flows.stagetask import prefect_submit


# validate_parameters=False: the library validates the config (strictly, with messages naming
# each bad key's path); Prefect's own check would give pydantic's wording without the path's neighbours.
@flow(name="pretrain", log_prints=True, validate_parameters=False)
def pretrain_flow(config: PipelineConfig, overrides: dict[str, Any] | None = None, parent_run_id: str | None = None,
                  tags: dict[str, str] | None = None, dask_address: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run the pipeline with ``config`` (a deployment's default is its preset; every field is on the run form).

    ``overrides``: JSON deep-merged into ``config`` (``prefect deployment run ... --params``).
    The config is validated before any stage starts. ``dask_address``: a Dask scheduler for the
    data stages' units (under ``DaskTaskRunner`` its own cluster is used without it).
    ``dry_run``: only plan (``bertpipe plan``): which stages would run, why and for how long, as
    the ``pipeline-plan`` markdown artifact; nothing runs and no MLflow run is opened.
    """
    cfg = pipeline_config(config, overrides, source="pretrain parameters")
    flow_run = get_run_context().flow_run
    uri = cfg.tracking_uri or tracking.default_tracking_uri()
    if dry_run:
        shown = explain_plan(cfg, uri)
        create_markdown_artifact(key="pipeline-plan", markdown=render_markdown(shown, f"Plan of {flow_run.name}"),
                                 description=f"dry run: {', '.join(shown.running()) or 'nothing'} would run")
        return {"dry_run": True, "plan": shown.model_dump(mode="json")}
    tracker = tracking.MlflowTracker(uri, cfg.experiment, flow_run.name, tracking.prefect_tags(str(flow_run.id)) | (tags or {}),
                                     parent_run_id)
    done = run_pipeline(cfg, submit=prefect_submit(dask_address), tracker=tracker, log=get_run_logger().info,
                        evaluate=lambda ckpt, step: finetune_flow(ckpt, cfg.evaluate, str(cfg.work_path() / "finetune"),
                                                                  cfg.experiment, uri, tracker.run_id))
    return {"mlflow_run_id": done.run_id, **done.fingerprints(), "model": str(done.model())}
