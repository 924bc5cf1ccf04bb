"""The admin's jury-run form: subsets offered from the stored samples, a preview with exact figures before any
launch, and a jury of other than three launched only once the admin confirms that number."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jury import services
from jury.models import Juror, JuryRun, JuryTask
from tests.annotation.factories import LabelFactory, SampleFactory

FORM = "admin:jury_juryrun_add"


@pytest.fixture
def admin_client(client_for, admin_user):
    admin_user.is_superuser = True  # the Django admin's model permissions
    admin_user.save()
    return client_for(admin_user)


def _post(client, data: dict, *, launch: bool = False):
    button = {"_launch": "Launch"} if launch else {"_preview": "Preview"}
    return client.post(reverse(FORM), {**data, **button})


def _preview_then_launch(client, data: dict, **extra):
    preview = _post(client, data)
    assert preview.status_code == 200 and preview.context["plan"] is not None
    return preview, _post(client, {**data, "previewed": preview.context["fingerprint"], **extra}, launch=True)


def test_it_offers_the_stored_subsets_with_their_counts(admin_client, jury_server, make_jurors):
    make_jurors(jury_server.url)
    for subset, n in (("S-Eval-VL", 3), ("HADES-Eval", 1), ("", 2)):
        SampleFactory.create_batch(n, subset=subset)
    page = admin_client.get(reverse(FORM))
    choices = page.context["form"].fields["subsets"].choices
    assert choices == [("", "(none) · 2 samples"), ("HADES-Eval", "HADES-Eval · 1 sample"),
                       ("S-Eval-VL", "S-Eval-VL · 3 samples")]  # fmt: skip
    html = page.content.decode()
    assert 'type="checkbox" name="subsets" value="S-Eval-VL"' in html and 'name="subset"' not in html
    assert "Launch" not in html  # nothing launches before a preview

    # Several subsets at once, and the samples stored without one.
    preview = _post(admin_client, {"subsets": ["HADES-Eval", ""]})
    assert preview.context["plan"].samples == 3
    # A subset no sample has is not a choice.
    refused = _post(admin_client, {"subsets": ["nowhere"]})
    assert refused.context["plan"] is None
    assert "Select a valid choice. nowhere is not one of the available choices." in refused.content.decode()


def test_the_preview_counts_exactly_what_the_launch_makes(admin_client, jury_server, make_jurors):
    a, b, c = make_jurors(jury_server.url)
    chosen = SampleFactory.create_batch(5, subset="S-Eval-VL", split="train")
    SampleFactory.create_batch(2, subset="S-Eval-VL", split="test")
    SampleFactory.create_batch(4, subset="MM-Eval", split="train")
    # a: two valid labels (skipped); b: a failed one (asked again); c: one sample waiting in another running run;
    # d, not on this jury, labelled one of them (strata count it).
    for sample in chosen[:2]:
        LabelFactory(sample=sample, source_name="a")
    LabelFactory(sample=chosen[0], source_name="b", status="failed", judgment=None)
    services.jury_run_create(selection={"sample_ids": [chosen[4].pk]}, jurors=[c], enqueue=False)
    LabelFactory(sample=chosen[3], source_name="d")

    data = {"subsets": ["S-Eval-VL"], "split": "train"}
    preview, launched = _preview_then_launch(admin_client, data)
    plan = preview.context["plan"]
    assert (plan.samples, plan.pairs, plan.labelled, plan.waiting, plan.tasks) == (5, 15, 2, 1, 12)
    assert [(j.juror.name, j.tasks, j.labelled, j.waiting) for j in plan.jurors] == [
        ("a", 3, 2, 0), ("b", 5, 0, 0), ("c", 4, 0, 1),
    ]  # fmt: skip
    assert plan.others == {"d": 1}
    html = preview.content.decode()
    assert "<strong>12</strong> = 5 samples × 3 jurors (15 pairs) − 3 skipped" in html
    assert "Launch: 12 tasks" in html and "Not three jurors" not in html
    assert "d: 1" in html  # the other juror's labels on these samples

    assert launched.status_code == 302
    run = JuryRun.objects.latest("pk")
    assert launched["Location"] == reverse("jury_run", args=[run.pk])
    assert (run.samples, run.total, run.skipped) == (plan.samples, plan.tasks, plan.skipped)
    assert run.selection == {"split": "train", "subsets": ["S-Eval-VL"]}
    assert JuryTask.objects.filter(run=run).count() == 12


def test_a_launch_runs_only_what_was_previewed(admin_client, jury_server, make_jurors):
    make_jurors(jury_server.url)
    SampleFactory.create_batch(2, subset="S-Eval-VL")
    SampleFactory.create_batch(3, subset="MM-Eval")
    # No preview yet: the launch shows one instead.
    blind = _post(admin_client, {"subsets": ["MM-Eval"]}, launch=True)
    assert blind.status_code == 200 and blind.context["plan"].samples == 3 and not JuryRun.objects.exists()
    # The selection changed after its preview: the new figures are shown, nothing starts.
    preview = _post(admin_client, {"subsets": ["MM-Eval"]})
    changed = _post(admin_client, {"subsets": ["S-Eval-VL"], "previewed": preview.context["fingerprint"]},
                    launch=True)  # fmt: skip
    assert changed.context["plan"].samples == 2 and not JuryRun.objects.exists()
    assert "changed since the preview" in changed.content.decode()


@pytest.mark.parametrize("names", [("a", "b"), ("a", "b", "c", "d")])
def test_a_jury_of_other_than_three_warns_and_launches_only_when_confirmed(
    admin_client, jury_server, make_jurors, names
):
    jurors = make_jurors(jury_server.url, names=names)
    SampleFactory.create_batch(3, subset="S-Eval-VL")
    data = {"subsets": ["S-Eval-VL"], "jurors": [j.pk for j in jurors]}
    preview = _post(admin_client, data)
    html = preview.content.decode()
    n = len(names)
    assert preview.context["plan"].tasks == 3 * n
    assert 'id="jury-size-warning"' in html and "Not three jurors" in html
    assert f"this run seats {n}" in html and f'name="confirm_jurors" value="{n}"' in html
    if n == 2:
        assert "stays incomplete" in html and "no DPO pair" in html
    else:
        assert "no DPO pair — a pair needs exactly three labels split 2:1" in html and "2:2" in html

    fingerprint = preview.context["fingerprint"]
    unconfirmed = _post(admin_client, {**data, "previewed": fingerprint}, launch=True)
    assert unconfirmed.status_code == 200 and not JuryRun.objects.exists()
    assert f"Tick the box to launch with {n} jurors" in unconfirmed.content.decode()
    # A tick given for another number of jurors confirms nothing.
    other = _post(admin_client, {**data, "previewed": fingerprint, "confirm_jurors": "3"}, launch=True)
    assert other.status_code == 200 and not JuryRun.objects.exists()

    confirmed = _post(admin_client, {**data, "previewed": fingerprint, "confirm_jurors": str(n)}, launch=True)
    assert confirmed.status_code == 302
    run = JuryRun.objects.get()
    assert sorted(run.jurors.values_list("name", flat=True)) == list(names) and run.total == 3 * n


def test_every_enabled_juror_is_the_default_jury_and_is_counted(admin_client, jury_server, make_jurors):
    make_jurors(jury_server.url, names=("a", "b", "c", "d"))
    Juror.objects.filter(name="d").update(enabled=False)
    SampleFactory.create_batch(2)
    preview = _post(admin_client, {})
    assert [j.juror.name for j in preview.context["plan"].jurors] == ["a", "b", "c"]
    assert preview.context["warning"] == ""
    # A juror enabled between the preview and the launch changes the jury: shown again, not launched.
    Juror.objects.filter(name="d").update(enabled=True)
    again = _post(admin_client, {"previewed": preview.context["fingerprint"]}, launch=True)
    assert again.status_code == 200 and not JuryRun.objects.exists() and again.context["warning"]


def test_nothing_to_ask_offers_no_launch(admin_client, jury_server, make_jurors):
    jurors = make_jurors(jury_server.url)
    sample = SampleFactory()
    for juror in jurors:
        LabelFactory(sample=sample, source_name=juror.name)
    preview = _post(admin_client, {})
    html = preview.content.decode()
    assert preview.context["plan"].tasks == 0 and "Nothing to ask" in html and 'name="_launch"' not in html


def test_the_jury_size_warning_follows_the_strata_rules():
    assert services.jury_size_warning(3, "qta-v1") == ""
    assert "1 jury label from it and stays incomplete" in services.jury_size_warning(1, "qta-v1")
    five = services.jury_size_warning(5, "qta-v1")
    assert "(4:1, say): D2:1" in five and "(2:2:1, say): D1:1:1" in five
