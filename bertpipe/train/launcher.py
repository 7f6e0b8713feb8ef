"""Data-parallel pretraining under torchrun: the launcher and the module each process runs.

``torchrun(...)`` starts ``torchrun --standalone --nproc_per_node N -m bertpipe.train.launcher``
on the run directory (NCCL on GPUs, gloo processes on CPU) and, when it has finished,
forwards every record of ``metrics.jsonl`` to ``on_metrics`` (MLflow gets the curves after the
run, not live: the ranks live in other processes). ``python -m bertpipe.train.launcher
SHARDS --run-dir DIR --config CFG.json`` is what each rank runs; it trains in ``DIR`` with
``bertpipe.train.loop.pretrain`` and exits with 143 when stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertpipe.model.init import open_init
from bertpipe.train.config import PretrainConfig
from bertpipe.train.loop import PretrainResult, pretrain

log = logging.getLogger(__name__)


def torchrun(cfg: PretrainConfig, shards: Path, phase2: Path | None, run_dir: Path,
             on_metrics: Callable[[dict[str, Any]], None] | None = None, resume: bool = True) -> PretrainResult:
    """Train in ``cfg.devices`` processes; returns what rank 0 logged."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "pretrain-config.json"
    if cfg.init is not None:  # every rank reads the same local copy (a registered model is downloaded once, here)
        cfg = cfg.model_copy(update={"init": str(open_init(cfg.init).path)})
    config.write_text(cfg.model_dump_json(indent=2))
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", str(cfg.devices),
           "-m", "bertpipe.train.launcher", str(shards), "--run-dir", str(run_dir), "--config", str(config)]
    cmd += ["--phase2-shards", str(phase2)] if phase2 is not None else []
    cmd += [] if resume else ["--no-resume"]
    log.info("launching %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 143):
        raise RuntimeError(f"torchrun exited with {done.returncode}:\n{done.stderr[-4000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    for rec in records if on_metrics else []:
        on_metrics(rec)
    start = next(r for r in reversed(records) if r.get("event") == "start")
    last = {split: next((r for r in reversed(records) if r.get("split") == split), None) for split in ("train", "eval")}
    step = (last["train"] or {}).get("step", 0)
    return PretrainResult(run_dir, step, final_dir=run_dir / "final" if step >= cfg.steps else None,
                          interrupted=done.returncode == 143, train=last["train"], eval=last["eval"],
                          parameters=start["parameters"], init_missing=(start.get("init") or {}).get("left_at_init", []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bertpipe.train.launcher", description="one rank of a pretraining run")
    p.add_argument("shards", help="shards stage directory")
    p.add_argument("--run-dir", required=True, help="run directory: metrics.jsonl, checkpoints/, final/")
    p.add_argument("--config", required=True, help="PretrainConfig as JSON")
    p.add_argument("--phase2-shards", help="shards for phase 2")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue from checkpoints in the run directory")
    a = p.parse_args(argv)
    cfg = PretrainConfig.model_validate_json(Path(a.config).read_text())
    logging.basicConfig(level=logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING,
                        format="%(asctime)s %(message)s")
    res = pretrain(a.shards, cfg, a.run_dir, a.phase2_shards, resume=not a.no_resume)
    return 143 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
