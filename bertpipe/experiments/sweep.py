"""Sweeps: named sets of pipeline variants, each trained over several seeds, everything else equal.

A sweep (``bertpipe/experiments/sweeps/<name>.json``, read into ``SweepSpec``) is a base pipeline
preset + overrides and the variants to compare, given as a ``grid`` (dotted keys → values,
all combinations) and/or an explicit ``variants`` list (for rows that change several knobs
at once, like the paper's "LTR & No NSP"). Every variant is trained once per seed
(``pretrain.seed``), so the report can give mean ± std.

Dotted keys address the pipeline config (``pretrain.masking.masked_lm_prob``); keys under
``finetune.`` apply to every downstream task's fine-tuning config (``finetune.pooling``),
so fine-tuning choices sweep over one cached pretraining; in ``overrides`` they apply to
every variant (``"finetune.precision": "bf16"``). The ``sweep`` flow runs the (variant, seed)
runs one after another, or several at once as runs of a ``pretrain`` deployment
(``flows.sweep``).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bertpipe.core.config import ConfigError, validate_config
from bertpipe.core.keys import deep_merge, dotted, unflatten
from bertpipe.core.settings import json_names, named_json
from bertpipe.pipeline.config import PipelineConfig, load_pipeline_config
from bertpipe.tasks.config import FinetuneConfig
from bertpipe.tracking import tags


class Variant(BaseModel):
    """One row of a sweep: a label and the dotted-key changes it makes."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(None, description="row name in reports (default: the changes, k=v)")
    changes: dict[str, Any] = Field(default_factory=dict, description="dotted key → value")

    def name(self) -> str:
        return self.label or ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in self.changes.items()) or "base"


class SweepSpec(BaseModel):
    """A named comparison: base config, variants, seeds."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="what the sweep asks, shown in reports")
    preset: str = Field("tiny", description="pipeline preset all variants start from")
    overrides: dict[str, Any] = Field(default_factory=dict, description="changes shared by every variant")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key → values; all combinations")
    variants: list[Variant] = Field(default_factory=list, description="explicit variants (after the grid's)")
    # Three seeds: enough for a spread, affordable at the tiny preset on 2 cores.
    seeds: list[int] = Field([1, 2, 3], min_length=1, description="pretraining seeds per variant")
    experiment: str = Field("sweep", description="MLflow experiment of the sweep and its runs")
    # A variant that pretrains nothing (an init model as published) differs between seeds only
    # through its fine-tuning: with this, each run fine-tunes with its own seed, so the paired
    # intervals hold the fine-tuning's noise on both sides.
    seeded_finetune: bool = Field(False, description="fine-tune each run with its seed (finetune.seeds = [seed])")
    baseline: str | None = Field(None, description="variant label the report compares every other variant with "
                                                   "(default: the first variant)")
    paper: str = Field("", description="the paper's figures for this comparison (markdown), quoted in reports")

    def expand(self) -> list[Variant]:
        out = [Variant(changes=dict(zip(self.grid, combo, strict=True))) for combo in itertools.product(*self.grid.values())
               if self.grid]
        out += self.variants
        return out or [Variant()]

    @model_validator(mode="after")
    def _baseline_is_a_variant(self) -> SweepSpec:
        names = [v.name() for v in self.expand()]
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a variant of the sweep; variants: {', '.join(names)}")
        return self


def sweep_names() -> list[str]:
    return json_names("sweeps")


def load_sweep(name: str, **changes: Any) -> SweepSpec:
    """Sweep ``name`` (shipped in ``bertpipe/experiments/sweeps/`` or in ``BERTPIPE_SWEEPS``) with
    fields replaced by ``changes`` (None: keep)."""
    spec = validate_config(SweepSpec, json.loads(named_json("sweeps", name)), source=f"sweep {name}")
    return spec.model_copy(update={k: v for k, v in changes.items() if v is not None}) if changes else spec


def variant_overrides(spec: SweepSpec, variant: Variant, seed: int) -> dict[str, Any]:
    """The pipeline overrides of one (variant, seed) run."""
    shared = unflatten({k: v for k, v in spec.overrides.items() if not k.startswith("finetune.")})  # nested or dotted
    out = deep_merge(shared, {"experiment": spec.experiment})
    for key, value in variant.changes.items():
        if not key.startswith("finetune."):
            out = deep_merge(out, dotted(key, value))
    out = deep_merge(out, {"pretrain": {"seed": seed}})
    ft = {k.removeprefix("finetune."): v for k, v in (spec.overrides | variant.changes).items() if k.startswith("finetune.")}
    ft |= {"seeds": [seed]} if spec.seeded_finetune else {}
    if ft:
        tasks = out.get("evaluate")
        if tasks is None:
            tasks = [t.model_dump(mode="json") for t in load_pipeline_config(spec.preset, out).evaluate]
        out["evaluate"] = [deep_merge(t, {"config": deep_merge(t.get("config", {}), unflatten(ft))}) for t in tasks]
    return out


class SweepRun(NamedTuple):
    """One pretraining of a sweep: a variant at a seed, and its validated pipeline config."""

    variant: Variant
    seed: int
    config: PipelineConfig


def validate(spec: SweepSpec, name: str = "custom") -> list[SweepRun]:
    """Every (variant, seed) run's validated config, before anything is trained; an error names the
    sweep, the variant and the key's path."""
    runs = []
    for v in spec.expand():
        source = f"sweep {name}, variant {v.name()!r}"
        ft = {k.removeprefix("finetune."): x for k, x in (spec.overrides | v.changes).items() if k.startswith("finetune.")}
        if ft:  # checked on their own, so that an error names `finetune.<key>`, not one task's copy of it
            validate_config(FinetuneConfig, unflatten(ft), source=source, at="finetune")
        for seed in spec.seeds:
            cfg = load_pipeline_config(spec.preset, variant_overrides(spec, v, seed), source=source)
            if ft and not cfg.evaluate:
                raise ConfigError(f"{source}: changes fine-tuning (`finetune.*`) but the sweep evaluates no task")
            runs.append(SweepRun(v, seed, cfg))
    return runs


def check_parallel(name: str, max_parallel: int, deployment: str | None) -> None:
    """Refuse ``max_parallel`` below 1, or above 1 without a deployment to submit the runs to."""
    if max_parallel < 1 or (max_parallel > 1 and not deployment):
        raise ConfigError(f"sweep {name}: max_parallel={max_parallel} needs a positive value and, above 1, a "
                          "`deployment` to submit the runs to (e.g. 'pretrain/tiny': served by `make run`, or on a work "
                          "pool by `deployments/serve.py --pool`)")


def sweep_tags(name: str) -> dict[str, str]:
    """MLflow tags of a sweep's own run, by which reports find it."""
    return {tags.SWEEP: "true", tags.SWEEP_NAME: name}


def sweep_params(name: str, spec: SweepSpec) -> dict[str, str]:
    """MLflow params of a sweep's own run: what it compares."""
    return {"sweep": name, "preset": spec.preset, "seeds": json.dumps(spec.seeds), "description": spec.description[:500],
            "baseline": spec.baseline or spec.expand()[0].name(),
            "variants": json.dumps([v.model_dump() for v in spec.expand()])[:6000]}


def variant_tags(spec_name: str, variant: Variant, seed: int, order: int | None = None) -> dict[str, str]:
    """MLflow tags that let the report regroup runs: sweep, variant label and changes, seed, and
    the variant's place in the sweep (``order``), by which reports list runs whatever finished first."""
    return {tags.SWEEP_NAME: spec_name, tags.VARIANT: variant.name(),
            tags.VARIANT_CHANGES: json.dumps(variant.changes, sort_keys=True), tags.SEED: str(seed)} | (
        {} if order is None else {tags.VARIANT_ORDER: str(order)})


def _short(v: Any) -> str:
    return "/".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else str(v)
