"""Where a stage's units run: the local process pool, or a Dask cluster.

``run_stage`` takes a ``map_units`` function; the default is the local pool
(``bertpipe.core.workers.pool_map``). ``on_dask(address)`` returns one that submits every unit
to the Dask scheduler at ``address`` and hands the reports back in plan order; with no address
it uses the cluster of the Dask worker it is called on (a flow under ``DaskTaskRunner``: the
stage's task runs on a worker, seceded from its thread pool while its units run). Only stages
marked ``distributable`` (many independent units: ingest, shards) are spread; the others keep
running where they are called.

The cluster's workers read the inputs and write into the stage's temporary directory, so both
must be on storage every worker sees at the same path (NFS, a cluster filesystem, or one
machine). The stages plan their units with absolute paths, resolved in the caller's working
directory, so relative paths mean what they mean to the caller, not to a worker. A unit that
fails fails the stage with its own error; Dask may retry a unit on another worker when one
dies, and a retried unit writes the same bytes to the same file names, so the output never
depends on where or how often a unit ran.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bertpipe.core.stage import MapUnits, Stage


@contextmanager
def _client(address: str | None) -> Iterator[Any]:
    from distributed import Client, get_worker, worker_client

    if address is not None:
        with Client(address, set_as_default=False) as client:
            yield client
        return
    get_worker()  # raises ValueError off a Dask worker
    with worker_client(separate_thread=True) as client:
        yield client


def on_dask(address: str | None = None, *, retries: int = 2) -> MapUnits:
    """A ``map_units`` for the Dask scheduler at ``address`` (None: the current worker's cluster)."""

    def run(fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[Any]:
        if not units:
            return
        name = getattr(fn, "__self__", None)
        prefix = f"{getattr(name, 'name', 'stage')}-unit"  # shown in Dask's dashboard and task stream
        token = uuid.uuid4().hex[:8]
        with _client(address) as client:
            futures = client.map(fn, units, key=[f"{prefix}-{i:05d}-{token}" for i in range(len(units))],
                                 pure=False, retries=retries)
            try:
                for future in futures:
                    yield future.result()  # in plan order; a failed unit raises its own exception
            finally:
                client.cancel(futures)

    return run


def on_a_dask_worker() -> bool:
    """True when this code runs inside a Dask worker (e.g. a flow task under ``DaskTaskRunner``)."""
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def units_executor(stage: Stage, dask_address: str | None = None) -> MapUnits | None:
    """The executor for ``stage``'s units: the Dask cluster at ``dask_address``, else the one this
    runs on, for distributable stages; None (the local pool) otherwise."""
    if not stage.distributable:
        return None
    if dask_address is not None:
        return on_dask(dask_address)
    return on_dask() if on_a_dask_worker() else None
