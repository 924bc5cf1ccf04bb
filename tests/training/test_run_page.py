"""A run's page: the ETA from the steps done and the time they took, and the live section (refreshed by htmx) that
carries the actions, so a round that failed stops offering Cancel without a reload."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from training.models import TrainingRun
from training.selectors import duration_text, run_elapsed, run_eta

pytestmark = pytest.mark.django_db


def _run(**fields) -> TrainingRun:
    now = timezone.now()
    values = {
        "stage": "sft",
        "status": "running",
        "step": 100,
        "max_steps": 400,
        "started_at": now - timedelta(minutes=5),
    }
    return TrainingRun.objects.create(**{**values, **fields})


def test_the_eta_follows_the_pace_since_the_start():
    run = _run()
    now = run.started_at + timedelta(minutes=5)
    # 100 steps in 300 s: 3 s a step, 300 steps to go.
    assert run_eta(run, now=now) == pytest.approx(900)
    assert run_elapsed(run, now=now) == pytest.approx(300)


def test_a_resumed_round_counts_its_pace_from_its_first_step_logged_since_it_resumed():
    started = timezone.now() - timedelta(minutes=2)
    t0 = started.timestamp()
    history = [
        {"step": 50, "loss": 1.0, "time": t0 - 3600},  # the first start's: not this pace
        {"step": 60, "loss": 0.9, "time": t0 + 20},
        {"step": 80, "loss": 0.8, "time": t0 + 60},
    ]
    run = _run(resumes=1, started_at=started, step=80, history=history)
    # 20 steps in 40 s since the first step of this start: 2 s a step, 320 to go.
    assert run_eta(run, now=started + timedelta(seconds=60)) == pytest.approx(640)
    # Nothing logged since it resumed: unknown.
    run.history, run.step = history[:1], 50
    assert run_eta(run) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "pending", "started_at": None},
        {"step": 0},
        {"max_steps": 0},
        {"status": "failed"},
        {"step": 400},  # evaluating after the last step
    ],
)
def test_the_eta_is_unknown_when_it_cannot_be_told(fields):
    assert run_eta(_run(**fields)) is None


def test_durations_read_as_people_say_them():
    assert [duration_text(s) for s in (None, 0, 45.4, 185, 7800)] == [
        "—",
        "0 s",
        "45 s",
        "3 min 05 s",
        "2 h 10 min",
    ]


def test_the_live_section_carries_the_actions_and_drops_cancel_once_the_round_failed(client_for, admin_user):
    run = _run(history=[{"step": 5, "epoch": 0.1, "loss": 0.69}])
    url = reverse("training_run", args=[run.pk])
    client = client_for(admin_user)
    page = client.get(url).content.decode()
    assert 'id="run-eta">15 min 0' in page  # 3 s a step, 300 steps to go
    live = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert live.lstrip().startswith('<section id="live"') and 'hx-trigger="every 3s"' in live
    assert ">Cancel</button>" in live and 'id="history"' in live

    TrainingRun.objects.filter(pk=run.pk).update(status="failed", finished_at=timezone.now(), error="boom")
    live = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert ">Cancel</button>" not in live and "Resume from the last checkpoint" in live
    assert "hx-trigger" not in live  # a finished round is not polled again
    assert 'id="run-eta">—<' in live
    progress = client.get(url + "?format=json").json()
    assert progress["eta_seconds"] is None and progress["status"] == "failed"
