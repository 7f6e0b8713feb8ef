"""Stage 4, pretrain: shards (one or two phases) → a pretrained encoder in ``ROOT/<fingerprint>/``.

The stage protocol (``bertpipe.core.stage``) around the training loop (``bertpipe.train.loop``).
The fingerprint hashes the pretraining config less the fields that do not change the model
(logging and checkpoint cadence, device, ``compile``), the data-parallel process count when
above one, and the shards' fingerprints. ``canonical_pretrain`` writes values equal to what
leaving them unset gives as unset, so two spellings of one run share a name.

Training runs in ``ROOT/.<fingerprint>.partial/``, a fixed directory kept when a run stops or
fails, so running the same stage again resumes from its newest checkpoint. The finished
output holds ``metrics.jsonl``, ``checkpoints/``, ``final/`` (the model), ``plots/`` (loss and
accuracy against steps) and the manifest; it is then renamed to ``ROOT/<fingerprint>/``.
Paths in the manifest are relative to the output. A stopped run (SIGTERM, ``stop_at_step``)
raises ``TrainingInterrupted`` and leaves no complete output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bertpipe.core.stage import Stage, StageResult, run_stage
from bertpipe.core.stagedir import is_complete, read_manifest, resolve_stage_dir
from bertpipe.data.shards import ShardsConfig
from bertpipe.model.bert import BertConfig
from bertpipe.model.init import open_init
from bertpipe.train.config import FREE_FIELDS, PretrainConfig

STAGE = "pretrain"
VERSION = 2  # 2: one sample order per global batch, for any world size (1: per rank and worker)


class TrainingInterrupted(RuntimeError):
    """The run stopped early with a checkpoint (SIGTERM or ``stop_at_step``); run again to resume."""

    def __init__(self, step: int, work: Path) -> None:
        super().__init__(f"pretraining stopped at step {step} with a checkpoint in {work}; run the same stage again to resume")
        self.step, self.work = step, work


def canonical_pretrain(cfg: PretrainConfig, phases: Sequence[ShardsConfig]) -> PretrainConfig:
    """``cfg`` with every explicit value that equals what leaving it unset gives written as unset,
    so the two spellings of one run share a fingerprint: a model override equal to the preset's
    value (``embedding_fusion: "sum"``), or a training ``masking`` equal to the one every dynamic
    shard set already applies, or a preset equal to the init model's architecture. The vocabulary
    size is left alone: its default is the shards'."""
    if cfg.init is not None:
        init = open_init(cfg.init)
        base, preset = init.config, None  # a preset given with an init can only agree with it (else an error)
    else:
        base, preset = BertConfig.from_preset(cfg.preset or "tiny"), cfg.preset
    same = {k: None for k, v in cfg.model if v is not None and k != "vocab_size" and v == getattr(base, k)}
    masking = None if cfg.masking is not None and all(s.dynamic and s.masking == cfg.masking for s in phases) else cfg.masking
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=same), "masking": masking, "preset": preset})


class PretrainStage(Stage[PretrainConfig]):
    """Pretraining as one unit: in this process, or in ``cfg.devices`` processes under torchrun."""

    name, version = STAGE, VERSION

    def __init__(self, cfg: PretrainConfig, shards: str | Path, phase2: str | Path | None = None, *,
                 on_metrics: Callable[[dict[str, Any]], None] | None = None, resume: bool = True,
                 stop_at_step: int | None = None) -> None:
        super().__init__(cfg)
        self.shards = resolve_stage_dir(shards, "shards")
        self.phase2 = resolve_stage_dir(phase2, "shards") if phase2 is not None else None
        self.on_metrics, self.resume, self.stop_at_step = on_metrics, resume, stop_at_step

    @classmethod
    def fingerprint_config(cls, cfg: PretrainConfig) -> dict[str, Any]:
        fields = cfg.model_dump(mode="json", exclude=FREE_FIELDS | {"init"}) | cfg.global_batches()
        if cfg.init is None:
            fields["preset"] = cfg.preset or "tiny"  # unset is tiny: the fingerprints of runs before `init` existed
        else:
            fields["init"] = open_init(cfg.init).digest  # the weights' content, wherever they are
        if cfg.masking is not None:
            fields["masking"] = cfg.masking.fingerprint_fields()
        if not fields["keep_steps"]:
            del fields["keep_steps"]  # runs that keep no extra checkpoints keep their earlier names
        return fields

    @classmethod
    def fingerprint_of(cls, cfg: PretrainConfig, upstream: Sequence[str], phases: Sequence[ShardsConfig] = ()) -> str:
        """``upstream``: the phase-1 and phase-2 shards' fingerprints ("" without phase 2);
        ``phases``: their configs, for ``canonical_pretrain``."""
        return super().fingerprint_of(canonical_pretrain(cfg, phases), upstream)

    def _phase_dirs(self) -> list[Path]:
        return [self.shards] + ([self.phase2] if self.phase2 is not None else [])

    def upstream(self) -> list[str]:
        return [read_manifest(self.shards)["fingerprint"], read_manifest(self.phase2)["fingerprint"] if self.phase2 else ""]

    def fingerprint(self) -> str:
        phases = [ShardsConfig.model_validate(read_manifest(d)["config"]) for d in self._phase_dirs()]
        return self.fingerprint_of(self.cfg, self.upstream(), phases)

    def work_dir(self, final: Path) -> Path:
        work = final.with_name(f".{final.name}.partial")
        if final.is_dir() and not is_complete(final) and not work.exists():
            os.replace(final, work)  # a run directory of an older version, trained in place: resume it here
        return work

    def exclusive(self) -> bool:
        return self.cfg.nnodes == 1  # every node runs this stage into the same output, as one torchrun

    def plan(self, out: Path) -> list[Path]:
        return [out]

    def run_unit(self, out: Path) -> dict[str, Any]:
        if self.cfg.world_size() > 1:
            from bertpipe.train.launcher import torchrun

            res = torchrun(self.cfg, self.shards, self.phase2, out, self.on_metrics, resume=self.resume)
        else:
            from bertpipe.train.loop import pretrain

            res = pretrain(self.shards, self.cfg, out, self.phase2, resume=self.resume, on_metrics=self.on_metrics,
                           stop_at_step=self.stop_at_step)
        if res.interrupted:
            raise TrainingInterrupted(res.step, out)
        return {"step": res.step, "parameters": res.parameters, "init_missing": res.init_missing}

    def publish(self, out: Path, reports: list[dict[str, Any]]) -> dict[str, Any]:
        from bertpipe.train.curves import last_records, plot_training_curves

        (report,) = reports  # the last records come from the log: a resumed run may have trained no step here
        plots = plot_training_curves(out / "metrics.jsonl", out / "plots")
        kept = {str(k): f"checkpoints/step-{k:07d}/model" for k in self.cfg.keep_steps if k <= self.cfg.steps}
        if missing := [p for p in kept.values() if not (out / p).is_dir()]:
            raise FileNotFoundError(f"pretraining kept no checkpoint at {missing}")
        init = None
        if self.cfg.init is not None:
            src = open_init(self.cfg.init)
            init = {"source": self.cfg.init, "path": str(src.path), "digest": src.digest, "kind": src.kind,
                    "left_at_init": report.pop("init_missing", [])}
        return {"config": self.fingerprint_config(self.cfg), "devices": self.cfg.world_size(), "init": init,
                "upstream": {"shards": self.upstream()[0], "phase2": self.upstream()[1] or None},
                "final": "final", "kept": kept, "metrics": "metrics.jsonl", "plots": [str(p.relative_to(out)) for p in plots],
                **report, **last_records(out / "metrics.jsonl")}


def checkpoints_at(result: StageResult, steps: Sequence[int]) -> list[tuple[int, Path]]:
    """(step, model directory) for each of ``steps`` and the final step, in order; a step the
    run did not keep is an error naming it."""
    kept = result.manifest.get("kept", {})
    if missing := [s for s in steps if str(s) not in kept]:
        raise FileNotFoundError(f"the pretraining in {result.path} kept no checkpoint at steps {missing}")
    return [(s, result.file(kept[str(s)])) for s in sorted(steps)] + [(result.manifest["step"], result.file(result.manifest["final"]))]


def pretrain_stage(shards: str | Path, cfg: PretrainConfig, out_root: str | Path, *, phase2: str | Path | None = None,
                   **options: Any) -> StageResult:
    """Pretrain into ``out_root/<fingerprint>/`` (resuming an interrupted run, or reusing a finished one)."""
    return run_stage(PretrainStage(cfg, shards, phase2, **options), out_root)
