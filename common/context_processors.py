from __future__ import annotations

from django.http import HttpRequest

from common.roles import ADMIN, user_roles


def roles(request: HttpRequest) -> dict:
    held = user_roles(request.user)
    return {"user_roles": held, "is_admin": ADMIN in held}
