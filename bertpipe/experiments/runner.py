"""Run a pipeline config to the end in this process, without Prefect, tracked as the flow tracks it.

The ``pretrain`` flow (``flows/pretrain.py``) runs each stage as a Prefect task; ``run_pipeline``
runs the same stages with the same library calls (``pipeline.plan``, ``build_stage``,
``run_stage``, ``expect_fingerprint``), in order, and makes the same MLflow records
(``tracking.PipelineRun``: a parent run with the config as params and as JSON, the planned
fingerprints as tags, a child run per stage, the final held-out figures, and for ``evaluate``
tasks a fine-tuning run per checkpoint with its scores on the parent at each step).

It exists for ``bertpipe reproduce``, which runs from a terminal and must not need a Prefect
server (the library never imports Prefect). Trade-off: it duplicates the flow's short loop
rather than the flow calling it, because the flow's stages are Prefect tasks (cache records,
retries, progress artifacts, Dask units) and this loop has none of that. The outputs and their
fingerprints cannot differ: the stage code is the same, and each result is checked against
the plan as the flow checks it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bertpipe import tracking
from bertpipe.core.settings import resolve
from bertpipe.core.stage import StageResult, expect_fingerprint, run_stage
from bertpipe.experiments.pipeline import PipelineConfig, build_stage, plan
from bertpipe.tasks.finetune import FinetuneStage, task_metrics
from bertpipe.tracking.runs import log_config
from bertpipe.train.stage import checkpoints_at


def run_pipeline(cfg: PipelineConfig, name: str, run_tags: dict[str, str] | None = None, *, progress: bool = False,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every stage of ``cfg`` (built, or reused when complete in its work dir), tracked in MLflow
    under ``name``; returns the MLflow run id, each stage's fingerprint and the final model."""
    stages = plan(cfg)
    fingerprints = {st.name: st.fingerprint for st in stages}
    config = cfg.model_dump(mode="json")
    run = tracking.PipelineRun(cfg.tracking_uri or tracking.default_tracking_uri(), cfg.experiment, name,
                               tracking.pipeline_tags(fingerprints) | (run_tags or {}), config)
    log_config(run.client, run.run_id, config)
    ok = False
    try:
        done: dict[str, StageResult] = {}
        for st in stages:
            child = run.open_stage(st.name, st.fingerprint, st.config.model_dump(mode="json"))
            stage = build_stage(cfg, st.name, {n: done[n] for n in st.needs}, on_metrics=tracking.metric_logger(run.uri, child))
            result = expect_fingerprint(run_stage(stage, st.root, progress=progress), st.fingerprint)
            inputs = tracking.stage_inputs(st.name, [done[n] for n in st.needs], cfg.corpus_paths())
            done[st.name] = run.close_stage(child, result, result.cached, inputs)
            log(f"{st.name}: {'cached' if result.cached else 'built'} {result.path}")
        model = done["pretrain"]
        run.log({f"final_{k}": v for k, v in (model.manifest.get("eval") or {}).items()} | {"parameters": model.manifest["parameters"]})
        for step, ckpt in checkpoints_at(model, cfg.evaluate_steps) if cfg.evaluate else []:
            scores = _finetune(cfg, str(ckpt), run, name)
            run.log({f"{t}_{k}": v for t, m in scores.items() for k, v in m.items() if not k.endswith("_std")}, step=step)
            log(f"fine-tuned step {step}: {scores}")
        ok = True
        return {"mlflow_run_id": run.run_id, "stages": {n: r.fingerprint for n, r in done.items()},
                "model": str(model.file(model.manifest["final"]))}
    finally:
        run.finish(ok)


def _finetune(cfg: PipelineConfig, checkpoint: str, parent: tracking.PipelineRun, name: str) -> dict[str, dict[str, float]]:
    """The ``finetune`` flow's work on one checkpoint: each task's stage and MLflow child run."""
    run = tracking.PipelineRun(parent.uri, cfg.experiment, f"finetune {name}", tracking.checkpoint_tags(checkpoint),
                               {"checkpoint": checkpoint}, parent.run_id)
    root, results, ok = cfg.work_path() / "finetune", {}, False
    try:
        for item in cfg.evaluate:
            train, evaluation = resolve(item.train), resolve(item.eval)
            stage = FinetuneStage(item.config, checkpoint, train, evaluation)
            child = run.open_stage(f"finetune:{item.name}", stage.fingerprint(), item.config.model_dump(mode="json"))
            result = run_stage(stage, root)
            run.close_stage(child, result, result.cached, tracking.finetune_inputs(checkpoint, str(train), str(evaluation)))
            results[item.name] = task_metrics(result.manifest)
            run.log({f"{item.name}_{k}": v for k, v in results[item.name].items() if not k.endswith("_std")})
        ok = True
        return results
    finally:
        run.finish(ok)
