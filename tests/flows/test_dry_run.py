"""``bertpipe plan`` against the pretrain flow it predicts: the flow's dry run publishes the plan
as a Prefect artifact without running a task, and each plan names exactly the stages whose
Prefect tasks then compute (Completed) rather than come from cache (Cached)."""

from __future__ import annotations

import asyncio

from bertpipe.pipeline import load_pipeline_config
from bertpipe.experiments.plan import explain_plan, render_text
from tests.flows.test_flows import harness, overrides  # noqa: F401  (harness: a module fixture)

STAGES = ["ingest", "wordpiece", "shards", "pretrain"]


def task_states(state) -> dict[str, str]:
    """Prefect's own record of a flow run: each task run's name (the stage) and final state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            return {r.name: r.state.name for r in await client.read_task_runs(flow_run_filter=flt)}

    return asyncio.run(read())


def latest_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                                sort=ArtifactSort.CREATED_DESC, limit=1)
            return found[0]

    return asyncio.run(read())


def test_the_plan_names_the_stages_that_run_and_why_and_the_flow_runs_exactly_those(harness, tmp_path):  # noqa: F811
    from flows.pretrain import pretrain_flow

    ov = overrides(tmp_path)
    uri = ov["tracking_uri"]
    cfg = load_pipeline_config("tiny", ov)

    fresh = explain_plan(cfg, uri)
    assert [(s.name, s.status) for s in fresh.stages] == [(n, "runs") for n in STAGES]
    assert all(s.note.startswith("nothing built under") and s.estimate.basis == "throughput" for s in fresh.stages)

    # the dry run: the same plan as a markdown artifact; no task, no output, no MLflow store
    state = pretrain_flow(cfg, dry_run=True, return_state=True)
    assert state.is_completed() and state.result()["plan"] == fresh.model_dump(mode="json")
    assert task_states(state) == {}
    assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists()
    md = latest_artifact("pipeline-plan").data
    assert "4 of 4 stages run" in md and all(f"| {n} | **runs** | `{fresh.stage(n).fingerprint}` |" in md for n in STAGES)

    first = pretrain_flow(cfg, return_state=True)
    assert task_states(first) == {n: "Completed" for n in STAGES}
    assert {n: first.result()[n] for n in STAGES} == {s.name: s.fingerprint for s in fresh.stages}

    cached = explain_plan(cfg, uri)
    assert [(s.name, s.status) for s in cached.stages] == [(n, "cached") for n in STAGES] and cached.running() == []
    assert "all 4 stages cached" in render_text(cached)

    ov["shards"]["masking"] = {"masked_lm_prob": 0.4}  # the only change
    changed_cfg = load_pipeline_config("tiny", ov)
    changed = explain_plan(changed_cfg, uri)
    assert [(s.name, s.status) for s in changed.stages] == [("ingest", "cached"), ("wordpiece", "cached"),
                                                            ("shards", "runs"), ("pretrain", "runs")]
    shards, pre = changed.stage("shards"), changed.stage("pretrain")
    assert shards.why() == "masking.masked_lm_prob 0.15 → 0.4" and shards.nearest == first.result()["shards"]
    assert [(c.kind, c.name, c.old, c.new) for c in shards.changes] == [("config", "masking.masked_lm_prob", 0.15, 0.4)]
    assert pre.why() == "upstream shards changed" and pre.nearest == first.result()["pretrain"]
    assert [(c.kind, c.name, c.old, c.new) for c in pre.changes] == [("upstream", "shards", first.result()["shards"],
                                                                       shards.fingerprint)]
    # the time of each comes from its nearest output's recorded build (same work: the same figure)
    assert shards.estimate.basis == pre.estimate.basis == "comparable" and pre.estimate.seconds > 0
    text = render_text(changed)
    assert "masking.masked_lm_prob 0.15 → 0.4" in text and "upstream shards changed" in text

    dry = pretrain_flow(changed_cfg, dry_run=True, return_state=True)
    assert task_states(dry) == {} and "| pretrain | **runs** |" in latest_artifact("pipeline-plan").data

    third = pretrain_flow(changed_cfg, return_state=True)
    states = task_states(third)
    assert sorted(n for n, s in states.items() if s == "Completed") == sorted(changed.running()) == ["pretrain", "shards"]
    assert sorted(n for n, s in states.items() if s == "Cached") == ["ingest", "wordpiece"]
    assert explain_plan(changed_cfg, uri).running() == []
