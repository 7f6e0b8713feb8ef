"""bench scale --compressed at a tiny size: whole commands on compressed inputs, output checked."""

from __future__ import annotations

import json

from benchmarks.compressed import bench_compressed
from bertpipe.cli.main import build_parser


def test_whole_commands_on_published_formats_give_one_output(tmp_path):
    res = bench_compressed(tmp_path, mb=1, scale=2, repeats=1)
    json.dumps(res)
    assert set(res["formats"]) == {f"{k}-{s}" for k in ("bz2", "gz", "zst") for s in (1, 2)}
    for row in res["formats"].values():
        assert row["same_bytes"] and row["same_documents_as_uncompressed"], row
        assert row["compressed_mb"] < row["input_mb"] and all(row[f"{r}_wall_s"] > 0 for r in ("local1", "local2", "dask1", "dask2"))
        assert abs(row["speedup_local"] - row["local1_wall_s"] / row["local2_wall_s"]) < 0.01


def test_the_flag_is_wired():
    args = build_parser().parse_args(["bench", "scale", "--compressed", "--mb", "5"])
    assert args.compressed and args.mb == 5 and args.func.__name__ == "_cmd_bench_scale"
