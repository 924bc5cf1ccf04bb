"""Incremental audits: a session opened with the question, reasoning and answer appended as they are written, each
append answered with the guard's P(harmful) now — equal to scoring the whole text so far afresh — and the sessions
bounded (idle expiry, count, cache memory), owned, and refused clearly when the input is wrong."""

from __future__ import annotations

import base64

import pytest
from django.core import signing
from django.urls import reverse

from guardmodel import services
from qta.engine import AuditInput
from qta.streaming import SessionStore
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db

THINKING = [
    "First, the parts.",
    "\n\nSecond, the order.",
    "\n\nThird, the risky part.",
    "\n\nFourth, a refusal.",
]
ANSWER = "I can't help with that."


@pytest.fixture
def store(settings):
    """A fresh session store on this (eager) process, with a clock the test moves."""
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the session task runs here, as the audit worker would run it
    now = [0.0]
    services._session_store = SessionStore(max_sessions=8, max_bytes=2**30, ttl_s=60, clock=lambda: now[0])
    services._session_store.now = now  # type: ignore[attr-defined]
    yield services._session_store
    services._session_store = None


@pytest.fixture
def lively(lively_dir):
    return services.checkpoint_register(name="lively", path=str(lively_dir), activate=True)


def _open(api, **body):
    return api.post(
        reverse("api_audit_sessions"), {"question": "How would one do it?", **body}, format="json"
    )


def _append(api, opened, segment: str, text: str):
    return api.post(opened["append_url"], {"segment": segment, "text": text}, format="json")


@pytest.mark.parametrize(
    ("with_image", "reading"), [(False, "cue"), (True, "cue"), (False, "analysis"), (True, "analysis")]
)
def test_each_append_answers_what_scoring_the_whole_text_so_far_would(
    store, lively, api_for, reviewer_user, with_image, reading
):
    api = api_for(reviewer_user)
    image = png_bytes(size=(40, 28)) if with_image else None
    opened = _open(api, reading=reading, **({"image": base64.b64encode(image).decode()} if image else {}))
    assert opened.status_code == 201, opened.content
    opened = opened.json()
    assert opened["segment"] == "question" and opened["checkpoint"] == "lively" and opened["step"] is None

    guard = services.backend_for(lively)
    whole = guard.prefix_risk(
        AuditInput("How would one do it?", "".join(THINKING), ANSWER, image), 0.5, reading
    )
    assert opened["harmful"] == pytest.approx(whole["segments"]["question"], abs=1e-4)
    steps = []
    for k, piece in enumerate(THINKING):
        answer = _append(api, opened, "reasoning", piece).json()
        assert answer["segment"] == "reasoning" and answer["step"] == k + 1
        assert answer["crossed"] == (answer["harmful"] >= answer["threshold"])
        steps.append(answer["harmful"])
    assert steps == pytest.approx(whole["steps"], abs=1e-4)
    final = _append(api, opened, "answer", ANSWER).json()
    assert final["step"] is None and final["harmful"] == pytest.approx(whole["segments"]["answer"], abs=1e-4)

    state = api.get(reverse("api_audit_session", args=[opened["session"]])).json()
    assert state["steps"] == pytest.approx(whole["steps"], abs=1e-4) and state["appends"] == 5
    assert state["characters"] == {"reasoning": len("".join(THINKING)), "answer": len(ANSWER)}
    assert api.delete(reverse("api_audit_session", args=[opened["session"]])).status_code == 200
    gone = _append(api, opened, "answer", " More.")
    assert gone.status_code == 410 and "closed by its caller" in gone.json()["detail"]
    assert len(store) == 0


def test_text_streamed_a_few_characters_at_a_time_scores_as_one_append(store, lively, api_for, reviewer_user):
    """Token-sized pieces split words: the tokens of the text so far change under the cache, which is cropped back
    to what is shared; the last answer equals one append of the whole text."""
    api = api_for(reviewer_user)
    text = "".join(THINKING)
    streamed = _open(api, reading="cue").json()
    answers = [_append(api, streamed, "reasoning", text[i : i + 7]).json() for i in range(0, len(text), 7)]
    whole = _open(api, reading="cue").json()
    at_once = _append(api, whole, "reasoning", text).json()
    assert answers[-1]["harmful"] == pytest.approx(at_once["harmful"], abs=1e-4)
    assert answers[-1]["tokens"] == at_once["tokens"]
    assert [a["step"] for a in answers][-1] == 4 and sorted(a["step"] for a in answers) == [
        a["step"] for a in answers
    ]


def test_the_first_step_over_the_checkpoints_threshold_is_kept(store, lively, api_for, reviewer_user):
    guard = services.backend_for(lively)
    risk = guard.prefix_risk(AuditInput("How would one do it?", "".join(THINKING), ""), 0.5, "cue")
    lively.threshold = sorted(risk["steps"])[1]  # at least two steps reach it
    lively.save()
    expected = next(k + 1 for k, p in enumerate(risk["steps"]) if p >= lively.threshold)
    api = api_for(reviewer_user)
    opened = _open(api, reading="cue").json()
    answers = [_append(api, opened, "reasoning", piece).json() for piece in THINKING]
    assert [a["first_unsafe_step"] for a in answers] == [
        None if k + 1 < expected else expected for k in range(len(THINKING))
    ]
    assert answers[expected - 1]["crossed"] and answers[0]["threshold"] == lively.threshold


def test_wrong_appends_are_refused_and_leave_the_session_as_it_was(
    store, lively, api_for, reviewer_user, settings
):
    settings.GUARDTRACE_AUDIT_MAX_TEXT_CHARS = 40  # per segment, in all
    api = api_for(reviewer_user)
    opened = _open(api).json()
    assert _append(api, opened, "reasoning", THINKING[0]).status_code == 200
    bad = _append(api, opened, "thoughts", "x")
    assert bad.status_code == 400 and "segment" in bad.json()
    assert _append(api, opened, "reasoning", "").status_code == 400  # nothing to add
    long = _append(api, opened, "reasoning", "y" * 30)
    assert long.status_code == 413 and "no more than 40" in long.json()["detail"]
    assert _append(api, opened, "answer", ANSWER).status_code == 200
    late = _append(api, opened, "reasoning", " more")
    assert late.status_code == 409 and "answer has begun" in late.json()["detail"]
    state = api.get(reverse("api_audit_session", args=[opened["session"]])).json()
    assert (
        state["characters"] == {"reasoning": len(THINKING[0]), "answer": len(ANSWER)}
        and state["appends"] == 2
    )


def test_a_session_is_its_openers_alone(store, lively, api_for, reviewer_user, expert_user):
    opened = _open(api_for(reviewer_user)).json()
    other = api_for(expert_user)
    assert _append(other, opened, "reasoning", "x").status_code == 404
    assert other.get(reverse("api_audit_session", args=[opened["session"]])).status_code == 404
    # A token changed by hand, or one naming another worker's queue, is not a session.
    held = signing.loads(opened["session"], salt=services.SESSION_SALT)
    forged = signing.dumps({**held, "q": "celery"}, salt="another salt")
    for token in (opened["session"][:-2] + "xx", forged, "nonsense"):
        response = api_for(reviewer_user).post(
            reverse("api_audit_session_append", args=[token]),
            {"segment": "reasoning", "text": "x"},
            format="json",
        )
        assert response.status_code == 404
    assert _append(api_for(reviewer_user), opened, "reasoning", "x").status_code == 200


def test_sessions_expire_and_the_store_keeps_to_its_bounds(store, lively, api_for, reviewer_user):
    api = api_for(reviewer_user)
    first = _open(api).json()
    store.now[0] += 61
    expired = _append(api, first, "reasoning", "x")
    assert expired.status_code == 410 and "expired after 60 s without an append" in expired.json()["detail"]

    store.max_sessions = 2
    a, b, c = (_open(api).json() for _ in range(3))
    assert _append(api, a, "reasoning", "x").status_code == 410  # the oldest of three went
    assert _append(api, b, "reasoning", "x").status_code == 200 and len(store) == 2

    # Memory: room for about one session's cache; opening another ends the least recently used.
    one = store.nbytes // 2
    store.max_sessions = 8
    store.max_bytes = int(one * 1.5)
    d = _open(api).json()
    assert len(store) == 1 and store.nbytes <= store.max_bytes
    assert "memory bound" in _append(api, c, "reasoning", "x").json()["detail"]
    store.max_bytes = one // 4  # a session alone over the bound is ended, saying so
    refused = _append(api, d, "reasoning", "x")
    assert refused.status_code == 413 and "over this worker's bound" in refused.json()["detail"]
    assert len(store) == 0


def test_a_served_checkpoint_streams_too_and_no_checkpoint_is_refused_plainly(
    store, api_for, reviewer_user, lively_dir, settings
):
    from tests.loopback import LoopbackOpenAI
    from tests.served import ServedModel

    api = api_for(reviewer_user)
    assert _open(api).status_code == 503  # no active checkpoint
    assert _open(api, checkpoint="nope").status_code == 400
    with ServedModel(lively_dir) as server:
        # This random model's levels are far down its distributions: read them all, as --max-logprobs would.
        settings.GUARDTRACE_GUARD_TOP_LOGPROBS = len(server._texts)
        checkpoint = services.checkpoint_register(
            name="served", endpoint=server.url, served_model=server.name, activate=True
        )
        opened = _open(api, reading="cue").json()
        answers = [_append(api, opened, "reasoning", piece).json() for piece in THINKING]
        whole = services.backend_for(checkpoint).prefix_risk(
            AuditInput("How would one do it?", "".join(THINKING), ""), answers[0]["threshold"], "cue"
        )
    assert [a["harmful"] for a in answers] == pytest.approx(whole["steps"], abs=1e-6)
    assert opened["tokens"] is None and opened["harmful"] == pytest.approx(
        whole["segments"]["question"], abs=1e-6
    )
    # A server without log-probabilities: the session cannot be read, and says why.
    with LoopbackOpenAI(lambda body: "Analysis: fine.\nJudgment: 0") as plain:
        services.checkpoint_register(name="plain", endpoint=plain.url, served_model="m")
        refused = _open(api, checkpoint="plain", reading="cue")
    assert refused.status_code == 502 and "gave no log-probabilities" in refused.json()["detail"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_session_stays_with_the_audit_worker_that_opened_it(
    api_for, reviewer_user, lively_dir, tmp_path, settings
):
    """Two audit workers on one broker: each session's appends reach the worker holding its cache (a misrouted
    append would find no session there), and a session whose worker died answers 504, not another's state."""
    import time

    from tests.workers import filesystem_broker, kill_worker, worker

    services.checkpoint_register(name="lively", path=str(lively_dir), activate=True)
    settings.GUARDTRACE_AUDIT_TIMEOUT_S = 30.0
    broker = filesystem_broker(tmp_path)
    env = {"CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND}
    api = api_for(reviewer_user)

    def where(opened: dict) -> str:
        return signing.loads(opened["session"], salt=services.SESSION_SALT)["q"]

    with worker("filesystem://", broker, settings.MEDIA_ROOT, "audit", env, name="audit-a@%h") as a:
        first = _open(api, reading="cue").json()
        assert where(first).startswith("audit.audit-a@")
        with worker("filesystem://", broker, settings.MEDIA_ROOT, "audit", env, name="audit-b@%h"):
            opened = [first]
            deadline = time.monotonic() + 60
            while not any(where(o).startswith("audit.audit-b@") for o in opened):  # until b takes one
                assert time.monotonic() < deadline, "the second audit worker never took a session"
                opened.append(_open(api, reading="cue").json())
            for piece in THINKING:
                for session in opened:
                    answer = _append(api, session, "reasoning", piece)
                    assert answer.status_code == 200, (where(session), answer.content)
            states = [api.get(reverse("api_audit_session", args=[o["session"]])) for o in opened]
            assert [s.status_code for s in states] == [200] * len(opened), [s.content for s in states]
            assert {s.json()["appends"] for s in states} == {len(THINKING)}
            kill_worker(a)
            settings.GUARDTRACE_AUDIT_TIMEOUT_S = 2.0
            lost = _append(api, first, "answer", ANSWER)
            assert lost.status_code == 504 and "holding this session" in lost.json()["detail"]
            settings.GUARDTRACE_AUDIT_TIMEOUT_S = 30.0
            on_b = next(o for o in opened if where(o).startswith("audit.audit-b@"))
            assert _append(api, on_b, "answer", ANSWER).status_code == 200
