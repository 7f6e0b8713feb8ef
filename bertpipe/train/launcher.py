"""Data-parallel pretraining under torchrun: the launcher and the module each process runs.

``torchrun(...)`` starts ``torchrun --standalone --nproc_per_node N -m bertpipe.train.launcher``
on the run directory (NCCL on GPUs, gloo processes on CPU) and, while it runs, follows rank
0's ``metrics.jsonl`` and forwards each record to ``on_metrics`` as it is written (every half
second, whole lines only), so MLflow and the Prefect progress show the curves live although
the ranks are other processes. ``python -m bertpipe.train.launcher
SHARDS --run-dir DIR --config CFG.json`` is what each rank runs; it trains in ``DIR`` with
``bertpipe.train.loop.pretrain`` and exits with 143 when stopped by SIGTERM.

Restarts (``max_restarts``): when torchrun fails (a worker died: SIGKILL, out of memory, a lost
node), the launcher starts torchrun again, up to ``max_restarts`` times, and the ranks resume
from the newest checkpoint; each attempt has its own rendezvous id. This is a restart of the
whole torchrun rather than torchrun's own ``--max-restarts``, whose restarted gloo group hung
in its process-group set-up on torch 2.13 CPU; a fresh torchrun costs its start-up (seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertpipe.model.init import open_init
from bertpipe.train.config import PretrainConfig
from bertpipe.train.loop import PretrainResult, pretrain

log = logging.getLogger(__name__)


class FollowerNode(RuntimeError):
    """This node's processes finished their share of a multi-node run; the node of rank 0 publishes it."""


def torchrun_command(cfg: PretrainConfig, attempt: int = 0) -> list[str]:
    """torchrun's launch flags: one machine (``--standalone``), or one node of several joining a
    c10d rendezvous (a static one with ``node_rank``)."""
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", str(cfg.devices)]
    if cfg.nnodes == 1 and cfg.rdzv_endpoint is None:
        return [*cmd, "--standalone"]
    rdzv_id = cfg.rdzv_id if attempt == 0 else f"{cfg.rdzv_id}-restart{attempt}"  # every node counts its restarts alike
    cmd += ["--nnodes", str(cfg.nnodes), "--rdzv-endpoint", str(cfg.rdzv_endpoint), "--rdzv-id", rdzv_id]
    if cfg.node_rank is not None:
        return [*cmd, "--rdzv-backend", "static", "--node-rank", str(cfg.node_rank)]
    return [*cmd, "--rdzv-backend", "c10d", "--rdzv-conf", f"join_timeout={cfg.rdzv_timeout}"]


def torchrun(cfg: PretrainConfig, shards: Path, phase2: Path | None, run_dir: Path,
             on_metrics: Callable[[dict[str, Any]], None] | None = None, resume: bool = True) -> PretrainResult:
    """Train in ``cfg.devices`` processes on each of ``cfg.nnodes`` machines; returns what rank 0
    logged. On a node without rank 0, ``FollowerNode`` once its processes are done."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "pretrain-config.json"
    if cfg.init is not None:  # every rank reads the same local copy (a registered model is downloaded once, here)
        cfg = cfg.model_copy(update={"init": str(open_init(cfg.init).path)})
    config.write_text(cfg.model_dump_json(indent=2))
    launch = uuid.uuid4().hex  # rank 0 writes it into the run directory: the node that launched it publishes
    args = ["-m", "bertpipe.train.launcher", str(shards), "--run-dir", str(run_dir), "--config", str(config)]
    args += ["--phase2-shards", str(phase2)] if phase2 is not None else []
    follow = _Follower(run_dir / "metrics.jsonl")
    for attempt in range(cfg.max_restarts + 1):
        cmd = [*torchrun_command(cfg, attempt), *args, *([] if resume or attempt else ["--no-resume"])]
        log.info("launching %s", " ".join(cmd))
        code, output = _run(cmd, follow, on_metrics, os.environ | {LAUNCH: launch})
        if code in (0, 143):
            break
        if attempt == cfg.max_restarts:
            raise RuntimeError(f"torchrun exited with {code}" + (f" after {attempt} restarts" if attempt else "")
                               + f": {_errors(output)}\n... the end of its output:\n{output[-4000:]}")
        log.warning("torchrun exited with %d (a worker failed: %s); restart %d of %d resumes from the newest checkpoint",
                    code, _errors(output), attempt + 1, cfg.max_restarts)
    try:  # gone: the node running rank 0 already published (renamed) the run directory
        lead = (run_dir / LEAD).read_text()
    except FileNotFoundError:
        lead = None
    if cfg.nnodes > 1 and lead != launch:
        raise FollowerNode(f"this node's {cfg.devices} process(es) finished; the node running rank 0 publishes the output")
    records = follow.records
    start = next(r for r in reversed(records) if r.get("event") == "start")
    last = {split: next((r for r in reversed(records) if r.get("split") == split), None) for split in ("train", "eval")}
    step = (last["train"] or {}).get("step", 0)
    return PretrainResult(run_dir, step, final_dir=run_dir / "final" if step >= cfg.steps else None,
                          interrupted=code == 143, train=last["train"], eval=last["eval"],
                          parameters=start["parameters"], init_missing=(start.get("init") or {}).get("left_at_init", []))


def _run(cmd: list[str], follow: _Follower, on_metrics, env: dict[str, str]) -> tuple[int, str]:
    """Run torchrun to its end, forwarding records as they come; its exit code and output's tail."""
    with tempfile.TemporaryFile("w+") as output:
        proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            while proc.poll() is None:
                follow.forward(on_metrics)
                time.sleep(0.5)
        finally:
            if proc.poll() is None:  # this process was interrupted: stop the ranks too
                proc.terminate()
                proc.wait(60)
        follow.forward(on_metrics)
        output.seek(0)
        return proc.returncode, output.read()


def _errors(output: str) -> str:
    """The ranks' exception lines (``[rank1]: ValueError: ...``), once each: what failed, however
    long the tracebacks and warnings around them."""
    lines = [ln.strip() for ln in output.splitlines() if re.match(r"(\[rank\d+\]: )?[\w.]*(Error|Exception|Interrupt): ", ln.strip())]
    return "\n".join(dict.fromkeys(lines[-10:])) or "(no exception line in its output)"


LAUNCH = "BERTPIPE_LAUNCH_ID"  # set for torchrun by the launching process
LEAD = ".rank0-launch"  # in the run directory: the launch id of the node running rank 0


class _Follower:
    """The records appended to a JSONL file, read as they come (a partial last line waits).

    Lines already in the file at the start (a resumed run's history) are not news; a resumed
    run rewrites the file (atomically: a new inode) keeping its history, and reading starts
    over in the new file, skipping the lines seen."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.inode, self.records = path, 0, None, list[dict[str, Any]]()
        self.seen = set(path.read_bytes().splitlines()) if path.exists() else set()

    def forward(self, on_metrics: Callable[[dict[str, Any]], None] | None) -> None:
        try:
            with open(self.path, "rb") as f:
                if (inode := os.fstat(f.fileno()).st_ino) != self.inode:
                    self.inode, self.offset = inode, 0
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            if line and line not in self.seen:
                self.seen.add(line)
                self.records.append(rec := json.loads(line))
                if on_metrics is not None:
                    on_metrics(rec)


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
    if os.environ.get("RANK") == "0":  # which node's launcher publishes the run
        (Path(a.run_dir) / LEAD).write_text(os.environ.get(LAUNCH, ""))
    res = pretrain(a.shards, cfg, a.run_dir, a.phase2_shards, resume=not a.no_resume)
    return 143 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
