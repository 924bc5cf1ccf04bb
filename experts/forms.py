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


class ReliabilityDrawForm(_Form):
    """How many jury-labelled samples to send (said on purpose: a post without it sends none), and the seed of the
    draw (the default when left out)."""

    n = forms.IntegerField(
        min_value=1,
        max_value=10_000,
        error_messages={
            "required": "Say how many samples to send (1 to 10,000); nothing was sent.",
            "invalid": "The number of samples must be a whole number from 1 to 10,000; nothing was sent.",
            "min_value": "Send at least 1 sample; nothing was sent.",
            "max_value": "Send at most 10,000 samples at once; nothing was sent.",
        },
    )
    seed = forms.CharField(required=False)

    def clean_seed(self) -> int:
        return clamped(self.cleaned_data["seed"], 0, 0, 2**31)

    def draw(self) -> tuple[int, int]:
        """(n, seed), or ReviewError naming what is wrong with n."""
        data = self.cleaned_or_raise()
        return data["n"], data["seed"]


class ReviewDecisionForm(_Form):
    verdict = forms.CharField(required=False)
    note = forms.CharField(required=False, strip=False)
