"""Near-duplicates: planted pairs at known shingle Jaccard similarities, judged by the exact
Jaccard, through the ingest stage; the rule for which copy stays; names kept when off."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from bertpipe.data.ingest import IngestConfig, ingest
from bertpipe.data.neardup import lsh_params, signature


def shingles(text: str, k: int = 5) -> set[tuple[str, ...]]:
    w = text.lower().split()
    return {tuple(w[i : i + k]) for i in range(len(w) - k + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def planted(rng: np.random.Generator, n: int = 300, words: int = 300) -> tuple[list[str], list[str]]:
    """``n`` unrelated documents and, for each, a copy with 0-24 words replaced (Jaccard ~1 to ~0.4)."""
    vocab = np.array([f"w{i}x" for i in range(20_000)])
    bases, copies = [], []
    for i in range(n):
        doc = vocab[rng.integers(0, len(vocab), words)]
        copy = doc.copy()
        edits = rng.choice(words, i % 25, replace=False)
        copy[edits] = vocab[rng.integers(0, len(vocab), len(edits))]
        bases.append(" ".join(doc) + ".")
        copies.append(" ".join(copy) + ".")
    return bases, copies


def test_planted_pairs_recall_and_false_removals(tmp_path):
    bases, copies = planted(np.random.default_rng(0), n=600)
    (src := tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                                     for i, t in enumerate(bases + copies)))
    res = ingest([src], IngestConfig(workers=1, min_doc_chars=1, dedup_threshold=0.75), tmp_path / "o")
    kept = {r for f in sorted(res.path.glob("part-*.parquet")) for r in pq.read_table(f, columns=["id"]).column(0).to_pylist()}
    assert all(f"d{i}" in kept for i in range(len(bases))), "the first of each cluster stays (input order)"
    j = np.array([jaccard(a, b) for a, b in zip(bases, copies, strict=True)])
    removed = np.array([f"d{len(bases) + i}" not in kept for i in range(len(copies))])
    high, low = j > 0.85, j < 0.6
    assert high.sum() >= 100 and low.sum() >= 100, (high.sum(), low.sum())  # J = 0.75: midway between the two bands
    assert removed[high].mean() >= 0.95, removed[high].mean()
    assert removed[low].mean() <= 0.01, removed[low].mean()
    c = res.manifest["counts"]
    assert c["duplicates_dropped"] == (j == 1.0).sum() and c["near_duplicates_dropped"] == removed.sum() - (j == 1.0).sum()
    ex = res.manifest["near_duplicates"]["examples"]
    assert ex and all(kept_id.endswith(f"d{int(drop.rsplit('d', 1)[1]) - len(bases)}") for kept_id, drop in ex)


def test_signatures_estimate_jaccard_and_bands_fit_the_threshold():
    bases, copies = planted(np.random.default_rng(1), n=60)
    est = [float((signature(a.lower().split(), 5, 256) == signature(b.lower().split(), 5, 256)).mean())
           for a, b in zip(bases, copies, strict=True)]
    exact = [jaccard(a, b) for a, b in zip(bases, copies, strict=True)]
    assert np.abs(np.array(est) - np.array(exact)).mean() < 0.04
    b, r = lsh_params(0.7, 128)
    assert b * r <= 128 and 0.5 < (1 / b) ** (1 / r) < 0.7  # the S-curve rises below the threshold: candidates for the signatures to confirm


def test_off_keeps_names_and_the_same_documents_whatever_the_workers(tmp_path):
    bases, copies = planted(np.random.default_rng(2), n=40)
    for i, chunk in enumerate((bases + copies)[k : k + 20] for k in range(0, 80, 20)):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"p{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in chunk))
    off = ingest([tmp_path / "in"], IngestConfig(workers=1, min_doc_chars=1), tmp_path / "o")
    assert "dedup_threshold" not in off.manifest["config"]
    one, two = (ingest([tmp_path / "in"], IngestConfig(workers=w, min_doc_chars=1, dedup_threshold=0.7), tmp_path / f"w{w}")
                for w in (1, 2))
    docs = [[pq.read_table(f).to_pylist() for f in sorted(r.path.glob("part-*.parquet"))] for r in (one, two)]
    assert docs[0] == docs[1] and one.fingerprint == two.fingerprint != off.fingerprint
