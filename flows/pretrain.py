"""The ``pretrain`` flow: ingest → wordpiece → shards (→ phase-2 shards) → pretrain, tracked.

Thin wiring over ``bertpipe``: each stage is a Prefect task whose cache key is the stage's
fingerprint (``bertpipe.pipeline.stage_fingerprints``), the same string that names its
output directory and tags its MLflow run (``flows.stagetask``); results are persisted under
``cache/prefect-results`` so the cache survives flow runs (and machines sharing the
storage). Each stage also gets an MLflow child run under the flow run's parent run, also
when it was served from cache (tagged as a cache hit, linked to the run that built it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import get_run_context

from bertpipe import tracking
from bertpipe.cache import write_json_atomic
from bertpipe.ingest import ingest
from bertpipe.pipeline import (
    PROJECT,
    PipelineConfig,
    load_pipeline_config,
    stage_fingerprints,
)
from bertpipe.pretrain import pretrain
from bertpipe.report import plot_training_curves
from bertpipe.shards import build_shards
from bertpipe.stage import StageResult
from bertpipe.wordpiece import train_wordpiece
from flows.stagetask import run_stage, stage_task


@stage_task("ingest")
def ingest_task(fp: str, cfg: PipelineConfig) -> StageResult:
    return ingest(cfg.corpus, cfg.ingest, cfg.work_path() / "docs")


@stage_task("wordpiece")
def wordpiece_task(fp: str, cfg: PipelineConfig, docs: StageResult) -> StageResult:
    return train_wordpiece(docs.path, cfg.wordpiece, cfg.work_path() / "tokenizer")


@stage_task("shards")
def shards_task(fp: str, shards_cfg, cfg: PipelineConfig, docs: StageResult, tok: StageResult) -> StageResult:
    return build_shards(docs.path, tok.path, shards_cfg, cfg.work_path() / "shards", progress=False)


@stage_task("pretrain")
def pretrain_task(fp: str, cfg: PipelineConfig, shards: StageResult, phase2: StageResult | None,
                  tracking_uri: str, run_id: str) -> StageResult:
    """Train into ``<work_dir>/pretrain/<fp>`` (resuming a checkpoint there), logging live to MLflow."""
    out = cfg.work_path() / "pretrain" / fp
    client = tracking.client_for(tracking_uri)

    def on_metrics(rec: dict[str, Any]) -> None:
        if rec.get("event") == "start":
            tracking.log_metrics(client, run_id, {"parameters": rec["parameters"]})
        if rec.get("split") in ("train", "eval"):
            tracking.log_metrics(client, run_id, {f"{rec['split']}_{k}": v for k, v in rec.items()
                                                  if k not in ("split", "step", "phase")}, step=rec["step"])

    if cfg.devices > 1:
        step, train, evaluation = _torchrun(cfg, shards, phase2, out, on_metrics)
    else:
        res = pretrain(shards.path, cfg.pretrain, out, phase2.path if phase2 else None, on_metrics=on_metrics)
        if res.interrupted:
            raise RuntimeError(f"pretraining stopped at step {res.step} with a checkpoint in {out}; run again to resume")
        step, train, evaluation = res.step, res.train, res.eval
    start = next(json.loads(line) for line in (out / "metrics.jsonl").open() if '"event": "start"' in line)
    kept = {str(k): str(out / "checkpoints" / f"step-{k:07d}" / "model") for k in cfg.pretrain.keep_steps}
    manifest = {"stage": "pretrain", "fingerprint": fp, "step": step, "final": str(out / "final"), "kept": kept,
                "parameters": start["parameters"], "devices": cfg.devices, "train": train, "eval": evaluation}
    write_json_atomic(out / "manifest.json", manifest)  # written last: marks the stage complete
    return StageResult("pretrain", fp, out, manifest, cached=False)


def _torchrun(cfg: PipelineConfig, shards: StageResult, phase2: StageResult | None, out: Path, on_metrics):
    """Data-parallel pretraining in ``cfg.devices`` processes; metrics forwarded afterwards."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretrain-config.json").write_text(cfg.pretrain.model_dump_json(indent=2))
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", str(cfg.devices),
           "-m", "bertpipe.pretrain", str(shards.path), "--out", str(out), "--config", str(out / "pretrain-config.json")]
    if phase2 is not None:
        cmd += ["--phase2-shards", str(phase2.path)]
    log = get_run_logger()
    log.info("launching %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with {done.returncode}:\n{done.stderr[-4000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    for rec in records:
        on_metrics(rec)
    last = {split: next((r for r in reversed(records) if r.get("split") == split), None) for split in ("train", "eval")}
    return (last["train"] or {}).get("step", 0), last["train"], last["eval"]


@task(name="track-stage")
def track_stage(tracking_uri: str, exp_id: str, parent: str, stage: str, result: StageResult, prefect_cached: bool,
                params: dict[str, Any], run_id: str | None = None) -> StageResult:
    """One MLflow child run per stage (reusing ``run_id`` for pretraining, which logged live)."""
    cached = prefect_cached or result.cached
    client = tracking.client_for(tracking_uri)
    if run_id is None:
        run_id = tracking.start_stage(client, exp_id, parent, stage, result.fingerprint, cached, tracking.flatten(stage, params))
    else:
        client.set_tag(run_id, tracking.CACHE_HIT, str(cached).lower())
        if cached:
            client.set_tag(run_id, "mlflow.runName", f"{stage} (cached)")
            exps = [e.experiment_id for e in client.search_experiments()]
            if (producer := tracking.producer_of(client, exps, result.fingerprint)) is not None:
                client.set_tag(run_id, tracking.PRODUCED_BY, producer)
    counts = result.manifest.get("counts", {})
    tracking.log_metrics(client, run_id, {f"count_{k}": v for k, v in counts.items()})
    client.set_tag(run_id, "bertpipe.path", str(result.path))
    art = Path(result.path)
    if stage == "wordpiece":
        client.log_artifact(run_id, str(art / "vocab.txt"))
    elif stage in ("shards", "phase2", "ingest"):
        client.log_artifact(run_id, str(art / "manifest.json"))
    elif stage == "pretrain" and not cached:
        for png in plot_training_curves(art / "metrics.jsonl", art / "plots"):
            client.log_artifact(run_id, str(png), "plots")
        final = Path(result.manifest["final"])
        if cfg_fusion(final) == "sum":
            from bertpipe.hf import export_hf

            client.log_artifacts(run_id, str(export_hf(final, art / "hf")), "model-hf")
    tracking.finish(client, run_id)
    return result


def cfg_fusion(ckpt: Path) -> str:
    return json.loads((ckpt / "config.json").read_text()).get("embedding_fusion", "sum")


@flow(name="pretrain", log_prints=True)
def pretrain_flow(preset: str = "tiny", overrides: dict[str, Any] | None = None,
                  parent_run_id: str | None = None, tags: dict[str, str] | None = None) -> dict[str, str]:
    """Run the pipeline from a preset in deployments/presets with JSON overrides.

    Parameters are validated first: an unknown preset or an invalid value fails the run
    here, before any stage starts.
    """
    log = get_run_logger()
    cfg = load_pipeline_config(preset, overrides)
    fps = stage_fingerprints(cfg)
    log.info("stage fingerprints: %s", fps)
    uri = cfg.tracking_uri or tracking.default_tracking_uri(PROJECT)
    client = tracking.client_for(uri)
    exp_id = tracking.experiment_id(client, cfg.experiment, PROJECT / "mlartifacts")
    ctx = get_run_context()
    flow_run = ctx.flow_run
    ui = os.environ.get("PREFECT_UI_URL") or os.environ.get("PREFECT_API_URL", "").removesuffix("/api")
    parent = tracking.start_parent(client, exp_id, flow_run.name, {
        "prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_url": f"{ui}/runs/flow-run/{flow_run.id}" if ui else "",
        "bertpipe.preset": preset, **{f"bertpipe.fp.{k}": v for k, v in fps.items()},
        **({tracking.PARENT: parent_run_id} if parent_run_id else {}), **(tags or {})},
        tracking.flatten("", cfg.model_dump(mode="json")))
    ok, work = False, cfg.work_path()
    try:
        st = run_stage(ingest_task, work / "docs" / fps["ingest"], fps["ingest"], cfg)
        docs = track_stage(uri, exp_id, parent, "ingest", st.result(), st.name == "Cached", cfg.ingest.model_dump(mode="json"))
        st = run_stage(wordpiece_task, work / "tokenizer" / fps["wordpiece"], fps["wordpiece"], cfg, docs)
        tok = track_stage(uri, exp_id, parent, "wordpiece", st.result(), st.name == "Cached", cfg.wordpiece.model_dump(mode="json"))
        st = run_stage(shards_task, work / "shards" / fps["shards"], fps["shards"], cfg.shards, cfg, docs, tok)
        shards = track_stage(uri, exp_id, parent, "shards", st.result(), st.name == "Cached", cfg.shards.model_dump(mode="json"))
        phase2 = None
        if cfg.phase2 is not None:
            st = run_stage(shards_task, work / "shards" / fps["phase2"], fps["phase2"], cfg.phase2, cfg, docs, tok)
            phase2 = track_stage(uri, exp_id, parent, "phase2", st.result(), st.name == "Cached", cfg.phase2.model_dump(mode="json"))
        pre_run = tracking.start_stage(client, exp_id, parent, "pretrain", fps["pretrain"], False,
                                       tracking.flatten("pretrain", cfg.pretrain.model_dump(mode="json")))
        st = run_stage(pretrain_task, work / "pretrain" / fps["pretrain"], fps["pretrain"], cfg, shards, phase2, uri, pre_run)
        result = track_stage(uri, exp_id, parent, "pretrain", st.result(), st.name == "Cached", {}, run_id=pre_run)
        final = {f"final_{k}": v for k, v in (result.manifest.get("eval") or {}).items()}
        final["parameters"] = result.manifest.get("parameters", float("nan"))
        tracking.log_metrics(client, parent, final)
        scores = {}
        if cfg.evaluate:
            from flows.finetune import finetune_flow

            # earlier checkpoints first, so each score's history in MLflow runs along the steps
            ckpts = [(s, result.manifest.get("kept", {}).get(str(s))) for s in cfg.evaluate_steps]
            for at, ckpt in [*ckpts, (cfg.pretrain.steps, result.manifest["final"])]:
                if ckpt is None:
                    raise RuntimeError(f"the pretraining in {result.path} kept no checkpoint at step {at}")
                scores = finetune_flow(ckpt, cfg.evaluate, str(work / "finetune"), cfg.experiment, uri, parent)
                tracking.log_metrics(client, parent, {f"{t}_{k}": v for t, m in scores.items() for k, v in m.items()
                                                      if not k.endswith("_std")}, step=at)
        ok = True
        return {"mlflow_run_id": parent, **{k: str(v) for k, v in fps.items()}, "model": result.manifest["final"]}
    finally:
        tracking.finish(client, parent, ok)
