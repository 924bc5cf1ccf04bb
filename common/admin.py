"""Users, groups and API tokens as Django's and DRF's admins show them, but changed only by the admin role: a role
is a group, so whoever may edit users or groups could hand themselves any role, and a token made for an admin is
that admin on the API. The login lockout's records likewise (deleting one unlocks a login)."""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from common.adminforms import AdminRoleModelAdmin

# Their apps come before this one in INSTALLED_APPS, so their admins have registered them already.
for model in (User, Group, TokenProxy, AccessAttempt, AccessLog, AccessFailureLog):
    admin.site.unregister(model)


@admin.register(User)
class RoleGatedUserAdmin(AdminRoleModelAdmin, UserAdmin):
    pass


@admin.register(Group)
class RoleGatedGroupAdmin(AdminRoleModelAdmin, GroupAdmin):
    pass


@admin.register(TokenProxy)
class RoleGatedTokenAdmin(AdminRoleModelAdmin, TokenAdmin):
    pass


# Login lockout records (django-axes): deleting an attempt unlocks that username at that address, so only the admin
# role may. Its "clean up expired attempts" action is left out: every login cleans them up already.
@admin.register(AccessAttempt)
class RoleGatedAccessAttemptAdmin(AdminRoleModelAdmin, AccessAttemptAdmin):
    actions: list = []


@admin.register(AccessLog)
class RoleGatedAccessLogAdmin(AdminRoleModelAdmin, AccessLogAdmin):
    pass


@admin.register(AccessFailureLog)
class RoleGatedAccessFailureLogAdmin(AdminRoleModelAdmin, AccessFailureLogAdmin):
    pass
