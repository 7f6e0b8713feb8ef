"""The whole pretraining pipeline's parameters: one pydantic model, loaded from a named preset.

``PipelineConfig`` nests one config per stage (ingest, wordpiece, shards, pretrain) plus
where the corpus is and where outputs and tracking go. Presets are JSON files in
``deployments/presets/`` (``tiny``, ``base``, ``large``, ...); ``load_pipeline_config`` deep-merges
a preset with overrides and validates the result, so a bad parameter (unknown preset,
negative steps, a masking split not summing to 1, an unreadable corpus path) fails with a
message before any stage runs. Relative paths are resolved against the project folder, so
deployments behave the same whatever directory the worker runs in.

Fingerprints of every stage are computable up front from the config alone
(``stage_fingerprints``): the flow uses them as Prefect cache keys and MLflow tags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from bertpipe import cache
from bertpipe.finetune import EvalTask
from bertpipe.ingest import IngestConfig, expand_inputs, ingest_fingerprint
from bertpipe.pretrain_config import FREE_FIELDS as _FREE_FIELDS
from bertpipe.pretrain_config import PretrainConfig
from bertpipe.shards import ShardsConfig, shards_fingerprint
from bertpipe.wordpiece import WordPieceConfig, wordpiece_fingerprint

PROJECT = Path(__file__).resolve().parents[1]
PRESETS = PROJECT / "deployments" / "presets"
PRETRAIN_STAGE_VERSION = 1


class PipelineConfig(BaseModel):
    """Corpus → WordPiece → shards (phase 1, optionally phase 2) → pretraining."""

    corpus: list[str] = Field(["data/sample"], min_length=1, description="input files, directories or globs")
    work_dir: str = Field("cache", description="root of every stage's fingerprinted outputs")
    experiment: str = Field("pretrain", description="MLflow experiment")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///<project>/mlflow.db)")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    wordpiece: WordPieceConfig = Field(default_factory=WordPieceConfig)
    shards: ShardsConfig = Field(default_factory=lambda: ShardsConfig(eval_fraction=0.05))
    phase2: ShardsConfig | None = Field(None, description="shards for phase 2 (length 512), same documents and vocabulary")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    # >1 launches `torchrun --nproc_per_node N` (one process per GPU; gloo processes on CPU).
    devices: int = Field(1, ge=1, description="data-parallel training processes")
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
        resolved = [str(resolve(p)) for p in paths]
        expand_inputs(resolved)  # raises InputError naming the missing path
        return resolved

    def work_path(self) -> Path:
        return resolve(self.work_dir)


def resolve(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT / p


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.json"))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_pipeline_config(preset: str, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Preset JSON + overrides → validated config (pydantic's ValidationError names the field)."""
    path = PRESETS / f"{preset}.json"
    if not path.is_file():
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(preset_names())}")
    return PipelineConfig.model_validate(deep_merge(json.loads(path.read_text()), overrides or {}))


def pretrain_fingerprint(shards_fp: str, phase2_fp: str | None, cfg: PretrainConfig, devices: int = 1) -> str:
    # the number of processes multiplies the global batch, so it names a different run
    fields = cfg.model_dump(mode="json", exclude=_FREE_FIELDS) | ({"devices": devices} if devices > 1 else {})
    if not fields["keep_steps"]:
        del fields["keep_steps"]  # runs that keep no extra checkpoints keep their earlier names
    return cache.fingerprint("pretrain", PRETRAIN_STAGE_VERSION, fields, [shards_fp, phase2_fp or ""])


def canonical_pretrain(cfg: PipelineConfig) -> PretrainConfig:
    """``cfg.pretrain`` with every explicit value that equals what leaving it unset gives
    written as unset, so the two spellings of one run share a fingerprint and a cache entry:
    a model override equal to the preset's value (``embedding_fusion: "sum"``), or a training
    ``masking`` equal to the one every dynamic shard set already applies. The vocabulary size
    is left alone: its default is the shards' and is only known once they exist."""
    from bertpipe.model import BertConfig  # imports torch: only when a fingerprint is wanted

    p = cfg.pretrain
    preset = BertConfig.from_preset(p.preset)
    same = {k: None for k, v in p.model if v is not None and k != "vocab_size" and v == getattr(preset, k)}
    phases = [cfg.shards] + ([cfg.phase2] if cfg.phase2 is not None else [])
    masking = None if p.masking is not None and all(s.dynamic and s.masking == p.masking for s in phases) else p.masking
    return p.model_copy(update={"model": p.model.model_copy(update=same), "masking": masking})


def stage_fingerprints(cfg: PipelineConfig) -> dict[str, str]:
    """Every stage's fingerprint, computed from the config and the corpus bytes alone."""
    fps = {"ingest": ingest_fingerprint(cfg.corpus, cfg.ingest)}
    fps["wordpiece"] = wordpiece_fingerprint(fps["ingest"], cfg.wordpiece)
    fps["shards"] = shards_fingerprint(fps["ingest"], fps["wordpiece"], cfg.shards)
    if cfg.phase2 is not None:
        fps["phase2"] = shards_fingerprint(fps["ingest"], fps["wordpiece"], cfg.phase2)
    fps["pretrain"] = pretrain_fingerprint(fps["shards"], fps.get("phase2"), canonical_pretrain(cfg), cfg.devices)
    return fps
