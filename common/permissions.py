from __future__ import annotations

from rest_framework.permissions import BasePermission

from common.roles import can_audit, can_view_samples, is_admin


class CanViewSamples(BasePermission):
    """Logged in (session or token) and holding the expert, reviewer or admin role."""

    message = "You need the expert, reviewer or admin role to see samples."

    def has_permission(self, request, view) -> bool:
        return can_view_samples(request.user)


class IsAdminRole(BasePermission):
    message = "Only admins may do this."

    def has_permission(self, request, view) -> bool:
        return is_admin(request.user)


class CanAudit(BasePermission):
    """Any role, including the auditor service-account role, may have content judged by the guard."""

    message = "You need the auditor, expert, reviewer or admin role to call the audit API."

    def has_permission(self, request, view) -> bool:
        return can_audit(request.user)
