"""Stage units on a real Dask LocalCluster: spread over both workers, same bytes as the local pool."""

from __future__ import annotations

import shutil

import pytest
from distributed import Client, LocalCluster, get_task_stream

from bertpipe.core.executors import on_dask, units_executor
from bertpipe.core.stage import run_stage
from bertpipe.data.shards import ShardsConfig, ShardsStage
from bertpipe.data.wordpiece import WordPieceConfig, WordPieceStage
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def test_units_run_on_every_worker_and_give_the_local_bytes(cluster, sample_docs, sample_tok, tmp_path):
    cfg = ShardsConfig(workers=1, dupe_factor=1, block_chars=20_000, eval_fraction=0.1)
    local = run_stage(ShardsStage(cfg, sample_docs.path, sample_tok.path), tmp_path / "local")
    with Client(cluster) as client, get_task_stream(client) as stream:
        remote = run_stage(ShardsStage(cfg, sample_docs.path, sample_tok.path), tmp_path / "dask",
                           map_units=on_dask(cluster.scheduler_address))
    units = [t for t in stream.data if t["key"].startswith("shards-unit-")]
    assert len(units) == len(local.manifest["shards"]) >= 4
    assert {t["worker"] for t in units} == set(cluster.scheduler_info["workers"])
    assert remote.fingerprint == local.fingerprint and remote.manifest["shards"] == local.manifest["shards"]
    for s in local.manifest["shards"]:
        assert (remote.path / s["file"]).read_bytes() == (local.path / s["file"]).read_bytes()


def test_a_failing_unit_fails_the_stage_with_its_own_error(cluster, sample_docs, sample_tok, tmp_path):
    broken = tmp_path / "tok"
    shutil.copytree(sample_tok.path, broken)
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(Exception) as here:
        run_stage(ShardsStage(ShardsConfig(workers=1), sample_docs.path, broken), tmp_path / "out")
    with pytest.raises(type(here.value)) as there:
        run_stage(ShardsStage(ShardsConfig(workers=1), sample_docs.path, broken), tmp_path / "out",
                  map_units=on_dask(cluster.scheduler_address))
    assert str(there.value) == str(here.value) != ""
    assert not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]


def test_only_distributable_stages_leave_this_process(sample_docs, sample_tok):
    assert units_executor(ShardsStage(ShardsConfig(), sample_docs.path, sample_tok.path), "tcp://127.0.0.1:1") is not None
    assert units_executor(ShardsStage(ShardsConfig(), sample_docs.path, sample_tok.path)) is None  # not on a worker
    assert units_executor(WordPieceStage(WordPieceConfig(vocab_file=FIXTURES / "vocab-small.txt"), None), "tcp://x:1") is None
