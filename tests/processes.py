"""Starting the app's own processes on loopback — a free port, the `celery worker` and gunicorn command lines — for
the tests (tests/workers.py) and the soak benchmarks (bench/_stack.py). Plain Python: the benchmarks import it
before Django is set up."""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def celery_worker_command(queues: str, *options: str, concurrency: int = 1) -> list[str]:
    """`celery worker` on `queues`: one process (the `solo` pool), or a prefork pool when `concurrency` > 1."""
    pool = (
        ["--pool", "solo"] if concurrency == 1 else ["--pool", "prefork", "--concurrency", str(concurrency)]
    )
    return [sys.executable, "-m", "celery", "-A", "guardtrace", "worker", "-Q", queues, *pool, *options]


def gunicorn_command(port: int, *options: str) -> list[str]:
    """The web app under gunicorn on 127.0.0.1:`port`."""
    bind = f"127.0.0.1:{port}"
    return [sys.executable, "-m", "gunicorn", "guardtrace.wsgi:application", "--bind", bind, *options]
