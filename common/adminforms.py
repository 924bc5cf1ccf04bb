"""The app's admin plumbing: who may change anything (the admin role), and one page shape for the app's own admin
forms (imports, expansions): intro, file:line errors, fields."""

from __future__ import annotations

from collections.abc import Sequence

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpRequest
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from common.endpoints import EndpointTarget, endpoint_target, endpoints_check
from common.roles import is_admin

MAX_ERRORS_SHOWN = 200


class AdminRoleModelAdmin(admin.ModelAdmin):
    """Only the admin role changes anything: adds, edits, deletes, and runs the actions that say
    `permissions=["admin_role"]` (Django offers and runs an action only when `has_<name>_permission` is true).
    Other staff, whatever their model permissions, only look."""

    def has_admin_role_permission(self, request: HttpRequest) -> bool:
        return is_admin(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self.has_admin_role_permission(request)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return super().has_change_permission(request, obj) and self.has_admin_role_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and self.has_admin_role_permission(request)


class EndpointAdmin(AdminRoleModelAdmin):
    """The admin of a model the app calls (a juror, a generator, a guard checkpoint): a "Test connection" action on
    the list, and a button on the change page that runs it for that one endpoint and answers there."""

    change_form_template = "admin/endpoint_change_form.html"

    def endpoint_target(self, obj) -> EndpointTarget:
        """What "Test connection" checks of a row; a `ModelEndpoint`'s own settings unless overridden."""
        return endpoint_target(obj)

    @admin.action(description="Test connection", permissions=["admin_role"])
    def test_connection(self, request: HttpRequest, queryset):
        rows = list(queryset)
        for check in endpoints_check([self.endpoint_target(row) for row in rows]):
            self.message_user(request, check.message, messages.SUCCESS if check.ok else messages.ERROR)
        if "_from_change_page" in request.POST and len(rows) == 1:
            opts = self.model._meta
            return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[rows[0].pk]))
        return None


class SelectionForm(forms.Form):
    """A changelist's selection, carried in hidden fields through an action's own page so that the page's answer
    runs the action again on the same rows (Django's delete page carries the ids the same way)."""

    select_across = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Named as the changelist's checkboxes, a name no class attribute may have.
        self.fields[helpers.ACTION_CHECKBOX_NAME] = forms.Field(
            required=False, widget=forms.MultipleHiddenInput
        )


def admin_form(modeladmin, request, form, title: str, *, errors: Sequence[str] = (), intro: str = "",
               submit: str = "Import") -> TemplateResponse:  # fmt: skip
    context = {
        **modeladmin.admin_site.each_context(request), "opts": modeladmin.model._meta, "form": form,
        "errors": list(errors)[:MAX_ERRORS_SHOWN], "more": max(0, len(errors) - MAX_ERRORS_SHOWN), "title": title,
        "intro": intro, "submit": submit,
    }  # fmt: skip
    return TemplateResponse(request, "admin/guardtrace_form.html", context)
