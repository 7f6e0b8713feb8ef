"""``bertpipe bench dedup``: near-duplicate removal against ``datasketch``'s MinHashLSH.

Purpose: the issue's measure of ``IngestConfig.dedup_threshold``: documents per CPU-second of
the near-duplicate step on both sides, and each side's recall and false removals judged by
the exact Jaccard of the word shingles.

Corpus: real text (the State of the Union speeches by default) cut into documents of
``words`` words, and for each a copy with 0 to 24 of its words replaced by other words of the
corpus (seeded), so that the planted pairs span exact Jaccard similarities from 1 to about 0.4;
the copies come after the originals (input order), and every document is offered to both sides
in that order. Both sides: the same threshold, shingles of ``shingle`` lower-cased words, the
same number of permutations. datasketch as its README uses it: ``MinHash(num_perm)``,
``update_batch`` of the shingles' UTF-8 bytes (SHA-1 per shingle, its default), one
``MinHashLSH(threshold, num_perm)``, ``query`` then ``insert`` per document; a document with a
query result is a duplicate. Ours: ``document_signature`` then ``NearDuplicates.seen`` (what
ingest runs, without the reading and writing around it). Each side's CPU seconds are
``time.process_time`` around its loop; the exact Jaccard is computed once, outside both.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.paths import CORPORA
from bertpipe.data.neardup import NearDuplicates, document_signature, lsh_params


def corpus(path: Path, words: int, n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` documents of ``words`` words from the corpus, and their edited copies."""
    rng = np.random.default_rng(seed)
    text = []
    with gzip.open(path, "rt") as f:
        for line in f:
            text += json.loads(line)["text"].split()
            if len(text) >= words * n:
                break
    if len(text) < words * n:
        raise SystemExit(f"bertpipe bench dedup: {path} has {len(text)} words, {words * n} needed")
    vocab = np.array(text)
    bases, copies = [], []
    for i in range(n):
        doc = vocab[i * words : (i + 1) * words].copy()
        copy = doc.copy()
        edits = rng.choice(words, i % 25, replace=False)
        copy[edits] = vocab[rng.integers(0, len(vocab), len(edits))]
        bases.append(" ".join(doc))
        copies.append(" ".join(copy))
    return bases, copies


def shingles(text: str, k: int) -> list[bytes]:
    w = text.lower().split()
    return [" ".join(w[i : i + k]).encode() for i in range(max(len(w) - k + 1, 1))]


def exact_jaccard(a: str, b: str, k: int) -> float:
    x, y = set(shingles(a, k)), set(shingles(b, k))
    return len(x & y) / len(x | y)


def run_ours(docs: list[str], threshold: float, k: int, perms: int) -> tuple[list[bool], float]:
    t0 = time.process_time()
    near = NearDuplicates(threshold, perms)
    removed = [near.seen(document_signature([d], k, perms)) is not None for d in docs]
    return removed, time.process_time() - t0


def run_datasketch(docs: list[str], threshold: float, k: int, perms: int) -> tuple[list[bool], float]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.process_time()
    lsh, removed = MinHashLSH(threshold=threshold, num_perm=perms), []
    for i, d in enumerate(docs):
        m = MinHash(num_perm=perms)
        m.update_batch(shingles(d, k))
        removed.append(bool(lsh.query(m)))
        lsh.insert(str(i), m)
    return removed, time.process_time() - t0


def bench_dedup(corpus_path: Path | None = None, threshold: float = 0.75, shingle: int = 5, perms: int = 128,
                words: int = 300, n: int = 2000, seed: int = 0) -> dict[str, Any]:
    path = corpus_path or CORPORA / "sotu.jsonl.gz"
    if not path.exists():
        raise SystemExit(f"bertpipe bench dedup: {path} is absent (the shared corpora); pass --corpus")
    bases, copies = corpus(path, words, n, seed)
    docs = bases + copies
    j = np.array([exact_jaccard(a, b, shingle) for a, b in zip(bases, copies, strict=True)])
    high, low = j > 0.85, j < 0.6
    print(f"{len(docs)} documents of {words} words from {path.name}: {n} originals, then a copy of each with 0-24 words "
          f"replaced; exact shingle Jaccard of the pairs: {int(high.sum())} above 0.85, {int(low.sum())} below 0.6")
    print(f"threshold {threshold}, shingles of {shingle} words, {perms} permutations; ours bands x rows "
          f"{lsh_params(threshold, perms)}; 1-minute load {os.getloadavg()[0]:.2f}")
    rows = {}
    for name, fn in (("bertpipe", run_ours), ("datasketch", run_datasketch)):
        removed, cpu = fn(docs, threshold, shingle, perms)
        r = np.array(removed)
        pair = r[n:]
        rows[name] = {"cpu_s": round(cpu, 2), "docs_per_cpu_s": round(len(docs) / cpu, 1),
                      "recall_above_0.85": round(float(pair[high].mean()), 4),
                      "removed_below_0.6": round(float(pair[low].mean()), 4),
                      "originals_removed": int(r[:n].sum())}
        print(f"  {name:11s} {rows[name]['docs_per_cpu_s']:9,.0f} documents per CPU-second ({cpu:.2f} s)   recall above 0.85 "
              f"{rows[name]['recall_above_0.85']:.3f}   removed below 0.6 {rows[name]['removed_below_0.6']:.3f}   "
              f"originals removed {rows[name]['originals_removed']}")
    ratio = rows["bertpipe"]["docs_per_cpu_s"] / rows["datasketch"]["docs_per_cpu_s"]
    print(f"throughput ratio (bertpipe / datasketch): {ratio:.2f}x (goal >= 2 at equal or better recall and false removals)")
    return {"bench": "dedup", "threshold": threshold, "shingle": shingle, "perms": perms, "documents": len(docs),
            "pairs_above_0.85": int(high.sum()), "pairs_below_0.6": int(low.sum()), **rows, "ratio": round(ratio, 2),
            "load_1min": round(os.getloadavg()[0], 2)}
