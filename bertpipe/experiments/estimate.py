"""How long a stage will take, from what earlier builds took (for ``bertpipe plan``).

Three sources, best first, and the estimate says which it used:

- ``recorded``: this very fingerprint was built before, elsewhere (another work dir, a deleted
  cache) and MLflow holds the stage run that built it: its duration.
- ``comparable``: the nearest earlier output of the stage (the one ``bertpipe plan`` explains
  the miss against) whose build time is known, from the ``_COMPLETE`` marker
  (``build_seconds``) or else from the MLflow run that built it, scaled by the ratio of work.
- ``throughput``: nothing of this stage was built here yet: the work divided by the rates
  measured on the reference machine (a 2-core CPU, ``REFERENCE_RATES``); on other hardware
  this is only an order of magnitude, and the first real build replaces it.

Work is a rough, comparable size, not a cost model: input bytes for ingest and WordPiece,
input bytes x ``dupe_factor`` for shards, and 6 x parameters x tokens (the FLOPs of a
training step, forward and backward) for pretraining. Trade-off: scaling by it ignores fixed
costs (process start, a tiny run's evaluation and export), so a 4-step run scaled to 6,000
steps overestimates, and it ignores the hardware a run had: a GPU run scaled onto a CPU
plan underestimates. Durations from MLflow include the run's own logging and model
registration, so the marker's figure is preferred when both exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from bertpipe.model.bert import BertConfig

Basis = Literal["recorded", "comparable", "throughput", "none"]

# Measured on the reference machine (2 cores of an AMD EPYC): ingest 12.9 MB/s per worker (100 MB of
# JSONL, README "Measured here"); WordPiece 0.41 MB/s and shards 2.5 MB/s x dupe_factor per worker
# (the bundled data/sample, 1.16 MB of input files, one worker, tiny preset); pretraining 6 x
# parameters x tokens at ~3e11 FLOP/s (the tiny preset: 24.6M tokens x 0.9M parameters in ~8 min
# with bf16; bench train: 8.3k tokens/s at 11M parameters).
REFERENCE_RATES = {"ingest": 12.9e6, "wordpiece": 0.41e6, "shards": 2.5e6, "pretrain": 3e11}
# Fixed seconds before the work starts, on the same machine: ingest's process pool and readers
# (0.89 s for data/sample, of which 0.09 s is bytes at the rate above), a pretraining's model
# set-up, final evaluation, checkpoint and plots (a 4-step run of a 36-wide model: 4.0 s).
REFERENCE_START = {"ingest": 0.8, "pretrain": 4.0}
UNITS = {"ingest": "input bytes", "wordpiece": "input bytes", "shards": "input bytes x dupe_factor",
         "pretrain": "training FLOPs"}
PARALLEL = {"ingest", "shards"}  # stages whose units spread over `workers` processes


class Estimate(BaseModel):
    """A stage's expected wall time and where the figure comes from."""

    seconds: float | None
    basis: Basis
    detail: str


@dataclass(frozen=True)
class Context:
    """What a stage's work is measured by, for a planned stage or an earlier output."""

    corpus_bytes: int | None = None
    seq_len: int | None = None
    vocab: int | None = None


def params_estimate(pretrain: dict[str, Any], vocab: int | None) -> float:
    """Weights of the encoder with its tied embeddings, from a (fingerprinted) pretraining config."""
    base = BertConfig.from_preset(pretrain.get("preset", "tiny"))
    over = {k: v for k, v in (pretrain.get("model") or {}).items() if v is not None}
    h = over.get("hidden_size", base.hidden_size)
    layers = over.get("num_hidden_layers", base.num_hidden_layers)
    inter = over.get("intermediate_size", base.intermediate_size)
    v = over.get("vocab_size") or vocab or base.vocab_size
    return v * h + layers * (4 * h * h + 2 * h * inter)


def work(kind: str, config: dict[str, Any], ctx: Context) -> float | None:
    """The stage's work in ``UNITS[kind]`` (None when the context lacks what it needs)."""
    if kind in ("ingest", "wordpiece"):
        return ctx.corpus_bytes
    if kind == "shards":
        return ctx.corpus_bytes * config.get("dupe_factor", 1) if ctx.corpus_bytes else None
    if kind == "pretrain":
        if ctx.seq_len is None:
            return None
        rows = config.get("global_batch") or (  # earlier fingerprints named the split of the batch
            config.get("batch_size", 1) * config.get("grad_accum", 1) * config.get("devices", 1))
        tokens = config.get("steps", 0) * rows * ctx.seq_len
        return 6.0 * params_estimate(config, ctx.vocab) * tokens
    return None


def estimate(kind: str, config: dict[str, Any], ctx: Context, *, same_fp_seconds: float | None,
             nearest: tuple[str, float, float | None] | None, workers: int = 1) -> Estimate:
    """``same_fp_seconds``: a recorded build of this fingerprint; ``nearest``: (fingerprint,
    seconds, work) of the nearest earlier output with a known build time."""
    if same_fp_seconds is not None:
        return Estimate(seconds=same_fp_seconds, basis="recorded", detail="this fingerprint was built before (MLflow)")
    mine = work(kind, config, ctx)
    if nearest is not None:
        fp, seconds, theirs = nearest
        if mine and theirs:
            return Estimate(seconds=seconds * mine / theirs, basis="comparable",
                            detail=f"{fp} took {duration(seconds)}, scaled x{mine / theirs:.3g} by {UNITS[kind]}")
        return Estimate(seconds=seconds, basis="comparable", detail=f"{fp} took {duration(seconds)} (unscaled)")
    if mine is None or kind not in REFERENCE_RATES:
        return Estimate(seconds=None, basis="none", detail="no earlier build and no size to go by")
    procs = min(workers, os.cpu_count() or 1) if kind in PARALLEL else 1
    return Estimate(seconds=REFERENCE_START.get(kind, 0.0) + mine / (REFERENCE_RATES[kind] * procs), basis="throughput",
                    detail=f"no earlier build: {UNITS[kind]} at the reference 2-core CPU's rate")


def mlflow_durations(tracking_uri: str | None) -> dict[str, float]:
    """Seconds each stage build took by fingerprint (newest build), from the MLflow stage runs
    that built rather than reused an output; {} when there is no store (it is never created)."""
    if not tracking_uri:
        return {}
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return {}
    from bertpipe.tracking import client_for, tags

    try:
        client = client_for(tracking_uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(exps, f"tags.`{tags.CACHE_HIT}` = 'false' and attributes.status = 'FINISHED'",
                                  max_results=5000, order_by=["attributes.start_time ASC"]) if exps else []
    except Exception:  # an unreachable or foreign store: estimates come from the disk alone
        return {}
    return {r.data.tags[tags.FINGERPRINT]: (r.info.end_time - r.info.start_time) / 1000 for r in runs
            if tags.FINGERPRINT in r.data.tags and r.info.end_time}


def corpus_bytes(files: list[str]) -> int | None:
    """Total size of the input files that still exist (None when none does)."""
    sizes = [os.path.getsize(f) for f in files if os.path.isfile(f)]
    return sum(sizes) if sizes else None


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 14 min``."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
