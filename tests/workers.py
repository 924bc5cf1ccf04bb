"""A real Celery worker process for tests, on the broker the test chooses."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import kombu.pools
from django.db import connection

from guardtrace.celery import app as celery_app
from tests.processes import celery_worker_command, free_port, gunicorn_command

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER'] or 'postgres'}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _reset_connections() -> None:
    """Drop pooled broker connections so the next message goes to the broker now configured (kombu's global
    producer pools too: they are keyed by broker URL and would hand back a closed pool for a URL used before)."""
    kombu.pools.reset()
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


# Where a worker started with `log=` writes its output (by pid), for the failure messages of `wait_for`.
_LOGS: dict[int, Path] = {}


def worker_output(process: subprocess.Popen) -> str:
    """What the worker printed so far: its log file, or its pipe once it has exited."""
    if (log := _LOGS.get(process.pid)) is not None:
        return log.read_text(errors="replace")
    return process.stdout.read() if process.stdout else "the worker exited"


@contextmanager
def worker(
    broker_url: str, options: dict, media_root: str, queues: str = "default", extra_env: dict | None = None,
    concurrency: int = 1, name: str = "", command: list[str] | None = None, log: Path | None = None,
):  # fmt: skip
    """Point this process's Celery app at the broker and start a worker process on it (its own process group, so
    `kill_worker` can take it down with its pool children, as a crash would). One process (`solo` pool) unless
    `concurrency` asks for a prefork pool; `name` is its node name (two workers on one host need their own).
    `command` replaces the whole command line (queues, concurrency and name then come from it); `log` takes the
    output instead of a pipe (a busy worker's INFO lines would fill a pipe nobody reads until the end)."""
    saved = celery_app.conf.broker_url, celery_app.conf.broker_transport_options
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options = broker_url, options
    _reset_connections()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker_url,
        "MEDIA_ROOT": media_root,
        **(extra_env or {}),
    }
    if broker_url.startswith("filesystem"):
        env["GUARDTRACE_VAR_DIR"] = str(Path(options["data_folder_in"]).parent.parent)
    argv = command or celery_worker_command(
        queues, "-l", "INFO", *(["-n", name] if name else []), concurrency=concurrency
    )
    out = log.open("w") if log is not None else subprocess.PIPE
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    if log is not None:
        out.close()
        _LOGS[process.pid] = log
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        if log is None:
            output = process.communicate(timeout=30)[0]
        else:
            output = ""
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
        _reset_connections()
        if process.returncode not in (0, -15, -9):
            print(output or worker_output(process))
        _LOGS.pop(process.pid, None)


def kill_worker(process: subprocess.Popen) -> None:
    """SIGKILL the worker and its pool children at once: no shutdown, no acknowledgement, calls cut mid-flight."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def filesystem_broker(root: Path) -> dict:
    """Transport options for kombu's filesystem broker under root/var/celery (as the embedded default uses)."""
    folder = root / "var" / "celery"
    options = {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
               "processed_folder": str(folder / "processed"), "store_processed": False,
               "control_folder": str(folder / "control")}  # fmt: skip
    for path in {options["data_folder_in"], options["processed_folder"], options["control_folder"]}:
        os.makedirs(path, exist_ok=True)
    return options


def wait_for(
    condition, process: subprocess.Popen | None, timeout: float, what: str, detail=lambda: ""
) -> None:
    """Poll `condition` until true; fails naming `what` (and `detail()`) after `timeout`, or at once with the worker's
    output if the worker process died meanwhile."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None:
            assert process.poll() is None, worker_output(process)
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s: {what} {detail()}".rstrip())


@contextmanager
def web_server(env: dict[str, str], *options: str):
    """The app under gunicorn on a free loopback port, with `options` (workers, worker class, logs); yields its URL
    once the login page answers. Stopped with its workers when the block leaves."""
    import time
    import urllib.error
    import urllib.request

    port = free_port()
    command = gunicorn_command(port, "--no-control-socket", *options)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else "gunicorn exited"
            try:
                with urllib.request.urlopen(f"{url}/accounts/login/", timeout=10) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.HTTPError):
                pass
            assert time.monotonic() < deadline, "gunicorn did not answer within 90 s"
            time.sleep(0.3)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)
