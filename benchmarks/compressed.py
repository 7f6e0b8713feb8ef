"""``bertpipe bench scale --compressed``: inputs as they are published, timed as a user times them.

Wikipedia comes as one bzip2 stream (``pages-articles.xml.bz2``), web and book corpora as
``.jsonl.gz`` or ``.jsonl.zst``. Each is made here from ``bench scale``'s own 1x and
``--scale``x inputs (a real-text MediaWiki dump and a JSONL file, built by
``benchmarks.wikidump``): ``bz2`` (one stream, level 9), ``gzip`` (level 6) and
``zstandard`` (level 3). Measured: the whole ``bertpipe ingest FILE --out OUT`` command
in a fresh process, start-up and publishing included, with ``--workers 1`` and ``2`` on the
local pool, and with ``--dask ADDRESS`` against a running ``LocalCluster`` of 1 and 2 worker
processes (started before the clock, as a user's cluster would be), ``--repeats`` times with
the four alternating; the median wall time is reported (CPU seconds are not: the local
pool's workers are a forkserver's children, which ``wait4`` does not count, and Dask's
workers belong to the cluster). Checked: the output's bytes are equal across the four,
and its documents (the ``doc_hash`` column, in order) equal those of the uncompressed input.
Every worker is one core (one OpenMP/Rayon thread). The last printed line is one JSON object.
A benchmark, not a test: check the load first (``uptime``).
"""

from __future__ import annotations

import bz2
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.scale import ONE_CORE_EACH, _files_equal, _inputs

FORMATS = {"bz2": ".xml.bz2", "gz": ".jsonl.gz", "zst": ".jsonl.zst"}
RUNS = [("local", 1), ("local", 2), ("dask", 1), ("dask", 2)]


def _compress(src: Path, kind: str) -> Path:
    dest = src.with_name(src.name + "." + kind)
    if dest.is_file():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    with open(src, "rb") as f:
        if kind == "bz2":
            with bz2.open(tmp, "wb", compresslevel=9) as out:  # one stream, as Wikimedia's pages-articles
                shutil.copyfileobj(f, out, 1 << 20)
        elif kind == "gz":
            with gzip.open(tmp, "wb", compresslevel=6) as out:
                shutil.copyfileobj(f, out, 1 << 20)
        else:
            import zstandard

            with open(tmp, "wb") as out:
                zstandard.ZstdCompressor(level=3).copy_stream(f, out)
    os.replace(tmp, dest)
    return dest


def _hashes(out: Path) -> list[bytes]:
    final = out / (out / "latest").read_text().strip() if (out / "latest").is_file() else next(out.iterdir())
    return [h for p in sorted(final.glob("part-*.parquet")) for h in pq.read_table(p, columns=["doc_hash"])["doc_hash"].to_pylist()]


def _command(src: Path, out: Path, executor: str, n: int, address: str | None) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("bertpipe")), "ingest", str(src), "--out", str(out), "--workers", str(n)]
    cmd += ["--dask", address] if executor == "dask" else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE_CORE_EACH})
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    final = out / (out / "latest").read_text().strip()
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "path": str(final),
            "parts": len(list(final.glob("part-*.parquet")))}


def bench_compressed(work: Path, mb: int = 100, scale: int = 4, repeats: int = 3) -> dict[str, Any]:
    from distributed import LocalCluster

    plain = _inputs(work, mb, scale)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} cores", flush=True)
    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                preload=["bertpipe.data.ingest"], env=ONE_CORE_EACH) for n in (1, 2)}
    table: dict[str, Any] = {}
    try:
        for size in (mb, mb * scale):
            for kind, suffix in FORMATS.items():
                src_plain = plain[f"{'wiki' if kind == 'bz2' else 'jsonl'}-{size}"]
                src = _compress(src_plain, kind)
                ref_out = work / "out-compressed" / f"plain-{src_plain.stem}"
                if not (ref_out / "latest").is_file():
                    _command(src_plain, ref_out, "local", 2, None)
                reps = repeats if size == mb else 1  # the larger input once: it is there to show the trend
                got: dict[str, list[dict[str, Any]]] = {f"{e}{n}": [] for e, n in RUNS}
                for _ in range(reps):
                    for e, n in RUNS:
                        out = work / "out-compressed" / f"{kind}-{size}-{e}{n}"
                        got[f"{e}{n}"].append(_command(src, out, e, n, clusters[n].scheduler_address if e == "dask" else None))
                med = {k: sorted(v, key=lambda r: r["wall_s"])[len(v) // 2] for k, v in got.items()}
                row = {"compressed_mb": round(src.stat().st_size / 2**20, 1), "input_mb": round(src_plain.stat().st_size / 2**20, 1),
                       "repeats": reps, "parts": med["local1"]["parts"],
                       **{f"{k}_wall_s": round(r["wall_s"], 2) for k, r in med.items()},
                       **{f"{k}_walls": [round(r["wall_s"], 2) for r in v] for k, v in got.items()},
                       "speedup_local": round(med["local1"]["wall_s"] / med["local2"]["wall_s"], 3),
                       "speedup_dask": round(med["dask1"]["wall_s"] / med["dask2"]["wall_s"], 3),
                       "same_bytes": _files_equal([r["path"] for r in med.values()]),
                       "same_documents_as_uncompressed": _hashes(Path(med["local1"]["path"]).parent) == _hashes(ref_out)}
                table[f"{kind}-{size}"] = row
                print(f"{suffix:10s} {row['compressed_mb']:6.1f} MB ({row['input_mb']:.0f} MB decompressed, {row['parts']} units): "
                      f"local 1 {row['local1_wall_s']:6.1f} s / 2 {row['local2_wall_s']:6.1f} s = {row['speedup_local']:.2f}x; "
                      f"Dask 1 {row['dask1_wall_s']:6.1f} s / 2 {row['dask2_wall_s']:6.1f} s = {row['speedup_dask']:.2f}x; "
                      f"identical bytes {row['same_bytes']}, "
                      f"documents as uncompressed {row['same_documents_as_uncompressed']}", flush=True)
    finally:
        for c in clusters.values():
            c.close()
    print(f"load after: {os.getloadavg()[0]:.2f}")
    speedups = [v for r in table.values() for v in (r["speedup_local"], r["speedup_dask"])]
    return {"bench": "scale-compressed", "mb": mb, "scale": scale, "formats": table,
            "min_speedup": min(speedups), "median_speedup": statistics.median(speedups)}
