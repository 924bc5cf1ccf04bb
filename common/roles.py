"""The three roles and what each may do. Harmful content is shown only to users holding one of them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group

EXPERT, REVIEWER, ADMIN = "expert", "reviewer", "admin"
ROLES = (EXPERT, REVIEWER, ADMIN)
# A service account that may call the audit API (judge content it sends) but never see stored samples.
AUDITOR = "auditor"

User = AbstractBaseUser | AnonymousUser


def user_roles(user: User) -> set[str]:
    if not user.is_authenticated or not user.is_active:
        return set()
    # Cached on the request's user object: several checks per request, one query.
    cached: set[str] | None = user.__dict__.get("_guardtrace_roles")
    if cached is None:
        cached = set(
            Group.objects.filter(user__pk=user.pk, name__in=(*ROLES, AUDITOR)).values_list("name", flat=True)
        )
        if getattr(user, "is_superuser", False):
            cached.add(ADMIN)
        user.__dict__["_guardtrace_roles"] = cached
    return cached


def can_view_samples(user: User) -> bool:
    return bool(user_roles(user) & set(ROLES))


def can_audit(user: User) -> bool:
    return bool(user_roles(user))


def is_admin(user: User) -> bool:
    return ADMIN in user_roles(user)


def is_expert(user: User) -> bool:
    return EXPERT in user_roles(user)
