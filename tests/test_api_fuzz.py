"""Schemathesis against the live API: every operation of our own OpenAPI schema, fuzzed as an admin, an expert and
an anonymous caller over real HTTP, on a populated instance.

For every generated request: never a 5xx; the status is one the operation documents; the body matches the schema
the schema gives for that status (and content type); a request without credentials is refused; an unsupported
method is a 405. Cases are bounded (FUZZ_EXAMPLES per phase): about 3,600 requests in 2.5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import modify_settings, override_settings
from pytest_django.live_server_helper import LiveServer
from rest_framework.authtoken.models import Token

from annotation import exports as annotation_exports
from annotation import services as annotation_services
from common.roles import ADMIN, EXPERT
from experts.services import expert_slot_claim
from guardmodel import services as guard_services
from guardtrace.celery import app as celery_app
from jury.models import Juror
from jury.services import jury_run_create
from tests.annotation.factories import ImageAssetFactory, LabelFactory, SampleFactory
from tests.conftest import _user, record
from tests.experts.review_helpers import split_items
from tests.loopback import LoopbackOpenAI
from tests.workers import _reset_connections, filesystem_broker

pytestmark = pytest.mark.slow

# Cases per operation and phase (examples, coverage, fuzzing); a longer run can ask for more
# (GUARDTRACE_FUZZ_EXAMPLES).
FUZZ_EXAMPLES = int(os.environ.get("GUARDTRACE_FUZZ_EXAMPLES", "12"))

IDENTITIES = ("admin", "expert", "anonymous")
_ASKS_FOR_THE_DATABASE = "test_the_fuzzed_schema_is_the_one_the_server_serves"


@contextmanager
def _throwaway_broker(root: Path):
    """Jobs the fuzzer starts (imports, jury runs) queue their messages in a folder no worker reads: the calls stay
    as cheap as the world is small, and nothing lands in the var/ queue of a real instance."""
    saved = celery_app.conf.broker_url, celery_app.conf.broker_transport_options
    celery_app.conf.broker_url = "filesystem://"
    celery_app.conf.broker_transport_options = filesystem_broker(root)
    _reset_connections()
    try:
        yield
    finally:
        celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
        _reset_connections()


def _populate(guard_url: str) -> dict:
    """Samples with images and jury labels, expert-queue items (one claimed), an import job, a finished export, a jury
    run, jurors and an active guard checkpoint; the callers' tokens."""
    admin, expert = _user("fuzz-admin", ADMIN, staff=True), _user("fuzz-expert", EXPERT)
    for n in range(4):
        sample = SampleFactory(image=ImageAssetFactory() if n % 2 == 0 else None)
        LabelFactory(sample=sample, judgment=[0.0, 0.5, 1.0][n % 3])
    split_items(3)
    expert_slot_claim(user=expert)
    for name in ("a", "b", "c"):
        Juror.objects.create(name=name, backend=Juror.Backend.OPENAI, model_name=name, base_url=guard_url)
    jury_run_create(selection={"subset": "unit"}, user=admin, enqueue=False)
    data = ContentFile(f"{json.dumps(record())}\n".encode(), name="fuzz.jsonl")
    annotation_services.import_job_create(data_file=data, fmt="jsonl", skip_invalid=False, user=admin)
    annotation_exports.export_job_run(job_id=annotation_exports.export_job_create(filters={}, user=admin).pk)
    guard_services.checkpoint_register(name="served", endpoint=guard_url, served_model="guard", activate=True)
    return {"admin": Token.objects.create(user=admin).key, "expert": Token.objects.create(user=expert).key}


@pytest.fixture(scope="module")
def world(request, django_db_setup, django_db_blocker, tmp_path_factory):
    """A populated instance behind a live server, shared by every case of this module (building it per operation
    and caller would cost more than the fuzzing). The data is committed, so it is flushed at the end, as
    transactional tests do."""
    # pytest-django makes the test database only when a selected test asks for one; without it these writes, and
    # the flush, would go to the configured database.
    if not any(item.name == _ASKS_FOR_THE_DATABASE for item in request.session.items):
        pytest.fail(
            f"select {_ASKS_FOR_THE_DATABASE} too (or run the whole file): it sets the test database up"
        )
    root = tmp_path_factory.mktemp("fuzz")
    with (
        # No audit worker reads the throwaway broker: an audit session's open answers its documented 504 at once.
        override_settings(MEDIA_ROOT=str(root / "media"), GUARDTRACE_AUDIT_TIMEOUT_S=0.5),
        modify_settings(ALLOWED_HOSTS={"append": "localhost"}),
        LoopbackOpenAI() as guard,
        _throwaway_broker(root),
        django_db_blocker.unblock(),
    ):
        tokens = _populate(guard.url)
        server = LiveServer("localhost:0")
        try:
            yield {"url": server.url, "tokens": tokens}
        finally:
            server.stop()
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(autouse=True)
def _media():
    """The world's media folder stays for the whole module: the suite's per-test one would hide its images from the
    server."""


@pytest.fixture(autouse=True)
def _server_reaches_the_database(django_db_blocker):
    # The live server answers in a thread of this process, where pytest-django blocks the database between tests.
    with django_db_blocker.unblock():
        yield


def _generated_schema() -> dict:
    """The schema /api/schema/ serves, generated the same way (pytest-django has set Django up by import time)."""
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": FUZZ_EXAMPLES, "mode": "all", "deterministic": True},
        # The stateful phase chains operations through links our schema does not declare.
        "phases": {"stateful": {"enabled": False}},
        # No audit worker reads this world's broker: opening an audit session answers its documented 504 (the
        # worker's side is tested in tests/guardmodel/test_audit_sessions.py); any other 5xx is still a failure.
        "operations": [
            {
                "include-name": "POST /api/v1/audit/sessions",
                "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "504"]}},
            }
        ],
        "checks": {
            # Positive data can still be refused by rules a schema cannot state (an id that names nothing, bytes
            # that are not an image, a jury selection naming no sample): those are 400/404s by design.
            "positive_data_acceptance": {"enabled": False},
            # DRF reads "yes" as true and 5 as "5": lenient input that the schema's types do not describe.
            "negative_data_rejection": {"enabled": False},
        },
    }
)
schema = schemathesis.openapi.from_dict(_generated_schema(), config=CONFIG)


@pytest.fixture(scope="module", params=IDENTITIES)
def caller(request, world) -> dict:
    """Where and as whom to call: the live server, with the identity's token (none for anonymous)."""
    token = world["tokens"].get(request.param)
    return {"base_url": world["url"], "headers": {"Authorization": f"Token {token}"} if token else {}}


def test_the_fuzzed_schema_is_the_one_the_server_serves(api_for, admin_user):
    # Also the one test here that asks pytest-django for the database, so that a run of this file alone sets the
    # test database up for the fuzzing below (whose cases run last, with the other tests that hold no database).
    served = api_for(admin_user).get("/api/schema/", {"format": "json"})
    assert served.status_code == 200 and served.json() == json.loads(json.dumps(_generated_schema()))


@schema.parametrize()
def test_the_api_keeps_its_schema_for_every_caller(case, caller):
    case.call_and_validate(**caller)
