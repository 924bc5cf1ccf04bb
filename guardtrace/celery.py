"""The Celery app: queues `default`, `jury` (I/O bound), `gpu` (one job at a time per GPU) and `audit` (the audit
API's inference, answered while its caller waits).

Start a worker with: celery -A guardtrace worker -Q default,jury -l info
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardtrace.settings")

app = Celery("guardtrace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("jury"), Queue("gpu"), Queue("audit"))
app.autodiscover_tasks()
