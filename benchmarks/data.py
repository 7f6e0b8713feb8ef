"""Benchmarks that print figures (never asserted in tests): ``bertpipe bench data``.

``bench_data`` measures, in one run on one corpus:
- the full data path, raw text → documents → masked shards (ingest + shards, dupe_factor 5,
  vocabulary trained beforehand and not timed), as input WordPiece tokens per CPU-second
  (CPU of every process, children included) and per wall-second;
- plain ``tokenizers`` ``encode_batch`` on the same text (all cores): the practical ceiling;
- each figure for the corpus is the median of ``repeats`` runs (by CPU time);
- peak RSS of the whole process tree (sampled every 20 ms) for the corpus and for a corpus
  ``scale`` times larger (copies of the files; duplicate dropping is off in both runs so
  the larger corpus really is processed in full).
Each pipeline run happens in a fresh subprocess so RSS and CPU are its own. The last
printed line is one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.paths import CORPORA

REFERENCE_TOKENS_PER_CPU_S = 38_000  # google-research/bert create_pretraining_data.py, measured here (REFERENCE.md)


def default_corpus() -> list[Path]:
    root = CORPORA  # next to the project folder, or under $BERTPIPE_SHARED_DATA
    if not root.is_dir():
        raise FileNotFoundError(f"bench data: no corpus given and {root} is absent; pass --corpus FILE...")
    return sorted((root / "gutenberg").glob("*.txt")) + [root / "sotu.jsonl.gz"]


def _peak_rss_of(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for ``proc``; return (peak summed RSS of it and its descendants, wall seconds)."""
    peak = 0
    p = psutil.Process(proc.pid)
    start = time.perf_counter()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                procs = [p, *p.children(recursive=True)]
                peak = max(peak, sum(q.memory_info().rss for q in procs if q.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    proc.wait()
    wall = time.perf_counter() - start
    done.set()
    t.join()
    return peak, wall


def _run_pipeline(corpus: list[Path], tok_dir: Path, out: Path, workers: int, dupe_factor: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "benchmarks.data", "_pipeline", str(tok_dir), str(out), str(workers), str(dupe_factor), *map(str, corpus)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak, wall = _peak_rss_of(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        # not a missing file: the child's traceback is above (its stderr is this process's)
        raise RuntimeError(f"bench data: pipeline run failed ({proc.returncode})")
    stats = json.loads(proc.stdout.read().strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return stats | {"cpu_s": cpu, "wall_s": wall, "peak_rss_mb": peak / 2**20}


def _pipeline_main(tok_dir: str, out: str, workers: str, dupe: str, *corpus: str) -> None:
    from bertpipe.core.workers import stop_forkserver
    from bertpipe.data.ingest import IngestConfig, ingest
    from bertpipe.data.shards import ShardsConfig, build_shards

    docs = ingest(list(corpus), IngestConfig(workers=int(workers), dedupe=False), Path(out) / "docs")
    shards = build_shards(docs.path, Path(tok_dir), ShardsConfig(workers=int(workers), dupe_factor=int(dupe)), Path(out) / "shards", progress=False)
    stop_forkserver()  # reap the worker tree so RUSAGE_CHILDREN in the parent sees all its CPU
    c = shards.manifest["counts"]
    print(json.dumps({"input_tokens": c["input_tokens"], "instances": c["rows"], "characters": docs.manifest["counts"]["characters"]}))


def _raw_lines(corpus: list[Path]) -> list[str]:
    """The corpus text as lines (JSONL records' text split at newlines), for ``encode_batch``."""
    import gzip

    lines: list[str] = []
    for f in corpus:
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            if ".jsonl" in f.name:
                lines.extend(s for rec in fh for s in json.loads(rec).get("text", "").split("\n") if s.strip())
            else:
                lines.extend(s for s in fh if s.strip())
    return lines


def bench_data(corpus: list[str] | None, workers: int | None = None, dupe_factor: int = 5, scale: int = 4,
               vocab_size: int = 30522, repeats: int = 3) -> dict:
    from bertpipe.data.ingest import IngestConfig, ingest
    from bertpipe.data.wordpiece import WordPieceConfig, load_vocab, train_wordpiece

    files = [Path(c) for c in corpus] if corpus else default_corpus()
    workers = workers or os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="bertpipe-bench-"))
    try:
        print(f"corpus: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB on disk; workers {workers}; dupe_factor {dupe_factor}")
        docs = ingest(files, IngestConfig(workers=workers), tmp / "vocab-docs")
        tok = train_wordpiece(docs.path, WordPieceConfig(vocab_size=vocab_size), tmp / "tok")
        print(f"vocabulary: {tok.manifest['counts']['vocab_size']} WordPieces (trained beforehand, not timed)")

        lines = _raw_lines(files)
        tokenizer = load_vocab(tok.path).tokenizer
        t0, c0 = time.perf_counter(), time.process_time()
        n_tok = sum(len(e.ids) for e in tokenizer.encode_batch(lines, add_special_tokens=False))
        enc_wall, enc_cpu = time.perf_counter() - t0, time.process_time() - c0
        encode_tps = n_tok / enc_wall
        print(f"tokenizers encode_batch: {n_tok:,} tokens in {enc_wall:.2f} s wall / {enc_cpu:.2f} CPU-s = {encode_tps:,.0f} tokens/s")

        # median of `repeats` fresh runs: the machine is shared and noisy
        runs = sorted((_run_pipeline(files, tok.path, tmp / f"run1-{r}", workers, dupe_factor) for r in range(repeats)),
                      key=lambda x: x["cpu_s"])
        one = runs[len(runs) // 2]
        cpu_list = ", ".join(f"{r['cpu_s']:.2f}" for r in runs)
        wall_list = ", ".join(f"{r['wall_s']:.2f}" for r in runs)
        print(f"1x runs: CPU-s {cpu_list}; wall s {wall_list} (median taken)")
        tps_wall = one["input_tokens"] / one["wall_s"]
        tps_cpu = one["input_tokens"] / one["cpu_s"]
        print(f"raw text -> masked shards (1x): {one['input_tokens']:,} input tokens, {one['instances']:,} instances, "
              f"{one['wall_s']:.2f} s wall, {one['cpu_s']:.2f} CPU-s, peak RSS {one['peak_rss_mb']:.0f} MB")
        print(f"  {tps_wall:,.0f} tokens/s wall, {tps_cpu:,.0f} tokens per CPU-second "
              f"({tps_cpu / REFERENCE_TOKENS_PER_CPU_S:.1f}x the reference's {REFERENCE_TOKENS_PER_CPU_S:,}); "
              f"{tps_wall / encode_tps:.2f} of encode_batch")

        big = tmp / f"corpus-{scale}x"
        big.mkdir()
        for k in range(scale):
            for f in files:
                shutil.copyfile(f, big / f"{k}-{f.name}")
        many = _run_pipeline(sorted(big.iterdir()), tok.path, tmp / f"run{scale}", workers, dupe_factor)
        rss_ratio = many["peak_rss_mb"] / one["peak_rss_mb"]
        print(f"raw text -> masked shards ({scale}x): {many['input_tokens']:,} input tokens, {many['wall_s']:.2f} s wall, "
              f"{many['cpu_s']:.2f} CPU-s, peak RSS {many['peak_rss_mb']:.0f} MB ({rss_ratio:.2f}x the 1x run)")
        return {
            "input_tokens": one["input_tokens"],
            "tokens_per_cpu_s": round(tps_cpu),
            "tokens_per_s": round(tps_wall),
            "cpu_s": round(one["cpu_s"], 2),
            "wall_s": round(one["wall_s"], 2),
            "encode_batch_tokens_per_s": round(encode_tps),
            "encode_ratio": round(tps_wall / encode_tps, 3),
            "vs_reference": round(tps_cpu / REFERENCE_TOKENS_PER_CPU_S, 2),
            "peak_rss_mb_1x": round(one["peak_rss_mb"]),
            f"peak_rss_mb_{scale}x": round(many["peak_rss_mb"]),
            f"rss_ratio_{scale}x": round(rss_ratio, 3),
            "rss_ratio_4x": round(rss_ratio, 3) if scale == 4 else None,
            f"tokens_per_cpu_s_{scale}x": round(many["input_tokens"] / many["cpu_s"]),
            "repeats": repeats,
            "workers": workers,
            "dupe_factor": dupe_factor,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_pipeline":
        _pipeline_main(*sys.argv[2:])
