"""GuardTrace Studio settings.

Every value comes from the environment through the typed helpers in `guardtrace.env`; the defaults give the
embedded setup (SQLite and Celery's filesystem transport under `var/`), production sets DATABASE_URL and
CELERY_BROKER_URL to PostgreSQL and Redis.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF

from guardtrace.env import ImproperEnv, env_bool, env_float, env_int, env_list, env_path, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("GUARDTRACE_VAR_DIR", BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
_DEV_SECRET = "insecure-dev-key-only-for-the-embedded-setup"
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET)
PRODUCTION = env_bool("GUARDTRACE_PRODUCTION", False)
# Whatever DEBUG says: the development key is public, so a production instance never runs on it.
if PRODUCTION and (SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 50):
    raise ImproperEnv("SECRET_KEY must be set, at least 50 characters, when GUARDTRACE_PRODUCTION is on")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "axes",
    "common",
    "annotation",
    "guardmodel",
    "experts",
    "jury",
    "training",
    "generation",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "common.middleware.no_store",
    # Last: turns a login refused for too many failures into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "guardtrace.urls"
WSGI_APPLICATION = "guardtrace.wsgi.application"
ASGI_APPLICATION = "guardtrace.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "common.context_processors.roles",
            ],
        },
    }
]


def _database(url: str) -> dict[str, Any]:
    try:
        config = dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0))
    except Exception as exc:  # dj-database-url raises several types for a malformed URL
        raise ImproperEnv(f"DATABASE_URL={url!r}: {exc}") from exc
    if config["ENGINE"] not in {"django.db.backends.sqlite3", "django.db.backends.postgresql"}:
        raise ImproperEnv(f"DATABASE_URL={url!r}: only sqlite:// and postgres:// are supported")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the web server read while the worker writes.
        config["OPTIONS"] = {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
        config["CONN_MAX_AGE"] = 0
        # A file, not memory, so that a Celery worker started by the tests sees the test database; one per test
        # process, so that two suites run at once on one checkout do not share (and corrupt) it.
        config["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    return dict(config)


DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'guardtrace.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# Login lockout (django-axes): after this many failed logins for one username from one address, that pair is
# refused for the cool-off (the page says so); a successful login clears the count. The attempts are rows in the
# database, shared by every web process; `manage.py axes_reset_username <name>` unlocks early.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("GUARDTRACE_LOGIN_FAILURES", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("GUARDTRACE_LOCKOUT_MINUTES", 15, minimum=1))
# The pair, not the address alone: colleagues behind one NAT or proxy do not lock each other out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "common.http.lockout_response"
# The client's address: REMOTE_ADDR, or behind this many trusted proxies the entry they appended to
# X-Forwarded-For (a header the client can otherwise fill with any address it likes).
GUARDTRACE_PROXY_COUNT = env_int("GUARDTRACE_PROXY_COUNT", 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "common.http.client_ip"

# The cache holds the API's rate-limit counters, so every web process must see the same one: Redis in production,
# the database (table made by a migration of `common`) in the embedded setup.
GUARDTRACE_CACHE_URL = env_str("GUARDTRACE_CACHE_URL", "")
if GUARDTRACE_CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": GUARDTRACE_CACHE_URL,
        }
    }
elif GUARDTRACE_CACHE_URL:
    raise ImproperEnv(f"GUARDTRACE_CACHE_URL={GUARDTRACE_CACHE_URL!r}: expected redis:// or rediss://")
else:
    CACHES = {
        # The name is the one common/migrations/0002_cache_table.py creates.
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "guardtrace_cache"}
    }

# Content Security Policy: scripts and styles only from our own static files (htmx is vendored), no inline code
# anywhere; no framing, forms post only here. Swagger UI loads its start-up script from the same view.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # data: for the small inline icons of Swagger UI's and the admin's style sheets.
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "staticfiles")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from static/ when collectstatic has not run (tests, a first `runserver`).
WHITENOISE_USE_FINDERS = True
# Media are never served by URL: images go through an authenticated view (annotation.views.image_view).
MEDIA_ROOT = env_path("MEDIA_ROOT", VAR_DIR / "media")
MEDIA_URL = "/media-not-served/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env_bool("STATIC_MANIFEST", False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# A working day, not Django's two weeks: sessions open harmful content.
SESSION_COOKIE_AGE = env_int("SESSION_AGE_S", 12 * 3600, minimum=300)
X_FRAME_OPTIONS = "DENY"
# Behind an HTTPS proxy: redirect plain HTTP, send HSTS, and trust the proxy's X-Forwarded-Proto.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["common.permissions.CanViewSamples"],
    "DEFAULT_SCHEMA_CLASS": "common.schema.AutoSchema",
    "EXCEPTION_HANDLER": "common.errors.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "audit": env_str("GUARDTRACE_AUDIT_RATE", "600/min"),
        # Appends to an open audit session: a streaming model sends one per few tokens.
        "audit_append": env_str("GUARDTRACE_AUDIT_APPEND_RATE", "6000/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "GuardTrace Studio API",
    "DESCRIPTION": "QTA samples, labels and strata for building a trace-level multimodal safety guard.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Every kind of long work shares one status set: one enum in the schema.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "common.work.JobStatus",
        # Inputs and outputs share the models' choice sets: one named enum each.
        "JudgmentEnum": "annotation.models.JUDGMENT_CHOICES",
        "SplitEnum": "annotation.models.Split",
        "StratumEnum": "annotation.models.Stratum",
        "LabelSourceKindEnum": "annotation.models.Label.SourceKind",
        "LabelStatusEnum": "annotation.models.Label.Status",
    },
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: kombu's filesystem transport under var/ by default (no broker process needed), Redis in production.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_FS_DIR = VAR_DIR / "celery"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        "data_folder_in": str(CELERY_FS_DIR / "queue"),
        "data_folder_out": str(CELERY_FS_DIR / "queue"),
        "processed_folder": str(CELERY_FS_DIR / "processed"),
        "store_processed": False,
        # Its exchange tables: per instance too (kombu's default is ./control, shared by every checkout's run).
        "control_folder": str(CELERY_FS_DIR / "control"),
    }
    # kombu's filesystem transport does not create its folders.
    for _folder in ("queue", "processed", "control"):
        (CELERY_FS_DIR / _folder).mkdir(parents=True, exist_ok=True)
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Unacknowledged tasks return to the queue after this long (tasks use late acknowledgement).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)
    }
else:
    raise ImproperEnv(f"CELERY_BROKER_URL={CELERY_BROKER_URL!r}: expected filesystem:// or redis://")
# Only the audit API waits for a task's answer (its tasks keep results; every other task ignores its own): files
# under var/ embedded, the broker's Redis in production.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_EXPIRES = 3600
if CELERY_BROKER_URL.startswith("filesystem://"):
    (CELERY_FS_DIR / "results").mkdir(parents=True, exist_ok=True)
    CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", f"file://{CELERY_FS_DIR / 'results'}")
    # How often a worker looks for new messages (kombu's default, 1 s, would be the audit API's latency floor).
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.1
else:
    CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    # The audit API's inference: its own worker, so a call never waits behind a guard job or a training round.
    "guardmodel.tasks.audit_task": {"queue": "audit"},
    "guardmodel.tasks.audit_session_task": {"queue": "audit"},
    "jury.tasks.*": {"queue": "jury"},
    "training.tasks.*": {"queue": "gpu"},
    "guardmodel.tasks.*": {"queue": "gpu"},
}

# Import limits: images are verified with Pillow under these, text fields are capped.
GUARDTRACE_MAX_IMAGE_PIXELS = env_int("GUARDTRACE_MAX_IMAGE_PIXELS", 40_000_000, minimum=1)
GUARDTRACE_MAX_IMAGE_BYTES = env_int("GUARDTRACE_MAX_IMAGE_BYTES", 20 * 1024 * 1024, minimum=1)
GUARDTRACE_MAX_TEXT_CHARS = env_int("GUARDTRACE_MAX_TEXT_CHARS", 1_000_000, minimum=1)
GUARDTRACE_MAX_UPLOAD_BYTES = env_int("GUARDTRACE_MAX_UPLOAD_BYTES", 512 * 1024 * 1024, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 64 * 1024 * 1024, minimum=1)

# Guard inference (guard jobs on the gpu queue, the audit API). Device/dtype "auto": bf16 on GPU, float32 on CPU.
GUARDTRACE_GUARD_DEVICE = env_str("GUARDTRACE_GUARD_DEVICE", "auto")
GUARDTRACE_GUARD_DTYPE = env_str("GUARDTRACE_GUARD_DTYPE", "auto")
GUARDTRACE_GUARD_BATCH_SIZE = env_int("GUARDTRACE_GUARD_BATCH_SIZE", 16, minimum=1)
GUARDTRACE_GUARD_MAX_NEW_TOKENS = env_int("GUARDTRACE_GUARD_MAX_NEW_TOKENS", 256, minimum=1)
GUARDTRACE_GUARD_MAX_PIXELS = (
    env_int("GUARDTRACE_GUARD_MAX_PIXELS", 0, minimum=0) or None
)  # 0: the processor's
GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY = env_int("GUARDTRACE_GUARD_ENDPOINT_CONCURRENCY", 8, minimum=1)
# A served guard's risk scores are read from this many alternatives per token (the OpenAI API's most is 20; vLLM
# allows up to its --max-logprobs): a judgment level outside them counts as improbable.
GUARDTRACE_GUARD_TOP_LOGPROBS = env_int("GUARDTRACE_GUARD_TOP_LOGPROBS", 20, minimum=1)
# The audit API: text beyond this many characters per field, or images beyond the byte limit above, get a 413/400.
GUARDTRACE_AUDIT_MAX_TEXT_CHARS = env_int("GUARDTRACE_AUDIT_MAX_TEXT_CHARS", 1_000_000, minimum=1)
# How long an audit API call waits for the audit worker (local checkpoints) before answering 504.
GUARDTRACE_AUDIT_TIMEOUT_S = env_float("GUARDTRACE_AUDIT_TIMEOUT_S", 60.0, minimum=0.1)
# Incremental audit sessions (POST /api/v1/audit/sessions): each keeps its key/value cache on the audit worker that
# opened it, ends after this many seconds without an append, and each worker keeps at most this many sessions and
# this much cache memory in all (least recently used ended first). A 3B guard in bf16 holds about 36 KiB per token.
GUARDTRACE_AUDIT_SESSION_TTL_S = env_float("GUARDTRACE_AUDIT_SESSION_TTL_S", 300.0, minimum=1.0)
GUARDTRACE_AUDIT_SESSIONS_MAX = env_int("GUARDTRACE_AUDIT_SESSIONS_MAX", 64, minimum=1)
GUARDTRACE_AUDIT_SESSION_MEMORY_MB = env_int("GUARDTRACE_AUDIT_SESSION_MEMORY_MB", 4096, minimum=1)

# The jury. A juror's driver holds a lease this long, renewing it as it works; a dead driver's work is taken over
# once its lease has run out. Calls are retried this many times in all, with exponential backoff and full jitter.
GUARDTRACE_JURY_LEASE_S = env_int("GUARDTRACE_JURY_LEASE_S", 30, minimum=2)
GUARDTRACE_JURY_ATTEMPTS = env_int("GUARDTRACE_JURY_ATTEMPTS", 4, minimum=1)
GUARDTRACE_JURY_BACKOFF_S = env_float("GUARDTRACE_JURY_BACKOFF_S", 0.5, minimum=0.0)
GUARDTRACE_JURY_BACKOFF_MAX_S = env_float("GUARDTRACE_JURY_BACKOFF_MAX_S", 30.0, minimum=0.0)
GUARDTRACE_JURY_FLUSH = env_int("GUARDTRACE_JURY_FLUSH", 128, minimum=1)  # results written per transaction
# The admin's "test connection" on a juror, generator or guard endpoint waits at most this long (or the endpoint's own
# timeout, when shorter) for the one request it makes.
GUARDTRACE_ENDPOINT_CHECK_S = env_float("GUARDTRACE_ENDPOINT_CHECK_S", 5.0, minimum=0.1)

# The expert queue. Each item needs this many blind expert labels (the paper: three). A claimed item is held for
# the lease (renewed while its page is open) and returns to the queue when abandoned. The daily cap limits how
# many items one expert is shown per day: seeing harmful content is a real cost for these people.
GUARDTRACE_EXPERT_LABELS = env_int("GUARDTRACE_EXPERT_LABELS", 3, minimum=1)
GUARDTRACE_EXPERT_LEASE_S = env_int("GUARDTRACE_EXPERT_LEASE_S", 900, minimum=10)
GUARDTRACE_EXPERT_DAILY_CAP = env_int("GUARDTRACE_EXPERT_DAILY_CAP", 150, minimum=1)

# Training rounds (the gpu queue). Snapshots and run directories live under GUARDTRACE_TRAINING_DIR. A round trains
# in a child process on GUARDTRACE_TRAIN_DEVICE ("auto": cuda when there is one); more than one GPU launches it with
# accelerate. One round per device at a time: a second waits, re-checking every GUARDTRACE_TRAIN_WAIT_S seconds.
GUARDTRACE_TRAINING_DIR = env_path("GUARDTRACE_TRAINING_DIR", VAR_DIR / "training")
GUARDTRACE_TRAIN_DEVICE = env_str("GUARDTRACE_TRAIN_DEVICE", "auto")
GUARDTRACE_TRAIN_GPUS = env_int("GUARDTRACE_TRAIN_GPUS", 1, minimum=1)
GUARDTRACE_TRAIN_THREADS = env_int("GUARDTRACE_TRAIN_THREADS", 0, minimum=0)  # CPU training; 0: all cores
GUARDTRACE_TRAIN_WAIT_S = env_float("GUARDTRACE_TRAIN_WAIT_S", 10.0, minimum=0.1)
GUARDTRACE_TRAIN_POLL_S = env_float("GUARDTRACE_TRAIN_POLL_S", 0.5, minimum=0.05)
# A running round whose driver has not reported for this long is shown as stalled and can be resumed.
GUARDTRACE_TRAIN_STALE_S = env_int("GUARDTRACE_TRAIN_STALE_S", 60, minimum=5)
# An import silent this long is dead (it beats while checking, not while storing; its task's hard time limit is
# 3,600 s): the next worker runs it again.
GUARDTRACE_IMPORT_STALE_S = env_int("GUARDTRACE_IMPORT_STALE_S", 3700, minimum=60)
# Uploaded import files (media/imports/) are deleted this long after their import ended — succeeded, failed or
# cancelled — and files there with no import row once this old; a queued or running import's files are kept.
# Export archives (media/exports/) follow the same retention.
GUARDTRACE_UPLOAD_RETENTION_HOURS = env_float("GUARDTRACE_UPLOAD_RETENTION_HOURS", 24.0, minimum=0.0)
# GET /api/v1/samples/export builds its zip inside the request up to this many samples; more are a 409 that points
# to POST /api/v1/exports, an export job on the worker.
GUARDTRACE_EXPORT_INLINE_MAX = env_int("GUARDTRACE_EXPORT_INLINE_MAX", 2000, minimum=0)
# An export beats about once a second while it writes; one silent this long is dead and the next worker redoes it.
GUARDTRACE_EXPORT_STALE_S = env_int("GUARDTRACE_EXPORT_STALE_S", 600, minimum=60)
# `manage.py backup` writes its archives here (`make backup`, `make restore ARCHIVE=…`).
GUARDTRACE_BACKUP_DIR = env_path("GUARDTRACE_BACKUP_DIR", VAR_DIR / "backups")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # django-axes greets every process start (each manage.py command) at INFO; its lockout warnings stay.
    "loggers": {"axes.apps": {"level": "WARNING"}},
}

# Building QTA data (generation/). Aligned-image expansion ranks a pool's captions by similarity to each seed with a
# sentence-transformers model read from this local directory (nothing is downloaded). Typographic (FigStep) images are
# drawn with this font (a TrueType/OpenType file covering your seeds' scripts; empty: DejaVu Sans when installed, else
# Pillow's built-in Latin font), at this size, on a canvas of this size.
GUARDTRACE_EMBEDDING_MODEL = env_str("GUARDTRACE_EMBEDDING_MODEL", "")
GUARDTRACE_FIGSTEP = {
    "font_path": env_str("GUARDTRACE_FIGSTEP_FONT", ""),
    "font_size": env_int("GUARDTRACE_FIGSTEP_FONT_SIZE", 40, minimum=8),
    "width": env_int("GUARDTRACE_FIGSTEP_WIDTH", 760, minimum=200),
    "height": env_int("GUARDTRACE_FIGSTEP_HEIGHT", 760, minimum=200),
}
