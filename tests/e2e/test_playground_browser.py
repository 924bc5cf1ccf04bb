"""The guard playground in Chromium: a reviewer types an input, adds an image, picks a checkpoint and reads the
guard's verdict and scores; screenshots at a laptop's and a phone's width."""

from __future__ import annotations

import pytest

from guardmodel import services
from tests.conftest import png_bytes
from tests.loopback import LoopbackOpenAI

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_a_reviewer_tries_a_served_guard_on_her_own_input(open_as, reviewer_user, shots, tmp_path):
    image = tmp_path / "input.png"
    image.write_bytes(png_bytes(size=(48, 32)))
    with LoopbackOpenAI() as server:
        services.checkpoint_register(name="served", endpoint=server.url, served_model="g", activate=True)
        page = open_as(reviewer_user, next_url="/guard/playground/")
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.fill("#pg-question", "How is it made?")
        page.fill("#pg-thinking", "The steps: first this.\n\nThen that.")
        page.fill("#pg-answer", "I can't help with that.")
        page.set_input_files("#pg-image", str(image))
        page.click("#judge-button")
        page.wait_for_selector("#judgment")
        assert page.text_content("#judgment") == "1" and "The reasoning was read." in page.text_content(
            "#analysis"
        )
        assert page.input_value("#pg-thinking").startswith("The steps")  # what was typed stays
        assert "image_url" in str(server.requests[-1]["messages"])
        # The image stays chosen: judged again with other reasoning, the guard is sent it again.
        assert page.evaluate("document.getElementById('pg-image').files.length") == 1
        page.fill("#pg-thinking", "Only this step.")
        asked_before = len(server.requests)
        with page.expect_response(
            lambda r: r.url.endswith("/guard/playground/") and r.request.method == "POST"
        ):
            page.click("#judge-button")
        page.wait_for_selector("#judgment")
        again = [str(r["messages"]) for r in server.requests[asked_before:]]
        assert any("Only this step." in asked and "image_url" in asked for asked in again)
        page.screenshot(path=shots / "playground_laptop.png", full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=shots / "playground_phone.png", full_page=True)
        assert errors == []
        page.set_viewport_size({"width": 1280, "height": 900})
        # Bad input answers in place, the form and the chosen image kept: a question left blank says so.
        page.fill("#pg-question", "")
        page.evaluate("document.getElementById('pg-question').removeAttribute('required')")
        with page.expect_response(lambda r: r.url.endswith("/guard/playground/") and r.status == 400):
            page.click("#judge-button")
        page.wait_for_selector("p.error >> text=question:")
        assert page.evaluate("document.getElementById('pg-image').files.length") == 1
        assert len(server.requests) == asked_before + len(again)  # nothing was asked
        assert errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
