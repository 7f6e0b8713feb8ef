"""Content-addressed stage outputs: fingerprints, atomic directories, manifests.

Every stage writes into ``<root>/<stage>/<fingerprint>/`` where the fingerprint is a hash
of the stage name, a stage version (bumped when the output format or algorithm changes),
the config fields that affect the output, and the fingerprints (or content hashes) of
what it reads. The same string is used as Prefect's cache key and as MLflow's tag, so one
identifier names a result everywhere.

A stage builds into a private temporary directory next to the final one and renames it
into place only once everything, including ``manifest.json`` and the ``_COMPLETE``
marker, is written. A crash therefore never leaves a directory that looks finished, and
two concurrent builders of the same fingerprint cannot corrupt each other: the first
rename wins, the loser discards its copy and uses the winner's.

Trade-off: input files are hashed by content (BLAKE2b, ~1 GB/s), which costs a read of the
corpus per run but survives copies, renames and ``touch``; size+mtime would be faster but
would silently reuse stale output after an in-place edit that keeps the size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

COMPLETE_MARKER = "_COMPLETE"
MANIFEST = "manifest.json"


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of a file's bytes, streamed; remembered per (path, size, mtime) so that a
    flow computing fingerprints up front and the stage itself read the corpus once."""
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


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
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


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file() and (path / MANIFEST).is_file()


def read_manifest(path: Path) -> dict[str, Any]:
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete stage output (no {COMPLETE_MARKER} marker)")
    return json.loads((path / MANIFEST).read_text())


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextmanager
def stage_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``final`` when the block succeeds.

    The block must write ``manifest.json`` itself; the marker is added here. On error the
    temporary directory is removed and the error propagates. If another process completed
    ``final`` first, our copy is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"stage wrote no {MANIFEST} into {tmp}")
        (tmp / COMPLETE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
        _fsync_dir(tmp)
        if final.exists() and not is_complete(final):
            shutil.rmtree(final)  # debris of a crashed run (cannot happen with rename, but be safe)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent run won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    # data files were fsynced by commit_file; make the manifest, marker and names durable
    for name in (MANIFEST, COMPLETE_MARKER):
        with open(path / name, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp: Path, final: Path) -> None:
    """Rename a fully written file into place (same directory, atomic on POSIX)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
