"""The stage protocol: every stage (ingest, wordpiece, shards, pretrain, finetune) is a
``Stage`` and runs through ``run_stage``, so the CLI, notebooks and the flows get the same
fingerprinted directories, manifests and completion rule.

A stage object is a pydantic config bound to its inputs (files, or upstream stage outputs).
Its fingerprint hashes the stage name and version, the config fields that change the output
(``fingerprint_config``) and the upstream fingerprints or input content hashes
(``upstream``). ``fingerprint_of(cfg, upstream)`` is the same formula as a classmethod, so a
pipeline predicts every stage's name before anything runs and checks the prediction after.

Running is split so that the work can be spread: ``plan`` lists independent, picklable units
(one per input file, per block of documents, or a single one), ``run_unit`` does one unit and
returns a small report, and ``publish`` turns the reports into the manifest in the stage's
temporary directory. ``run_stage`` maps the units with the caller's ``map_units`` (default: a
local process pool when the stage asks for workers, else in order in this process) and
publishes atomically. Units must not depend on each other's results; the reports come back
in plan order, so the output does not depend on how or where the units ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel
from tqdm import tqdm

from bertpipe.core.fingerprint import fingerprint
from bertpipe.core.stagedir import (
    MANIFEST,
    build_lock,
    is_complete,
    publish_latest,
    read_manifest,
    remove_debris,
    stage_dir,
    write_json_atomic,
)
from bertpipe.core.workers import pool_map

C = TypeVar("C", bound=BaseModel)
MapUnits = Callable[[Callable[[Any], Any], Sequence[Any]], Iterable[Any]]
PROTOCOL_KEYS = ("stage", "version", "fingerprint")  # written into every manifest by run_stage


class StageResult(BaseModel):
    """A complete stage output (plain data: JSON-serializable, e.g. as a Prefect task result)."""

    stage: str
    fingerprint: str
    path: Path
    manifest: dict[str, Any]
    cached: bool  # True when an existing complete output was reused

    def summary(self) -> str:
        return f"{self.stage} {'cached' if self.cached else 'built'}: {self.path}"

    def file(self, name: str | Path) -> Path:
        """A path recorded in the manifest, relative to the output (absolute ones as they are)."""
        return self.path / name


class Stage(ABC, Generic[C]):
    """One stage with its config and inputs bound (see the module docstring)."""

    name: ClassVar[str]
    version: ClassVar[int]  # bump when the output format or the algorithm changes

    def __init__(self, cfg: C) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------ naming

    @classmethod
    def fingerprint_config(cls, cfg: C) -> dict[str, Any]:
        """The config fields that change the output (default: all, in JSON form)."""
        return cfg.model_dump(mode="json")

    @classmethod
    def fingerprint_of(cls, cfg: C, upstream: Sequence[str]) -> str:
        return fingerprint(cls.name, cls.version, cls.fingerprint_config(cfg), upstream)

    @abstractmethod
    def upstream(self) -> list[str]:
        """Fingerprints of the upstream outputs, or content hashes of the input files."""

    def fingerprint(self) -> str:
        return self.fingerprint_of(self.cfg, self.upstream())

    # ------------------------------------------------------------------ running

    workers: int = 1  # processes the default map may use for the units
    distributable: ClassVar[bool] = False  # many independent units worth spreading over a cluster

    @abstractmethod
    def plan(self, out: Path) -> Sequence[Any]:
        """Independent units of work, writing (if at all) into ``out``, the temporary output."""

    @abstractmethod
    def run_unit(self, unit: Any) -> Any:
        """Do one unit; return a small picklable report."""

    @abstractmethod
    def publish(self, out: Path, reports: list[Any]) -> dict[str, Any]:
        """Finish the output in ``out`` from the units' reports; return the manifest's content."""

    def work_dir(self, final: Path) -> Path | None:
        """A fixed directory to build in and keep on failure (resumable stages); None: a fresh one."""
        return None

    def exclusive(self) -> bool:
        """Whether concurrent builders of this output wait for one another (``build_lock``); False
        where several processes build it together (one pretraining launched on each node)."""
        return True


def run_stage(stage: Stage, root: str | Path, *, map_units: MapUnits | None = None, progress: bool = False,
              on_unit: Callable[[int, int], None] | None = None) -> StageResult:
    """Run ``stage`` into ``root/<fingerprint>/``, or return the complete output already there
    (also when a concurrent builder of it, in another process or thread, finishes while we wait).

    ``progress`` shows a bar of units done on the terminal; ``on_unit(done, total)`` is called
    as each unit's report comes back (e.g. a Prefect progress artifact)."""
    root, fp = Path(root), stage.fingerprint()
    final = root / fp
    if is_complete(final):
        return StageResult(stage=stage.name, fingerprint=fp, path=final, manifest=read_manifest(final), cached=True)
    with build_lock(final) if stage.exclusive() else nullcontext():  # a concurrent builder finishes first; we reuse it
        if is_complete(final):
            return StageResult(stage=stage.name, fingerprint=fp, path=final, manifest=read_manifest(final), cached=True)
        remove_debris(final)
        with stage_dir(final, work=stage.work_dir(final)) as tmp:
            units = stage.plan(tmp)
            mapper = map_units or (lambda fn, items: pool_map(fn, items, stage.workers))
            reports = []
            for report in tqdm(mapper(stage.run_unit, units), total=len(units), desc=stage.name, unit="unit",
                               disable=not progress or len(units) < 2):
                reports.append(report)
                if on_unit is not None:
                    on_unit(len(reports), len(units))
            manifest = {"stage": stage.name, "version": stage.version, "fingerprint": fp, **stage.publish(tmp, reports)}
            write_json_atomic(tmp / MANIFEST, manifest)
        publish_latest(root, fp)
    return StageResult(stage=stage.name, fingerprint=fp, path=final, manifest=manifest, cached=False)


def expect_fingerprint(result: StageResult, predicted: str) -> StageResult:
    """A runner's check that the output it got is the one it planned (same fingerprint)."""
    if result.fingerprint != predicted:
        raise RuntimeError(f"the {result.stage} stage produced {result.fingerprint} where {predicted} was predicted: "
                           "the plan and the stage disagree on what names this output")
    return result


def in_order(fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[Any]:
    """A ``map_units`` that runs the units one by one in this process."""
    return map(fn, units)
