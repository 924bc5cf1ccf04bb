from __future__ import annotations

from django.http import HttpRequest

from common.roles import ADMIN, ROLES, user_roles


def roles(request: HttpRequest) -> dict:
    held = user_roles(request.user)
    # The navigation offers the app's pages only to those who may open them (not auditors or users without a role).
    return {"user_roles": held, "is_admin": ADMIN in held, "can_view_samples": bool(held & set(ROLES))}
