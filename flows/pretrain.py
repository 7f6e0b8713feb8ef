"""The ``pretrain`` flow: ingest → wordpiece → shards (→ phase-2 shards) → pretrain, tracked.

Wiring only. The flow takes the pipeline config itself, so Prefect's run form shows every
field of every stage with its description, bounds and choices. ``bertpipe.experiments.pipeline.plan`` lists the stages with the fingerprint
each will have; each runs as a Prefect task keyed by that fingerprint (``flows.stagetask``),
which checks that the output it gets carries it. ``bertpipe.tracking.PipelineRun`` gives the
flow run an MLflow parent run and each stage a child run, also when served from cache. When
the config lists ``evaluate`` tasks, the ``finetune`` flow runs on the final checkpoint (and
on those at ``evaluate_steps``) as a subflow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from bertpipe import tracking
from bertpipe.core.executors import units_executor
from bertpipe.core.stage import StageResult, run_stage
from bertpipe.experiments.pipeline import PipelineConfig, build_stage, plan, with_overrides
from bertpipe.experiments.plan import explain_plan, render_markdown
from bertpipe.tracking.runs import log_config
from bertpipe.train.stage import checkpoints_at
from flows.progress import StageProgress
from flows.stagetask import stage_task, submit


@stage_task(task_run_name="{name}")
def pipeline_stage(fp: str, cfg: PipelineConfig, name: str, upstream: dict[str, StageResult], root: str,
                   tracking_uri: str, run_id: str, dask_address: str | None) -> dict:
    """Stage ``name`` of ``cfg`` into ``root/<fp>``; pretraining logs its curves live to the MLflow run.
    Data stages spread their units over the Dask cluster at ``dask_address`` or the one this task runs on."""
    progress, log = StageProgress(name), tracking.metric_logger(tracking_uri, run_id)
    live = progress.training(cfg.pretrain.steps, tracking_uri, run_id)
    stage = build_stage(cfg, name, upstream, on_metrics=lambda rec: (log(rec), live(rec)))
    result = run_stage(stage, root, map_units=units_executor(stage, dask_address), on_unit=progress.units)
    progress.show(100.0)
    return result.model_dump(mode="json")


@flow(name="pretrain", log_prints=True, validate_parameters=True)
def pretrain_flow(config: PipelineConfig, overrides: dict[str, Any] | None = None, parent_run_id: str | None = None,
                  tags: dict[str, str] | None = None, dask_address: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run the pipeline with ``config`` (a deployment's default is its preset; every field is on the run form).

    ``overrides``: JSON deep-merged into ``config`` (``prefect deployment run ... --params``).
    The config is validated before any stage starts. ``dask_address``: a Dask scheduler for the
    data stages' units (under ``DaskTaskRunner`` its own cluster is used without it).
    ``dry_run``: only plan (``bertpipe plan``): which stages would run, why and for how long, as
    the ``pipeline-plan`` markdown artifact; nothing runs and no MLflow run is opened.
    """
    cfg = with_overrides(config, overrides)
    if dry_run:
        shown = explain_plan(cfg, cfg.tracking_uri or tracking.default_tracking_uri())
        create_markdown_artifact(key="pipeline-plan", markdown=render_markdown(shown, f"Plan of {get_run_context().flow_run.name}"),
                                 description=f"dry run: {', '.join(shown.running()) or 'nothing'} would run")
        return {"dry_run": True, "plan": shown.model_dump(mode="json")}
    stages = plan(cfg)
    fingerprints = {st.name: st.fingerprint for st in stages}
    get_run_logger().info("stage fingerprints: %s", fingerprints)
    flow_run = get_run_context().flow_run
    run = tracking.PipelineRun(cfg.tracking_uri or tracking.default_tracking_uri(), cfg.experiment, flow_run.name,
                               tracking.prefect_tags(str(flow_run.id)) | tracking.pipeline_tags(fingerprints) | (tags or {}),
                               cfg.model_dump(mode="json"), parent_run_id)
    log_config(run.client, run.run_id, cfg.model_dump(mode="json"))  # what `bertpipe reproduce` reads back
    ok = False
    try:
        done: dict[str, StageResult] = {}
        for st in stages:
            child = run.open_stage(st.name, st.fingerprint, st.config.model_dump(mode="json"))
            result, cached = submit(pipeline_stage, st.root, st.fingerprint, cfg, st.name,
                                    {n: done[n] for n in st.needs}, str(st.root), run.uri, child, dask_address)
            inputs = tracking.stage_inputs(st.name, [done[n] for n in st.needs], cfg.corpus_paths())
            done[st.name] = run.close_stage(child, result, cached, inputs)
        model = done["pretrain"]
        run.log({f"final_{k}": v for k, v in (model.manifest.get("eval") or {}).items()} | {"parameters": model.manifest["parameters"]})
        if cfg.evaluate:
            from flows.finetune import finetune_flow

            # earlier checkpoints first, so each score's history in MLflow runs along the steps
            for step, ckpt in checkpoints_at(model, cfg.evaluate_steps):
                scores = finetune_flow(str(ckpt), cfg.evaluate, str(cfg.work_path() / "finetune"), cfg.experiment,
                                       run.uri, run.run_id)
                run.log({f"{t}_{k}": v for t, m in scores.items() for k, v in m.items() if not k.endswith("_std")}, step=step)
        ok = True
        return {"mlflow_run_id": run.run_id, **fingerprints, "model": str(model.file(model.manifest["final"]))}
    finally:
        run.finish(ok)
