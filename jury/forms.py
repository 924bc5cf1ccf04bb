"""The jury-run launch form: which samples (the stored subsets, a split, a stratum, only the unlabelled) and which
jurors. The admin previews the run's figures first; the launch carries the fingerprint of what was previewed, and a
jury of other than three must be confirmed (jury/admin.py, `JuryRunAdmin.add_view`)."""

from __future__ import annotations

import hashlib
import json

from django import forms
from django.db.models import Count

from annotation.models import Sample, Split, Stratum
from annotation.selectors import NO_SUBSET
from jury import services
from jury.models import Juror


def subset_choices() -> list[tuple[str, str]]:
    """Every subset the stored samples have, with its sample count ("" is the samples stored without one)."""
    counts = Sample.objects.values_list("subset").annotate(n=Count("id")).order_by("subset")
    return [(name, f"{name or NO_SUBSET} · {n} sample{'s' if n != 1 else ''}") for name, n in counts]


class JurorChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Juror) -> str:
        return f"{obj.name} · {obj.model_name} ({obj.get_backend_display()})"


class JuryRunForm(forms.Form):
    subsets = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, help_text="None ticked: every subset."
    )
    split = forms.ChoiceField(choices=[("", "any"), *Split.choices], required=False)
    stratum = forms.ChoiceField(choices=[("", "any"), *Stratum.choices], required=False)
    unlabelled = forms.BooleanField(required=False, help_text="Only samples no juror has labelled yet.")
    jurors = JurorChoiceField(
        queryset=Juror.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every enabled juror.",
    )
    # Both drawn by the template beside the preview, not as fields. The confirmation holds the number of jurors
    # confirmed, so a tick given for one jury never confirms another; the fingerprint is the previewed form's.
    confirm_jurors = forms.IntegerField(required=False, min_value=0)
    previewed = forms.CharField(required=False, max_length=64)

    SELECTION_FIELDS = ("subsets", "split", "stratum", "unlabelled", "jurors")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        subsets = self.fields["subsets"]
        jurors = self.fields["jurors"]
        assert isinstance(subsets, forms.MultipleChoiceField) and isinstance(jurors, JurorChoiceField)
        subsets.choices = subset_choices()
        jurors.queryset = services.sitting_jurors()

    def selection_fields(self):
        return [self[name] for name in self.SELECTION_FIELDS]

    def selection(self) -> dict:
        """The service's selection for the cleaned form."""
        data = self.cleaned_data
        selection: dict = {key: data[key] for key in ("split", "stratum") if data[key]}
        if data["subsets"]:
            selection["subsets"] = sorted(data["subsets"])
        if data["unlabelled"]:
            selection["unlabelled"] = True
        return selection

    def chosen_jurors(self) -> list[Juror] | None:
        """The ticked jurors, or None for every enabled juror."""
        return sorted(self.cleaned_data["jurors"], key=lambda juror: juror.name) or None

    def fingerprint(self, plan: services.RunPlan) -> str:
        """What a preview showed figures for: the selection and the jurors seated (those ticked, or every enabled
        juror at the time)."""
        text = json.dumps([self.selection(), [j.juror.pk for j in plan.jurors]], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def confirmed(self, plan: services.RunPlan) -> bool:
        return self.cleaned_data.get("confirm_jurors") == len(plan.jurors)
