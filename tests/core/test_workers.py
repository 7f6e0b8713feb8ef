"""Process pools for stage units: results in order, several processes, none inside a daemon."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

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


SLEEPER = """
import sys, time
from bertpipe.core.workers import pool_map
def nap(x):
    time.sleep(300)
if __name__ == "__main__":
    print("started", flush=True)
    list(pool_map(nap, list(range(4)), workers=2))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_parent_leaves_no_worker_behind(tmp_path, sig):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "sleeper.py")], stdout=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 60
    while time.time() < deadline and len(parent.children(recursive=True)) < 3:  # forkserver + 2 workers
        time.sleep(0.2)
    family = parent.children(recursive=True)
    assert len(family) >= 3, family
    proc.send_signal(sig)
    proc.wait(10)
    gone, alive = psutil.wait_procs(family, timeout=5)
    assert alive == [], f"left running after {sig.name}: {alive}"


def test_a_forkserver_whose_stage_died_before_it_loaded_the_guard_exits():
    """The stage's process can die while its forkserver is still starting (seconds on a loaded
    machine), with requests for workers queued: the guard must follow the stage's pid, not
    whoever is the parent by the time it loads (init, which never dies)."""
    stage = subprocess.Popen([sys.executable, "-c", "pass"])
    stage.wait()  # a stage process that is already gone
    env = {**os.environ, "BERTPIPE_FORKSERVER_PARENT": str(stage.pid)}
    server = subprocess.Popen([sys.executable, "-c", "import bertpipe.core.forkserver_guard, time; time.sleep(60)"], env=env)
    assert server.wait(timeout=15) == 1  # left on its own at once; the sleep would take a minute


def test_the_pool_names_its_process_as_the_forkservers_parent():
    list(pool_map(square_and_pid, [1, 2], workers=2))
    assert os.environ["BERTPIPE_FORKSERVER_PARENT"] == str(os.getpid())
