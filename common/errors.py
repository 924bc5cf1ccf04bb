"""One error type for what a user asked that cannot be done, mapped once to an API response."""

from __future__ import annotations

from django.http import HttpResponseBadRequest, HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(ValueError):
    """A request that cannot be done, with a message for the person who asked and, where one field is at fault,
    its name. Services raise it; the API answers it with `status_code` and {field: [message]} or {"detail": …};
    pages and the admin show the message."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class TooManyRequests(ApplicationError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS


class Conflict(ApplicationError):
    """The thing changed under the request (claimed by someone else, already labelled)."""

    status_code = status.HTTP_409_CONFLICT


class MissingApiKey(ApplicationError):
    pass


def api_exception_handler(exc, context):
    """DRF's handler, plus ApplicationError."""
    if isinstance(exc, ApplicationError):
        body = {exc.field: [exc.message]} if exc.field else {"detail": exc.message}
        return Response(body, status=exc.status_code)
    return exception_handler(exc, context)


# Django's error handlers (guardtrace/urls.py): the same short answer whatever went wrong, never the exception's
# text, the path or a traceback. API paths get JSON as DRF's own errors do; pages get the templates.
_GENERIC = {
    400: "Bad request.",
    403: "You do not have permission to do this.",
    404: "Not found.",
    500: "Server error. It has been logged.",
}


def _api_error(request, status_code: int) -> JsonResponse | None:
    if not request.path.startswith("/api/"):
        return None
    return JsonResponse({"detail": _GENERIC[status_code]}, status=status_code)


def bad_request(request, exception):
    # Without the request's context too: a refused Host header fails before the user is known.
    return _api_error(request, 400) or HttpResponseBadRequest(loader.get_template("400.html").render())


def permission_denied(request, exception):
    return _api_error(request, 403) or render(request, "403.html", status=403)


def page_not_found(request, exception):
    return _api_error(request, 404) or render(request, "404.html", status=404)


def server_error(request):
    # Rendered without the request's context: whatever failed (the database, a context processor) is not used again.
    return _api_error(request, 500) or HttpResponseServerError(loader.get_template("500.html").render())
