"""bench dedup: both sides judged on the same planted pairs by the exact Jaccard."""

from __future__ import annotations

import gzip
import json

from benchmarks.dedup import bench_dedup, exact_jaccard, run_datasketch, run_ours


def test_both_sides_find_the_planted_copies_and_keep_unrelated_text(tmp_path):
    words = [f"w{i}" for i in range(40_000)]  # distinct words: originals share no shingle
    (path := tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(json.dumps({"text": " ".join(words)}).encode() + b"\n"))
    res = bench_dedup(path, threshold=0.75, words=80, n=300)
    for side in ("bertpipe", "datasketch"):
        assert res[side]["originals_removed"] == 0
        assert res[side]["recall_above_0.85"] >= 0.9 and res[side]["removed_below_0.6"] <= 0.05
    assert res["pairs_above_0.85"] > 10 and res["pairs_below_0.6"] > 50 and res["ratio"] > 0


def test_identical_documents_are_removed_by_both():
    docs = ["a b c d e f g h i j k"] * 2 + ["z y x w v u t s r q p"]
    assert run_ours(docs, 0.75, 5, 64)[0] == run_datasketch(docs, 0.75, 5, 64)[0] == [False, True, False]
    assert exact_jaccard(docs[0], docs[1], 5) == 1.0
