"""One error type for what a user asked that cannot be done, mapped once to an API response."""

from __future__ import annotations

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
