from __future__ import annotations

from django.http import HttpRequest

from annotation.roles import user_roles


def roles(request: HttpRequest) -> dict:
    return {"user_roles": user_roles(request.user)}
