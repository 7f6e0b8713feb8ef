"""Several machines on one host: two launcher processes join as two nodes of one gloo process
each (c10d rendezvous on a free port) and end with the weights of one machine running two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.services import free_port
from bertpipe.core.stagedir import is_complete
from bertpipe.model import hf
from tests.train.conftest import TINY_FLAGS

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FLAGS = ["--steps", "30", "--log-every", "1", "--eval-every", "0", "--checkpoint-every", "10", "--batch-size", "8",
         "--optimizer", "adamw", "--lr", "3e-3", "--warmup-ratio", "0.1", "--seed", "3", *TINY_FLAGS]


def pretrain(shards: Path, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bertpipe.cli.main", "pretrain", str(shards), "--out", str(out),
                             *FLAGS, *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    (run,) = [p for p in root.iterdir() if is_complete(p)]
    return hf.load_state_dict(run / "final")


@pytest.fixture(scope="module")
def reference(static_dir, tmp_path_factory) -> dict[str, torch.Tensor]:
    """One machine, two processes, never interrupted."""
    root = tmp_path_factory.mktemp("one-node")
    finish(pretrain(static_dir, root, "--devices", "2"))
    return final_weights(root)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_nodes_of_one_process_train_as_one_node_of_two(static_dir, reference, tmp_path):
    rdzv = ["--devices", "1", "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "two-nodes",
            "--rdzv-timeout", "120"]
    nodes = [pretrain(static_dir, tmp_path, *rdzv) for _ in range(2)]
    outs = [finish(n) for n in nodes]
    assert sum("pretrain built:" in o for o in outs) == 1, outs  # the node running rank 0 publishes
    assert sum("the node running rank 0 publishes the output" in o for o in outs) == 1, outs
    assert same(final_weights(tmp_path), reference)


@pytest.mark.slow
def test_nodes_that_do_not_share_the_run_directory_are_told_so(static_dir, tmp_path):
    rdzv = ["--devices", "1", "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "apart",
            "--rdzv-timeout", "120"]
    nodes = [pretrain(static_dir, tmp_path / f"node{i}", *rdzv) for i in range(2)]  # each its own "local disk"
    outs = [n.communicate(timeout=600)[0] for n in nodes]
    assert all(n.returncode != 0 for n in nodes), outs
    assert all("do not see the run directory" in o and "shared storage" in o for o in outs), [o[-2000:] for o in outs]
    assert not any(is_complete(p) for i in range(2) for p in (tmp_path / f"node{i}").iterdir())
