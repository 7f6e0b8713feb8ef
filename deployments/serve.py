"""Declare and serve every deployment: ``python deployments/serve.py`` (stops on SIGTERM).

pretrain/tiny (CPU minutes on the sample corpus), pretrain/base (BERT-Base, the paper's
recipe), pretrain/large, one sweep/<name> per shipped sweep (masking-rate, convergence,
masking-split, fusion, nsp, size, pooling: variants x seeds on the shared corpora, then a
report), and finetune/default (a checkpoint on the four shared downstream tasks). Each
deployment's parameters are the preset or sweep itself, typed, so the run form shows every field;
runs also take JSON overrides, e.g.
``prefect deployment run pretrain/base --param overrides='{"pretrain": {"steps": 10}}'``.

``--pool NAME`` (a team, several devices): the pretrain deployments go to work pool NAME
(created as a process pool if missing), whose workers (``prefect worker start --pool NAME
--limit 1``, each with its own ``CUDA_VISIBLE_DEVICES``) run them from this checkout's path,
which every worker's machine must share; the sweeps and finetune stay served here, so a sweep
waiting for its runs never holds a worker. A sweep run with ``deployment: pretrain/tiny`` and
``max_parallel: N`` then trains N (variant, seed) runs at once on N workers.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import deploy, get_client, serve  # noqa: E402
from prefect.client.schemas.actions import WorkPoolCreate  # noqa: E402
from prefect.deployments.runner import EntrypointType  # noqa: E402
from prefect.exceptions import ObjectNotFound  # noqa: E402

from bertpipe import tracking  # noqa: E402
from bertpipe.pipeline import load_pipeline_config  # noqa: E402
from bertpipe.experiments.sweep import load_sweep, sweep_names  # noqa: E402
from flows.finetune import DEFAULT_TASKS, finetune_flow  # noqa: E402
from flows.pretrain import pretrain_flow  # noqa: E402
from flows.sweep import sweep_flow  # noqa: E402

DEPLOYMENTS = {
    "tiny": "tiny preset on the bundled sample corpus: CPU minutes",
    "base": "BERT-Base (L=12, H=768, A=12) with the paper's recipe; give it your corpus",
    "large": "BERT-Large (L=24, H=1024, A=16) with the paper's recipe",
}



ROOT = Path(__file__).resolve().parents[1]


def deployments(pool: str | None = None):
    """Every deployment; its default parameters are the preset or sweep itself, so the run form opens
    filled with them, and a run's values are checked against the schema when the run is created.
    With ``pool``, the pretrain deployments are declared for that work pool (``deploy_to_pool``)."""
    return [open_to_unknown_keys(d) for d in _declared(pool)]


def _declared(pool: str | None):
    # on a pool, the worker imports the flow by module path from the checkout (one path on every machine)
    on_pool = dict(work_pool_name=pool, entrypoint_type=EntrypointType.MODULE_PATH,
                   job_variables={"working_dir": str(ROOT)}) if pool else {}
    yield from (pretrain_flow.to_deployment(name, description=desc, tags=["bertpipe"], enforce_parameter_schema=True,
                                            parameters={"config": load_pipeline_config(name).model_dump(mode="json"),
                                                        "tags": tracking.preset_tags(name)}, **on_pool)
                for name, desc in DEPLOYMENTS.items())
    yield from (sweep_flow.to_deployment(name, description=load_sweep(name).description, tags=["bertpipe", "sweep"],
                                         enforce_parameter_schema=True,
                                         parameters={"spec": load_sweep(name).model_dump(mode="json"), "name": name})
                for name in sweep_names())
    yield finetune_flow.to_deployment("default", enforce_parameter_schema=True, tags=["bertpipe"],
                                      parameters={"tasks": [t.model_dump(mode="json") for t in DEFAULT_TASKS]},
                                      description="fine-tune a checkpoint (parameter 'checkpoint') on the four shared tasks")


def open_to_unknown_keys(deployment):
    """The deployment with its parameter schema's ``additionalProperties: false`` removed. Types and
    bounds are still checked when a run is created; an unknown key reaches the flow, whose strict
    validation fails the run with a message naming the key's path and its nearest valid name
    (Prefect's schema check would refuse the run with jsonschema's wording, naming neither)."""
    def strip(node):
        if isinstance(node, dict):
            if node.get("additionalProperties") is False:
                del node["additionalProperties"]
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(deployment._parameter_openapi_schema.properties)
    strip(deployment._parameter_openapi_schema.definitions)
    return deployment


def deploy_to_pool(pool: str) -> list[str]:
    """Register the pretrain deployments on work pool ``pool`` (a process pool, created if missing);
    the others are returned by ``deployments`` for serving. Returns the names deployed."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    on_pool = [d for d in deployments(pool) if d.flow_name == pretrain_flow.name]
    deploy(*on_pool, work_pool_name=pool, build=False, push=False, print_next_steps_message=False, ignore_warnings=True)
    return [f"{d.flow_name}/{d.name}" for d in on_pool]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="declare and serve every deployment")
    p.add_argument("--pool", help="send the pretrain deployments to this work pool's workers instead of serving them")
    a = p.parse_args()
    if a.pool:
        print(f"on work pool {a.pool!r}: {', '.join(deploy_to_pool(a.pool))}", flush=True)
    serve(*(d for d in deployments() if not (a.pool and d.flow_name == pretrain_flow.name)))
