"""The bodies the experts' pages post, read by forms (never by hand from request.POST). A form's first error becomes
the ReviewError the page shows, naming its field."""

from __future__ import annotations

from django import forms

from experts.services import ReviewError


class _Form(forms.Form):
    def cleaned_or_raise(self) -> dict:
        if not self.is_valid():
            field, errors = next(iter(self.errors.items()))
            raise ReviewError(str(errors[0]), None if field == "__all__" else field)
        return self.cleaned_data


def clamped(value: str | None, default: int, low: int, high: int) -> int:
    """A whole number from a query or form value, kept within [low, high]; anything unreadable is the default."""
    value = (value or "").strip()
    return min(max(int(value), low), high) if value.isascii() and value.isdigit() else default


class TokenForm(_Form):
    token = forms.CharField(max_length=32, required=False)


class ExpertSubmitForm(TokenForm):
    judgment = forms.CharField(required=False)
    analysis = forms.CharField(required=False, strip=False)
    first_harmful_step = forms.CharField(required=False)
    prefilled_from = forms.CharField(required=False)

    def clean_judgment(self) -> float:
        try:
            return float(self.cleaned_data["judgment"])  # which values count is the service's to say
        except ValueError:
            raise forms.ValidationError("pick 0, 0.5 or 1 (keys 0, 5, 1)") from None

    def clean_first_harmful_step(self) -> int | None:
        text = self.cleaned_data["first_harmful_step"].strip()
        if not text:
            return None
        if not (text.isascii() and text.isdigit()):
            raise forms.ValidationError(f"{text!r} is not a step number")
        return int(text)

    def clean_prefilled_from(self) -> str:
        return self.cleaned_data["prefilled_from"][:100]


class AdjudicationForm(_Form):
    item = forms.CharField()
    judgment = forms.CharField(required=False)
    analysis = forms.CharField(required=False, strip=False)
    note = forms.CharField(required=False)

    def clean_item(self) -> int:
        text = self.cleaned_data["item"]
        if not (text.isascii() and text.isdigit()):
            raise forms.ValidationError(f"{text!r} is not an item number")
        return int(text)

    def clean_judgment(self) -> float:
        try:
            return float(self.cleaned_data["judgment"])
        except ValueError:
            return -1.0  # the service names the values it takes


class ReliabilityDrawForm(forms.Form):
    """How many jury-labelled samples to send, and the seed of the draw: anything unreadable falls back to the
    defaults, large values are capped."""

    n = forms.CharField(required=False)
    seed = forms.CharField(required=False)

    def clean_n(self) -> int:
        return clamped(self.cleaned_data["n"], 150, 1, 10_000)

    def clean_seed(self) -> int:
        return clamped(self.cleaned_data["seed"], 0, 0, 2**31)

    def draw(self) -> tuple[int, int]:
        self.is_valid()  # never invalid: every field falls back to its default
        return self.cleaned_data["n"], self.cleaned_data["seed"]


class ReviewDecisionForm(_Form):
    verdict = forms.CharField(required=False)
    note = forms.CharField(required=False, strip=False)
