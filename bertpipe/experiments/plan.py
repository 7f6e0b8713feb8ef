"""Know before you run: which stages of a pipeline run will be computed, why, and for how long.

``explain_plan(cfg)`` takes the stages ``pipeline.plan`` predicts (name and fingerprint of
each) and looks at the work dir: a stage whose output ``ROOT/<fingerprint>/`` is complete is
``cached``; any other ``runs``, and the plan says why by comparing it with the *nearest*
complete output of the same stage under its root, the one with the fewest differences:

- config fields, from the config each manifest records (``masking.masked_lm_prob 0.15 → 0.4``);
- input files, for ingest, by content hash (added, removed or changed files);
- upstream outputs (``upstream shards changed``): the stage reads other documents, another
  vocabulary or other shards than the nearest output did;
- the stage's version, when the algorithm changed since.

Every manifest already records its fingerprinted config, its upstream fingerprints (its
input files' hashes, for ingest) and its stage version, so outputs built before this module
existed are explained too. Each stage that runs also gets a time estimate
(``bertpipe.experiments.estimate``: the same computation recorded in MLflow, else the nearest
build scaled by the work, else reference throughput). The result is plain data (pydantic),
rendered as text for the command line and as markdown for the flow's dry-run artifact.

Trade-off: only the stage's own root is searched (``work_dir/<root>``), not other work dirs;
a cache moved elsewhere is explained as "nothing built under ROOT yet".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from bertpipe.core.fingerprint import hash_file
from bertpipe.core.keys import flatten
from bertpipe.core.stagedir import build_seconds, is_complete, read_manifest
from bertpipe.data.ingest import IngestStage
from bertpipe.experiments.estimate import Context, Estimate, corpus_bytes, duration, estimate, mlflow_durations, work
from bertpipe.pipeline.config import PipelineConfig
from bertpipe.pipeline.graph import NODES, PlannedStage, plan


class Change(BaseModel):
    """One difference between a planned stage and an earlier output of it."""

    kind: Literal["config", "input", "upstream", "version"]
    name: str  # dotted config field, input file path, upstream stage name, or "version"
    old: Any = None  # None: absent in the earlier output (a new field, an added file)
    new: Any = None  # None: absent now (a removed field or file)

    def text(self) -> str:
        if self.kind == "upstream":
            return f"upstream {self.name} changed"
        if self.kind == "input":
            if self.old is None:
                return f"input {self.name} added"
            if self.new is None:
                return f"input {self.name} removed"
            return f"input {self.name} changed (content {self.old[:8]} → {self.new[:8]})"
        label = "stage version" if self.kind == "version" else self.name
        return f"{label} {_show(self.old)} → {_show(self.new)}"


class StagePlan(BaseModel):
    """A stage of the plan: cached or runs, and for a run why and for about how long."""

    name: str
    fingerprint: str
    path: str  # where its output is, or will be
    status: Literal["cached", "runs"]
    nearest: str | None = Field(None, description="fingerprint of the nearest earlier output the changes are against")
    changes: list[Change] = []
    note: str = ""  # nothing to compare with, a resumable partial build, ...
    estimate: Estimate | None = None  # for a stage that runs

    def why(self) -> str:
        parts = [c.text() for c in self.changes] + ([self.note] if self.note else [])
        return "; ".join(parts)


class PipelinePlan(BaseModel):
    work_dir: str
    stages: list[StagePlan]

    def running(self) -> list[str]:
        return [s.name for s in self.stages if s.status == "runs"]

    def total_seconds(self) -> float | None:
        """Sum of the estimates of the stages that run (None when one has no estimate)."""
        times = [s.estimate.seconds if s.estimate else None for s in self.stages if s.status == "runs"]
        return None if any(t is None for t in times) else float(sum(times))

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.name == name)


def explain_plan(cfg: PipelineConfig, tracking_uri: str | None = None) -> PipelinePlan:
    """The plan of ``cfg`` against what its work dir holds; ``tracking_uri``: an MLflow store to
    read past build times from (read only; a missing SQLite store is not created)."""
    planned = plan(cfg)
    fps = {st.name: st.fingerprint for st in planned}
    files = [(str(p), hash_file(p)) for p, _ in IngestStage(cfg.ingest, cfg.corpus_paths()).files]  # memoized hashes
    ctx = Context(corpus_bytes=corpus_bytes([f for f, _ in files]), seq_len=cfg.shards.max_seq_length,
                  vocab=cfg.wordpiece.vocab_size)
    durations = mlflow_durations(tracking_uri)
    work_dir = cfg.work_path()
    stages = []
    for st in planned:
        final = st.root / st.fingerprint
        if is_complete(final):
            stages.append(StagePlan(name=st.name, fingerprint=st.fingerprint, path=str(final), status="cached"))
            continue
        stages.append(_explain_miss(st, cfg, fps, files, ctx, durations, work_dir))
    return PipelinePlan(work_dir=str(work_dir), stages=stages)


# ------------------------------------------------------------------------------ a miss, explained

def _explain_miss(st: PlannedStage, cfg: PipelineConfig, fps: dict[str, str], files: list[tuple[str, str]],
                  ctx: Context, durations: dict[str, float], work_dir: Path) -> StagePlan:
    cls = NODES[st.name].stage
    mine = {"config": cls.fingerprint_config(st.config), "version": cls.version,
            "upstream": _planned_upstream(st, cfg, fps), "files": files}
    scored = []
    for path, manifest in _outputs(st.root, cls.name):
        changes = diff(cls.name, manifest, mine)
        scored.append((len(changes), -path.stat().st_mtime, path, manifest, changes))
    scored.sort(key=lambda t: t[:2])  # fewest differences, then the newest
    out = StagePlan(name=st.name, fingerprint=st.fingerprint, path=str(st.root / st.fingerprint), status="runs")
    if not scored:
        out.note = f"nothing built under {st.root} yet"
    else:
        _, _, path, _, changes = scored[0]
        out.nearest, out.changes = path.name, changes
        if not changes:
            out.note = (f"{path.name} records the same config and inputs: the fingerprint also covers what a "
                        "manifest does not record (e.g. the reader of MediaWiki or UTF-16 inputs)")
    partial = st.root / f".{st.fingerprint}.partial"
    if partial.is_dir():
        out.note = "; ".join(filter(None, [out.note, f"resumes the interrupted build in {partial.name}"]))
    timed = None
    for _, _, path, manifest, _ in scored:  # the nearest output whose build time is known
        seconds = build_seconds(path) or durations.get(path.name)
        if seconds is not None:
            timed = (path.name, seconds, work(cls.name, manifest.get("config", {}), _past_context(cls.name, manifest, work_dir)))
            break
    out.estimate = estimate(cls.name, mine["config"], ctx, same_fp_seconds=durations.get(st.fingerprint), nearest=timed,
                            workers=getattr(st.config, "workers", 1))
    return out


def _planned_upstream(st: PlannedStage, cfg: PipelineConfig, fps: dict[str, str]) -> dict[str, str | None]:
    if st.name == "wordpiece":
        vocab = cfg.wordpiece.vocab_file
        return {"vocab_file": hash_file(vocab)} if vocab is not None else {"ingest": fps["ingest"]}
    if st.name == "pretrain":
        return {"shards": fps["shards"], "phase2": fps.get("phase2")}
    return {n: fps[n] for n in st.needs}


def recorded_upstream(kind: str, manifest: dict[str, Any]) -> dict[str, str | None]:
    """A manifest's upstream fingerprints by stage name (ingest records files instead: {})."""
    up = manifest.get("upstream")
    if kind == "wordpiece" and isinstance(up, list) and up:
        return {"vocab_file" if manifest.get("imported") else "ingest": up[0]}
    if isinstance(up, dict):
        return {k: v or None for k, v in up.items()}
    return {}


def diff(kind: str, manifest: dict[str, Any], mine: dict[str, Any]) -> list[Change]:
    """What separates an earlier output (its manifest) from a planned stage (``mine``: config,
    version, upstream by stage name, and for ingest the input files as (path, hash))."""
    changes = []
    if manifest.get("version") != mine["version"]:
        changes.append(Change(kind="version", name="version", old=manifest.get("version"), new=mine["version"]))
    old, new = flatten(manifest.get("config", {})), flatten(mine["config"])
    changes += [Change(kind="config", name=k, old=old.get(k), new=new.get(k))
                for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if kind == "ingest":
        before = [(f["path"], f["content_hash"]) for f in manifest.get("files", [])]
        if [h for _, h in before] != [h for _, h in mine["files"]]:  # the fingerprint hashes contents, in order
            was, now = dict(before), dict(mine["files"])
            changes += [Change(kind="input", name=p, old=was.get(p), new=now.get(p))
                        for p in sorted(was.keys() | now.keys()) if was.get(p) != now.get(p)]
    else:
        up = recorded_upstream(kind, manifest)
        changes += [Change(kind="upstream", name=n, old=up.get(n), new=fp) for n, fp in mine["upstream"].items()
                    if up.get(n) != fp]
    return changes


def _outputs(root: Path, kind: str) -> list[tuple[Path, dict[str, Any]]]:
    """Complete outputs of stage ``kind`` under ``root`` with their manifests."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if not path.name.startswith(".") and path.is_dir() and is_complete(path):
            manifest = read_manifest(path)
            if manifest.get("stage") == kind:
                found.append((path, manifest))
    return found


def _past_context(kind: str, manifest: dict[str, Any], work_dir: Path) -> Context:
    """The work measures of an earlier output, following its upstream manifests in the work dir."""
    def upstream_manifest(stage: str, fp: str | None) -> dict[str, Any]:
        path = work_dir / NODES[stage].root / fp if fp else None
        return read_manifest(path) if path is not None and is_complete(path) else {}

    up = recorded_upstream(kind, manifest)
    if kind == "pretrain":
        shards = upstream_manifest("shards", up.get("shards"))
        return Context(seq_len=shards.get("config", {}).get("max_seq_length"), vocab=shards.get("vocab", {}).get("size"))
    docs = manifest if kind == "ingest" else upstream_manifest("ingest", up.get("ingest"))
    return Context(corpus_bytes=corpus_bytes([f["path"] for f in docs.get("files", [])]))


# ------------------------------------------------------------------------------ rendering

def _show(value: Any) -> str:
    return "unset" if value is None else value if isinstance(value, str) else json.dumps(value)


def _summary(p: PipelinePlan) -> str:
    runs, total = p.running(), p.total_seconds()
    if not runs:
        return f"all {len(p.stages)} stages cached"
    return f"{len(runs)} of {len(p.stages)} stages run ({', '.join(runs)}), about {duration(total)}"


def render_text(p: PipelinePlan, title: str = "plan") -> str:
    """The plan for a terminal: a line per stage, then why and how long for each that runs."""
    width = max(len(s.name) for s in p.stages)
    lines = [f"{title}: {_summary(p)} (work dir {p.work_dir})"]
    for s in p.stages:
        est = f"  ~{duration(s.estimate.seconds)}" if s.estimate and s.status == "runs" else ""
        lines.append(f"  {s.name:<{width}}  {s.status:<6}  {s.fingerprint}{est}")
        if s.status == "runs":
            against = f" (vs {s.nearest})" if s.nearest and s.changes else ""
            lines.append(f"  {'':<{width}}    why:  {s.why()}{against}")
            if s.estimate:
                lines.append(f"  {'':<{width}}    time: {s.estimate.basis}: {s.estimate.detail}")
    return "\n".join(lines)


def render_markdown(p: PipelinePlan, title: str = "Plan") -> str:
    """The plan as a markdown table (the flow's dry-run artifact)."""
    rows = [f"# {title}", "", f"{_summary(p)}; work dir `{p.work_dir}`.", "",
            "| stage | status | fingerprint | why | estimate |", "|---|---|---|---|---|"]
    for s in p.stages:
        why = (s.why() + (f" (vs `{s.nearest}`)" if s.nearest and s.changes else "")).replace("|", "\\|")
        est = f"~{duration(s.estimate.seconds)} ({s.estimate.basis}: {s.estimate.detail})" if s.estimate else ""
        rows.append(f"| {s.name} | **{s.status}** | `{s.fingerprint}` | {why} | {est} |")
    return "\n".join(rows) + "\n"
