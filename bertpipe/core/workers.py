"""Process pools for the units of a stage.

Workers come from a ``forkserver`` that has imported the stage modules once: each worker
then starts in milliseconds instead of re-importing NumPy, pyarrow and tokenizers (about
0.4 CPU-s per worker with ``spawn``), and, unlike plain ``fork``, never inherits the
threads of the caller (tokenizers' and torch's pools). As with ``spawn``, a script that
calls a stage at import time needs the usual ``if __name__ == "__main__":`` guard.

No orphans: the forkserver exits within half a second of the process that started it
(``forkserver_guard``; it cannot tell on its own, since every worker holds a copy of the pipe
it watches), and every worker asks the kernel to kill it when the forkserver exits; so a stage
killed by SIGTERM, SIGKILL or the OOM killer leaves no worker holding memory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import current_process, get_context
from typing import Any

_PRELOAD = ["bertpipe.core.forkserver_guard", "bertpipe.data.ingest", "bertpipe.data.shards"]


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits, however the parent ends
    (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere a no-op). A pool worker otherwise outlives a
    killed stage, blocked on its task queue forever."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _init_worker() -> None:
    die_with_parent()  # the forkserver dies with the stage's process (forkserver_guard); its workers follow
    # One tokenizer thread per worker: the worker processes already occupy every core.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def parallel(workers: int, jobs: int) -> bool:
    """Use a pool only when it helps and is allowed: a daemonic process (a Dask worker, a
    Prefect process-pool task) may not start children, so there the stage runs in-process."""
    return workers > 1 and jobs > 1 and not current_process().daemon


def process_pool(workers: int) -> ProcessPoolExecutor:
    os.environ["BERTPIPE_FORKSERVER_PARENT"] = str(os.getpid())  # whom the forkserver follows (forkserver_guard)
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)


def pool_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> Iterator[Any]:
    """``fn`` over ``items``, results in order: in a pool of up to ``workers`` processes when
    ``parallel`` allows it, else one by one here."""
    if not parallel(workers, len(items)):
        yield from map(fn, items)
        return
    with process_pool(min(workers, len(items))) as ex:
        yield from ex.map(fn, items)


def stop_forkserver() -> None:
    """Stop (and reap) the forkserver, so its CPU time and its workers' are accounted to
    this process (benchmarks read them with ``RUSAGE_CHILDREN``). A later pool starts a new one."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # private, but the only way to wait for the server process
