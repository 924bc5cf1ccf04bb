"""A real Celery worker process for tests, on the broker the test chooses."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from guardtrace.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER'] or 'postgres'}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _reset_connections() -> None:
    """Drop pooled broker connections so the next message goes to the broker now configured."""
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextmanager
def worker(
    broker_url: str, options: dict, media_root: str, queues: str = "default", extra_env: dict | None = None
):
    """Point this process's Celery app at the broker and start a worker process on it."""
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
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "guardtrace", "worker", "-Q", queues, "--pool", "solo", "-l", "INFO"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
        celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
        _reset_connections()
        if process.returncode not in (0, -15):
            print(output)


def filesystem_broker(root: Path) -> dict:
    """Transport options for kombu's filesystem broker under root/var/celery (as the embedded default uses)."""
    folder = root / "var" / "celery"
    options = {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
               "processed_folder": str(folder / "processed"), "store_processed": False}  # fmt: skip
    for path in {options["data_folder_in"], options["processed_folder"]}:
        os.makedirs(path, exist_ok=True)
    return options
