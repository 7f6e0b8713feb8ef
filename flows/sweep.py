"""The ``sweep`` flow: a named sweep's variants x seeds through the pretrain flow, then a report.

Each (variant, seed) is a ``pretrain`` subflow run whose MLflow parent run is nested under
the sweep's run and tagged with the variant and seed; stages shared by variants (corpus,
vocabulary, shards when only model, optimizer or dynamic-masking knobs vary, the whole
pretraining when only fine-tuning knobs vary) are computed once and served from cache for
the others, and a finished sweep re-run recomputes nothing. The last task builds the report
from MLflow alone (``bertpipe.report.sweep_report``), logs it on the sweep's run and
publishes it as a Prefect markdown artifact.

Run a named sweep without a server: ``python -m flows.sweep masking-rate`` (or through the
served deployment: ``prefect deployment run sweep/masking-rate``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from bertpipe import tracking
from bertpipe.pipeline import PROJECT, deep_merge
from bertpipe.report import sweep_report
from bertpipe.sweep import load_sweep, validate, variant_overrides, variant_tags
from flows.pretrain import pretrain_flow


@task(name="report")
def report_task(tracking_uri: str, experiment: str, sweep_run: str, out_dir: str, paper: str) -> str:
    paths = sweep_report(tracking.client_for(tracking_uri), experiment, Path(out_dir), sweep_run, paper)
    md = paths["markdown"].read_text()
    create_markdown_artifact(md, key="sweep-report", description=f"sweep report ({experiment})")
    return md


@flow(name="sweep", log_prints=True)
def sweep_flow(sweep: str = "masking-rate", overrides: dict[str, Any] | None = None, seeds: list[int] | None = None,
               grid: dict[str, list[Any]] | None = None, experiment: str | None = None,
               preset: str | None = None) -> dict[str, Any]:
    """Train every variant of the named sweep (deployments/sweeps) over its seeds and report.

    ``overrides`` are merged into the sweep's shared overrides (e.g. fewer steps);
    ``seeds``, ``grid``, ``experiment`` and ``preset`` replace the sweep's own when given.
    """
    spec = load_sweep(sweep, seeds=seeds, grid=grid, experiment=experiment, preset=preset)
    if overrides:
        spec = spec.model_copy(update={"overrides": deep_merge(spec.overrides, overrides)})
    runs = validate(spec)  # every variant's config is checked before anything trains
    cfg = runs[0][2]
    uri = cfg.tracking_uri or tracking.default_tracking_uri(PROJECT)
    client = tracking.client_for(uri)
    exp_id = tracking.experiment_id(client, spec.experiment, PROJECT / "mlartifacts")
    flow_run = get_run_context().flow_run
    sweep_run = tracking.start_parent(client, exp_id, f"sweep {sweep} {flow_run.name}", {
        "prefect.flow_run_id": str(flow_run.id), "bertpipe.sweep": "true", "bertpipe.sweep_name": sweep},
        {"sweep": sweep, "preset": spec.preset, "seeds": json.dumps(spec.seeds), "description": spec.description[:500],
         "variants": json.dumps([v.model_dump() for v in spec.expand()])[:6000]})
    ok = False
    try:
        ids = []
        for variant, seed, _ in runs:
            res = pretrain_flow(spec.preset, variant_overrides(spec, variant, seed), parent_run_id=sweep_run,
                                tags=variant_tags(sweep, variant, seed))
            ids.append(res["mlflow_run_id"])
            get_run_logger().info("variant %r seed %d -> MLflow run %s", variant.name(), seed, res["mlflow_run_id"])
        md = report_task(uri, spec.experiment, sweep_run, str(cfg.work_path() / "sweeps" / sweep_run), spec.paper)
        ok = True
        return {"mlflow_run_id": sweep_run, "runs": ids, "report": md}
    finally:
        tracking.finish(client, sweep_run, ok)


def main(argv: list[str] | None = None) -> None:
    from bertpipe.sweep import sweep_names

    p = argparse.ArgumentParser(description="run a named sweep locally (python -m flows.sweep NAME)")
    p.add_argument("sweep", choices=sweep_names())
    p.add_argument("--overrides", type=json.loads, default=None, help="JSON merged into the sweep's overrides")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None, help="e.g. 1,2,3")
    a = p.parse_args(argv)
    out = sweep_flow(a.sweep, a.overrides, a.seeds)
    print(out["report"])


if __name__ == "__main__":
    main()
