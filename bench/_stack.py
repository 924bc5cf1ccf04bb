"""The production-like stack for the soak runs: a Redis of their own, real `celery worker` and gunicorn processes.

Every process starts in its own session, so stopping it takes its children (prefork pool, gunicorn workers) with it;
`Stack` stops whatever it started when its `with` block ends, however it ends. Each process writes its output to a
log file under the stack's folder (a pipe nobody reads would fill and stall it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.processes import celery_worker_command, gunicorn_command  # noqa: E402


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition, timeout: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout:.0f} s: {what}")


class Stack:
    """Processes started for one soak run, all stopped (with their children) when the block ends."""

    def __init__(self, name: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=f"guardtrace-{name}-"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.redis_port: int | None = None
        self._counts: dict[str, int] = {}

    def __enter__(self) -> Stack:
        # A SIGTERM (`timeout`, CI, a closed terminal) unwinds like Ctrl-C, so the processes below are stopped too.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        return self

    def __exit__(self, *exc) -> None:
        for name in list(self.processes):
            self.stop(name)
        shutil.rmtree(self.folder, ignore_errors=True)

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        self._counts[name] = self._counts.get(name, 0) + 1
        log = (self.folder / f"{name}.{self._counts[name]}.log").open("w")
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.processes[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop the process and everything in its session; SIGKILL is a crash (nothing shuts down cleanly)."""
        process = self.processes.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
            except ProcessLookupError:
                pass
        # A session's other members (a prefork child that outlived its parent) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def log_tail(self, name: str, lines: int = 40) -> str:
        logs = sorted(self.folder.glob(f"{name}.*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""

    # -- Redis ------------------------------------------------------------------------------------------------------

    def redis_start(self, port: int) -> str:
        """A redis-server of the soak's own on `port` (refused if anything listens there), no persistence — as the
        shared one runs — so a restart loses every queued message."""
        if self.redis_port is None and listening(port):
            raise RuntimeError(f"something already listens on 127.0.0.1:{port}: choose SOAK_REDIS_PORT")
        self.redis_port = port
        server = shutil.which("redis-server") or "redis-server"
        self.start("redis", [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(self.folder)])  # fmt: skip
        wait_until(lambda: listening(port), 20, "redis-server did not start")
        return f"redis://127.0.0.1:{port}/0"

    def redis_restart(self, down_s: float = 2.0) -> None:
        assert self.redis_port is not None
        self.stop("redis")
        wait_until(lambda: not listening(self.redis_port), 10, "redis-server did not stop")
        time.sleep(down_s)
        self.redis_start(self.redis_port)

    # -- Celery and gunicorn ----------------------------------------------------------------------------------------

    def worker(self, name: str, queues: str, env: dict, concurrency: int = 1) -> subprocess.Popen:
        """A real `celery worker` on `queues` (a prefork pool when concurrency > 1), named for the soak."""
        node = f"soak-{name}-{self._counts.get(name, 0) + 1}@%h"
        options = ("-n", node, "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat")
        return self.start(name, celery_worker_command(queues, *options, concurrency=concurrency), env)

    def gunicorn(self, port: int, env: dict, workers: int = 4, threads: int = 4) -> subprocess.Popen:
        """The web app as production serves it, on loopback, its control socket under the stack's folder."""
        options = ["--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread"]
        options += ["--log-level", "warning", "--control-socket", str(self.folder / "gunicorn.ctl")]
        process = self.start("gunicorn", gunicorn_command(port, *options), env)
        wait_until(lambda: listening(port) or process.poll() is not None, 60, "gunicorn did not start")
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{self.log_tail('gunicorn')}")
        return process
