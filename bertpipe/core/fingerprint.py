"""Fingerprints: one short name for (stage, version, output-affecting config, inputs).

A stage's fingerprint hashes its name, a stage version (bumped when the output format or the
algorithm changes), the config fields that change its output, and what it reads: the
fingerprints of upstream stages, or the content hashes of input files. The same string names
the output directory, is Prefect's cache key and tags the stage's MLflow run.

Trade-off: input files are hashed by content (BLAKE2b, ~1 GB/s), which costs a read of the
corpus per run but survives copies, renames and ``touch``; size+mtime would be faster but
would silently reuse stale output after an in-place edit that keeps the size. A hash is
remembered per (path, size, mtime) within a process, so predicting fingerprints up front and
running the stage read the corpus once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

_HASHES: dict[tuple[str, int, int], str] = {}


def hash_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of a file's bytes, streamed (memoized per path, size and mtime)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if (known := _HASHES.get(key)) is not None:
        return known
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    _HASHES[key] = digest = h.hexdigest()
    return digest


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (recorded per shard in manifests for third-party checks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(stage: str, version: int, config: BaseModel | dict[str, Any], upstream: Sequence[str] = ()) -> str:
    """A 16-hex-digit name for (stage, version, output-affecting config, upstream fingerprints).

    ``config`` fields that do not change the output (worker counts, progress bars) must be
    excluded by the caller; pydantic models are dumped in JSON mode with sorted keys.
    """
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    payload = json.dumps(
        {"stage": stage, "version": version, "config": cfg, "upstream": list(upstream)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
