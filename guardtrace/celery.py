"""The Celery app: queues `default`, `jury` (I/O bound), `gpu` (one job at a time per GPU) and `audit` (the audit
API's inference, answered while its caller waits).

Start a worker with: celery -A guardtrace worker -Q default,jury -l info
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import celeryd_after_setup
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardtrace.settings")

app = Celery("guardtrace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("jury"), Queue("gpu"), Queue("audit"))
app.autodiscover_tasks()


@celeryd_after_setup.connect
def _listen_for_own_audit_sessions(sender, instance, **kwargs) -> None:
    """An audit worker also listens on a queue of its own (`audit.<node name>`): an incremental audit session keeps
    its cache in the worker that opened it, and its later calls are sent there. One process per audit worker: a
    session lives in one process's memory."""
    queues = instance.app.amqp.queues
    if queues.consume_from is not None and "audit" not in queues.consume_from:
        return
    queues.select_add(f"audit.{sender}")
    if getattr(instance, "concurrency", 1) != 1 and "prefork" in str(getattr(instance, "pool_cls", "")):
        logging.getLogger(__name__).warning(
            "audit worker %s runs %s processes: audit sessions need --concurrency 1 (a session lives in one)",
            sender, instance.concurrency,
        )  # fmt: skip
