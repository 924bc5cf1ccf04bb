"""One admin page shape for the app's own admin forms (imports, expansions): intro, file:line errors, fields."""

from __future__ import annotations

from collections.abc import Sequence

from django.template.response import TemplateResponse

MAX_ERRORS_SHOWN = 200


def admin_form(modeladmin, request, form, title: str, *, errors: Sequence[str] = (), intro: str = "",
               submit: str = "Import") -> TemplateResponse:  # fmt: skip
    context = {
        **modeladmin.admin_site.each_context(request), "opts": modeladmin.model._meta, "form": form,
        "errors": list(errors)[:MAX_ERRORS_SHOWN], "more": max(0, len(errors) - MAX_ERRORS_SHOWN), "title": title,
        "intro": intro, "submit": submit,
    }  # fmt: skip
    return TemplateResponse(request, "admin/guardtrace_form.html", context)
