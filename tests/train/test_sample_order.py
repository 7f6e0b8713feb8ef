"""One sample order for any cluster size: a run checkpointed by 2 processes x micro-batch 4
resumes on 1 process x 4 x 2 accumulation steps (or with 2 DataLoader workers) with the same
rows and masks at every step and, dropout off, the same weights up to float sums; and on 2
processes again with the same weights bit for bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bertpipe.train.config import PretrainConfig
from bertpipe.train.loop import pretrain as run_pretraining
from tests.train.test_multinode import final_weights, finish, pretrain, same

STEPS = ["--steps", "40", "--checkpoint-every", "20", "--keep-checkpoints", "5", "--batch-size", "4",
         "--hidden-dropout-prob", "0", "--attention-probs-dropout-prob", "0"]


def records(root: Path) -> list[dict]:
    (run,) = [p for p in root.iterdir() if p.is_dir() and (p / "metrics.jsonl").exists()]
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def digests(root: Path) -> dict[int, int]:
    """Step -> the checksum of the rows and masks it trained on (train records, every step)."""
    return {r["step"]: r["sample_digest"] for r in records(root) if r.get("split") == "train"}


def starts(root: Path) -> list[tuple[int, int]]:
    """(step, world size) of each start of the run: the first run and its resumptions."""
    return [(r["step"], r["world_size"]) for r in records(root) if r.get("event") == "start"]


def resumed_from_halfway(reference_root: Path, root: Path) -> Path:
    """A run directory holding the reference's step-20 checkpoint, as an interrupted run leaves it."""
    (done,) = [p for p in reference_root.iterdir() if p.is_dir() and (p / "checkpoints").is_dir()]
    part = root / f".{done.name}.partial"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(done / "checkpoints" / "step-0000020", part / "checkpoints" / "step-0000020")
    shutil.copy(done / "metrics.jsonl", part / "metrics.jsonl")  # records past step 20 are dropped on resume
    return part


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory, dynamic_dir) -> Path:
    root = tmp_path_factory.mktemp("two-procs")
    finish(pretrain(dynamic_dir, root, "--devices", "2", *STEPS))
    return root


def relative_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp(min=1e-12)) for k in b)


@pytest.mark.slow
@pytest.mark.parametrize("split", [["--devices", "1", "--grad-accum", "2"],
                                   ["--devices", "1", "--grad-accum", "2", "--num-workers", "2"]], ids=["accum", "workers"])
def test_a_two_process_checkpoint_resumes_on_one_process(dynamic_dir, two_procs, tmp_path, split):
    part = resumed_from_halfway(two_procs, tmp_path)
    out = finish(pretrain(dynamic_dir, tmp_path, *STEPS, *split))
    assert "same samples, fresh dropout streams" in out, out[-3000:]
    assert starts(tmp_path) == [(0, 2), (20, 1)]
    ref, got = digests(two_procs), digests(tmp_path)
    assert len(ref) == 40 and len(set(ref.values())) == 40
    assert got == ref, "every step trained on the same rows and masks"
    assert part.name.lstrip(".").removesuffix(".partial") in {p.name for p in tmp_path.iterdir()}  # same fingerprint
    assert relative_gap(final_weights(tmp_path), final_weights(two_procs)) < 1e-5  # float sums may differ, no more


@pytest.mark.slow
def test_a_two_process_run_resumed_halfway_ends_with_the_same_weights(dynamic_dir, two_procs, tmp_path):
    resumed_from_halfway(two_procs, tmp_path)
    finish(pretrain(dynamic_dir, tmp_path, "--devices", "2", *STEPS))
    assert starts(tmp_path) == [(0, 2), (20, 2)]
    assert digests(tmp_path) == digests(two_procs)
    assert same(final_weights(tmp_path), final_weights(two_procs))


def test_another_global_batch_is_refused(dynamic_dir, two_procs, tmp_path):
    part = resumed_from_halfway(two_procs, tmp_path)
    state = json.loads((part / "checkpoints" / "step-0000020" / "state.json").read_text())
    cfg = PretrainConfig.model_validate(state["config"]).model_copy(update={"devices": 1})  # 4 rows a step, not 8
    with pytest.raises(ValueError, match="global batches"):
        run_pretraining(dynamic_dir, cfg, part)
