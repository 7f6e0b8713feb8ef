"""Run a pipeline: every planned stage in order, then fine-tuning on the resulting checkpoints.

``run_pipeline`` is the one loop over stages. Who runs each stage and who records it are the
caller's: ``submit(job, on_metrics)`` runs one ``Job`` and returns its ``StageResult``
(``in_process`` here; the Prefect flow submits a cached task keyed by the fingerprint), and a
``Tracker`` opens a record before each stage and closes it with the result (``NoTracking``
here; ``bertpipe.tracking.MlflowTracker`` gives a parent MLflow run with one child run per
stage). The Prefect flow, ``bertpipe reproduce`` and the benchmarks call this function; the
only thing they add is where stages run and what is recorded.

Before anything runs, the config's other inputs (an imported vocabulary, the tasks' files) are
checked; every stage's output must carry the fingerprint ``plan`` predicted. When the config
lists ``evaluate`` tasks, each kept checkpoint (``evaluate_steps``, then the final one) is
fine-tuned on them by ``evaluate(checkpoint, step)``, by default ``run_finetunes`` through the
same ``submit`` and a nested tracker.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bertpipe.core.config import ConfigError
from bertpipe.core.stage import StageResult
from bertpipe.pipeline.config import PipelineConfig
from bertpipe.pipeline.graph import FinetuneJob, Job, MetricsSink, plan
from bertpipe.tasks.config import EvalTask
from bertpipe.train.stage import checkpoints_at

AnyJob = Job | FinetuneJob
Submit = Callable[[AnyJob, MetricsSink | None], StageResult]
Evaluate = Callable[[str, int], dict[str, dict[str, float]]]  # (checkpoint, step) → each task's metrics


class Tracker(Protocol):
    """Records of one run: a parent record, and one per stage (opened before it runs, closed after)."""

    run_id: str | None

    def start(self, config: dict[str, Any], fingerprints: dict[str, str]) -> None: ...
    def open_stage(self, job: AnyJob) -> Any: ...  # a handle for the stage's record
    def metrics(self, handle: Any) -> MetricsSink | None: ...  # where the stage's training records go
    def close_stage(self, handle: Any, job: AnyJob, result: StageResult) -> None: ...
    def log(self, metrics: dict[str, Any], step: int = 0) -> None: ...
    def finetuning(self, checkpoint: str) -> Tracker: ...  # an unstarted tracker for one checkpoint's fine-tunings
    def finish(self, ok: bool) -> None: ...


class NoTracking:
    """A ``Tracker`` that records nothing (benchmarks, notebooks)."""

    run_id = None

    def start(self, config: dict[str, Any], fingerprints: dict[str, str]) -> None:
        pass

    def open_stage(self, job: AnyJob) -> None:
        return None

    def metrics(self, handle: Any) -> None:
        return None

    def close_stage(self, handle: Any, job: AnyJob, result: StageResult) -> None:
        pass

    def log(self, metrics: dict[str, Any], step: int = 0) -> None:
        pass

    def finetuning(self, checkpoint: str) -> NoTracking:
        return self

    def finish(self, ok: bool) -> None:
        pass


def in_process(*, progress: bool = False, on_metrics: MetricsSink | None = None) -> Submit:
    """A ``submit`` that runs each stage here (its units on the local pool); ``on_metrics`` also
    receives every training record (e.g. a benchmark's own curve)."""
    def submit(job: AnyJob, sink: MetricsSink | None) -> StageResult:
        sinks = [s for s in (sink, on_metrics) if s is not None]
        return job.run(on_metrics=(lambda rec: [s(rec) for s in sinks]) if sinks else None, progress=progress)

    return submit


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # this process and its children (stage worker pools, torchrun)


@dataclass
class PipelineOutcome:
    """What a pipeline run produced: each stage's output, how long it took, the fine-tuning scores by step."""

    run_id: str | None
    stages: dict[str, StageResult]
    timings: dict[str, Timing]
    scores: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)

    def fingerprints(self) -> dict[str, str]:
        return {name: r.fingerprint for name, r in self.stages.items()}

    def model(self) -> Path:
        """The final checkpoint of the pretraining."""
        pre = self.stages["pretrain"]
        return pre.file(pre.manifest["final"])


def run_pipeline(cfg: PipelineConfig, *, submit: Submit | None = None, tracker: Tracker | None = None,
                 evaluate: Evaluate | None = None, until: str | None = None, fresh: Collection[str] = (),
                 log: Callable[[str], None] = lambda _: None) -> PipelineOutcome:
    """Every stage of ``cfg`` in order (built, or reused when complete in its work dir), then its
    ``evaluate`` tasks on the kept checkpoints. ``until``: stop after this stage, with no fine-tuning
    (``shards``: the data only; ``pretrain``: no ``evaluate`` tasks). ``fresh``: stages whose existing output is removed first, so that they run
    (a benchmark times them)."""
    if missing := cfg.missing_inputs():
        raise ConfigError("\n".join(missing))
    submit, tracker = submit or in_process(), tracker or NoTracking()
    stages = plan(cfg)
    if until is not None:
        names = [st.name for st in stages]
        if until not in names:
            raise ValueError(f"until={until!r} is not a stage of this pipeline ({', '.join(names)})")
        stages = stages[: names.index(until) + 1]
    tracker.start(cfg.model_dump(mode="json"), {st.name: st.fingerprint for st in stages})
    done: dict[str, StageResult] = {}
    timings: dict[str, Timing] = {}
    scores: dict[int, dict[str, dict[str, float]]] = {}
    ok = False
    try:
        for st in stages:
            if st.name in fresh:
                for old in (st.path, st.root / f".{st.fingerprint}.partial"):
                    shutil.rmtree(old, ignore_errors=True)
            job = Job(cfg, st, {n: done[n] for n in st.needs})
            handle = tracker.open_stage(job)
            wall, cpu = time.perf_counter(), _cpu_seconds()
            result = submit(job, tracker.metrics(handle))
            timings[st.name] = Timing(time.perf_counter() - wall, _cpu_seconds() - cpu)
            tracker.close_stage(handle, job, result)
            done[st.name] = result
            log(f"{st.name}: {'cached' if result.cached else 'built'} {result.path}")
        if until is not None:  # stopped early: no fine-tuning either
            ok = True
            return PipelineOutcome(tracker.run_id, done, timings)
        model = done["pretrain"]
        tracker.log({f"final_{k}": v for k, v in (model.manifest.get("eval") or {}).items()}
                    | {"parameters": model.manifest["parameters"]})
        if cfg.evaluate:
            root = cfg.work_path() / "finetune"
            evaluate = evaluate or (lambda ckpt, step: run_finetunes(cfg.evaluate, ckpt, root, submit=submit,
                                                                      tracker=tracker.finetuning(ckpt)))
            # earlier checkpoints first, so each score's history in MLflow runs along the steps
            for step, ckpt in checkpoints_at(model, cfg.evaluate_steps):
                scores[step] = evaluate(str(ckpt), step)
                tracker.log({f"{t}_{k}": v for t, m in scores[step].items() for k, v in m.items() if not k.endswith("_std")},
                            step=step)
                log(f"fine-tuned step {step}: {scores[step]}")
        ok = True
        return PipelineOutcome(tracker.run_id, done, timings, scores)
    finally:
        tracker.finish(ok)


def run_finetunes(tasks: list[EvalTask], checkpoint: str | Path, root: str | Path, *, submit: Submit | None = None,
                  tracker: Tracker | None = None) -> dict[str, dict[str, float]]:
    """Fine-tune ``checkpoint`` on every task into ``root/<fingerprint>/``; returns each task's metrics."""
    from bertpipe.tasks.finetune import task_metrics

    submit, tracker = submit or in_process(), tracker or NoTracking()
    jobs = [FinetuneJob.of(t, checkpoint, root) for t in tasks]
    tracker.start({"checkpoint": str(checkpoint)}, {})
    results: dict[str, dict[str, float]] = {}
    ok = False
    try:
        for job in jobs:
            handle = tracker.open_stage(job)
            result = submit(job, tracker.metrics(handle))
            tracker.close_stage(handle, job, result)
            results[job.task.name] = task_metrics(result.manifest)
            tracker.log({f"{job.task.name}_{k}": v for k, v in results[job.task.name].items() if not k.endswith("_std")})
        ok = True
        return results
    finally:
        tracker.finish(ok)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
