"""The admin's jury-run form and "Test connection" in Chromium: subsets ticked from the stored ones, a preview with
the run's figures, a two-juror jury warned about and launched only once confirmed; a juror's change page testing its
endpoint and answering there. Screenshots in var/test-artifacts/e2e/jury_*.png."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jury.models import Juror, JuryRun
from tests.annotation.factories import SampleFactory
from tests.loopback import LoopbackOpenAI, closed_port_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _no_page_overflow(page) -> None:
    width, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"the page is {width} px wide in a {inner} px window"


@pytest.fixture
def superuser(admin_user):
    admin_user.is_superuser = True
    admin_user.save()
    return admin_user


def test_the_run_form_previews_and_asks_to_confirm_a_jury_of_two(open_as, live_server, superuser, shots):
    with LoopbackOpenAI(models=["a", "b", "c"]) as server:
        jurors = [
            Juror.objects.create(name=name, backend="openai", model_name=name, base_url=server.url)
            for name in ("a", "b", "c")
        ]
        for subset, n in (("S-Eval-VL", 4), ("HADES-Eval", 2), ("MM-Eval", 3)):
            SampleFactory.create_batch(n, subset=subset)
        url = reverse("admin:jury_juryrun_add")
        page = open_as(superuser, next_url=url)
        page.set_viewport_size({"width": 1280, "height": 800})
        assert page.locator("input[name=_launch]").count() == 0
        page.check("input[name=subsets][value='S-Eval-VL']")
        page.check("input[name=subsets][value='MM-Eval']")
        for juror in jurors[:2]:
            page.check(f"input[name=jurors][value='{juror.pk}']")
        page.click("input[name=_preview]")
        page.wait_for_load_state("networkidle")
        preview = page.inner_text("#jury-run-preview")
        assert "14 = 7 samples × 2 jurors (14 pairs) − 0 skipped" in preview
        assert page.is_visible("#jury-size-warning") and "this run seats 2" in page.inner_text(
            "#jury-size-warning"
        )
        _no_page_overflow(page)
        page.screenshot(path=shots / "jury_run_preview.png", full_page=True)

        # Launch without ticking the confirmation: nothing starts, the box is pointed at.
        page.click("input[name=_launch]")
        page.wait_for_load_state("networkidle")
        assert "Tick the box to launch with 2 jurors" in page.inner_text("#jury-size-warning")
        assert not JuryRun.objects.exists()
        page.screenshot(path=shots / "jury_run_unconfirmed.png", full_page=True)

        page.check("input[name=confirm_jurors]")
        page.click("input[name=_launch]")
        page.wait_for_url(f"{live_server.url}/jury/runs/*/")
        run = JuryRun.objects.get()
        assert run.total == 14 and sorted(run.jurors.values_list("name", flat=True)) == ["a", "b"]
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_server.url}{url}")
        page.screenshot(path=shots / "jury_run_form_phone.png", full_page=True)


def test_a_jurors_change_page_tests_its_endpoint(open_as, live_server, superuser, shots):
    with LoopbackOpenAI(models=["other-model"]) as server:
        juror = Juror.objects.create(
            name="alpha", backend="openai", model_name="qwen-vl", base_url=server.url
        )
        down = Juror.objects.create(name="down", backend="openai", model_name="m", base_url=closed_port_url())
        url = reverse("admin:jury_juror_change", args=[juror.pk])
        page = open_as(superuser, next_url=url)
        page.set_viewport_size({"width": 1280, "height": 800})
        page.click("button:has-text('Test connection')")
        page.wait_for_url(f"{live_server.url}{url}")
        message = page.inner_text(".messagelist")
        assert "'qwen-vl' is not served" in message and "it serves other-model" in message
        page.screenshot(path=shots / "jury_juror_test_connection.png", full_page=True)

        # From the list, for several at once.
        page.goto(f"{live_server.url}{reverse('admin:jury_juror_changelist')}")
        page.check(f"input[name=_selected_action][value='{juror.pk}']")
        page.check(f"input[name=_selected_action][value='{down.pk}']")
        page.select_option("select[name=action]", "test_connection")
        page.click("button[name=index]")
        page.wait_for_load_state("networkidle")
        messages = page.inner_text(".messagelist")
        assert "connection refused" in messages and "Juror alpha" in messages
        page.screenshot(path=shots / "jury_juror_list_test_connection.png", full_page=True)


def test_the_run_page_shows_who_drove_what_on_a_desktop_and_a_phone(open_as, live_server, superuser, shots):
    from jury import services
    from tests.loopback import keyword_judge

    with LoopbackOpenAI(keyword_judge) as server:
        jurors = [
            Juror.objects.create(name=name, backend="openai", model_name=name, base_url=server.url)
            for name in ("gemma-3-27b", "mistral-small-3.2", "qwen2.5-vl-32b")
        ]
        SampleFactory.create_batch(5)
        run = services.jury_run_create(selection={}, enqueue=False)
        for juror, node in zip(
            jurors, ("jury@gpu-node-07.cluster.internal",) * 2 + ("jury@gpu-node-11",), strict=True
        ):
            services.juror_drive(juror.pk, worker=node)
    page = open_as(superuser, next_url=reverse("jury_run", args=[run.pk]))
    table = page.locator("table", has=page.locator("caption", has_text="Who drove what"))
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).inner_text().split("\t")[:3] == [
        "jury@gpu-node-07.cluster.internal", "10", "gemma-3-27b, mistral-small-3.2",
    ]  # fmt: skip
    page.screenshot(path=shots / "jury_run_workers.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    _no_page_overflow(page)
    page.screenshot(path=shots / "jury_run_workers_phone.png", full_page=True)
