"""Process pools for stage units: results in order, several processes, none inside a daemon."""

from __future__ import annotations

import multiprocessing
import os

from bertpipe.core.workers import parallel, pool_map


def square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_results_come_back_in_order_from_worker_processes():
    out = list(pool_map(square_and_pid, list(range(12)), workers=2))
    assert [sq for sq, _ in out] == [x * x for x in range(12)]
    assert os.getpid() not in {pid for _, pid in out}


def test_one_worker_or_one_unit_runs_here():
    assert {pid for _, pid in pool_map(square_and_pid, [1, 2, 3], workers=1)} == {os.getpid()}
    assert {pid for _, pid in pool_map(square_and_pid, [5], workers=4)} == {os.getpid()}


def _parallel_in_daemon(q) -> None:
    q.put(parallel(4, 10))


def test_a_daemonic_process_may_not_start_a_pool():
    q = multiprocessing.get_context("spawn").Queue()
    p = multiprocessing.get_context("spawn").Process(target=_parallel_in_daemon, args=(q,), daemon=True)
    p.start()
    p.join(60)
    assert q.get(timeout=5) is False and parallel(4, 10) is True
