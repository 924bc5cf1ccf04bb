"""Who holds a piece of long work: a worker's id (host:pid) and whether that worker is certainly gone."""

from __future__ import annotations

import os
import socket


def worker_id() -> str:
    """This process as a holder of work: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def worker_gone(worker: str, *, host: str | None = None) -> bool:
    """True when `worker` (host:pid) ran on this host and that process no longer exists. A worker on another host
    is never known gone from here: callers add a staleness bound for those."""
    worker_host, _, pid = worker.rpartition(":")
    return worker_host == (host or socket.gethostname()) and pid.isdigit() and not pid_alive(int(pid))
