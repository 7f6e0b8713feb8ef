"""The pretrain stage: fingerprinted output from the command line, SIGTERM and resume, torchrun,
runs trained in place by older versions taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertpipe.core.stage import run_stage
from bertpipe.core.stagedir import is_complete, read_manifest
from bertpipe.data.shards import ShardsConfig
from bertpipe.model import hf
from bertpipe.train.config import PretrainConfig
from bertpipe.train.loop import pretrain
from bertpipe.train.stage import PretrainStage, TrainingInterrupted, checkpoints_at
from tests.train.conftest import TINY, TINY_FLAGS, records, tiny_cfg

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bertpipe.cli.main", "pretrain", *map(str, args)]


def expected_fingerprint(shards: Path, cfg) -> str:
    m = read_manifest(shards)
    return PretrainStage.fingerprint_of(cfg, [m["fingerprint"], ""], [ShardsConfig.model_validate(m["config"])])


def test_cli_writes_a_complete_fingerprinted_output_and_reuses_it(static_dir, tmp_path):
    flags = ["--steps", "6", "--log-every", "2", "--eval-every", "3", "--eval-batches", "2", "--batch-size", "8",
             "--keep-steps", "3", "--seed", "5", *TINY_FLAGS]
    done = subprocess.run(cli(static_dir, "--out", tmp_path, *flags), capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = PretrainConfig(model=TINY, steps=6, batch_size=8, keep_steps=[3], seed=5)  # the flags that name the run
    out = tmp_path / expected_fingerprint(static_dir, cfg)
    assert is_complete(out) and (tmp_path / "latest").read_text().strip() == out.name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no partial directory left behind"
    m = read_manifest(out)
    assert (m["stage"], m["fingerprint"], m["step"]) == ("pretrain", out.name, 6)
    assert m["eval"]["step"] == 6 and m["train"]["step"] == 6
    assert all((out / p).is_file() for p in m["plots"])
    assert m["parameters"] == hf.load_checkpoint(out / m["final"]).num_parameters()
    kept = hf.load_state_dict(out / m["kept"]["3"])
    assert not all(torch.equal(kept[k], v) for k, v in hf.load_state_dict(out / m["final"]).items()), "step 3 is not the final model"
    again = subprocess.run(cli(static_dir, "--out", tmp_path, *flags), capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0 and f"pretrain cached: {out}" in again.stdout


def test_sigterm_keeps_a_checkpoint_and_the_same_stage_resumes(static_dir, tmp_path):
    flags = ["--steps", "100000", "--log-every", "1", "--checkpoint-every", "0", "--eval-every", "0", "--batch-size", "8",
             *TINY_FLAGS]
    proc = subprocess.Popen(cli(static_dir, "--out", tmp_path, *flags), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV)
    cfg = PretrainConfig(model=TINY, steps=100000, log_every=1, checkpoint_every=0, eval_every=0, batch_size=8)
    work = tmp_path / f".{expected_fingerprint(static_dir, cfg)}.partial"
    deadline = time.time() + 60
    while time.time() < deadline and not ((work / "metrics.jsonl").exists() and len(records(work)) >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "run the same stage again to resume" in out
    (ckpt,) = (work / "checkpoints").glob("step-*")
    stopped = json.loads((ckpt / "state.json").read_text())["step"]
    assert stopped == records(work)[-1]["step"] >= 3
    assert not [p for p in tmp_path.iterdir() if is_complete(p)], "an interrupted run is not a complete output"

    with pytest.raises(TrainingInterrupted) as stop:
        run_stage(PretrainStage(cfg, static_dir, stop_at_step=stopped + 2), tmp_path)
    assert stop.value.step == stopped + 2 and stop.value.work == work
    assert [r["step"] for r in records(work)] == list(range(1, stopped + 3)), "continued from the checkpoint, not from 0"


def test_two_devices_run_under_torchrun_into_the_same_layout(static_dir, tmp_path):
    flags = ["--devices", "2", "--steps", "40", "--log-every", "5", "--eval-every", "40", "--checkpoint-every", "20",
             "--batch-size", "8", "--optimizer", "adamw", "--lr", "3e-3", "--warmup-ratio", "0.1", "--seed", "3", *TINY_FLAGS]
    done = subprocess.run(cli(static_dir, "--out", tmp_path, *flags), capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [p for p in tmp_path.iterdir() if is_complete(p)]
    cfg = tiny_cfg(devices=2, steps=40, log_every=5, eval_every=40, checkpoint_every=20, batch_size=8, seed=3,
                   optim={"optimizer": "adamw", "lr": 3e-3, "warmup_ratio": 0.1})
    assert run.name == expected_fingerprint(static_dir, cfg) != expected_fingerprint(static_dir, cfg.model_copy(update={"devices": 1}))
    (data,) = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "data"]
    r0, r1 = data["first_row_ids_by_rank"]
    assert len(r0) == len(r1) == 8 and not set(r0) & set(r1)  # each rank reads its own rows
    train = records(run)
    assert all(r["world_size"] == 2 for r in train)
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    assert (run / "checkpoints" / "step-0000040" / "rng-rank1.pt").exists()
    m = read_manifest(run)
    assert m["devices"] == 2 and m["parameters"] == hf.load_checkpoint(run / "final").num_parameters()
    assert hf.load_checkpoint(run / "final").config.num_hidden_layers == 3


def test_a_run_trained_in_place_by_an_older_version_is_taken_over_without_training(static_dir, tmp_path):
    cfg = tiny_cfg(steps=4, checkpoint_every=2)
    legacy = tmp_path / expected_fingerprint(static_dir, cfg)
    pretrain(static_dir, cfg, legacy)  # the old flow trained here and wrote only a manifest, no marker
    (legacy / "manifest.json").write_text(json.dumps({"stage": "pretrain", "final": str(legacy / "final")}))
    before = hf.load_state_dict(legacy / "final")
    n_records = len(records(legacy))
    res = run_stage(PretrainStage(cfg, static_dir), tmp_path)
    assert res.path == legacy and is_complete(legacy) and res.manifest["step"] == 4
    assert len(records(legacy)) == n_records, "no step was trained again"
    assert all(torch.equal(before[k], v) for k, v in hf.load_state_dict(legacy / "final").items())


def test_checkpoints_at_names_kept_steps_and_refuses_missing_ones(static_dir, tmp_path):
    res = run_stage(PretrainStage(tiny_cfg(steps=4, keep_steps=[2]), static_dir), tmp_path)
    assert checkpoints_at(res, [2]) == [(2, res.path / "checkpoints/step-0000002/model"), (4, res.path / "final")]
    with pytest.raises(FileNotFoundError, match=r"kept no checkpoint at steps \[3\]"):
        checkpoints_at(res, [3])
    assert TINY["num_hidden_layers"] == hf.load_config(res.path / "final").num_hidden_layers
