"""Process pools for the units of a stage.

Workers come from a ``forkserver`` that has imported the stage modules once: each worker
then starts in milliseconds instead of re-importing NumPy, pyarrow and tokenizers (about
0.4 CPU-s per worker with ``spawn``), and, unlike plain ``fork``, never inherits the
threads of the caller (tokenizers' and torch's pools). As with ``spawn``, a script that
calls a stage at import time needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import current_process, get_context
from typing import Any

_PRELOAD = ["bertpipe.data.ingest", "bertpipe.data.shards"]


def _init_worker() -> None:
    # One tokenizer thread per worker: the worker processes already occupy every core.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def parallel(workers: int, jobs: int) -> bool:
    """Use a pool only when it helps and is allowed: a daemonic process (a Dask worker, a
    Prefect process-pool task) may not start children, so there the stage runs in-process."""
    return workers > 1 and jobs > 1 and not current_process().daemon


def process_pool(workers: int) -> ProcessPoolExecutor:
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
