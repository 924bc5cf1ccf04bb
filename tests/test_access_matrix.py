"""Who may do what, for every URL the app serves: generated from the URL resolver, so a URL added without an entry
below fails `test_every_url_has_an_entry`.

Each URL is tried by eleven identities (anonymous; logged in with no role; staff with no role; an auditor by token
and by session; two experts; a reviewer; an admin; a deactivated admin by session and by token) with GET and the
state-changing methods. An identity the entry does not allow must be refused (sent to the login page, 401 or 403;
405 where the view takes no such method), see none of the sample's text, and change no row. An allowed identity must
get the entry's answer on GET and never a refusal or a server error on the other methods.
Object-level cases ride on the same table: the claimed slot belongs to the first expert only."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core import signing
from django.core.files.base import ContentFile
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token, TokenProxy
from rest_framework.test import APIClient

from annotation.models import AuditEvent, ExportJob, ImportJob, Label, PreferencePair
from common.roles import ADMIN, AUDITOR, EXPERT, REVIEWER
from experts.models import ExpertQueueItem, Guidelines, ReviewDecision
from experts.services import expert_queue_send, expert_slot_claim
from generation.models import Expansion, GenerationRun, Generator, ImagePool, SeedQuery, SeedSet, Variant
from guardmodel.models import Evaluation, GuardCheckpoint, GuardJob, PromptTemplate
from guardmodel.services import SESSION_SALT
from jury.models import Juror, JuryRun
from qta.metrics import Row, evaluate_rows
from tests.annotation.factories import ImageAssetFactory, LabelFactory, SampleFactory
from training.models import DatasetSnapshot, TrainingRun

pytestmark = pytest.mark.django_db

MARK = "Zq9 harmful marker"  # in the sample's question: a refused answer must never carry it

ANONYMOUS, NO_ROLE, STAFF_NO_ROLE = "anonymous", "no-role", "staff-no-role"
AUDITOR_TOKEN, AUDITOR_SESSION = "auditor-token", "auditor-session"
EXPERT_1, EXPERT_2, REVIEWER_ID, ADMIN_ID = "expert", "second-expert", "reviewer", "admin"
DEACTIVATED_SESSION, DEACTIVATED_TOKEN = "deactivated-session", "deactivated-token"
IDENTITIES = (
    ANONYMOUS,
    NO_ROLE,
    STAFF_NO_ROLE,
    AUDITOR_TOKEN,
    AUDITOR_SESSION,
    EXPERT_1,
    EXPERT_2,
    REVIEWER_ID,
    ADMIN_ID,
    DEACTIVATED_SESSION,
    DEACTIVATED_TOKEN,
)
# Who each identity is to a page (the session) and to the API (token first, then the session).
_NOT_LOGGED_IN_FOR_PAGES = {ANONYMOUS, AUDITOR_TOKEN, DEACTIVATED_SESSION, DEACTIVATED_TOKEN}
_NOT_AUTHENTICATED_FOR_API = {ANONYMOUS, DEACTIVATED_SESSION, DEACTIVATED_TOKEN}
_NOT_STAFF = set(IDENTITIES) - {STAFF_NO_ROLE, ADMIN_ID}

VIEWERS = frozenset({EXPERT_1, EXPERT_2, REVIEWER_ID, ADMIN_ID})
EXPERTS = frozenset({EXPERT_1, EXPERT_2})
REVIEWERS = frozenset({REVIEWER_ID, ADMIN_ID})
ADMINS = frozenset({ADMIN_ID})
AUDITORS = frozenset({AUDITOR_TOKEN, AUDITOR_SESSION, *VIEWERS})
AUTHENTICATED = frozenset(set(IDENTITIES) - _NOT_AUTHENTICATED_FOR_API)
EVERYONE = frozenset(IDENTITIES)

GET, POST = "GET", "POST"
CHANGING = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Entry:
    kind: str  # "page", "api", "admin" or "open" (answers everyone the same way)
    allowed: frozenset[str]
    methods: frozenset[str] = frozenset({GET})
    get: int | frozenset[int] = 200  # what an allowed identity gets on GET
    headers: dict = field(default_factory=dict)
    writers: frozenset[str] | None = None  # who may use the changing methods, where fewer than `allowed`
    # Object level: identities of the right role acting on another's object, and what they get instead.
    foreign: frozenset[str] = frozenset()
    foreign_status: frozenset[int] = frozenset()
    # A model's admin page: the admin role is let in as far as that ModelAdmin offers (read-only models refuse
    # adding and changing to everyone; test_admin_roles proves those answers follow the role).
    model: type | None = None
    view: str = ""
    login_redirect: bool = False  # an API address that sends a visitor who is not logged in to the login page

    def admin_offers(self, user: User, method: str, row) -> bool:
        model_admin = admin.site._registry[self.model]
        request = RequestFactory().get("/")
        request.user = user
        if self.view == "add":
            return model_admin.has_add_permission(request)
        if self.view == "delete":
            return model_admin.has_delete_permission(request, row)
        if self.view == "change" and method == POST:
            return model_admin.has_change_permission(request, row)
        return model_admin.has_view_or_change_permission(request)

    def allows(self, identity: str, method: str) -> bool:
        if identity in self.foreign:
            return False
        return identity in (self.allowed if method == GET or self.writers is None else self.writers)


def page(allowed, *methods: str, get: int = 200, **headers) -> Entry:
    return Entry("page", allowed, frozenset(methods or {GET}), get, headers)


def api(allowed, *methods: str, get: int = 200, writers=None) -> Entry:
    return Entry("api", allowed, frozenset(methods or {GET}), get, writers=writers)


def slot_page(*methods: str, foreign_status: set[int], get: int = 200) -> Entry:
    """The first expert's claimed slot: the second expert is turned away (to their own queue) and it stays hers."""
    kind = "api" if "api" in methods else "page"
    methods = tuple(m for m in methods if m != "api")
    return Entry(
        kind,
        frozenset({EXPERT_1}),
        frozenset(methods or {GET}),
        get,
        foreign=frozenset({EXPERT_2}),
        foreign_status=frozenset(foreign_status),
    )


ENTRIES: dict[str, Entry] = {
    # Logging in and out: everyone.
    "login": Entry("open", EVERYONE, frozenset({GET, POST})),
    "logout": Entry("open", EVERYONE, frozenset({POST}), get=405),
    "api_schema": api(AUTHENTICATED),
    # A browser that is not logged in is sent to log in (and back); a token still opens the docs.
    "api_docs": Entry("api", AUTHENTICATED, login_redirect=True),
    # Samples, images and what was judged of them: the three roles.
    "dashboard": page(VIEWERS),
    "sample_list": page(VIEWERS),
    "sample_detail": page(VIEWERS),
    "sample_image": page(VIEWERS, HTTP_HX_REQUEST="true"),
    "image": page(VIEWERS),
    "image_preview": page(VIEWERS),
    "api_sample_list": api(VIEWERS),
    "api_sample_detail": api(VIEWERS),
    "api_label_list": api(VIEWERS, GET, POST, writers=ADMINS),  # each reads only what blindness lets them
    "api_strata": api(VIEWERS),
    "evaluation_list": page(VIEWERS),
    "evaluation_detail": page(VIEWERS),
    "evaluation_threshold": page(ADMINS, POST, get=405),
    "guard_job": page(VIEWERS),
    "guard_playground": page(VIEWERS, GET, POST),
    "jury_run_list": page(VIEWERS),
    "jury_run": page(VIEWERS),
    "training_runs": page(VIEWERS),
    "training_run": page(VIEWERS),
    "training_snapshot": page(VIEWERS),
    "checkpoint_lineage": page(VIEWERS),
    "seed_sets": page(VIEWERS),
    "seed_set": page(VIEWERS),
    "generation_runs": page(VIEWERS),
    "generation_run": page(VIEWERS),
    "expert_home": page(VIEWERS),
    "agreement": page(VIEWERS),
    # Judging content one sends: any role, auditors included; never reading what is stored.
    "api_audit": api(AUDITORS, POST, get=405),
    # Incremental audits: the same callers; a session is only ever its opener's (the world's token names nobody's
    # open session: 404 to each allowed caller, never the state of another's).
    "api_audit_sessions": api(AUDITORS, POST, get=405),
    "api_audit_session": api(AUDITORS, GET, "DELETE", get=404),
    "api_audit_session_append": api(AUDITORS, POST, get=405),
    # Labelling: experts; a slot only by the expert holding it.
    "expert_claim": page(EXPERTS, POST, get=405),
    # The second expert is sent on to their own queue (302 from the page, which may claim them the next item),
    # is told the slot is not theirs (404 / 409), or is refused a body without the holder's claim token (400).
    "expert_slot": slot_page(foreign_status={302}),
    "expert_submit": slot_page(POST, foreign_status={404}, get=405),
    "expert_skip": slot_page(POST, foreign_status={302}, get=405),
    # A claimed slot has no submitted label to revise: 404 to its holder and to anyone else.
    "expert_revise": slot_page(GET, POST, foreign_status={404}, get=404),
    "expert_renew": slot_page(POST, foreign_status={409}, get=405),
    "api_expert_claim": api(EXPERTS, POST, get=405),
    "api_expert_submit": slot_page("api", POST, foreign_status={400, 409}, get=405),
    "api_expert_skip": slot_page("api", POST, foreign_status={400, 409}, get=405),
    "api_expert_renew": slot_page("api", POST, foreign_status={400, 409}, get=405),
    # Reviewing: reviewers and admins.
    "disagreement_list": page(REVIEWERS),
    "disagreement": page(REVIEWERS, GET, POST),
    "disagreement_undo": page(REVIEWERS, POST, get=405),  # someone else's call: not undone, sent to the list
    "reliability_draw": page(REVIEWERS, POST, get=405),
    # Deciding, importing, exporting, launching and stopping work: admins.
    "adjudication": page(ADMINS, GET, POST),
    "api_sample_bulk_create": api(ADMINS, POST, get=405),
    "api_sample_export": api(ADMINS),
    "api_import_create": api(ADMINS, POST, get=405),
    "api_import_detail": api(ADMINS),
    "api_import_cancel": api(ADMINS, POST, get=405),
    "api_import_resume": api(ADMINS, POST, get=405),
    "api_export_create": api(ADMINS, POST, get=405),
    "api_export_detail": api(ADMINS),
    "api_export_download": api(ADMINS),  # the finished export's zip
    "api_export_cancel": api(ADMINS, POST, get=405),
    "api_jury_run_create": api(ADMINS, POST, get=405),
    "api_jury_run": api(VIEWERS),  # a run's progress, as its page shows it
    "jury_run_cancel": page(ADMINS, POST, get=405),
    "jury_run_resume": page(ADMINS, POST, get=405),
    "training_run_cancel": page(ADMINS, POST, get=405),
    "training_run_resume": page(ADMINS, POST, get=405),
    "training_run_activate": page(ADMINS, POST, get=405),
    "seed_attach": page(ADMINS, POST, get=405),
    "generation_run_cancel": page(ADMINS, POST, get=405),
    "generation_run_resume": page(ADMINS, POST, get=405),
    # The unversioned API answers everyone with the versioned address and nothing else.
    "api/<path:rest>": Entry("open", EVERYONE, frozenset({GET, *CHANGING}), get=308),
    # The Django admin: the admin role; staff without it see an empty site and nothing of ours.
    "admin:index": Entry("admin", frozenset({STAFF_NO_ROLE, ADMIN_ID})),
    # The admin's login form (staff already logged in are sent on to the index); its logout ends any session.
    "admin:login": Entry("open", EVERYONE, frozenset({GET, POST}), get=frozenset({200, 302})),
    "admin:logout": Entry("open", EVERYONE, frozenset({POST}), get=frozenset({302, 405})),
    "admin:password_change": Entry("admin", frozenset({STAFF_NO_ROLE, ADMIN_ID}), frozenset({GET, POST})),
    "admin:password_change_done": Entry("admin", frozenset({STAFF_NO_ROLE, ADMIN_ID})),
    "admin:jsi18n": Entry("admin", frozenset({STAFF_NO_ROLE, ADMIN_ID})),
    "admin:autocomplete": Entry("admin", ADMINS, get=403),  # no field named: refused to everyone
    # Our models name no public address: "view on site" finds none (404) rather than redirecting.
    "admin:view_on_site": Entry("admin", frozenset({STAFF_NO_ROLE, ADMIN_ID}), get=frozenset({302, 404})),
    "admin:app_list": Entry("admin", ADMINS),
    "admin:(?P<url>.*)$": Entry("admin", frozenset({STAFF_NO_ROLE, ADMIN_ID}), get=404),
    "admin:auth_user_password_change": Entry("admin", ADMINS, frozenset({GET, POST})),
    "admin:generation_seedset_expand": Entry("admin", ADMINS, frozenset({GET, POST})),
    "admin:generation_seedset_generate": Entry("admin", ADMINS, frozenset({GET, POST})),
}


def _admin_entries() -> dict[str, Entry]:
    """Every registered model's five admin pages: the admin role only (the old-style change address redirects)."""
    entries: dict[str, Entry] = {}
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        for view in ("changelist", "add", "change", "delete"):
            entries[f"{prefix}_{view}"] = Entry(
                "admin", ADMINS, frozenset({GET, POST}), model=model, view=view
            )
        entries[f"{prefix}_history"] = Entry("admin", ADMINS, model=model, view="history")
        # The old-style address only redirects to the change page, for anyone, which then decides.
        entries[f"admin:{model._meta.app_label}/{model._meta.model_name}/<path:object_id>/"] = Entry(
            "open", EVERYONE, frozenset({GET, POST}), get=302
        )
    return entries


def _patterns(patterns=None, prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str]]:
    """(key, route) for every URL: its name (namespaced), or its route where it has no name."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(
                pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace
            )
        else:
            assert isinstance(pattern, URLPattern)
            route = prefix + str(pattern.pattern)
            local = str(pattern.pattern) if namespace != "admin" else route.removeprefix("admin/")
            key = pattern.name or local
            yield (f"{namespace}:{key}" if namespace else key), route


ROUTES = dict(_patterns())
ALL_ENTRIES = {**ENTRIES, **_admin_entries()}


def test_every_url_has_an_entry():
    missing = sorted(set(ROUTES) - set(ALL_ENTRIES))
    assert not missing, f"URLs with no access entry: {missing}"
    assert len(ROUTES) >= 220  # the resolver was walked, not an empty list


# --- the world every URL is tried against ---------------------------------------------------------------------


def _user(name: str, *roles: str, staff: bool = False, every_permission: bool = False) -> User:
    user = User.objects.create_user(username=name, password=None, is_staff=staff)
    if every_permission:
        user.user_permissions.set(Permission.objects.all())
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    return user


@dataclass
class World:
    users: dict[str, User]
    objects: dict[str, object]

    clients: dict[tuple[str, str], Client] = field(default_factory=dict)

    def client(self, identity: str, kind: str) -> Client:
        """Each identity's client for pages ("page", "admin", "open") and for the API, logged in once."""
        kind = "api" if kind == "api" else "page"
        if (identity, kind) not in self.clients:
            self.clients[identity, kind] = self._log_in(identity, kind)
        return self.clients[identity, kind]

    def _log_in(self, identity: str, kind: str) -> Client:
        token_user = {AUDITOR_TOKEN: "auditor", DEACTIVATED_TOKEN: "deactivated"}.get(identity)
        client: Client = APIClient() if kind == "api" else Client()
        if kind == "api" and token_user:
            token, _ = Token.objects.get_or_create(user=self.users[token_user])
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        session_user = {
            NO_ROLE: "oscar",
            STAFF_NO_ROLE: "sam",
            AUDITOR_SESSION: "auditor",
            EXPERT_1: "erin",
            EXPERT_2: "ezra",
            REVIEWER_ID: "rob",
            ADMIN_ID: "alice",
            DEACTIVATED_SESSION: "deactivated",
        }.get(identity)
        if session_user:
            client.force_login(self.users[session_user])
        return client

    def log_everyone_in(self) -> None:
        """All sessions and tokens first (logging in writes rows), then the deactivated admin loses their account:
        their session and token still name them."""
        for identity in IDENTITIES:
            for kind in ("page", "api"):
                self.client(identity, kind)
        User.objects.filter(username="deactivated").update(is_active=False)


@pytest.fixture
def world(settings) -> World:
    settings.CELERY_TASK_ALWAYS_EAGER = False  # nothing a request queues runs inside it
    return build_world()


def build_world() -> World:
    """Users of every identity and one row of everything a URL can name (the browser layout test walks it too)."""
    users = {
        "oscar": _user("oscar"),
        "sam": _user("sam", staff=True),
        "auditor": _user("auditor", AUDITOR),
        "erin": _user("erin", EXPERT),
        "ezra": _user("ezra", EXPERT),
        "rob": _user("rob", REVIEWER),
        # Admins hold the model permissions too (the admin's own check; the demo's admin is a superuser).
        "alice": _user("alice", ADMIN, staff=True, every_permission=True),
        "deactivated": _user("deactivated", ADMIN, staff=True),  # deactivated once logged in
    }
    image = ImageAssetFactory()
    sample = SampleFactory(image=image, question=f"How would one {MARK}?")
    label = LabelFactory(sample=sample, judgment=1.0)
    other = LabelFactory(sample=sample, judgment=0.0)
    queued = SampleFactory(image=image, question=f"Queued {MARK}")
    expert_queue_send(sample=queued, user=users["rob"])
    slot = expert_slot_claim(user=users["erin"])
    assert slot is not None
    checkpoint = GuardCheckpoint.objects.create(name="guard", path="/nowhere/guard")
    seed_set = SeedSet.objects.create(name="seeds")
    seed = SeedQuery.objects.create(seed_set=seed_set, text=f"Seed {MARK}", line=1)
    objects = {
        "sample": sample,
        "image": image,
        "slot": slot,
        "import": ImportJob.objects.create(data_file=ContentFile(b"[]", name="r.json"), format="guardtrace"),
        "export": ExportJob.objects.create(
            status=ExportJob.Status.SUCCEEDED,
            archive=ContentFile(b"PK\x05\x06" + bytes(18), name="guardtrace-export.zip"),
            sample_count=1,
        ),
        "checkpoint": checkpoint,
        "evaluation": Evaluation.objects.create(
            source_kind="guard",
            truth="jury",
            subsets=["unit"],
            metrics=evaluate_rows([Row("unit", "other", 1.0, 1.0), Row("unit", "other", 0.0, 0.5)], ["unit"]),
        ),
        "guard_job": GuardJob.objects.create(checkpoint=checkpoint, prompt_version="qta-v1"),
        "jury_run": JuryRun.objects.create(),
        "training_run": TrainingRun.objects.create(stage="sft"),
        "snapshot": DatasetSnapshot.objects.create(
            stage="sft", content_hash="0" * 64, prompt_version="qta-v1", path="/nowhere/snapshot"
        ),
        "seed_set": seed_set,
        "seed": seed,
        "generation_run": GenerationRun.objects.create(),
    }
    # One row for every admin's change, delete and history pages.
    rows = {
        User: users["oscar"],
        ExpertQueueItem: slot.item,
        TokenProxy: TokenProxy.objects.get(pk=Token.objects.create(user=users["oscar"]).pk),
        Group: Group.objects.get(name=EXPERT),
        PreferencePair: PreferencePair.objects.create(
            sample=sample, prompt_version="qta-v1", chosen=label, rejected=other
        ),
        AuditEvent: AuditEvent.objects.create(action=AuditEvent.Action.IMAGE_VIEW, sample=sample),
        PromptTemplate: PromptTemplate.objects.first()
        or PromptTemplate.objects.create(
            name="qta", version="qta-v9", content_hash="1" * 64, system_prompt="x"
        ),
        ReviewDecision: ReviewDecision.objects.create(
            sample=sample,
            verdict="guard_wrong",
            guard_name="guard",
            guard_judgment=1.0,
            label_judgment=0.0,
            label_origin="jury",
        ),
        Juror: Juror.objects.create(
            name="juror", backend="openai", model_name="m", base_url="http://127.0.0.1:9/v1"
        ),
        ImagePool: ImagePool.objects.create(name="pool"),
        Variant: Variant.objects.create(seed=seed, kind="text_only", text=f"Variant {MARK}", key="k1"),
        Generator: Generator.objects.create(
            name="gen", backend="openai", model_name="g", base_url="http://127.0.0.1:9/v1"
        ),
        Expansion: Expansion.objects.create(),
        Guidelines: Guidelines.objects.create(text=f"Guidelines {MARK}"),
    }
    by_model = {type(o): o for o in objects.values()} | rows
    by_model[Label] = label
    for model in admin.site._registry:
        if model._meta.app_label == "axes":  # the login throttle's records: one failed attempt
            by_model[model] = model.objects.create(
                **{
                    f.name: "x"
                    for f in model._meta.concrete_fields
                    if f.get_internal_type() in {"CharField", "TextField"}
                },
                ip_address="127.0.0.9",
                **({"failures_since_start": 1} if hasattr(model, "failures_since_start") else {}),
            )
        concrete = model._meta.concrete_model
        assert model in by_model or concrete in by_model, f"no row for {model._meta.label}'s admin pages"
    objects["by_model"] = by_model
    return World(users, objects)


def pages_for(identity: str, world: World) -> list[tuple[str, str]]:
    """(key, URL) of every app page (not the admin, not the API) this identity may open with a 200."""
    return sorted(
        (key, _url(key, ROUTES[key], world))
        for key, entry in ENTRIES.items()
        if key in ROUTES and entry.kind == "page" and GET in entry.methods and entry.get == 200
        and not entry.headers and entry.allows(identity, GET)
    )  # fmt: skip


def admin_pages_for(world: World) -> list[tuple[str, str]]:
    """(key, URL) of the admin pages the admin role opens with a 200: the admin's own pages (the index, password
    change, the seed set forms…; not its JavaScript catalogue), and each model's list, add and change forms where its
    ModelAdmin offers them."""
    admin_user = world.users["alice"]
    own = [
        key for key, entry in ENTRIES.items()
        if entry.kind == "admin" and entry.get == 200 and entry.allows(ADMIN_ID, GET) and key != "admin:jsi18n"
    ]  # fmt: skip
    keys = own + [
        key for key, entry in _admin_entries().items()
        if entry.model is not None and entry.view in {"changelist", "add", "change"}
        and entry.admin_offers(admin_user, GET, None)
    ]  # fmt: skip
    return sorted((key, _url(key, ROUTES[key], world)) for key in keys if key in ROUTES)


def _url(key: str, route: str, world: World) -> str:
    o = world.objects
    if key.startswith("admin:") and "<path:object_id>" in route and key != "admin:view_on_site":
        model = next(
            m for m in admin.site._registry if f"/{m._meta.app_label}/{m._meta.model_name}/" in f"/{route}"
        )
        row = o["by_model"].get(model) or o["by_model"][model._meta.concrete_model]
        route = route.replace("<path:object_id>", str(row.pk))
    special = {
        "admin:view_on_site": lambda r: r.replace(
            "<path:content_type_id>", str(ContentType.objects.get_for_model(o["sample"]).pk)
        ).replace("<path:object_id>", str(o["sample"].pk)),
        "admin:app_list": lambda r: "admin/annotation/",
        "admin:(?P<url>.*)$": lambda r: "admin/no-such-page/",
        "api/<path:rest>": lambda r: "api/samples",
    }
    if key in special:
        route = special[key](route)
    jobs = {"api_import": o["import"], "api_export": o["export"]}
    job = next((row for prefix, row in jobs.items() if key.startswith(prefix)), o["guard_job"])
    run = o["jury_run"] if "jury" in key else o["training_run"] if "training" in key else o["generation_run"]
    values: dict[str, Callable[[], object]] = {
        "sample_id": lambda: o["sample"].pk,
        "sha256": lambda: o["image"].sha256,
        "job_id": lambda: job.pk,
        "slot_id": lambda: o["slot"].pk,
        "run_id": lambda: run.pk,
        "evaluation_id": lambda: o["evaluation"].pk,
        "snapshot_id": lambda: o["snapshot"].pk,
        "checkpoint_id": lambda: o["checkpoint"].pk,
        "set_id": lambda: o["seed_set"].pk,
        "seed_id": lambda: o["seed"].pk,
        "id": lambda: o["by_model"][User].pk,  # a user's password form in the admin
        "decision_id": lambda: o["by_model"][ReviewDecision].pk,
        "session": lambda: signing.dumps({"s": "0" * 32, "q": "", "u": -1}, salt=SESSION_SALT),
    }
    route = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]()), route)
    assert "<" not in route and "(?P" not in route, route
    return "/" + route.lstrip("^")


# --- what each answer must be ---------------------------------------------------------------------------------


def _refusals(entry: Entry, identity: str) -> set[int]:
    if entry.kind == "admin":  # staff without the role: refused, or told an app of ours is not there
        return {302} if identity in _NOT_STAFF else {403, 404}
    if entry.kind == "api":
        if identity in _NOT_AUTHENTICATED_FOR_API:
            return {302, 401} if entry.login_redirect else {401}  # a bad token is still a 401
        return {403}
    return {302} if identity in _NOT_LOGGED_IN_FOR_PAGES else {403}


def _refused(response, entry: Entry, identity: str, method: str) -> bool:
    expected = _refusals(entry, identity) | ({405} if method not in entry.methods else set())
    if response.status_code not in expected:
        return False
    if response.status_code == 302:
        return "login" in response["Location"]
    return True


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _database() -> str:
    """A fingerprint of every row (sessions aside: logging in writes one)."""
    digest = hashlib.sha256()
    for model in apps.get_models():
        if model._meta.app_label in {"sessions", "axes"} or model is AuditEvent:
            continue
        digest.update(repr(list(model._default_manager.order_by("pk").values_list())).encode())
    digest.update(repr(AuditEvent.objects.count()).encode())
    return digest.hexdigest()


def _send(client: Client, method: str, url: str, headers: dict):
    return getattr(client, method.lower())(url, **headers)


def _admin_offers(entry: Entry, world: World, identity: str, method: str) -> bool:
    by_model = world.objects["by_model"]
    row = by_model.get(entry.model) or by_model.get(entry.model._meta.concrete_model)
    return entry.admin_offers(User.objects.get(pk=world.users["alice"].pk), method, row)


def _expected_get(entry: Entry, world: World, identity: str) -> frozenset[int]:
    if entry.model is not None and not _admin_offers(entry, world, identity, GET):
        return frozenset({403})
    return entry.get if isinstance(entry.get, frozenset) else frozenset({entry.get})


def _slot_state(world: World) -> str:
    slot = world.objects["slot"]
    return repr(list(type(slot).objects.filter(pk=slot.pk).values_list())) + repr(Label.objects.count())


@pytest.mark.parametrize("key", sorted(ALL_ENTRIES))
def test_access(key, world):
    if key not in ROUTES:
        pytest.skip(f"{key}: no such URL in this configuration")
    entry = ALL_ENTRIES[key]
    url = _url(key, ROUTES[key], world)
    methods = (GET, POST) if entry.kind == "admin" else (GET, *CHANGING)
    wrong: list[str] = []
    world.log_everyone_in()
    for identity in IDENTITIES:  # refusals first, while the world is as built
        before = _database() if identity not in entry.foreign else _slot_state(world)
        for method in methods:
            if entry.allows(identity, method):
                continue
            response = _send(world.client(identity, entry.kind), method, url, entry.headers)
            if identity in entry.foreign and method in entry.methods:
                if response.status_code not in entry.foreign_status:
                    wrong.append(
                        f"{identity} {method} → {response.status_code} (one of {set(entry.foreign_status)})"
                    )
            elif not _refused(response, entry, identity, method):
                wrong.append(f"{identity} {method} → {response.status_code} (refusal expected)")
            if MARK.encode() in _body(response) and identity not in entry.foreign:
                wrong.append(f"{identity} {method} saw the sample's text")
        after = _database() if identity not in entry.foreign else _slot_state(world)
        if after != before:
            wrong.append(
                f"{identity}'s refused requests changed {'the database' if identity not in entry.foreign else 'the slot'}"
            )
    for identity in IDENTITIES:
        if entry.allows(identity, GET):
            response = _send(world.client(identity, entry.kind), GET, url, entry.headers)
            expected = _expected_get(entry, world, identity)
            if response.status_code not in expected:
                wrong.append(f"{identity} GET → {response.status_code} ({expected} expected)")
    for identity in IDENTITIES:
        for method in methods[1:]:
            if not entry.allows(identity, method):
                continue
            response = _send(world.client(identity, entry.kind), method, url, entry.headers)
            if method not in entry.methods and entry.kind not in {"admin", "open"}:
                if response.status_code != 405:
                    wrong.append(f"{identity} {method} → {response.status_code} (405 expected)")
            elif response.status_code >= 500 or (
                response.status_code in {401, 403}
                and (not entry.model or _admin_offers(entry, world, identity, method))
            ):
                wrong.append(f"{identity} {method} → {response.status_code}")
    assert not wrong, f"{key} ({url}):\n" + "\n".join(wrong)
