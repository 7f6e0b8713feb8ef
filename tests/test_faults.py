"""Fault injection: kill each stage's command at a random point, run it again, and compare.

For ingest, shards, pretraining and fine-tuning, the real ``bertpipe`` command runs once
uninterrupted (the reference) and then, per trial, is killed with SIGKILL or SIGTERM after a
seeded random share of the reference's wall time, then run again to completion. Every trial
must end with the same output as the reference (data files, model weights and manifests
byte for byte, paths and timings aside), no process of the killed command left alive after
5 seconds, and no temporary directory left beside the output. Two trials per stage (one of
each signal) run in the test suite; ``BERTPIPE_FAULT_TRIALS=20 pytest tests/test_faults.py``
runs more (the README says so), and ``-s`` prints the tally of kills that landed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import FIXTURES

TRIALS = int(os.environ.get("BERTPIPE_FAULT_TRIALS", "2"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
TINY = ["--hidden-size", "36", "--num-attention-heads", "3", "--num-hidden-layers", "2", "--intermediate-size", "72"]
COMPARED = (".parquet", ".safetensors", "vocab.txt", "tokenizer.json", ".json")  # not .pt, plots or metrics.jsonl
# per_seed holds train_seconds too; mfu and peak_tflops are timings of the pretraining's last train record
TIMINGS = {"train_seconds", "train_seconds_std", "tokens_per_s", "mfu", "peak_tflops", "per_seed"}


def bertpipe(*args: object) -> list[str]:
    return [sys.executable, "-m", "bertpipe.cli.main", *map(str, args)]


def normalized(path: Path, root: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix != ".json":
        return data

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in TIMINGS}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return json.dumps(strip(json.loads(data)), sort_keys=True).replace(str(root), "ROOT").encode()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every compared file under the stage root's complete outputs, normalized."""
    return {str(p.relative_to(root)): normalized(p, root) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name.endswith(COMPARED) and not any(part.startswith(".") for part in p.relative_to(root).parts)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Documents, a vocabulary, shards and a checkpoint, built once by the commands themselves."""
    from benchmarks.wikidump import write_jsonl

    base = tmp_path_factory.mktemp("fault-inputs")
    write_jsonl(base / "corpus.jsonl", 10 << 20)  # 10 MB of real prose: three units of ingest, a second or two of work
    steps = [bertpipe("ingest", base / "corpus.jsonl", "--out", base / "docs", "--workers", "1"),
             bertpipe("wordpiece", base / "docs", "--out", base / "tok", "--vocab-size", "900"),
             bertpipe("shards", base / "docs", "--tokenizer", base / "tok", "--out", base / "shards", "--dupe-factor", "2",
                      "--max-seq-length", "64", "--workers", "1", "--block-chars", "20000"),
             bertpipe("pretrain", base / "shards", "--out", base / "pre", "--steps", "3", "--batch-size", "8",
                      "--eval-every", "0", *TINY)]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    return base


def commands(base: Path, out: Path) -> dict[str, list[str]]:
    final = next((base / "pre").glob("*/final"))
    task = FIXTURES / "tasks" / "finefoods.tsv"
    return {
        "ingest": bertpipe("ingest", base / "corpus.jsonl", "--out", out, "--workers", "2"),
        "shards": bertpipe("shards", base / "docs", "--tokenizer", base / "tok", "--out", out, "--dupe-factor", "3",
                           "--max-seq-length", "64", "--workers", "2", "--block-chars", "20000"),
        "pretrain": bertpipe("pretrain", base / "shards", "--out", out, "--steps", "40", "--checkpoint-every", "4",
                             "--batch-size", "8", "--eval-every", "20", "--eval-batches", "2", "--log-every", "4", *TINY),
        "finetune": bertpipe("finetune", "classify", "--checkpoint", final, "--train", task, "--eval", task, "--out", out,
                             "--epochs", "2", "--batch-size", "4", "--max-seq-length", "32", "--seeds", "0", "1"),
    }


def working(out: Path) -> bool:
    """The stage has begun writing: its temporary (or resumable) directory exists."""
    return out.is_dir() and any(".tmp-" in p.name or p.name.endswith(".partial") for p in out.iterdir())


def run(cmd: list[str], out: Path) -> float:
    """Run to completion; the seconds during which the stage was writing its output (its
    temporary directory existed), 0 when that was too short to see."""
    began = ended = None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    while proc.poll() is None:
        now, busy = time.perf_counter(), working(out)
        if busy and began is None:
            began = now
        if not busy and began is not None and ended is None:
            ended = now
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    return 0.0 if began is None else (ended or time.perf_counter()) - began


@pytest.mark.parametrize("stage", ["ingest", "shards", "pretrain", "finetune"])
def test_a_killed_stage_reruns_to_the_same_output_with_no_orphans_or_debris(inputs, tmp_path, stage):
    rng = random.Random(f"{stage}-faults")
    reference = tmp_path / "reference"
    writing_s = run(commands(inputs, reference)[stage], reference)
    expected = snapshot(reference)
    assert expected and writing_s > 0
    landed = mid_work = trial = 0
    # Each kill falls at a seeded share of the reference's writing window after this run's own
    # window opens. A machine whose speed varies can still let a kill miss the window; up to
    # three extra trials make sure at least one lands while the stage writes.
    while trial < TRIALS or (mid_work == 0 and trial < TRIALS + 3):
        sig = (signal.SIGKILL, signal.SIGTERM)[trial % 2]
        out = tmp_path / f"trial-{trial}"
        proc = subprocess.Popen(commands(inputs, out)[stage], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        deadline = time.time() + 120
        while proc.poll() is None and not working(out) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.8) * writing_s)  # a random point of the stage's own work
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)] if proc.poll() is None else []
        if family:
            writing = working(out)
            proc.send_signal(sig)
            landed, mid_work = landed + 1, mid_work + writing
        proc.wait(60)
        _, alive = psutil.wait_procs(family, timeout=5)
        assert alive == [], f"{stage}, {sig.name}: left running {alive}"
        run(commands(inputs, out)[stage], out)  # the same command again, to completion
        assert snapshot(out) == expected or _diff(snapshot(out), expected)
        assert [p.name for p in out.iterdir() if ".tmp-" in p.name or p.name.endswith(".partial")] == []
        trial += 1
    assert mid_work >= min(1, TRIALS), f"{stage}: no kill landed while the stage was writing its output"
    print(f"{stage}: {landed} of {trial} kills landed before the command ended, {mid_work} while it was writing its "
          "output; every rerun matched the uninterrupted output")


def _diff(got: dict[str, bytes], want: dict[str, bytes]) -> bool:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    raise AssertionError(f"after the rerun: missing {missing}, extra {extra}, different {changed}")
