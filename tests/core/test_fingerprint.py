"""Fingerprints and content hashes."""

from __future__ import annotations

import os

from bertpipe.core.fingerprint import fingerprint, hash_file


def test_a_fingerprint_names_stage_version_config_and_upstream():
    base = fingerprint("shards", 1, {"a": 1, "b": [1, 2]}, ["x", "y"])
    assert len(base) == 16 and base == fingerprint("shards", 1, {"b": [1, 2], "a": 1}, ["x", "y"])  # key order is free
    changed = [fingerprint("ingest", 1, {"a": 1, "b": [1, 2]}, ["x", "y"]), fingerprint("shards", 2, {"a": 1, "b": [1, 2]}, ["x", "y"]),
               fingerprint("shards", 1, {"a": 2, "b": [1, 2]}, ["x", "y"]), fingerprint("shards", 1, {"a": 1, "b": [1, 2]}, ["y", "x"])]
    assert len({base, *changed}) == 5


def test_a_file_hash_follows_its_content_not_its_name(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same bytes")
    b.write_text("same bytes")
    assert hash_file(a) == hash_file(b)
    st = os.stat(a)
    a.write_text("SAME BYTES")  # same size: the memo must notice the new mtime
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert hash_file(a) != hash_file(b)
