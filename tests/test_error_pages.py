"""Error answers say nothing internal: no exception text, traceback, path or setting, on pages (the templates) and
in the API (a short JSON body), over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from django.test import Client

from tests.error_urls import SECRET

pytestmark = pytest.mark.django_db


def _fetch(url: str, **headers: str) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def _token(api_user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=api_user)[0].key


def _assert_nothing_internal(body: str) -> None:
    for leak in (SECRET, "hunter2", "RuntimeError", "Traceback", "/srv/", ".py", 'File "'):
        assert leak not in body, leak


@pytest.mark.urls("tests.error_urls")
def test_a_crash_in_the_api_is_a_generic_json_500(live_server, admin_user):
    status, content_type, body = _fetch(
        f"{live_server.url}/api/v1/crash", Authorization=f"Token {_token(admin_user)}"
    )
    assert status == 500 and content_type == "application/json"
    assert json.loads(body) == {"detail": "Server error. It has been logged."}
    _assert_nothing_internal(body)


@pytest.mark.urls("tests.error_urls")
def test_a_crash_on_a_page_is_the_generic_error_page(live_server):
    status, content_type, body = _fetch(f"{live_server.url}/crash/")
    assert status == 500 and content_type.startswith("text/html")
    assert "<h1>Server error</h1>" in body
    _assert_nothing_internal(body)


def test_an_unknown_page_is_the_404_page_without_the_path(live_server, admin_user):
    client = Client()
    client.force_login(admin_user)
    response = client.get("/no-such-page-4f1e/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "<h1>Not found</h1>" in body and "no-such-page-4f1e" not in body
    # Over HTTP too, and for an anonymous visitor.
    status, _, body = _fetch(f"{live_server.url}/no-such-page-4f1e/")
    assert status == 404 and "<h1>Not found</h1>" in body and "no-such-page-4f1e" not in body


def test_an_unknown_api_path_is_a_short_json_404(live_server, admin_user):
    for path in ("/api/v1/no-such-endpoint", "/api/no-such-endpoint"):
        status, content_type, body = _fetch(
            f"{live_server.url}{path}", Authorization=f"Token {_token(admin_user)}"
        )
        assert (status, content_type) == (404, "application/json"), path
        assert json.loads(body) == {"detail": "Not found."}


def test_a_refused_host_is_a_generic_400(client):
    response = client.get("/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    body = response.content.decode()
    assert "<h1>Bad request</h1>" in body and "attacker.example" not in body and "ALLOWED_HOSTS" not in body
    api = client.get("/api/v1/samples", HTTP_HOST="attacker.example")
    assert api.status_code == 400 and api.json() == {"detail": "Bad request."}


def test_a_form_without_its_csrf_token_gets_the_generic_page(admin_user):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 403
    body = response.content.decode()
    assert "<h1>Form expired</h1>" in body and "CSRF cookie not set" not in body
