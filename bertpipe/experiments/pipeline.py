"""The whole pretraining pipeline: one pydantic config, loaded from a named preset, and its plan.

``PipelineConfig`` nests one config per stage (ingest, wordpiece, shards, pretrain) plus
where the corpus is and where outputs and tracking go. Presets are JSON files shipped in
``bertpipe/experiments/presets/`` (``tiny``, ``base``, ``large``, ...; add your own folder
with ``BERTPIPE_PRESETS``, see ``bertpipe.core.settings``). ``load_pipeline_config``
deep-merges a preset with overrides and validates the result, so a bad parameter (unknown
preset, negative steps, a masking split not summing to 1, an unreadable corpus path) fails
with a message before any stage runs. Relative paths are resolved against the base
directory (``BERTPIPE_BASE_DIR``, default: the working directory).

``plan(cfg)`` lists the stages in order with the fingerprint each will have, computed from the
config and the corpus bytes alone by the stages' own ``fingerprint_of``; ``build_stage``
binds one of them to its upstream outputs. A runner (the flows, ``bench tiny``) runs each with
``run_stage`` and checks that the fingerprint it gets is the one planned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from bertpipe.core.settings import json_names, named_json, resolve
from bertpipe.core.stage import Stage, StageResult
from bertpipe.data.ingest import IngestConfig, IngestStage, expand_inputs
from bertpipe.data.shards import ShardsConfig, ShardsStage
from bertpipe.data.wordpiece import WordPieceConfig, WordPieceStage
from bertpipe.tasks.config import EvalTask
from bertpipe.train.config import PretrainConfig
from bertpipe.train.stage import PretrainStage


class PipelineConfig(BaseModel):
    """Corpus → WordPiece → shards (phase 1, optionally phase 2) → pretraining."""

    corpus: list[str] = Field(["data/sample"], min_length=1, description="input files, directories or globs")
    work_dir: str = Field("cache", description="root of every stage's fingerprinted outputs")
    experiment: str = Field("pretrain", description="MLflow experiment")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///<base dir>/mlflow.db)")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    wordpiece: WordPieceConfig = Field(default_factory=WordPieceConfig)
    shards: ShardsConfig = Field(default_factory=lambda: ShardsConfig(eval_fraction=0.05))
    phase2: ShardsConfig | None = Field(None, description="shards for phase 2 (length 512), same documents and vocabulary")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    evaluate: list[EvalTask] = Field([], description="downstream tasks fine-tuned on the final checkpoint (finetune subflow)")
    # The paper's Appendix C.1 (MLM vs LTR convergence): the same tasks on earlier checkpoints.
    evaluate_steps: list[int] = Field([], description="also fine-tune the checkpoints at these pretraining steps")

    @model_validator(mode="after")
    def _progress_checkpoints(self) -> PipelineConfig:
        if self.evaluate_steps:
            if not self.evaluate:
                raise ValueError("evaluate_steps needs tasks in 'evaluate'")
            if bad := [s for s in self.evaluate_steps if not 0 < s < self.pretrain.steps]:
                raise ValueError(f"evaluate_steps {bad} must lie between 0 and pretrain.steps ({self.pretrain.steps}), exclusive")
            self.pretrain.keep_steps = sorted(set(self.pretrain.keep_steps) | set(self.evaluate_steps))
        return self

    @field_validator("corpus")
    @classmethod
    def _readable(cls, paths: list[str]) -> list[str]:
        expand_inputs([str(resolve(p)) for p in paths])  # raises InputError naming the missing path
        return paths  # as written (a run form shows the preset's spelling); resolved where the stages run

    def corpus_paths(self) -> list[str]:
        return [str(resolve(p)) for p in self.corpus]

    def work_path(self) -> Path:
        return resolve(self.work_dir)


def preset_names() -> list[str]:
    return json_names("presets")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_pipeline_config(preset: str, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Preset JSON + overrides → validated config (pydantic's ValidationError names the field)."""
    return PipelineConfig.model_validate(deep_merge(json.loads(named_json("presets", preset)), overrides or {}))


def with_overrides(cfg: PipelineConfig, overrides: dict[str, Any] | None) -> PipelineConfig:
    """``cfg`` with ``overrides`` deep-merged into it, validated again."""
    return PipelineConfig.model_validate(deep_merge(cfg.model_dump(mode="json"), overrides)) if overrides else cfg


# ---------------------------------------------------------------------------------- the plan

# Where each stage's outputs go under work_dir (phase-2 shards share the shards root).
ROOTS = {"ingest": "docs", "wordpiece": "tokenizer", "shards": "shards", "phase2": "shards", "pretrain": "pretrain"}


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a pipeline run before it runs: its name, config, inputs and fingerprint."""

    name: str  # ingest, wordpiece, shards, phase2 or pretrain
    config: BaseModel
    needs: tuple[str, ...]  # names of the stages whose outputs it reads
    fingerprint: str
    root: Path  # its output will be root/fingerprint


def plan(cfg: PipelineConfig) -> list[PlannedStage]:
    """Every stage in run order, with the fingerprint it will have (config and corpus bytes only)."""
    ingest = IngestStage(cfg.ingest, cfg.corpus_paths()).fingerprint()
    vocab = WordPieceStage.fingerprint_of(cfg.wordpiece, [ingest])
    phases = {"shards": cfg.shards} | ({"phase2": cfg.phase2} if cfg.phase2 is not None else {})
    shards = {name: ShardsStage.fingerprint_of(sc, [ingest, vocab]) for name, sc in phases.items()}
    pretrain = PretrainStage.fingerprint_of(cfg.pretrain, [shards["shards"], shards.get("phase2", "")], list(phases.values()))
    work = cfg.work_path()
    out = [PlannedStage("ingest", cfg.ingest, (), ingest, work / ROOTS["ingest"]),
           PlannedStage("wordpiece", cfg.wordpiece, ("ingest",), vocab, work / ROOTS["wordpiece"])]
    out += [PlannedStage(name, sc, ("ingest", "wordpiece"), shards[name], work / ROOTS[name]) for name, sc in phases.items()]
    out.append(PlannedStage("pretrain", cfg.pretrain, tuple(phases), pretrain, work / ROOTS["pretrain"]))
    return out


def stage_fingerprints(cfg: PipelineConfig) -> dict[str, str]:
    """Every stage's fingerprint by name, computed from the config and the corpus bytes alone."""
    return {st.name: st.fingerprint for st in plan(cfg)}


_BUILDERS: dict[str, Callable[..., Stage]] = {
    "ingest": lambda cfg, up, **_: IngestStage(cfg.ingest, cfg.corpus_paths()),
    "wordpiece": lambda cfg, up, **_: WordPieceStage(cfg.wordpiece, up["ingest"].path),
    "shards": lambda cfg, up, **_: ShardsStage(cfg.shards, up["ingest"].path, up["wordpiece"].path),
    "phase2": lambda cfg, up, **_: ShardsStage(cfg.phase2, up["ingest"].path, up["wordpiece"].path),
    "pretrain": lambda cfg, up, on_metrics=None: PretrainStage(cfg.pretrain, up["shards"].path,
                                                                up["phase2"].path if "phase2" in up else None,
                                                                on_metrics=on_metrics),
}


def build_stage(cfg: PipelineConfig, name: str, upstream: dict[str, StageResult],
                on_metrics: Callable[[dict[str, Any]], None] | None = None) -> Stage:
    """The stage ``name`` of ``cfg`` bound to its upstream outputs (``on_metrics``: training records)."""
    return _BUILDERS[name](cfg, upstream, on_metrics=on_metrics)
