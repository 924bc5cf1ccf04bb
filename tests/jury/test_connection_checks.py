"""The admin's "Test connection" on jurors, against real servers on loopback: one that serves the model, one that is
down, one that stalls past the timeout, one answering 401, one serving other models, one without a model listing,
one redirecting elsewhere; and a local juror whose checkpoint directory is looked at, never loaded."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import constants
from django.urls import reverse

from jury.models import Juror
from tests.conftest import admin_action
from tests.loopback import LoopbackOpenAI, closed_port_url

KEY = "sk-loopback-secret-7f3a"


@pytest.fixture
def admin_client(client_for, admin_user):
    admin_user.is_superuser = True
    admin_user.save()
    return client_for(admin_user)


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("GT_TEST_JUROR_KEY", KEY)
    return "GT_TEST_JUROR_KEY"


def _juror(url: str, name: str = "alpha", model: str = "qwen-vl", **fields) -> Juror:
    return Juror.objects.create(name=name, backend="openai", model_name=model, base_url=url, **fields)


def _test(client, *jurors: Juror) -> list[tuple[int, str]]:
    return admin_action(client, "admin:jury_juror_changelist", "test_connection", jurors)


def test_a_served_model_is_reachable_with_its_status_latency_and_name(admin_client, keyed):
    with LoopbackOpenAI(models=["other", "qwen-vl"]) as server:
        juror = _juror(server.url, api_key_env=keyed)
        [(level, text)] = _test(admin_client, juror)
    assert level == constants.SUCCESS
    assert text.startswith("juror alpha: reachable — HTTP 200 in ")
    assert text.endswith(f" ms; 'qwen-vl' is served ({server.url}/models)")
    assert server.listings == 1 and not server.requests  # one small request: the listing, no generation
    assert server.authorizations == [f"Bearer {KEY}"] and KEY not in text


def test_a_server_that_is_down_is_named_with_connection_refused(admin_client):
    url = closed_port_url()
    [(level, text)] = _test(admin_client, _juror(url))
    assert level == constants.ERROR
    assert text.startswith(f"juror alpha: not reachable at {url}/models — connection refused (after ")


def test_a_server_that_stalls_is_given_up_on_at_the_short_timeout(admin_client, settings):
    settings.GUARDTRACE_ENDPOINT_CHECK_S = 5.0
    with LoopbackOpenAI(models=["qwen-vl"], faults=["timeout"], hang_s=4) as server:
        juror = _juror(server.url, timeout_s=1)  # the juror's own timeout, shorter than the check's
        started = time.monotonic()
        [(level, text)] = _test(admin_client, juror)
        elapsed = time.monotonic() - started
    assert level == constants.ERROR
    assert text == f"juror alpha: no answer from {server.url}/models — timed out after 1 s"
    assert elapsed < 3.5


def test_a_401_says_the_key_was_refused_without_showing_it(admin_client, keyed):
    with LoopbackOpenAI(models=["qwen-vl"], faults=[401]) as server:
        [(level, text)] = _test(admin_client, _juror(server.url, api_key_env=keyed))
    assert level == constants.ERROR
    assert f"juror alpha: reachable, but {server.url}/models answered HTTP 401 in " in text
    assert text.endswith("it refused the API key in GT_TEST_JUROR_KEY") and KEY not in text


def test_a_401_without_a_key_says_to_name_one(admin_client):
    with LoopbackOpenAI(models=["qwen-vl"], faults=[401]) as server:
        [(_, text)] = _test(admin_client, _juror(server.url))
    assert "it refused a request without an API key (name the variable holding one in 'API key env')" in text


def test_a_model_the_server_does_not_serve_is_named_with_what_it_serves(admin_client):
    with LoopbackOpenAI(models=["llava", "qwen2-vl-7b"]) as server:
        [(level, text)] = _test(admin_client, _juror(server.url))
    assert level == constants.ERROR
    assert "juror alpha: reachable — HTTP 200 in " in text
    assert text.endswith(f"but 'qwen-vl' is not served at {server.url}: it serves llava, qwen2-vl-7b")


def test_a_server_without_a_listing_is_asked_for_one_token(admin_client):
    def fault_for(body: dict):
        return None if body["model"] == "qwen-vl" else 404

    with LoopbackOpenAI(models=None, fault_for=fault_for) as server:
        served, wrong = _juror(server.url), _juror(server.url, name="beta", model="nope")
        [(level, text), (wrong_level, wrong_text)] = _test(admin_client, served, wrong)
    assert level == constants.SUCCESS and text.endswith(
        f"'qwen-vl' is served ({server.url}/chat/completions)"
    )
    assert wrong_level == constants.ERROR
    assert "juror beta: reachable — HTTP 404 in " in wrong_text and "'nope' is not served at" in wrong_text
    asked = sorted(server.requests, key=lambda body: body["model"])
    assert [(b["model"], b["max_tokens"]) for b in asked] == [("nope", 1), ("qwen-vl", 1)]


def test_a_missing_key_variable_sends_nothing(admin_client, monkeypatch):
    monkeypatch.delenv("GT_TEST_UNSET_KEY", raising=False)
    with LoopbackOpenAI(models=["qwen-vl"]) as server:
        [(level, text)] = _test(admin_client, _juror(server.url, api_key_env="GT_TEST_UNSET_KEY"))
    assert level == constants.ERROR and server.listings == 0
    assert text == (
        "juror alpha: environment variable GT_TEST_UNSET_KEY (the API key) is not set in the web process: "
        "nothing was sent"
    )


class _Scripted(ThreadingHTTPServer):
    daemon_threads = True


def _scripted(answer):
    """A server whose every GET gets `answer(handler)`: (status, headers, body)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            status, headers, body = answer(self)
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    server = _Scripted(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_a_redirect_to_another_host_is_reported_not_followed(admin_client, keyed):
    with LoopbackOpenAI(models=["qwen-vl"]) as elsewhere:
        target = elsewhere.url.replace("127.0.0.1", "localhost") + "/models"
        server, url = _scripted(lambda h: (302, {"Location": f"{target}?token=abc"}, b""))
        try:
            [(level, text)] = _test(admin_client, _juror(url, api_key_env=keyed))
        finally:
            server.shutdown()
            server.server_close()
    assert level == constants.ERROR
    assert f"juror alpha: {url}/models answered HTTP 302 in " in text
    assert f"a redirect to {target}; not followed" in text and "token=abc" not in text
    assert elsewhere.listings == 0 and not elsewhere.authorizations


def test_a_server_echoing_the_key_does_not_get_it_shown(admin_client, keyed):
    def echo(handler):
        body = json.dumps({"error": f"bad token {handler.headers['Authorization']}"}).encode()
        return 403, {"Content-Type": "application/json"}, body

    server, url = _scripted(echo)
    try:
        [(level, text)] = _test(admin_client, _juror(url, api_key_env=keyed))
    finally:
        server.shutdown()
        server.server_close()
    assert level == constants.ERROR and "answered HTTP 403" in text and KEY not in text


def _checkpoint_dir(path):
    """A directory holding the files a checkpoint needs, none of them loadable: a check must not load them."""
    path.mkdir()
    (path / "config.json").write_text("{}")
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        (path / name).write_bytes(b"not a real file")
    return path


def test_a_local_juror_answers_where_it_loads_from_without_loading(admin_client, tmp_path):
    directory = _checkpoint_dir(tmp_path / "juror")
    local = Juror.objects.create(name="local", backend="transformers", model_name=str(directory))
    broken = Juror.objects.create(name="broken", backend="transformers", model_name=str(tmp_path / "gone"))
    messages = _test(admin_client, local, broken)
    assert sorted(messages) == sorted([
        (constants.SUCCESS, f"juror local: local checkpoint: loads from {directory}"),
        (constants.ERROR, f"juror broken: local checkpoint: {tmp_path / 'gone'}: checkpoint directory does not exist"),
    ])  # fmt: skip


def test_the_change_page_tests_its_juror_and_answers_there(admin_client):
    with LoopbackOpenAI(models=["qwen-vl"]) as server:
        juror = _juror(server.url)
        change = reverse("admin:jury_juror_change", args=[juror.pk])
        page = admin_client.get(change).content.decode()
        assert 'name="action" value="test_connection"' in page and ">Test connection</button>" in page
        response = admin_client.post(
            reverse("admin:jury_juror_changelist"),
            {"action": "test_connection", "_selected_action": [juror.pk], "_from_change_page": "1"},
        )
    assert response.status_code == 302 and response["Location"] == change
    shown = admin_client.get(change).content.decode()
    assert "Juror alpha: reachable — HTTP 200" in shown  # the admin capitalizes its messages
    assert server.listings == 1


def test_only_the_admin_role_tests_connections(client, db):
    # Staff holding every model permission, but not the admin role: the juror's pages only look.
    staff = User.objects.create_user("sam", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="jury"))
    client.force_login(staff)
    with LoopbackOpenAI(models=["qwen-vl"]) as server:
        juror = _juror(server.url)
        client.post(
            reverse("admin:jury_juror_changelist"),
            {"action": "test_connection", "_selected_action": [juror.pk]},
        )
        page = client.get(reverse("admin:jury_juror_change", args=[juror.pk]))
    assert page.status_code == 200 and "Test connection" not in page.content.decode()
    assert server.listings == 0
