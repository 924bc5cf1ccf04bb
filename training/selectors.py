"""Reads about training rounds that pages and the API share: how long a round has run and how long it has left."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from training.models import TrainingRun


def run_elapsed(run: TrainingRun, *, now: datetime | None = None) -> float | None:
    """Seconds since this start of the round (to its end, once it ended); None before it started."""
    if run.started_at is None:
        return None
    end = run.finished_at or now or timezone.now()
    return max(0.0, (end - run.started_at).total_seconds())


def run_eta(run: TrainingRun, *, now: datetime | None = None) -> float | None:
    """Seconds the training has left, from the steps done since this start and the time they took; None when that
    is unknown (not training, no step done yet, or a resumed round that has not logged since it resumed)."""
    if run.status != TrainingRun.Status.RUNNING or not run.max_steps or run.step >= run.max_steps:
        return None
    now = now or timezone.now()
    if run.started_at is None:
        return None
    # A first start counts from step 0 at its start; a resumed one from its first step logged since it resumed
    # (its step counter carries on from the checkpoint it resumed from).
    anchor: tuple[float, int] | None = (run.started_at.timestamp(), 0) if run.resumes == 0 else None
    if anchor is None:
        since = [e for e in run.history if e.get("time", 0) >= run.started_at.timestamp()]
        anchor = (since[0]["time"], since[0]["step"]) if since else None
    if anchor is None or run.step <= anchor[1]:
        return None
    per_step = (now.timestamp() - anchor[0]) / (run.step - anchor[1])
    return max(0.0, per_step * (run.max_steps - run.step))


def duration_text(seconds: float | None) -> str:
    """A duration as a person reads it: "45 s", "3 min 05 s", "2 h 10 min"; "—" when unknown."""
    if seconds is None:
        return "—"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
