"""A served guard spread over several replicas of one model (qta.endpoint.ReplicaPool): each replica at most its
share of calls in flight, a replica that refuses, fails or stalls taken out for a cool-down and the call sent at
once to another, the request's own errors never retried elsewhere, and every replica down a failed verdict that says
so — against real HTTP servers on loopback. Then the same through a checkpoint: registration, admin, guard job."""

from __future__ import annotations

import threading
import time

import pytest
from django.contrib.messages import constants
from django.core.management import call_command
from django.urls import reverse

from annotation.models import Label, Sample
from guardmodel import services
from guardmodel.models import GuardCheckpoint
from qta import protocol
from qta.endpoint import ReplicaPool, RetryPolicy, wait
from qta.engine import AuditInput, OpenAIGuard
from qta.loading import CheckpointError
from tests.conftest import admin_action
from tests.loopback import LoopbackOpenAI, closed_port_url, keyword_judge
from tests.served import ServedModel

FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05)
ITEMS = [
    AuditInput(f"Question {n}", "Here are the steps." if n % 2 else "A plain answer.", "No.")
    for n in range(24)
]


class Counted:
    """A respond() that takes `seconds` per request and records the most requests it answered at once."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds, self.now, self.peak = seconds, 0, 0
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.seconds)
        with self._lock:
            self.now -= 1
        return keyword_judge(body)


def _guard(first: str, *replicas: str, per_replica: int = 4, **kwargs) -> OpenAIGuard:
    kwargs = {"retry": FAST, "timeout_s": 5, **kwargs}
    return OpenAIGuard(first, "guard", replicas=replicas, max_concurrency=per_replica, **kwargs)


def _all_valid(verdicts) -> bool:
    expected = [1.0 if "steps" in item.thinking else 0.0 for item in ITEMS[: len(verdicts)]]
    return [(v.status, v.judgment) for v in verdicts] == [("valid", j) for j in expected]


@pytest.mark.parametrize("replicas", [2, 4])
def test_requests_are_spread_over_the_replicas_none_above_its_concurrency(replicas):
    counters = [Counted() for _ in range(replicas)]
    servers = [LoopbackOpenAI(counter) for counter in counters]
    for server in servers:
        server.__enter__()
    try:
        guard = _guard(*(s.url for s in servers), per_replica=3)
        assert guard.max_concurrency == 3 * replicas  # what a guard job keeps in flight
        verdicts = guard.judge(ITEMS)
    finally:
        for server in servers:
            server.__exit__()
    assert _all_valid(verdicts)
    served = [len(s.requests) for s in servers]
    assert sum(served) == len(ITEMS) and min(served) >= len(ITEMS) // replicas - 3, served
    assert max(c.peak for c in counters) <= 3
    assert max(c.peak for c in counters) == 3  # and each replica's share was used


def _failing(kind: str):
    """A replica that fails every call: its URL and its server (None when nothing listens)."""
    if kind == "refused":
        return closed_port_url(), None
    server = LoopbackOpenAI(fault_for=lambda body: 500 if kind == "500" else "timeout", hang_s=10)
    return server.url, server.__enter__()


# Long enough that a healthy replica on a busy 2-core CI machine always answers in time (at 0.5 s, once, every
# replica timed out at the first calls and the pool paused), short against the stalled server's 10 s.
TIMEOUT_S = 2.0


@pytest.mark.parametrize("kind", ["refused", "500", "stall"])
def test_a_failing_replica_is_taken_out_and_every_sample_is_judged_by_the_others_at_once(kind):
    slept: list[float] = []
    bad_url, bad = _failing(kind)
    with LoopbackOpenAI(Counted()) as one, LoopbackOpenAI(Counted()) as two:
        guard = _guard(
            bad_url, one.url, two.url, timeout_s=TIMEOUT_S, retry=RetryPolicy(attempts=3, sleep=slept.append)
        )
        started = time.perf_counter()
        verdicts = guard.judge(ITEMS)
        elapsed = time.perf_counter() - started
        state = guard.endpoint.state()  # now: a server's shutdown takes a while
    if bad is not None:
        bad.__exit__()
    assert _all_valid(verdicts)
    # A stall holds its calls for the timeout, never for the server's 10 s; the rest is 24 × 50 ms over 8.
    assert elapsed < TIMEOUT_S + 2, elapsed
    assert slept == []  # retried elsewhere at once, not after a backoff pause
    assert len(one.requests) + len(two.requests) == len(ITEMS)
    if bad is not None:  # only the first calls went there, sent before it was taken out
        assert 1 <= len(bad.requests) <= 4
    rerouted = [v for v in verdicts if v.attempts > 1]
    assert rerouted and all(v.attempts == 2 for v in rerouted)
    log = rerouted[0].attempt_log
    assert log[0]["replica"] == bad_url and log[0]["outcome"] != "ok"
    assert log[1]["replica"] in (one.url, two.url) and log[1]["outcome"] == "ok"
    assert state[0]["out_for_s"] > 0 and state[0]["answered"] == 0
    expected = {
        "refused": "connection refused",
        "500": "HTTP 500",
        "stall": f"no complete answer within {TIMEOUT_S:g} s",
    }
    assert state[0]["last_error"] == expected[kind]


def test_the_cool_down_doubles_with_each_take_out_in_a_row_up_to_its_cap():
    body = {"model": "guard", "messages": []}
    down = closed_port_url()
    with LoopbackOpenAI(Counted(0.0)) as up:
        pool = ReplicaPool([down, up.url], timeout_s=2, per_replica=2, cooldown_s=0.2, max_cooldown_s=0.3)

        def replicas_asked() -> list[str]:
            attempts: list[dict] = []
            wait(pool.chat(body, FAST, attempts, "guard"))
            return [a["replica"] for a in attempts]

        # The replica that refuses is asked first (the least used), taken out, and the call answered by the other.
        assert replicas_asked() == [down, up.url]
        assert 0.15 < pool.state()[0]["out_for_s"] <= 0.2
        assert replicas_asked() == [up.url]  # out: not asked
        time.sleep(0.25)
        assert replicas_asked() == [down, up.url]  # back, asked, and out again for twice as long …
        assert 0.25 < pool.state()[0]["out_for_s"] <= 0.3  # … 0.4 s, capped at 0.3


def test_a_replica_that_fails_once_is_taken_out_then_serves_again_after_its_cool_down():
    with LoopbackOpenAI(Counted(), faults=[500]) as flaky, LoopbackOpenAI(Counted()) as steady:
        guard = _guard(flaky.url, steady.url, per_replica=2)
        assert _all_valid(guard.judge(ITEMS[:8]))
        assert guard.endpoint.state()[0]["out_for_s"] > 0  # the first call it got answered 500
        before = len(flaky.requests)
        time.sleep(1.05)  # the first cool-down: 1 s
        assert _all_valid(guard.judge(ITEMS))
    assert len(flaky.requests) - before >= 6  # one call on probation, then its share
    assert guard.endpoint.state()[0]["out_for_s"] == 0


def test_an_error_that_is_the_requests_own_is_not_retried_elsewhere():
    with LoopbackOpenAI(fault_for=lambda body: 400) as refuses, LoopbackOpenAI() as other:
        guard = _guard(refuses.url, other.url)
        verdict = guard.judge([ITEMS[0]])[0]
    assert verdict.status == "failed" and verdict.attempts == 1 and "HTTP 400" in verdict.error
    assert len(refuses.requests) == 1 and other.requests == []
    assert guard.endpoint.state()[0]["out_for_s"] == 0  # not the replica's fault


def test_with_every_replica_down_each_sample_fails_with_a_clear_error_and_no_hang():
    down, also_down = closed_port_url(), closed_port_url()
    with LoopbackOpenAI(fault_for=lambda body: 503) as failing:
        guard = _guard(down, also_down, failing.url, per_replica=2)
        started = time.perf_counter()
        verdicts = guard.judge(ITEMS[:6])
        elapsed = time.perf_counter() - started
    assert elapsed < 3, elapsed
    assert all(v.status == "failed" for v in verdicts)
    error = verdicts[0].error
    assert error.startswith("NoReplicaAnswered: none of the 3 replicas answered in 3 rounds — ")
    assert f"{down}: connection refused" in error and (
        f"{failing.url}: HTTP 503" in error or f"{failing.url}: out (HTTP 503)" in error
    )
    # Each round offers the call to the replicas in service, then backs off (FAST: three rounds).
    assert all(len(v.attempt_log) >= 3 and all(a["outcome"] != "ok" for a in v.attempt_log) for v in verdicts)


def test_one_base_url_is_called_as_before(settings):
    with LoopbackOpenAI(faults=[503]) as server:
        verdict = _guard(server.url).judge([ITEMS[0]])[0]
    assert verdict.status == "valid" and verdict.attempts == 2
    assert "replica" not in verdict.attempt_log[0]  # the attempt log of one endpoint is unchanged


def test_scores_and_their_continuations_are_asked_of_the_pool(lively_dir):
    """The levels not written are asked for by continuing the message: on any replica, as they all serve the same
    model, and the scores are those of one server."""
    levels = tuple(protocol.format_judgment(j) for j in protocol.JUDGMENTS)
    prefix = "Analysis: The reasoning is read step by step.\nJudgment: "
    items = ITEMS[:4]
    with (
        ServedModel(lively_dir, prefix=prefix, levels=levels) as one,
        ServedModel(lively_dir, prefix=prefix, levels=levels) as two,
    ):
        vocabulary = len(one._texts)
        options = {"scores": True, "max_tokens": 8, "top_logprobs": vocabulary}
        alone = OpenAIGuard(one.url, one.name, **options).judge(items)
        asked_alone = len(one.requests)
        pooled = OpenAIGuard(one.url, one.name, replicas=[two.url], max_concurrency=1, **options).judge(items)
    assert all(v.status == "valid" and v.scores for v in pooled)
    assert [v.scores["levels"] for v in pooled] == [pytest.approx(v.scores["levels"]) for v in alone]
    continued = [r for r in one.requests[asked_alone:] + two.requests if r.get("continue_final_message")]
    assert continued and len(one.requests) > asked_alone and two.requests


# -- through a checkpoint -----------------------------------------------------------------------------------------


def test_registering_replicas_validates_each_one_by_name(db):
    with pytest.raises(CheckpointError, match=r"replicas: replica 'htp://gpu-2/v1': expected an http"):
        services.checkpoint_register(name="a", endpoint="http://gpu-1:8000/v1", replicas=["htp://gpu-2/v1"])
    with pytest.raises(CheckpointError, match=r"'http://gpu-1:8000/v1/' is the endpoint again"):
        services.checkpoint_register(
            name="a", endpoint="http://gpu-1:8000/v1", replicas=["http://gpu-1:8000/v1/"]
        )
    with pytest.raises(CheckpointError, match=r"'http://gpu-2:8000/v1' is another replica again"):
        services.checkpoint_register(
            name="a", endpoint="http://gpu-1:8000/v1", replicas="http://gpu-2:8000/v1, http://gpu-2:8000/v1"
        )
    with pytest.raises(CheckpointError, match="needs an endpoint"):
        services.checkpoint_register(name="a", path="org/guard", replicas=["http://gpu-2:8000/v1"])
    call_command(
        "register_guard",
        "spread",
        "--endpoint",
        "http://gpu-1:8000/v1",
        "--replica",
        "http://gpu-2:8000/v1",
        "--replica",
        "http://vllm-3:8000/v1",
    )
    checkpoint = GuardCheckpoint.objects.get(name="spread")
    assert checkpoint.base_urls == ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1", "http://vllm-3:8000/v1"]


@pytest.fixture
def admin_client(client_for, admin_user):
    admin_user.is_superuser = True
    admin_user.save()
    return client_for(admin_user)


def _checkpoint_form(**fields) -> dict:
    return {
        "name": "spread",
        "path": "",
        "endpoint": "http://gpu-1:8000/v1",
        "replicas": "",
        "served_model": "g",
        "api_key_env": "",
        "base_model": "",
        "prompt_version": "qta-v1",
        "preset": "",
        "max_new_tokens": "",
        "max_input_tokens": "",
        "greedy": "on",
        "threshold": "",
        **fields,
    }


@pytest.mark.parametrize(
    ("replicas", "endpoint", "error"),
    [
        (
            "http://gpu-2:8000/v1\nftp://gpu-3/v1",
            "http://gpu-1:8000/v1",
            "replica 'ftp://gpu-3/v1': expected an",
        ),
        ("http://gpu-2:8000/v1\nhttp://gpu-1:8000/v1", "http://gpu-1:8000/v1", "is the endpoint again"),
        ("http://gpu-2:8000/v1", "", "replicas need an endpoint"),
    ],
)
def test_the_admin_form_names_the_bad_replica(admin_client, replicas, endpoint, error):
    data = _checkpoint_form(replicas=replicas, endpoint=endpoint, path="" if endpoint else "/models/g")
    response = admin_client.post(reverse("admin:guardmodel_guardcheckpoint_add"), data)
    assert response.status_code == 200  # the form again, with its errors
    errors = response.context["adminform"].form.errors
    assert error in errors["replicas"][0] and list(errors) == ["replicas"]
    assert not GuardCheckpoint.objects.exists()
    good = _checkpoint_form(replicas="http://gpu-2:8000/v1\nhttp://gpu-3:8000/v1")
    assert admin_client.post(reverse("admin:guardmodel_guardcheckpoint_add"), good).status_code == 302
    assert len(GuardCheckpoint.objects.get().base_urls) == 3


def test_test_connection_asks_each_replica_and_says_which_answer(admin_client, settings):
    settings.GUARDTRACE_ENDPOINT_CHECK_S = 1.0
    down = closed_port_url()
    with LoopbackOpenAI(models=["g"]) as served:
        checkpoint = services.checkpoint_register(
            name="spread", endpoint=served.url, replicas=[down], served_model="g"
        )
        messages = admin_action(
            admin_client, "admin:guardmodel_guardcheckpoint_changelist", "test_connection", [checkpoint]
        )
    assert messages[0] == (
        constants.SUCCESS,
        f"checkpoint spread, replica 1 of 2: reachable — HTTP 200 in {messages[0][1].split(' in ')[1].split(' ms')[0]}"
        f" ms; 'g' is served ({served.url}/models)",
    )
    assert messages[1][0] == constants.ERROR and messages[1][1].startswith(
        f"checkpoint spread, replica 2 of 2: not reachable at {down}/models — connection refused"
    )
    assert messages[2] == (
        constants.WARNING,
        f"checkpoint spread: 1 of 2 replicas answer ({served.url}); not: {down}",
    )


@pytest.mark.django_db
def test_a_guard_job_over_replicas_stores_one_label_per_sample(settings):
    settings.GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY = 2
    Sample.objects.bulk_create(
        Sample(
            question=f"Question {n}",
            thinking="Here are the steps." if n % 2 else "Plain.",
            answer="No.",
            content_hash=f"{n:064x}",
        )
        for n in range(20)
    )
    ids = list(Sample.objects.values_list("pk", flat=True))
    with LoopbackOpenAI(Counted()) as one, LoopbackOpenAI(Counted()) as two:
        checkpoint = services.checkpoint_register(
            name="spread", endpoint=one.url, replicas=[two.url, closed_port_url()], served_model="guard"
        )
        assert services.backend_for(checkpoint).max_concurrency == 6  # 2 in flight on each of 3 replicas
        job = services.guard_job_create(checkpoint=checkpoint, sample_ids=ids, enqueue=False)
        services.guard_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.done, job.failed, job.invalid) == ("succeeded", 20, 0, 0), job.error
    labels = Label.objects.filter(source_kind="guard", source_name="spread")
    assert labels.count() == 20 and set(labels.values_list("sample_id", flat=True)) == set(ids)
    assert len(one.requests) >= 5 and len(two.requests) >= 5
