"""Web plumbing every app's pages share: the request type django-htmx gives, and one role check for views."""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django_htmx.middleware import HtmxDetails

from common.roles import ROLES, user_roles


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def roles_required(*allowed: str):
    """Logged in (else the login page) and holding one of `allowed` (else 403). Samples can be harmful: every
    page that shows one is behind this."""

    def decorate(view):
        @login_required
        @wraps(view)
        def wrapper(request: HtmxHttpRequest, *args, **kwargs) -> HttpResponse:
            if not user_roles(request.user) & set(allowed):
                return render(request, "403.html", {"needed": allowed}, status=403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


# Any of the three roles that may see samples.
role_required = roles_required(*ROLES)


def client_ip(request: HttpRequest) -> str:
    """The address a request came from, as login lockout keys it: REMOTE_ADDR, or behind
    `GUARDTRACE_PROXY_COUNT` trusted proxies the address the outermost of them saw (the entries before it in
    X-Forwarded-For are the client's to write, so they are never read)."""
    proxies = settings.GUARDTRACE_PROXY_COUNT
    remote = request.META.get("REMOTE_ADDR", "")
    if not proxies:
        return remote
    header = request.META.get("HTTP_X_FORWARDED_FOR", "")
    forwarded = [part.strip() for part in header.split(",") if part.strip()]
    return forwarded[-proxies] if len(forwarded) >= proxies else remote


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """The page django-axes answers a locked-out login with (the app's login and the admin's): 429, saying for how
    long, in the app's layout."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    context = {"username": username, "failure_limit": settings.AXES_FAILURE_LIMIT, "minutes": minutes}
    return render(request, "registration/locked_out.html", context, status=429)


MAX_ID = 2**63 - 1  # the largest primary key PostgreSQL's bigint holds


def parse_id(text: str) -> int | None:
    """A database id given as text (a query parameter, a list of ids): ASCII digits only — "²" passes
    `str.isdigit()` but not `int()` — within the bigint range; None for anything else."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


def parse_ids(texts) -> list[int]:
    """The valid ids among `texts` (bad ones are dropped)."""
    return [value for text in texts if (value := parse_id(text)) is not None]


class _PermanentRedirectKeepingMethod(HttpResponsePermanentRedirect):
    status_code = 308


def moved_permanently(*, unversioned: tuple[str, ...]):
    """A view answering `/api/<rest>` with 308 to `/api/v1/<rest>` (no trailing slash) for the endpoints that
    lived there before the API had one prefix; anything else under /api/ stays a 404."""

    # It only redirects (the target checks CSRF and authentication): a token client's POST must get its 308, not a
    # CSRF refusal meant for browser sessions.
    @csrf_exempt
    def view(request: HttpRequest, rest: str) -> HttpResponse:
        if rest.split("/", 1)[0] not in unversioned:
            raise Http404("no such API endpoint")
        target = f"/api/v1/{rest.rstrip('/')}"
        query = request.META.get("QUERY_STRING", "")
        return _PermanentRedirectKeepingMethod(f"{target}?{query}" if query else target)

    return view
