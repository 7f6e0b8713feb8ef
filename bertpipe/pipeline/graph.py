"""The stage graph, declared once: each stage of a pipeline names its inputs, its root and its config.

``GRAPH`` lists the stages in run order. A ``Node`` names its ``Stage`` class, where its outputs
go under the work dir, which upstream outputs it reads (in the order its ``Stage`` class takes
them) and which part of ``PipelineConfig`` configures it (None: the stage is not in this
pipeline, as phase 2 without ``phase2`` shards). Its fingerprint is the stage's own
``fingerprint_of`` over the upstream fingerprints, and the stage is built as
``Stage(config, *upstream outputs)``; the two stages that read more than that (ingest hashes
the corpus files, pretraining's name depends on the phases' configs) say so in their node.

``plan(cfg)`` predicts every stage's fingerprint from the config and the corpus bytes alone
(the stages' own ``fingerprint_of``), so a runner knows every output's name before anything
runs and checks each prediction after (``Job.run``). A ``Job`` is a planned stage bound to its
upstream outputs: plain, picklable data, which is what a runner hands to whoever runs it (this
process, a Prefect task, a Dask worker). Fine-tuning a checkpoint on a downstream task is a
``FinetuneJob`` of the same shape, one per task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bertpipe.core.settings import resolve
from bertpipe.core.stage import MapUnits, Stage, StageResult, expect_fingerprint, run_stage
from bertpipe.data.ingest import IngestStage
from bertpipe.data.shards import ShardsStage
from bertpipe.data.wordpiece import WordPieceStage
from bertpipe.pipeline.config import PipelineConfig
from bertpipe.tasks.config import EvalTask
from bertpipe.train.stage import PretrainStage

MetricsSink = Callable[[dict[str, Any]], None]


def _phases(c: PipelineConfig) -> list[Any]:
    return [c.shards_config(c.shards)] + ([c.shards_config(c.phase2)] if c.phase2 is not None else [])


@dataclass(frozen=True)
class Node:
    """One stage of the pipeline (see the module docstring)."""

    name: str  # unique in the pipeline: phase-2 shards are "phase2", a ShardsStage like "shards"
    stage: type[Stage]
    root: str  # its outputs go to work_dir/root/<fingerprint>
    inputs: tuple[str, ...]  # upstream stages whose outputs it reads, in the order its Stage takes them
    config: Callable[[PipelineConfig], BaseModel | None]
    # its fingerprint from the config and the upstream fingerprints ("" for an absent optional input);
    # None: the stage's own ``fingerprint_of``
    fingerprint: Callable[[PipelineConfig, Any, list[str]], str] | None = None
    # the Stage bound to its upstream outputs (None for an absent optional input); None: ``stage(config, *outputs)``
    build: Callable[[PipelineConfig, Any, list[Path | None], MetricsSink | None], Stage] | None = None

    def fingerprint_of(self, cfg: PipelineConfig, sc: Any, upstream: list[str]) -> str:
        return self.fingerprint(cfg, sc, upstream) if self.fingerprint else self.stage.fingerprint_of(sc, upstream)

    def bind(self, cfg: PipelineConfig, sc: Any, outputs: list[Path | None], on_metrics: MetricsSink | None) -> Stage:
        return self.build(cfg, sc, outputs, on_metrics) if self.build else self.stage(sc, *outputs)


GRAPH: tuple[Node, ...] = (
    Node("ingest", IngestStage, "docs", (), lambda c: c.ingest,  # reads the corpus files: hashes their contents
         fingerprint=lambda c, sc, up: IngestStage(sc, c.corpus_paths()).fingerprint(),
         build=lambda c, sc, up, on_metrics: IngestStage(sc, c.corpus_paths())),
    Node("wordpiece", WordPieceStage, "tokenizer", ("ingest",), lambda c: c.wordpiece),
    Node("shards", ShardsStage, "shards", ("ingest", "wordpiece"), lambda c: c.shards_config(c.shards)),  # with the mixture
    Node("phase2", ShardsStage, "shards", ("ingest", "wordpiece"), lambda c: c.shards_config(c.phase2)),
    Node("pretrain", PretrainStage, "pretrain", ("shards", "phase2"), lambda c: c.pretrain,
         fingerprint=lambda c, sc, up: PretrainStage.fingerprint_of(sc, up, _phases(c)),  # canonical_pretrain reads the phases
         build=lambda c, sc, up, on_metrics: PretrainStage(sc, *up, on_metrics=on_metrics)),
)
NODES = {n.name: n for n in GRAPH}


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a pipeline run before it runs: its name, config, inputs and fingerprint."""

    name: str  # a Node's name
    config: BaseModel
    needs: tuple[str, ...]  # the upstream stages in this pipeline whose outputs it reads
    fingerprint: str
    root: Path  # its output will be root/fingerprint

    @property
    def path(self) -> Path:
        return self.root / self.fingerprint


def plan(cfg: PipelineConfig) -> list[PlannedStage]:
    """Every stage of ``cfg`` in run order, with the fingerprint it will have (config and corpus bytes only)."""
    fps: dict[str, str] = {}
    out = []
    for node in GRAPH:
        sc = node.config(cfg)
        if sc is None:
            continue
        fps[node.name] = node.fingerprint_of(cfg, sc, [fps.get(i, "") for i in node.inputs])
        out.append(PlannedStage(node.name, sc, tuple(i for i in node.inputs if i in fps), fps[node.name],
                                cfg.work_path() / node.root))
    return out


def stage_fingerprints(cfg: PipelineConfig) -> dict[str, str]:
    """Every stage's fingerprint by name, computed from the config and the corpus bytes alone."""
    return {st.name: st.fingerprint for st in plan(cfg)}


class _Runs:
    """Running a planned stage: shared by pipeline and fine-tuning jobs."""

    planned: PlannedStage

    @property
    def name(self) -> str:
        return self.planned.name

    def stage(self, on_metrics: MetricsSink | None = None) -> Stage:
        raise NotImplementedError

    def run(self, *, on_metrics: MetricsSink | None = None, executor: Callable[[Stage], MapUnits | None] | None = None,
            on_unit: Callable[[int, int], None] | None = None, progress: bool = False) -> StageResult:
        """Run the stage (or reuse its complete output) and check it got the planned fingerprint;
        ``executor(stage)``: where its units run (None: the local pool)."""
        stage = self.stage(on_metrics)
        result = run_stage(stage, self.planned.root, map_units=executor(stage) if executor else None, on_unit=on_unit,
                           progress=progress)
        return expect_fingerprint(result, self.planned.fingerprint)


@dataclass(frozen=True)
class Job(_Runs):
    """A planned pipeline stage bound to its upstream outputs (picklable: built where it runs)."""

    cfg: PipelineConfig
    planned: PlannedStage
    upstream: dict[str, StageResult] = field(default_factory=dict)

    def stage(self, on_metrics: MetricsSink | None = None) -> Stage:
        node = NODES[self.name]
        paths = [self.upstream[i].path if i in self.upstream else None for i in node.inputs]
        return node.bind(self.cfg, self.planned.config, paths, on_metrics)


@dataclass(frozen=True)
class FinetuneJob(_Runs):
    """One downstream task fine-tuned on one checkpoint, planned like a pipeline stage."""

    task: EvalTask
    checkpoint: str
    planned: PlannedStage

    @classmethod
    def of(cls, task: EvalTask, checkpoint: str | Path, root: str | Path) -> FinetuneJob:
        planned = PlannedStage(f"finetune:{task.name}", task.config, (), "", Path(root))
        job = cls(task, str(checkpoint), planned)
        return cls(task, str(checkpoint), replace(planned, fingerprint=job.stage().fingerprint()))

    def stage(self, on_metrics: MetricsSink | None = None) -> Stage:
        from bertpipe.tasks.finetune import FinetuneStage  # imports torch: not needed to plan a pipeline

        return FinetuneStage(self.task.config, self.checkpoint, resolve(self.task.train), resolve(self.task.eval),
                             on_metrics=on_metrics)
