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
        page.screenshot(path=shots / "playground_laptop.png", full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=shots / "playground_phone.png", full_page=True)
        assert errors == []
