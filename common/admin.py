"""Users, groups and API tokens as Django's and DRF's admins show them, but changed only by the admin role: a role
is a group, so whoever may edit users or groups could hand themselves any role, and a token made for an admin is
that admin on the API. The login lockout's records likewise (deleting one unlocks a login)."""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from common.adminforms import AdminRoleModelAdmin

admin.site.site_header = "GuardTrace Studio administration"
admin.site.site_title = "GuardTrace Studio admin"

# Their apps come before this one in INSTALLED_APPS, so their admins have registered them already.
for model in (User, Group, TokenProxy, AccessAttempt, AccessLog, AccessFailureLog):
    admin.site.unregister(model)


@admin.register(User)
class RoleGatedUserAdmin(AdminRoleModelAdmin, UserAdmin):
    # The roles are a handful of groups: boxes to tick. Permissions in a plain labelled list (the two-pane picker
    # puts an ARIA label on an element that may not carry one). Last login and joining are records, not settings.
    filter_horizontal = ()
    readonly_fields = ("last_login", "date_joined")

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "groups":
            kwargs["widget"] = forms.CheckboxSelectMultiple
        return super().formfield_for_manytomany(db_field, request, **kwargs)


@admin.register(Group)
class RoleGatedGroupAdmin(AdminRoleModelAdmin, GroupAdmin):
    filter_horizontal = ()


@admin.register(TokenProxy)
class RoleGatedTokenAdmin(AdminRoleModelAdmin, TokenAdmin):
    # The search bar's label is its icon; with a help text beside it, axe took the help for its only label.
    search_help_text = None


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
