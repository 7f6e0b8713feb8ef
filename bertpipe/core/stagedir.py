"""Atomic directories and the one definition of a complete stage output.

A stage output is ``ROOT/<fingerprint>/`` holding ``manifest.json`` and a ``_COMPLETE``
marker written after everything else: ``is_complete`` is the only test of "done" anywhere
(stages, CLI, flows). Outputs are built in a hidden sibling directory and renamed into place
(``atomic_dir``), so a crash never leaves a directory that looks finished, and two concurrent
builders of one fingerprint cannot corrupt each other: the first rename wins and the loser
discards its copy. The temporary name records host and pid, so the next build of the same
output removes what a killed build left (``remove_debris``). Directories get the umask's
permissions (group-readable by default), so a team can share a cache. The same helper writes checkpoints, which instead replace an older copy.
``ROOT/latest`` names the newest output, so the command line chains stages by root.

``build_lock`` makes concurrent builders of one fingerprint (the runs of a parallel sweep
reaching a shared stage at the same moment) explicit and cheap: the first builds, the others
block on an advisory file lock (``flock``: per open file, so it also separates threads; on
Linux NFS it maps to POSIX locks) and then find the output complete.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

COMPLETE_MARKER = "_COMPLETE"
MANIFEST = "manifest.json"
LATEST = "latest"


def is_complete(path: str | os.PathLike) -> bool:
    """A stage output is complete when its marker and its manifest are both there."""
    p = Path(path)
    return (p / COMPLETE_MARKER).is_file() and (p / MANIFEST).is_file()


def build_seconds(path: str | os.PathLike) -> float | None:
    """Wall seconds of the build that completed ``path`` (its last attempt, for a resumed one);
    None for outputs whose marker predates the record."""
    try:
        lines = (Path(path) / COMPLETE_MARKER).read_text().splitlines()
    except OSError:
        return None
    found = [line.split()[1] for line in lines if line.startswith("seconds ")]
    return float(found[0]) if found else None


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete stage output (no {COMPLETE_MARKER} marker)")
    return json.loads((Path(path) / MANIFEST).read_text())


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def commit_file(tmp: Path, final: Path) -> None:
    """Rename a fully written file into place (same directory, atomic on POSIX), durably."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


@contextmanager
def atomic_dir(final: Path, *, replace: bool = False, work: Path | None = None) -> Iterator[Path]:
    """Yield an empty hidden sibling directory that becomes ``final`` when the block succeeds.

    ``replace=False`` (stage outputs): if ``final`` already exists when we are done, a
    concurrent writer finished first and our copy is discarded. ``replace=True``
    (checkpoints): an existing ``final`` is swapped out and deleted. ``work``: build in this
    fixed directory instead of a fresh one, and keep it when the block fails, so a long job
    (pretraining) resumes from what it left there. On any other error the directory is removed.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if work is None:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final) + f"{_HOST}-{os.getpid()}-", dir=final.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a shared cache wants the umask's bits
    else:
        tmp = work
        tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        _fsync_dir(tmp)
        if final.exists() and replace:
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer won the race
    except BaseException:
        if work is None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def stage_dir(final: Path, work: Path | None = None) -> Iterator[Path]:
    """``atomic_dir`` for a stage output: the block writes ``manifest.json``, the marker is added here.

    The marker holds when the build finished and how long it took (``build_seconds``), kept out
    of the manifest so that manifests stay byte-identical across builds."""
    start = time.monotonic()
    with atomic_dir(final, work=work) as tmp:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"stage wrote no {MANIFEST} into {tmp}")
        (tmp / COMPLETE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + f"\nseconds {time.monotonic() - start:.3f}\n")
        if final.exists() and not is_complete(final):
            shutil.rmtree(final)  # an incomplete leftover under the final name (written by older versions)


@contextmanager
def build_lock(final: Path) -> Iterator[None]:
    """Hold the build lock of ``final`` (``.<name>.lock`` beside it) for the block (the caller
    then re-checks ``is_complete``: another builder may have finished it meanwhile). Once
    ``final`` is complete the lock file is removed (a later builder finds the output before it
    needs the lock); after a failure it stays, so that waiters and newcomers share one lock."""
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f".{final.name}.lock"
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log.info("waiting for another build of %s", final)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
            if is_complete(final):
                path.unlink(missing_ok=True)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_log = logging.getLogger(__name__)
_HOST = socket.gethostname().replace("-", "_")


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_debris(final: Path, older_than: float = 86_400) -> list[Path]:
    """Remove the temporary directories that killed builds of ``final`` left beside it.

    A temporary name carries the host and pid of its builder: one whose builder on this host
    is gone is removed; one of another host (a shared cache) is left to that host, unless
    older than ``older_than`` seconds, as are names of older versions without a pid."""
    removed = []
    for tmp in final.parent.glob(_tmp_prefix(final) + "*"):
        host, _, rest = tmp.name.removeprefix(_tmp_prefix(final)).partition("-")
        pid = rest.partition("-")[0]
        if host == _HOST and pid.isdigit():
            stale = not _alive(int(pid))
        else:
            stale = time.time() - tmp.stat().st_mtime > older_than
        if stale and tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    # data files were fsynced by commit_file; make the small files and the names durable
    for name in (MANIFEST, COMPLETE_MARKER):
        if (path / name).is_file():
            with open(path / name, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_latest(root: Path, fp: str) -> None:
    """Record ``fp`` as the newest output under ``root`` (``ROOT/latest``)."""
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(fp + "\n")
    os.replace(tmp, root / LATEST)


def resolve_stage_dir(path: str | Path, stage: str | None = None) -> Path:
    """Accept a complete stage directory, or a root whose ``latest`` names one."""
    p = Path(path)
    if is_complete(p):
        resolved = p
    elif (p / LATEST).is_file():
        resolved = p / (p / LATEST).read_text().strip()
        if not is_complete(resolved):
            raise FileNotFoundError(f"{p}/{LATEST} points to {resolved}, which is not a complete stage output")
    else:
        raise FileNotFoundError(f"{p} is neither a complete stage output nor a stage root with a '{LATEST}' file")
    if stage is not None:
        got = read_manifest(resolved).get("stage")
        if got != stage:
            raise ValueError(f"{resolved} holds a '{got}' output; expected '{stage}'")
    return resolved
