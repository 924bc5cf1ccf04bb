"""The Content Security Policy: on every page and API answer, scripts and styles from our own files only, and no
inline script or style left in our templates for it to refuse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from tests.annotation.factories import ImageAssetFactory, SampleFactory

ROOT = Path(__file__).resolve().parent.parent


def _policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


def _assert_strict(response) -> None:
    policy = _policy(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]


@pytest.mark.django_db
def test_pages_carry_the_strict_policy(client_for, admin_user):
    sample = SampleFactory(image=ImageAssetFactory())
    client = client_for(admin_user)
    for url in [
        reverse("dashboard"),
        reverse("sample_list"),
        reverse("sample_detail", args=[sample.pk]),
        reverse("sample_image", args=[sample.pk]),
        reverse("expert_home"),
        reverse("admin:index"),
        reverse("api_docs"),
    ]:
        # The image panel as htmx asks for it when the reviewer reveals the image.
        response = client.get(url, headers={"HX-Request": "true"} if url.endswith("/image/") else {})
        assert response.status_code == 200, url
        _assert_strict(response)


@pytest.mark.django_db
def test_the_login_page_and_api_answers_carry_it_too(client, api_for, admin_user):
    _assert_strict(client.get(reverse("login")))
    _assert_strict(api_for(admin_user).get(reverse("api_sample_list")))
    _assert_strict(api_for(None).get(reverse("api_sample_list")))  # a refusal too


@pytest.mark.django_db
def test_swagger_ui_loads_its_start_up_script_from_our_origin(client_for, admin_user):
    client = client_for(admin_user)
    page = client.get(reverse("api_docs")).content.decode()
    # No inline <script> or <style>: every script has a src, and that src is ours.
    scripts = re.findall(r"<script([^>]*)>", page)
    assert scripts and all("src=" in attributes for attributes in scripts)
    assert "<style" not in page
    script_url = re.findall(r'<script src="([^"]+\?[^"]*script[^"]*)"', page)[0].replace("&amp;", "&")
    assert script_url.startswith("/api/docs/")
    script = client.get(script_url)
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode()


TEMPLATE_DIRS = [ROOT / "templates", *ROOT.glob("*/templates")]
# An inline <script> is one without src (a json_script data block is not run, so it is allowed); any style
# attribute or <style> element; any on…= event handler attribute; javascript: URLs.
INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:",
    re.IGNORECASE,
)


def test_no_template_of_ours_holds_inline_script_style_or_handlers():
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for folder in TEMPLATE_DIRS
        for path in folder.rglob("*.html")
        for match in INLINE.finditer(path.read_text())
    ]
    assert found == []
