"""Real servers and workers for benchmarks and tests: free ports, waiting, Prefect API calls,
and processes stopped however the caller ends (each in its own session, stopped with its children)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def call(url: str, body: dict | None = None) -> dict:
    """GET (or POST ``body``) a Prefect API endpoint; the JSON reply."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as reply:
        return json.loads(reply.read())


def healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def prefect_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a private Prefect server on ``port`` (its own home and database)."""
    (tmp_path / "prefect").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_UI_URL": f"http://127.0.0.1:{port}", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


@contextmanager
def processes(log_path: Path, env: dict[str, str], cwd: Path) -> Iterator:
    """``start(argv, **more_env)`` launches a process (own session, output to ``log_path``); all
    are stopped, newest first, when the block ends."""
    procs: list[subprocess.Popen] = []
    log = open(log_path, "w")

    def start(argv: list[str], **more_env: str) -> subprocess.Popen:
        procs.append(subprocess.Popen(argv, env=env | more_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        return procs[-1]

    try:
        yield start
    finally:
        for p in reversed(procs):
            stop(p)
        log.close()


def start_prefect_server(start, port: int) -> None:
    start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)])
    wait_until(lambda: healthy(f"http://127.0.0.1:{port}/api/health"), 120, "the Prefect server")
