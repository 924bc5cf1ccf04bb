from __future__ import annotations

import base64

from celery import shared_task

from common.work import on_worker_start
from guardmodel import services


@shared_task(bind=True, acks_late=True)
def guard_job_run_task(self, job_id: int) -> bool:
    """Judge a guard job's samples. A redelivery (the worker died mid-job) takes the job over and skips what is done."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return services.guard_job_run(job_id=job_id, redelivered=redelivered)


@shared_task(name="guardmodel.tasks.audit_task", ignore_result=False, acks_late=False)
def audit_task(
    checkpoint_id: int, question: str, thinking: str, answer: str, image_b64: str | None, locate: bool = False,
    reading: str = "analysis",
) -> dict:  # fmt: skip
    """One audit API call's inference, on the audit worker (which keeps the checkpoint loaded between calls); the web
    process waits for the answer. Not redelivered if this worker dies: the caller has given up by then."""
    image = None if image_b64 is None else base64.b64decode(image_b64)
    return services.audit_answer(checkpoint_id, question, thinking, answer, image, locate, reading)


# A starting worker queues again the guard jobs a dead worker held.
on_worker_start(services.guard_jobs_resume)


@shared_task(bind=True, name="guardmodel.tasks.audit_session_task", ignore_result=False, acks_late=False)
def audit_session_task(self, action: str, **kwargs) -> dict:
    """One call on an incremental audit session, on the audit worker that holds it; says which worker answered."""
    if kwargs.get("image") is not None:
        kwargs["image"] = base64.b64decode(kwargs["image"])
    answer = services.session_action(action, **kwargs)
    return {**answer, "worker": self.request.hostname or ""}
