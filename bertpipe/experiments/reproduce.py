"""Reproduce after: re-run a tracked pipeline run from its MLflow run id alone, and compare.

``reproduce(run_id)`` reads the run's config back (the ``config/pipeline.json`` artifact that
pipeline runs log; for runs made before it, the flattened params, parsed back and validated),
warns when the code that would run differs from the run's (git commit, uncommitted changes,
library versions), checks that the rebuilt config plans the fingerprints the run recorded
(``bertpipe.fp.<stage>`` tags) before computing anything, re-runs the pipeline into a fresh
work dir with the library's ``run_pipeline`` (tracked in the same store by an
``MlflowTracker``, tagged ``bertpipe.reproduces``),
and sets the two runs side by side: every stage's fingerprint, and every metric of the
parent run and of its stage runs (a stage served from cache contributes the metrics of the
run that built it). Timing figures (seconds, tokens/s, MFU) are shown but
not compared. A deterministic CPU run must match exactly (``==`` on the stored floats); on
other hardware the differences are reported, not hidden.

The stages run through ``bertpipe.pipeline.run_pipeline``, the loop the ``pretrain`` flow runs,
in this process and with the same MLflow records (the config as params and as JSON, the
planned fingerprints as tags, a child run per stage, the final held-out figures, fine-tuning
scores per checkpoint). Only the flow's Prefect extras (cache records, progress artifacts,
Dask units) are absent, and they do not change what a stage computes; ``bertpipe reproduce``
runs from a terminal without a Prefect server.

Old runs' configs load through the same strict validation as new ones: a key that has been
retired since is mapped with a warning (``bertpipe.pipeline.config.RETIRED``), any other
unknown key is an error naming it.

Trade-off: a fresh work dir recomputes every stage, including data stages another cache
already holds; reusing them would make the check weaker (an output is only named by its
fingerprint, not verified by it).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from bertpipe.core.config import path_text
from bertpipe.core.keys import unflatten
from bertpipe.core.settings import base_dir
from bertpipe.pipeline.config import PipelineConfig, pipeline_config
from bertpipe.pipeline.graph import stage_fingerprints
from bertpipe.pipeline.runner import in_process, run_pipeline
from bertpipe.tracking import MlflowTracker, client_for, default_tracking_uri, tags
from bertpipe.tracking.lineage import LIBRARIES, code_tags
from bertpipe.tracking.runs import CONFIG_ARTIFACT

TIMING = ("seconds", "tokens_per_s", "mfu", "peak_tflops")  # metric names holding these are timings


class ReproduceError(ValueError):
    """The run cannot be reproduced as asked (not a pipeline run, changed inputs, a used work dir)."""


class MetricRow(BaseModel):
    name: str  # a parent metric, or "<stage>.<metric>" of a stage run
    recorded: float | None
    reproduced: float | None
    verdict: Literal["same", "differs", "missing", "timing"]


class Reproduction(BaseModel):
    run_id: str
    reproduced_run_id: str
    work_dir: str
    config_source: Literal["artifact", "params"]
    warnings: list[str]
    fingerprints: dict[str, tuple[str | None, str | None]]  # stage → (recorded, reproduced)
    metrics: list[MetricRow]

    def fingerprints_match(self) -> bool:
        return all(a == b for a, b in self.fingerprints.values())

    def identical(self) -> bool:
        return self.fingerprints_match() and all(m.verdict in ("same", "timing") for m in self.metrics)


def reproduce(run_id: str, tracking_uri: str | None = None, work_dir: str | Path | None = None, *, force: bool = False,
              progress: bool = False, log=lambda _: None) -> Reproduction:
    """Re-run pipeline run ``run_id`` of the store at ``tracking_uri`` into ``work_dir`` (a new or
    empty folder; default: a new one under ``<base dir>/cache/reproduce``) and compare.
    ``force``: run even when the rebuilt config plans other fingerprints than the run recorded."""
    uri = tracking_uri or default_tracking_uri()
    client = client_for(uri)
    try:
        run = client.get_run(run_id)
    except Exception as e:  # MLflow's own error for an unknown id or an unreachable store
        raise ReproduceError(f"no run {run_id} in {uri}: {str(e).splitlines()[0]}") from None
    if run.data.tags.get(tags.SWEEP) == "true":
        raise ReproduceError(f"{run_id} is a sweep's run; reproduce one of its variant runs (its child runs)")
    if tags.STAGE in run.data.tags and tags.PARENT in run.data.tags:
        log(f"{run_id} is the {run.data.tags[tags.STAGE]} stage's run; reproducing its pipeline run {run.data.tags[tags.PARENT]}")
        run = client.get_run(run.data.tags[tags.PARENT])
    recorded = {k.removeprefix(tags.PLANNED): v for k, v in run.data.tags.items() if k.startswith(tags.PLANNED)}
    if not recorded:
        raise ReproduceError(f"run {run.info.run_id} is not a pipeline run: it has no {tags.PLANNED}<stage> tags")
    config, source = recorded_config(client, run)
    work = _fresh(work_dir, run.info.run_id)
    cfg = pipeline_config(config, {"work_dir": str(work), "tracking_uri": uri}, source=f"run {run.info.run_id}")
    warnings = code_warnings(run.data.tags)
    for w in warnings:
        log(f"warning: {w}")
    planned = stage_fingerprints(cfg)
    if (bad := {s: (recorded.get(s), planned.get(s)) for s in recorded.keys() | planned.keys()
                if recorded.get(s) != planned.get(s)}) and not force:
        raise ReproduceError("the rebuilt config plans other outputs than the run recorded ("
                             + ", ".join(f"{s}: {a} → {b}" for s, a, b in ((s, *v) for s, v in sorted(bad.items())))
                             + "): the corpus files or the code that names outputs changed since; --force runs it anyway")
    log(f"re-running {run.info.run_name} ({run.info.run_id}) into {work}")
    tracker = MlflowTracker(uri, cfg.experiment, f"reproduce {run.info.run_name}", {tags.REPRODUCES: run.info.run_id})
    done = run_pipeline(cfg, submit=in_process(progress=progress), tracker=tracker, log=log)
    out = {"mlflow_run_id": done.run_id, "stages": done.fingerprints()}
    made = {**recorded, **stage_run_fingerprints(client, run.info.run_id)}
    return Reproduction(run_id=run.info.run_id, reproduced_run_id=out["mlflow_run_id"], work_dir=str(work),
                        config_source=source, warnings=warnings,
                        fingerprints={s: (made.get(s), out["stages"].get(s)) for s in [*out["stages"], *sorted(made.keys() - out["stages"].keys())]},
                        metrics=compare(run_metrics(client, run.info.run_id), run_metrics(client, out["mlflow_run_id"])))


# ------------------------------------------------------------------------------ the recorded run

def recorded_config(client, run) -> tuple[dict[str, Any], Literal["artifact", "params"]]:
    """The run's config: its JSON artifact, or else its params parsed back."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(Path(client.download_artifacts(run.info.run_id, CONFIG_ARTIFACT, tmp)).read_text()), "artifact"
        except Exception:  # a run logged before the artifact existed (MLflow raises its own error types)
            pass
    return config_from_params(run.data.params), "params"


def config_from_params(params: dict[str, str]) -> dict[str, Any]:
    """Flattened params (``shards.masking.masked_lm_prob``) → the nested config, values parsed
    back from their string form; a string field that reads as a number is restored as written."""
    as_written: set[str] = set()
    for _ in range(len(params) + 1):
        nested = unflatten({key: raw if key in as_written else _parse(raw) for key, raw in params.items()})
        try:
            PipelineConfig.model_validate(nested)
            break
        except ValidationError as e:
            wrong = {key for err in e.errors() if err["type"] == "string_type" and (key := path_text(err["loc"])) in params}
            if not wrong - as_written:
                break  # another error: the caller's validation reports it
            as_written |= wrong
    return nested


def _parse(raw: str) -> Any:
    if raw in ("None", "True", "False"):  # str() of Python's constants, as ``tracking.runs.flatten`` writes them
        return {"None": None, "True": True, "False": False}[raw]
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def code_warnings(recorded: dict[str, str]) -> list[str]:
    """How the code that runs now differs from the code that made a run (from its tags)."""
    now, out = code_tags(), []
    was, is_ = recorded.get(tags.GIT_COMMIT) or recorded.get(tags.MLFLOW_GIT_COMMIT), now.get(tags.GIT_COMMIT)
    if was is None:
        out.append("the run records no git commit: whether the code changed since is unknown")
    elif is_ is None:
        out.append(f"this installation is not a git checkout: cannot compare with the run's commit {was[:12]}")
    elif was != is_:
        out.append(f"code version differs: the run was made at commit {was[:12]}, this checkout is at {is_[:12]}")
    if recorded.get(tags.GIT_DIRTY) == "true":
        out.append("the run was made from a checkout with uncommitted changes, which no tag records")
    if now.get(tags.GIT_DIRTY) == "true":
        out.append("this checkout has uncommitted changes")
    for lib in LIBRARIES:
        old, new = recorded.get(tags.VERSION + lib), now.get(tags.VERSION + lib)
        if old is not None and old != new:
            out.append(f"{lib} {old} → {new or 'not installed'}")
    return out


def stage_run_fingerprints(client, run_id: str) -> dict[str, str]:
    """The fingerprint each stage run of a pipeline run recorded, by stage."""
    return {c.data.tags[tags.STAGE]: c.data.tags[tags.FINGERPRINT] for c in _stage_runs(client, run_id)
            if tags.FINGERPRINT in c.data.tags}


def run_metrics(client, run_id: str) -> dict[str, float]:
    """A pipeline run's metrics and its stage runs' (``<stage>.<metric>``; a cached stage's from
    the run that built it, when known)."""
    out = dict(client.get_run(run_id).data.metrics)
    for child in _stage_runs(client, run_id):
        producer = child.data.tags.get(tags.PRODUCED_BY) if child.data.tags.get(tags.CACHE_HIT) == "true" else None
        metrics = client.get_run(producer).data.metrics if producer else child.data.metrics
        out |= {f"{child.data.tags[tags.STAGE]}.{k}": v for k, v in metrics.items()}
    return out


def _stage_runs(client, run_id: str) -> list:
    exp = client.get_run(run_id).info.experiment_id
    kids = client.search_runs([exp], f"tags.`{tags.PARENT}` = '{run_id}'", max_results=1000)
    return [k for k in kids if tags.STAGE in k.data.tags]  # not the fine-tuning run: its scores are on the parent


def compare(recorded: dict[str, float], reproduced: dict[str, float]) -> list[MetricRow]:
    rows = []
    for name in sorted(recorded.keys() | reproduced.keys()):
        a, b = recorded.get(name), reproduced.get(name)
        verdict = ("timing" if any(t in name for t in TIMING) else "missing" if a is None or b is None
                   else "same" if a == b else "differs")
        rows.append(MetricRow(name=name, recorded=a, reproduced=b, verdict=verdict))
    return rows


def _fresh(work_dir: str | Path | None, run_id: str) -> Path:
    if work_dir is None:
        work_dir = base_dir() / "cache" / "reproduce" / f"{run_id[:12]}-{time.strftime('%Y%m%d-%H%M%S')}"
    work = Path(work_dir).expanduser().resolve()
    if work.exists() and any(work.iterdir()):
        raise ReproduceError(f"{work} is not empty: a reproduction computes every stage again in a new work dir")
    return work


# ------------------------------------------------------------------------------ rendering

def render_text(r: Reproduction) -> str:
    lines = [f"reproduced run {r.run_id} as {r.reproduced_run_id} in {r.work_dir} (config from its {r.config_source})"]
    lines += [f"warning: {w}" for w in r.warnings]
    width = max(len(s) for s in r.fingerprints)
    lines.append(f"\n{'stage':<{width}}  {'recorded':<16}  {'reproduced':<16}")
    for stage, (a, b) in r.fingerprints.items():
        lines.append(f"{stage:<{width}}  {a or '-':<16}  {b or '-':<16}  {'same' if a == b else 'DIFFERS'}")
    width = max(len(m.name) for m in r.metrics) if r.metrics else 6
    lines.append(f"\n{'metric':<{width}}  {'recorded':>14}  {'reproduced':>14}")
    for m in r.metrics:
        lines.append(f"{m.name:<{width}}  {_num(m.recorded):>14}  {_num(m.reproduced):>14}  "
                     + ({"same": "same", "timing": "(timing)", "missing": "MISSING"}.get(m.verdict)
                        or f"DIFFERS by {m.reproduced - m.recorded:+.3g}"))
    compared = [m for m in r.metrics if m.verdict != "timing"]
    same = sum(m.verdict == "same" for m in compared)
    verdict = ("identical" if r.identical() else "NOT identical")
    lines.append(f"\n{verdict}: {sum(a == b for a, b in r.fingerprints.values())} of {len(r.fingerprints)} fingerprints "
                 f"and {same} of {len(compared)} metrics equal ({len(r.metrics) - len(compared)} timing figures not compared)")
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}" if abs(v) < 1e6 else f"{v:.0f}"
