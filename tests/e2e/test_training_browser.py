"""A training run's page and the round launch form in Chromium, at a laptop's and a phone's size: no sideways page
overflow, a real loss chart (canvas, axes, ticks, zoom), an ETA, and the live section dropping *Cancel* once the
round has failed; the launch form filled with what the round would use, following edits. Screenshots in
var/test-artifacts/e2e/training_*.png."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from training.models import TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

SIZES = {"laptop": (1280, 800), "phone": (390, 844)}
# Polling every 3 s; the swap lands a moment after the answer.
POLL_WAIT_MS = 6_000


def _running_round() -> TrainingRun:
    history = [
        {"step": step, "epoch": round(step / 40, 4), "loss": 0.7 * math.exp(-step / 60) + 0.05}
        for step in range(5, 205, 5)
    ]
    # One unbroken line as long as a traceback's: it must wrap, not widen the page.
    log = "\n".join(
        [f"step {h['step']} loss {h['loss']:.4f}" for h in history[-10:]] + ["/very/long/path/" * 40]
    )
    return TrainingRun.objects.create(
        stage="sft",
        status="running",
        phase="training",
        step=200,
        max_steps=400,
        epoch=5.0,
        loss=history[-1]["loss"],
        history=history,
        log_tail=log,
        hyperparameters={"max_length": 1024},
        started_at=timezone.now() - timedelta(minutes=10),
    )


# Records every Content Security Policy violation the page reports (uPlot styles its elements through the DOM, which
# the policy allows; an inline style or script would be refused and reported here).
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.effectiveDirective} ${e.blockedURI}`));
"""


def _no_csp_violation(page) -> None:
    assert page.evaluate("() => window.__csp") == []


def _no_page_overflow(page) -> None:
    width, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"the page is {width} px wide in a {inner} px window"


def test_the_run_page_fits_both_screens_and_drops_cancel_after_a_failure(
    open_as, live_server, admin_user, shots
):
    run = _running_round()
    url = reverse("training_run", args=[run.pk])
    page = open_as(admin_user, next_url=url)
    page.context.add_init_script(WATCH_CSP)
    for name, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}{url}")
        page.wait_for_selector("#curve-loss canvas")
        page.wait_for_load_state("networkidle")
        _no_page_overflow(page)
        chart = page.locator("#curve-loss")
        # uPlot's two axes, its title above the plotting area (not over the line), a canvas as wide as its box.
        assert chart.locator(".u-axis").count() == 2
        assert chart.locator(".u-title").inner_text() == "loss"
        title, plot = chart.locator(".u-title").bounding_box(), chart.locator(".u-over").bounding_box()
        assert title["y"] + title["height"] <= plot["y"] + 1
        box, canvas = chart.bounding_box(), chart.locator("canvas").bounding_box()
        assert (
            canvas["width"] >= box["width"] * 0.85
            and canvas["x"] + canvas["width"] <= box["x"] + box["width"]
        )
        # 200 of 400 steps in 10 minutes: about 10 minutes left.
        assert page.inner_text("#run-eta").startswith(("9 min", "10 min"))
        _no_csp_violation(page)
        page.screenshot(path=shots / f"training_run_{name}.png", full_page=True)

    # Drag across the chart to zoom in; double-click to zoom back out.
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{live_server.url}{url}")
    page.wait_for_selector("#curve-loss canvas")
    canvas = page.locator("#curve-loss canvas")
    page.mouse.move(0, 0)
    before = canvas.screenshot()
    over = page.locator("#curve-loss .u-over").bounding_box()
    middle = over["y"] + over["height"] / 2
    page.mouse.move(over["x"] + over["width"] * 0.2, middle)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] * 0.5, middle, steps=8)
    page.mouse.up()
    page.mouse.move(0, 0)
    assert canvas.screenshot() != before
    page.screenshot(path=shots / "training_run_zoomed.png", full_page=True)
    page.locator("#curve-loss .u-over").dblclick()
    page.mouse.move(0, 0)
    assert canvas.screenshot() == before

    # The round fails on the worker: within the polling interval the page says so and offers no Cancel.
    assert page.locator("#run-actions button", has_text="Cancel").count() == 1
    TrainingRun.objects.filter(pk=run.pk).update(
        status="failed", phase="failed", finished_at=timezone.now(), error="RuntimeError: CUDA out of memory"
    )
    page.locator("#run-actions button", has_text="Cancel").wait_for(state="detached", timeout=POLL_WAIT_MS)
    assert page.locator("#run-actions button", has_text="Resume").count() == 1
    assert "Failed" in page.inner_text("#live .status") and page.inner_text("#run-eta") == "—"
    assert page.locator("#curve-loss canvas").count() == 1  # the chart stays
    _no_page_overflow(page)
    _no_csp_violation(page)
    page.screenshot(path=shots / "training_run_failed.png", full_page=True)


def test_the_launch_form_shows_what_the_round_would_use_and_follows_edits(
    open_as, live_server, admin_user, shots
):
    admin_user.is_superuser = True
    admin_user.save()
    url = reverse("admin:training_trainingrun_add") + "?stage=sft"
    page = open_as(admin_user, next_url=url)
    page.context.add_init_script(WATCH_CSP)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{live_server.url}{url}")
    page.wait_for_load_state("networkidle")
    # Filled with the 3B defaults; yes/no fields read Yes or No.
    assert (
        page.input_value("#id_hp_batch_size") == "4"
        and page.input_value("#id_hp_gradient_accumulation") == "8"
    )
    assert page.locator("#id_hp_freeze_vision option:checked").inner_text() == "Yes"
    assert "Unknown" not in page.inner_text("#round-form")
    assert page.inner_text("#effective-batch") == "4 × 8 × 1 process = 32 records per update"

    page.fill("#id_hp_gradient_accumulation", "2")
    assert page.inner_text("#effective-batch") == "4 × 2 × 1 process = 8 records per update"
    assert '"gradient_accumulation": 2' in page.inner_text("#round-config")
    # The tiny preset: the fields left alone take its values; the one edited keeps the edit.
    page.select_option("#id_preset", "tiny")
    assert (
        page.input_value("#id_hp_batch_size") == "8" and page.input_value("#id_hp_learning_rate") == "0.003"
    )
    assert page.input_value("#id_hp_gradient_accumulation") == "2"
    assert page.inner_text("#effective-batch") == "8 × 2 × 1 process = 16 records per update"
    assert page.locator("#id_hp_gradient_checkpointing option:checked").inner_text() == "No"
    page.screenshot(path=shots / "training_round_form.png", full_page=True)

    # Preview: the server resolves the same config.
    page.click("input[name=_preview]")
    page.wait_for_load_state("networkidle")
    config = page.inner_text("#round-config")
    assert (
        '"batch_size": 8' in config
        and '"gradient_accumulation": 2' in config
        and '"learning_rate": 0.003' in config
    )
    assert page.inner_text("#effective-batch") == "8 × 2 × 1 process = 16 records per update"
    _no_csp_violation(page)
    page.set_viewport_size({"width": 390, "height": 844})
    _no_page_overflow(page)
    page.screenshot(path=shots / "training_round_form_phone.png", full_page=True)
