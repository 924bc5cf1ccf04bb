"""A running import job's admin page in Chromium: it follows the job without reloading (the job's part swapped in
every few seconds) until the job ends, and the reader can pause that; no timed reload (axe's meta-refresh)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.models import ImportJob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_a_running_jobs_page_follows_it_until_it_ends_and_can_be_paused(open_as, admin_user, shots):
    admin_user.is_superuser = True  # the model's admin permissions, as the admin role's group holds them
    admin_user.save()
    job = ImportJob.objects.create(format="guardtrace", original_name="MMBench_500.json", status="running",
                                   created_by=admin_user)  # fmt: skip
    page = open_as(admin_user, next_url=reverse("admin:annotation_importjob_change", args=[job.pk]))
    assert page.locator('meta[http-equiv="refresh"]').count() == 0
    page.evaluate("window.sentinel = 1")  # gone if the page were loaded again
    page.click("#job-refresh-toggle")  # paused: the job's end is not shown
    assert page.get_attribute("#job-refresh-toggle", "aria-pressed") == "true"
    ImportJob.objects.filter(pk=job.pk).update(status="succeeded", created=3)
    page.wait_for_timeout(4_000)
    assert (
        page.is_visible("#job-refresh") and "cancel this import" in page.inner_text("#content-main").lower()
    )
    page.click("#job-refresh-toggle")  # resumed: within a tick or two the page says the job succeeded
    page.wait_for_selector("#job-refresh", state="detached", timeout=10_000)
    assert "Succeeded" in page.inner_text("#content-main")
    assert "cancel this import" not in page.inner_text("#content-main").lower()
    assert page.evaluate("window.sentinel") == 1
    page.screenshot(path=shots / "import_job_ended.png", full_page=True)
