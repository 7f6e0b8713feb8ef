"""Stage units on a real Dask LocalCluster: spread over both workers, same bytes as the local pool,
with relative paths given in another working directory than the workers'."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from distributed import Client, LocalCluster, get_task_stream

from bertpipe.core.executors import on_dask, units_executor
from bertpipe.core.stage import run_stage
from bertpipe.data.shards import ShardsConfig, ShardsStage
from bertpipe.data.wordpiece import WordPieceConfig, WordPieceStage
from tests.conftest import FIXTURES, SAMPLE


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


def _files(root):
    """Every file's bytes, except the time and duration that ``_COMPLETE`` holds."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return {k: b"" if k.endswith("/_COMPLETE") else v for k, v in files.items()}


def _cli(argv, capsys):
    from bertpipe.cli.main import main

    try:
        main(argv)
    except SystemExit as e:
        pytest.fail(f"bertpipe {' '.join(argv)} exited {e.code}: {capsys.readouterr().err[-2000:]}")


def test_relative_paths_under_dask_mean_what_they_mean_to_the_caller(cluster, sample_docs, sample_tok, tmp_path,
                                                                      monkeypatch, capsys):
    """`bertpipe ingest/shards ... --dask` run from the folder holding the inputs, with relative
    paths, on workers whose working directory is another: the bytes of the local run."""
    shutil.copytree(SAMPLE, tmp_path / "corpus")
    shutil.copytree(sample_docs.path.parent, tmp_path / "docs")  # stage roots: resolved through their `latest`
    shutil.copytree(sample_tok.path.parent, tmp_path / "tok")
    monkeypatch.chdir(tmp_path)
    with Client(cluster) as client:
        cwds = client.run(os.getcwd)
        assert len(cwds) == 2 and str(tmp_path) not in cwds.values()
        assert not any(client.run(os.path.exists, "tok").values()), "the workers must not see the caller's relative paths"
    dask = ["--dask", cluster.scheduler_address]

    _cli(["ingest", "corpus", "--out", "d-local", "--workers", "1"], capsys)
    _cli(["ingest", "corpus", "--out", "d-dask", *dask], capsys)
    local, remote = _files(tmp_path / "d-local"), _files(tmp_path / "d-dask")
    assert len(local) >= 4 and remote == local
    manifest = json.loads(next(v for k, v in local.items() if k.endswith("manifest.json")))
    assert [f["path"] for f in manifest["files"]] == ["corpus/sotu-sample.jsonl.gz", "corpus/the-war-of-the-worlds-part.txt"]

    shards = ["--dupe-factor", "1", "--block-chars", "20000", "--eval-fraction", "0.1"]
    _cli(["shards", "docs", "--tokenizer", "tok", "--out", "s-local", "--workers", "1", *shards], capsys)
    _cli(["shards", "docs", "--tokenizer", "tok", "--out", "s-dask", *dask, *shards], capsys)
    local, remote = _files(tmp_path / "s-local"), _files(tmp_path / "s-dask")
    assert sum(k.endswith(".parquet") for k in local) >= 4 and remote == local
    manifest = json.loads(next(v for k, v in local.items() if k.endswith("manifest.json")))
    assert manifest["tokenizer_dir"] == f"tok/{sample_tok.fingerprint}", "the manifest records the path as given"
