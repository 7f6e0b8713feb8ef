"""The ``sweep`` flow: a named sweep's variants x seeds through the pretrain flow, then a report.

Each (variant, seed) is a ``pretrain`` subflow run whose MLflow parent run is nested under
the sweep's run and tagged with the variant and seed; stages shared by variants (corpus,
vocabulary, shards when only model, optimizer or dynamic-masking knobs vary, the whole
pretraining when only fine-tuning knobs vary) are computed once and served from cache for
the others, and a finished sweep re-run recomputes nothing. The last task builds the report
from MLflow alone (``bertpipe.experiments.report``), logs it on the sweep's run and
publishes it as a Prefect markdown artifact.

Runs go one after another in this process, or, given a ``deployment``, as flow runs of a
``pretrain`` deployment, up to ``max_parallel`` at once, e.g. on a work pool's workers (README,
"Sweeps on several workers"); runs reaching a shared stage at once wait for its one build.

Run a named sweep without a server: ``python -m flows.sweep masking-rate`` (or through the
served deployment: ``prefect deployment run sweep/masking-rate``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling

from bertpipe import tracking
from bertpipe.core.config import ConfigError, validate_config
from bertpipe.core.keys import deep_merge
from bertpipe.experiments.report import sweep_markdown
from bertpipe.experiments.sweep import (SweepRun, SweepSpec, check_parallel, load_sweep, sweep_params, sweep_tags, validate,
                                        variant_tags)
from bertpipe.tracking.sweeps import sweep_run_ids
from flows.pretrain import pretrain_flow


@task(name="report")
def report_task(tracking_uri: str, experiment: str, sweep_run: str, out_dir: str, paper: str) -> str:
    md = sweep_markdown(tracking.client_for(tracking_uri), experiment, Path(out_dir), sweep_run, paper)
    create_markdown_artifact(md, key="sweep-report", description=f"sweep report ({experiment})")
    return md


@flow(name="sweep", log_prints=True, validate_parameters=False)  # the library validates, naming each bad key's path
def sweep_flow(spec: SweepSpec, name: str = "custom", overrides: dict[str, Any] | None = None,
               max_parallel: int = 1, deployment: str | None = None) -> dict[str, Any]:
    """Train every variant of ``spec`` over its seeds and report (a deployment's default is a
    shipped sweep; its variants, seeds and shared overrides are on the run form).

    ``overrides``: JSON deep-merged into the sweep's shared overrides (e.g. fewer steps).
    ``deployment``: run each (variant, seed) as a flow run of this ``pretrain`` deployment (any:
    each run gets its whole config), trained by a work pool's workers (``deployments/serve.py
    --pool``) or ``make run``'s serve process; unset: subflows here, one after another.
    ``max_parallel``: runs in flight at once (with a deployment). A failed run fails the sweep,
    with its own message, once the others finish.
    """
    spec = validate_config(SweepSpec, spec, source=f"sweep {name}")
    if overrides:
        spec = spec.model_copy(update={"overrides": deep_merge(spec.overrides, overrides)})
    check_parallel(name, max_parallel, deployment)
    runs = validate(spec, name)  # every variant's config is checked before anything trains
    cfg = runs[0].config
    flow_run = get_run_context().flow_run
    run = tracking.PipelineRun(cfg.tracking_uri or tracking.default_tracking_uri(), spec.experiment,
                               f"sweep {name} {flow_run.name}", tracking.prefect_tags(str(flow_run.id)) | sweep_tags(name),
                               sweep_params(name, spec))
    order = {v.name(): i for i, v in enumerate(spec.expand())}
    tags_of = {(r.variant.name(), r.seed): variant_tags(name, r.variant, r.seed, order[r.variant.name()])
               | tracking.preset_tags(spec.preset) for r in runs}
    ok = False
    try:
        if deployment:
            failed = on_deployment(deployment, runs, run.run_id, run.uri, tags_of, max_parallel, name)
        else:
            failed = []
            for r in runs:
                try:
                    pretrain_flow(r.config, parent_run_id=run.run_id, tags=tags_of[(r.variant.name(), r.seed)])
                except Exception as e:  # noqa: BLE001 - the others still run; the sweep fails at the end
                    failed.append(f"variant {r.variant.name()!r} seed {r.seed}: {type(e).__name__}: {e}")
        if failed:
            raise RuntimeError(f"sweep {name}: {len(failed)} of {len(runs)} runs failed (a re-run reuses the "
                               "others):\n" + "\n".join(failed))
        md = report_task(run.uri, spec.experiment, run.run_id, str(cfg.work_path() / "sweeps" / run.run_id), spec.paper)
        ok = True
        return {"mlflow_run_id": run.run_id, "runs": sweep_run_ids(tracking.client_for(run.uri), spec.experiment, run.run_id), "report": md}
    finally:
        run.finish(ok)


def on_deployment(deployment: str, runs: list[SweepRun], parent: str, uri: str, tags_of: dict, max_parallel: int,
                  name: str, poll: float = 2.0) -> list[str]:
    """Submit each run as a flow run of ``deployment`` (at most ``max_parallel`` in flight, linked
    as subflows of this one) and wait for all; the failures, each with its flow run's message.
    If this flow stops first, the runs still in flight are cancelled."""
    log, failed, inflight, pending = get_run_logger(), [], {}, list(runs)
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ConfigError(f"sweep {name}: no deployment {deployment!r} (`prefect deployment ls` lists them)") from None
        try:
            while pending or inflight:
                while pending and len(inflight) < max_parallel:
                    r = pending.pop(0)
                    config = r.config.model_dump(mode="json") | {"tracking_uri": uri}  # one store for parent and runs
                    fr = run_deployment(deployment, parameters={"config": config, "parent_run_id": parent,
                                                                "tags": tags_of[(r.variant.name(), r.seed)]},
                                        flow_run_name=f"{name} {r.variant.name()} seed {r.seed}", timeout=0)
                    inflight[fr.id] = (r, fr.name)
                    log.info("variant %r seed %d -> flow run %s of %s", r.variant.name(), r.seed, fr.name, deployment)
                time.sleep(poll)
                for fid in list(inflight):
                    state = client.read_flow_run(fid).state
                    if state is not None and state.is_final():
                        r, run_name = inflight.pop(fid)
                        if not state.is_completed():
                            failed.append(f"variant {r.variant.name()!r} seed {r.seed} (flow run {run_name}): "
                                          f"{state.name}: {state.message}")
        finally:
            for fid in inflight:  # only when this flow itself stopped early
                client.set_flow_run_state(fid, Cancelling(message="the sweep that submitted it stopped"), force=True)
    return failed


def main(argv: list[str] | None = None) -> None:
    from bertpipe.experiments.sweep import sweep_names

    p = argparse.ArgumentParser(description="run a named sweep locally (python -m flows.sweep NAME)")
    p.add_argument("sweep", choices=sweep_names())
    p.add_argument("--overrides", type=json.loads, default=None, help="JSON merged into the sweep's overrides")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None, help="e.g. 1,2,3")
    p.add_argument("--deployment", help="submit each run to this pretrain deployment (needs a Prefect server)")
    p.add_argument("--max-parallel", type=int, default=1, help="runs in flight at once (with --deployment)")
    a = p.parse_args(argv)
    out = sweep_flow(load_sweep(a.sweep, seeds=a.seeds), a.sweep, a.overrides, a.max_parallel, a.deployment)
    print(out["report"])


if __name__ == "__main__":
    main()
