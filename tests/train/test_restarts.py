"""Restarts: a worker SIGKILLed in the middle of a two-process run with ``--max-restarts 1``;
the launcher starts torchrun again, the ranks resume from the newest checkpoint, and the run
ends with the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.train.test_multinode import final_weights, finish, pretrain, same

RUN = ["--devices", "2", "--steps", "120", "--checkpoint-every", "40", "--log-every", "1"]


def trained_steps(root: Path) -> int:
    steps = [json.loads(ln).get("step", 0) for m in root.glob(".*.partial/metrics.jsonl")
             for ln in m.read_text().splitlines() if '"split": "train"' in ln]
    return max(steps, default=0)


def rank_pid(root: Path, rank: int) -> int:
    """The worker process of ``rank`` training in ``root`` (its command line names the run; its
    environment, set by torchrun, the rank; the torchrun agent has no RANK)."""
    pids = subprocess.run(["pgrep", "-f", f"bertpipe.train.launcher .*{root}"], capture_output=True, text=True).stdout.split()
    for pid in map(int, pids):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    raise AssertionError(f"no rank {rank} among {pids}")


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_ends_as_if_uninterrupted(static_dir, tmp_path):
    finish(pretrain(static_dir, tmp_path / "reference", *RUN))
    proc = pretrain(static_dir, tmp_path / "killed", *RUN, "--max-restarts", "1")
    deadline = time.monotonic() + 300
    while trained_steps(tmp_path / "killed") < 50 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the kill"
    os.kill(rank_pid(tmp_path / "killed", 1), signal.SIGKILL)
    out = finish(proc)
    assert "restart 1 of 1 resumes from the newest checkpoint" in out, out[-3000:]
    starts = [json.loads(ln)["step"] for p in (tmp_path / "killed").iterdir() if p.is_dir()
              for ln in (p / "metrics.jsonl").read_text().splitlines() if '"event": "start"' in ln]
    assert starts == [0, 40], starts  # trained from 0, killed after step 50, resumed at the step-40 checkpoint
    assert same(final_weights(tmp_path / "killed"), final_weights(tmp_path / "reference"))
