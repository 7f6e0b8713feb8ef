"""The ``sweep`` flow: a named sweep's variants x seeds through the pretrain flow, then a report.

Each (variant, seed) is a ``pretrain`` subflow run whose MLflow parent run is nested under
the sweep's run and tagged with the variant and seed; stages shared by variants (corpus,
vocabulary, shards when only model, optimizer or dynamic-masking knobs vary, the whole
pretraining when only fine-tuning knobs vary) are computed once and served from cache for
the others, and a finished sweep re-run recomputes nothing. The last task builds the report
from MLflow alone (``bertpipe.experiments.report``), logs it on the sweep's run and
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
from bertpipe.core.config import validate_config
from bertpipe.core.keys import deep_merge
from bertpipe.experiments.report import sweep_markdown
from bertpipe.experiments.sweep import SweepSpec, load_sweep, sweep_params, sweep_tags, validate, variant_tags
from flows.pretrain import pretrain_flow


@task(name="report")
def report_task(tracking_uri: str, experiment: str, sweep_run: str, out_dir: str, paper: str) -> str:
    md = sweep_markdown(tracking.client_for(tracking_uri), experiment, Path(out_dir), sweep_run, paper)
    create_markdown_artifact(md, key="sweep-report", description=f"sweep report ({experiment})")
    return md


@flow(name="sweep", log_prints=True, validate_parameters=False)  # the library validates, naming each bad key's path
def sweep_flow(spec: SweepSpec, name: str = "custom", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train every variant of ``spec`` over its seeds and report (a deployment's default is a
    shipped sweep; its variants, seeds and shared overrides are on the run form).

    ``overrides``: JSON deep-merged into the sweep's shared overrides (e.g. fewer steps).
    """
    spec = validate_config(SweepSpec, spec, source=f"sweep {name}")
    if overrides:
        spec = spec.model_copy(update={"overrides": deep_merge(spec.overrides, overrides)})
    runs = validate(spec, name)  # every variant's config is checked before anything trains
    cfg = runs[0].config
    flow_run = get_run_context().flow_run
    run = tracking.PipelineRun(cfg.tracking_uri or tracking.default_tracking_uri(), spec.experiment,
                               f"sweep {name} {flow_run.name}", tracking.prefect_tags(str(flow_run.id)) | sweep_tags(name),
                               sweep_params(name, spec))
    ok = False
    try:
        ids = []
        for r in runs:
            res = pretrain_flow(r.config, parent_run_id=run.run_id,
                                tags=variant_tags(name, r.variant, r.seed) | tracking.preset_tags(spec.preset))
            ids.append(res["mlflow_run_id"])
            get_run_logger().info("variant %r seed %d -> MLflow run %s", r.variant.name(), r.seed, res["mlflow_run_id"])
        md = report_task(run.uri, spec.experiment, run.run_id, str(cfg.work_path() / "sweeps" / run.run_id), spec.paper)
        ok = True
        return {"mlflow_run_id": run.run_id, "runs": ids, "report": md}
    finally:
        run.finish(ok)


def main(argv: list[str] | None = None) -> None:
    from bertpipe.experiments.sweep import sweep_names

    p = argparse.ArgumentParser(description="run a named sweep locally (python -m flows.sweep NAME)")
    p.add_argument("sweep", choices=sweep_names())
    p.add_argument("--overrides", type=json.loads, default=None, help="JSON merged into the sweep's overrides")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None, help="e.g. 1,2,3")
    a = p.parse_args(argv)
    out = sweep_flow(load_sweep(a.sweep, seeds=a.seeds), a.sweep, a.overrides)
    print(out["report"])


if __name__ == "__main__":
    main()
