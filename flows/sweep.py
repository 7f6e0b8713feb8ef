"""The ``sweep`` flow: the pretrain flow over a grid of overrides, then one comparison.

Each grid point is a ``pretrain`` subflow run whose MLflow parent run is nested under the
sweep's run; stages shared by variants (corpus, vocabulary, and shards when only model or
optimizer knobs vary) are computed once and served from cache for the others. The
comparison is built from MLflow alone (``bertpipe.report.compare_runs``): a markdown and a
CSV table plus a plot, logged as artifacts of the sweep's run and as a Prefect artifact.
"""

from __future__ import annotations

import itertools
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from bertpipe import tracking
from bertpipe.pipeline import PROJECT, deep_merge, load_pipeline_config
from bertpipe.report import compare_runs, write_comparison
from flows.pretrain import pretrain_flow


def dotted(key: str, value: Any) -> dict[str, Any]:
    """``"shards.masking.masked_lm_prob", 0.4`` → nested override dict."""
    out: dict[str, Any] = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@flow(name="sweep", log_prints=True)
def sweep_flow(preset: str = "tiny", grid: dict[str, list[Any]] | None = None, overrides: dict[str, Any] | None = None,
               experiment: str = "sweep") -> dict[str, Any]:
    """Pretrain every combination of ``grid`` (dotted keys → values) on ``preset`` + ``overrides``."""
    grid = grid or {"shards.masking.masked_lm_prob": [0.15, 0.4], "pretrain.model.embedding_fusion": ["sum", "concat"]}
    base = deep_merge(overrides or {}, {"experiment": experiment})
    variants = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    for v in variants:  # validate every variant before training any
        load_pipeline_config(preset, _apply(base, v))
    cfg = load_pipeline_config(preset, base)
    uri = cfg.tracking_uri or tracking.default_tracking_uri(PROJECT)
    client = tracking.client_for(uri)
    exp_id = tracking.experiment_id(client, experiment, PROJECT / "mlartifacts")
    flow_run = get_run_context().flow_run
    sweep_run = tracking.start_parent(client, exp_id, f"sweep {flow_run.name}", {
        "prefect.flow_run_id": str(flow_run.id), "bertpipe.sweep": "true"}, {"grid": str(grid), "preset": preset})
    ok = False
    try:
        runs = []
        for v in variants:
            res = pretrain_flow(preset, _apply(base, v), parent_run_id=sweep_run)
            runs.append(res["mlflow_run_id"])
            get_run_logger().info("variant %s -> MLflow run %s", v, res["mlflow_run_id"])
        table = compare_runs(client, runs, list(grid))
        files = write_comparison(table, list(grid), cfg.work_path() / "sweeps" / sweep_run)
        for f in files.values():
            client.log_artifact(sweep_run, str(f))
        create_markdown_artifact(files["markdown"].read_text(), key="sweep-comparison", description=f"sweep {flow_run.name}")
        ok = True
        return {"mlflow_run_id": sweep_run, "runs": runs, "table": [dict(r) for r in table]}
    finally:
        tracking.finish(client, sweep_run, ok)


def _apply(base: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    out = base
    for k, val in variant.items():
        out = deep_merge(out, dotted(k, val))
    return out
