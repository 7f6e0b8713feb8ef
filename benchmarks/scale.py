"""``bertpipe bench scale``: do the data stages get faster with more workers, inside one input?

Inputs (built once under ``--work`` by ``benchmarks.wikidump``): a single MediaWiki dump
and a single JSONL file of ``--mb`` MB each, and ones ``--scale`` times larger for the memory
check. Each measurement runs the real stage in a fresh subprocess: ingest of the dump, ingest
of the JSONL, and shards from the JSONL's documents, with 1 and 2 workers on the local process
pool and on a Dask ``LocalCluster`` of 1 and 2 worker processes, ``--repeats`` times with the
executors alternating; the run of median stage wall time is reported. Reported per run: wall
seconds, CPU seconds of the whole process tree (``wait4``'s rusage, descendants included),
input MB per wall second and per CPU-second, speed-up of 2 workers over 1, and the peak RSS of
the largest single process of the tree (the main process, a pool worker or a Dask worker),
sampled every 0.1 s; plus that peak at ``--scale`` times the input, 2 local workers. Output
bytes are checked equal across executors and worker counts. Each worker is one core: the
subprocesses run with ``TOKENIZERS_PARALLELISM=false`` and one OpenMP/Rayon thread, so "1
worker" is not quietly using both cores through a library's own thread pool. The last printed line is one JSON
object. A benchmark, not a test: it asserts nothing. Check the machine's load first
(``uptime``): the figures are wall-clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

EXECUTORS = [("local", 1), ("local", 2), ("dask", 1), ("dask", 2)]
# One worker is one core: no library thread pools (tokenizers' Rayon, OpenMP) beside the workers.
ONE_CORE_EACH = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}


def _run_stage(stage: str, inputs: str, out: str, executor: str, workers_arg: str, tok: str) -> None:
    """In the measured subprocess: one stage, the given executor; prints the output's fingerprint."""
    workers = int(workers_arg)
    from bertpipe.core.workers import stop_forkserver
    from bertpipe.data.ingest import IngestConfig, ingest
    from bertpipe.data.shards import ShardsConfig, build_shards

    cluster = None
    if executor == "dask":
        from distributed import LocalCluster

        from bertpipe.core.executors import on_dask

        # workers import the stage modules when they start, as `dask worker --preload ...` does (README)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               preload=["bertpipe.data.ingest", "bertpipe.data.shards"])
        mapper = on_dask(cluster.scheduler_address)
    else:
        mapper = None
    t0 = time.perf_counter()
    if stage == "ingest":
        res = ingest([inputs], IngestConfig(workers=workers), Path(out), map_units=mapper)
    else:
        res = build_shards(Path(inputs), Path(tok), ShardsConfig(workers=workers, dupe_factor=1), Path(out), progress=False,
                           map_units=mapper)
    wall = time.perf_counter() - t0
    if cluster is not None:
        cluster.close()
    stop_forkserver()
    print(json.dumps({"fingerprint": res.fingerprint, "path": str(res.path), "stage_wall_s": wall}))


def _measure(args: list[str]) -> dict[str, Any]:
    """Run ``python -m benchmarks.scale _run ...``; wall, tree CPU and per-process peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.scale", "_run", *args], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **ONE_CORE_EACH})
    peak = {"main": 0, "worker": 0}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak["main"] = max(peak["main"], root.memory_info().rss)
                for child in root.children(recursive=True):
                    try:
                        peak["worker"] = max(peak["worker"], child.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if status != 0:
        raise RuntimeError(f"bench scale: {' '.join(args)} failed (status {status})")
    res = json.loads(out.strip().splitlines()[-1])
    return {**res, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": max(peak.values()) / 2**20, "peak_worker_rss_mb": peak["worker"] / 2**20}


def _inputs(work: Path, mb: int, scale: int) -> dict[str, Path]:
    from benchmarks.wikidump import write_dump, write_jsonl

    work.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, size in ((f"wiki-{mb}", mb), (f"wiki-{mb * scale}", mb * scale)):
        out[name] = work / f"{name}.xml"
        if not out[name].is_file():
            write_dump(out[name], size << 20)
    for name, size in ((f"jsonl-{mb}", mb), (f"jsonl-{mb * scale}", mb * scale)):
        out[name] = work / f"{name}.jsonl"
        if not out[name].is_file():
            write_jsonl(out[name], size << 20)
    return out


def _files_equal(paths: list[str]) -> bool:
    names = [sorted(p.name for p in Path(d).glob("*.parquet")) for d in paths]
    if any(n != names[0] for n in names):
        return False
    return all(len({(Path(d) / n).read_bytes() for d in paths}) == 1 for n in names[0])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median stage wall time (its own figures, not a mix of runs)."""
    return sorted(runs, key=lambda r: r["stage_wall_s"])[len(runs) // 2] | {"repeats": len(runs)}


def bench_scale(work: Path, mb: int = 100, scale: int = 4, repeats: int = 3) -> dict[str, Any]:
    from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece

    files = _inputs(work, mb, scale)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} cores")
    table: dict[str, dict[str, Any]] = {}
    tok = ""
    for label, stage, src in (("wiki ingest", "ingest", files[f"wiki-{mb}"]), ("jsonl ingest", "ingest", files[f"jsonl-{mb}"]),
                              ("jsonl shards", "shards", None)):
        size_mb = (src.stat().st_size if src is not None else files[f"jsonl-{mb}"].stat().st_size) / 2**20
        measured: dict[str, list[dict[str, Any]]] = {f"{e}{n}": [] for e, n in EXECUTORS}
        for _ in range(repeats):  # executors alternate, so each sees the same machine load
            for executor, n in EXECUTORS:
                out = work / "out" / f"{label.replace(' ', '-')}-{executor}{n}"
                if stage == "shards":
                    src_dir = table["jsonl ingest"]["runs"]["local1"]["path"]
                    if not tok:
                        tok = str(train_wordpiece(Path(src_dir), WordPieceConfig(vocab_size=8000), work / "tok").path)
                    args = [stage, src_dir, str(out), executor, str(n), tok]
                else:
                    args = [stage, str(src), str(out), executor, str(n), ""]
                subprocess.run(["rm", "-rf", str(out)], check=True)
                measured[f"{executor}{n}"].append(_measure(args))
        runs = {}
        for executor, n in EXECUTORS:
            runs[f"{executor}{n}"] = r = _median_run(measured[f"{executor}{n}"])
            r |= {"mb_per_wall_s": size_mb / r["stage_wall_s"], "mb_per_cpu_s": size_mb / r["cpu_s"],
                  "stage_wall_all_s": [round(x["stage_wall_s"], 2) for x in measured[f"{executor}{n}"]]}
            print(f"{label:13s} {executor:5s} x{n}: stage {r['stage_wall_s']:6.1f} s wall (process {r['wall_s']:6.1f}), {r['cpu_s']:7.1f} CPU-s, "
                  f"{r['mb_per_wall_s']:6.2f} MB/s, {r['mb_per_cpu_s']:6.2f} MB/CPU-s, peak RSS {r['peak_rss_mb']:6.0f} MB "
                  f"(largest worker {r['peak_worker_rss_mb']:5.0f} MB); stage walls {r['stage_wall_all_s']}", flush=True)
        table[label] = {"input_mb": round(size_mb, 1), "runs": runs,
                        "speedup_local": runs["local1"]["stage_wall_s"] / runs["local2"]["stage_wall_s"],
                        "speedup_dask": runs["dask1"]["stage_wall_s"] / runs["dask2"]["stage_wall_s"],
                        "same_bytes": _files_equal([r["path"] for r in runs.values()])}
        print(f"{label:13s} 2 workers vs 1: local {table[label]['speedup_local']:.2f}x, Dask {table[label]['speedup_dask']:.2f}x; "
              f"identical output: {table[label]['same_bytes']}", flush=True)
    memory = {}
    for kind in ("wiki", "jsonl"):
        big = files[f"{kind}-{mb * scale}"]
        out = work / "out" / f"{kind}-x{scale}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        r = _measure(["ingest", str(big), str(out), "local", "2", ""])
        base = table[f"{kind} ingest"]["runs"]["local2"]
        memory[kind] = {"input_mb": round(big.stat().st_size / 2**20, 1), "peak_worker_rss_mb": r["peak_worker_rss_mb"],
                        "ratio_to_1x": r["peak_worker_rss_mb"] / max(base["peak_worker_rss_mb"], 1e-9), "wall_s": r["wall_s"]}
        print(f"{kind} ingest at {scale}x ({memory[kind]['input_mb']:.0f} MB), 2 local workers: largest worker "
              f"{r['peak_worker_rss_mb']:.0f} MB = {memory[kind]['ratio_to_1x']:.2f}x the 1x input's", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    summary = {"mb": mb, "scale": scale, "stages": {k: {kk: vv for kk, vv in v.items() if kk != "runs"} | {
        "runs": {e: {m: round(x, 3) if isinstance(x, float) else x for m, x in r.items() if m not in ("path",)}
                 for e, r in v["runs"].items()}} for k, v in table.items()}, "memory": memory}
    return json.loads(json.dumps(summary, default=lambda x: round(x, 3)))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_run":
    _run_stage(*sys.argv[2:8])
