"""The three roles and what each may do. Harmful content is shown only to users holding one of them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

EXPERT, REVIEWER, ADMIN = "expert", "reviewer", "admin"
ROLES = (EXPERT, REVIEWER, ADMIN)

User = AbstractBaseUser | AnonymousUser


def user_roles(user: User) -> set[str]:
    if not user.is_authenticated or not user.is_active:
        return set()
    cached = getattr(user, "_guardtrace_roles", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))  # type: ignore[union-attr]
        if user.is_superuser:  # type: ignore[union-attr]
            cached.add(ADMIN)
        user._guardtrace_roles = cached  # type: ignore[union-attr]
    return cached


def can_view_samples(user: User) -> bool:
    return bool(user_roles(user))


def is_admin(user: User) -> bool:
    return ADMIN in user_roles(user)


def is_expert(user: User) -> bool:
    return EXPERT in user_roles(user)
