"""Users, groups and API tokens as Django's and DRF's admins show them, but changed only by the admin role: a role
is a group, so whoever may edit users or groups could hand themselves any role, and a token made for an admin is
that admin on the API."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from common.adminforms import AdminRoleModelAdmin

# Their apps come before this one in INSTALLED_APPS, so their admins have registered them already.
for model in (User, Group, TokenProxy):
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
