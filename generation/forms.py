"""Bodies the generation pages post, read by forms."""

from __future__ import annotations

from django import forms
from django.conf import settings

from qta import seed_files


class SeedAttachForm(forms.Form):
    """An aligned image (and optionally its own text) attached by hand to a seed query."""

    image = forms.FileField(error_messages={"required": "choose an image file to attach"})
    text = forms.CharField(required=False)
    page = forms.CharField(required=False)

    def clean_image(self):
        upload = self.cleaned_data["image"]
        if (upload.size or 0) > settings.GUARDTRACE_MAX_IMAGE_BYTES:
            raise forms.ValidationError(f"larger than {settings.GUARDTRACE_MAX_IMAGE_BYTES} bytes")
        return upload

    def clean_text(self) -> str:
        text = self.cleaned_data["text"].strip()
        if len(text) > seed_files.MAX_TEXT:
            raise forms.ValidationError(f"{len(text):,} characters, over the {seed_files.MAX_TEXT:,} limit")
        return text

    def clean_page(self) -> int:
        page = self.cleaned_data["page"]
        return int(page) if page.isascii() and page.isdigit() else 1

    def first_error(self) -> str:
        """`field: reason` as the page shows it; an uploaded file's own errors name the file."""
        field, errors = next(iter(self.errors.items()))
        upload = self.files.get("image")
        return (
            f"{upload.name}: {errors[0]}"
            if field == "image" and upload is not None
            else f"{field}: {errors[0]}"
        )
