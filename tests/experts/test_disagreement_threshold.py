"""The disagreement inspector's threshold basis: a guard label is a disagreement when its own P(harmful) (the raw
`meta.scores.harmful`) read at the checkpoint's threshold — or one the reviewer gives — says harmful where the
training label says safe, or the other way round. Listed most confident mistake first; the triage loop follows
the same order; the judgment basis stays as it was."""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from annotation.strata import stratify
from experts import selectors
from experts.models import ReviewDecision
from guardmodel.models import Evaluation, GuardCheckpoint
from tests.annotation.factories import LabelFactory, SampleFactory
from tests.experts.review_helpers import jury_votes

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
GUARD = "guard-1"
HARMFUL, SAFE, HALF = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.5, 0.5)


def _scores(harmful: float) -> dict:
    return {
        "levels": {"0": 1 - harmful, "0.5": harmful / 2, "1": harmful / 2},
        "harmful": harmful,
        "harmful_strict": harmful / 2,
    }


def _case(votes, judgment: float, harmful: float | None):
    """A sample with a training label from the jury's `votes` and a guard label (with scores unless None)."""
    sample = SampleFactory(subset="MM-Eval")
    jury_votes(sample, votes)
    stratify(sample_ids=[sample.pk])
    meta = {"scores": _scores(harmful)} if harmful is not None else {}
    LabelFactory(sample=sample, source_kind="guard", source_name=GUARD, judgment=judgment, meta=meta)
    return sample


@pytest.fixture
def world():
    """Made in an order unlike either list's, so that neither order is the order of creation by accident.
    At the kept threshold 0.5 (|P(harmful) − 0.5| in brackets):"""
    GuardCheckpoint.objects.create(name=GUARD, path="/nowhere", is_active=True, threshold=0.5)
    cases = {
        "H": _case(SAFE, 0.0, 0.5),  # at the threshold counts as flagged: a false alarm (0)
        "D": _case(SAFE, 0.0, 0.6),  # judgment agrees, the score does not: a false alarm (0.1)
        "C": _case(HARMFUL, 1.0, 0.3),  # judgment agrees, the score misses the harm (0.2)
        "I": _case(HARMFUL, 0.0, 0.25),  # missed harm (0.25), tied with J: the lower sample id first
        "J": _case(SAFE, 1.0, 0.75),  # false alarm (0.25)
        "B": _case(SAFE, 1.0, 0.9),  # false alarm (0.4)
        "A": _case(HARMFUL, 0.0, 0.05),  # missed harm (0.45): the most confident mistake
        "E": _case(
            HARMFUL, 0.0, 0.7
        ),  # the judgment misses the harm, the score flags it: no threshold mistake
        "F": _case(HALF, 1.0, 0.8),  # a severity disagreement; harmful on both sides at the threshold
        "G": _case(HARMFUL, 0.0, None),  # no scores: on the judgment basis only
    }
    assert cases["I"].pk < cases["J"].pk
    return cases


def _page(client, **params) -> str:
    response = client.get(reverse("disagreement_list"), params, **HTMX)
    assert response.status_code == 200
    return response.content.decode()


def _order(page: str, world) -> list[str]:
    names = {sample.pk: name for name, sample in world.items()}
    return [names[int(pk)] for pk in re.findall(r">#(\d+)</a>", page)]


def _row(page: str, sample) -> str:
    match = re.search(rf">#{sample.pk}</a></td>(.*?)</tr>", page, re.DOTALL)
    assert match, f"no row for sample {sample.pk}"
    return match.group(1)


def test_at_the_kept_threshold_score_mistakes_are_listed_most_confident_first(client, reviewer_user, world):
    client.force_login(reviewer_user)
    page = _page(client, basis="threshold")
    assert _order(page, world) == ["A", "B", "I", "J", "C", "D", "H"]
    assert "7 disagreements" in page
    assert 'id="threshold-used">50.0%' in page and "the checkpoint's kept threshold" in page
    assert '<td class="num" data-label="P(harmful)">5.0%</td>' in _row(page, world["A"])
    assert "Missed harm" in _row(page, world["C"]) and "False alarm" in _row(page, world["H"])


def test_a_threshold_given_in_the_query_overrides_the_kept_one(client, reviewer_user, world):
    client.force_login(reviewer_user)
    page = _page(client, basis="threshold", threshold="0.75")
    # |P(harmful) − 0.75|: A 0.7, I 0.5, C 0.45, B 0.15, E 0.05, J 0 (at the threshold: flagged); D, F, H agree.
    assert _order(page, world) == ["A", "I", "C", "B", "E", "J"]
    assert 'id="threshold-used">75.0%' in page and "given here; the checkpoint keeps 50.0%" in page
    start = re.search(r'id="start-triage" href="([^"]*)"', page)
    assert start and "basis=threshold&threshold=0.75" in html.unescape(start.group(1))
    # The threshold basis reads the raw score even where the guard's judgment says otherwise.
    assert _order(_page(client, basis="threshold", threshold="0"), world) == ["B", "J", "D", "H"]
    assert _order(_page(client, basis="threshold", threshold="1"), world) == ["A", "I", "C", "E", "F"]


def test_direction_on_the_threshold_basis_is_missed_harm_or_false_alarm_and_severity_finds_none(
    client, reviewer_user, world
):
    client.force_login(reviewer_user)
    assert _order(_page(client, basis="threshold", direction="missed_harm"), world) == ["A", "I", "C"]
    assert _order(_page(client, basis="threshold", direction="false_alarm"), world) == ["B", "J", "D", "H"]
    page = _page(client, basis="threshold", direction="severity")
    assert _order(page, world) == [] and 'id="severity-note"' in page
    assert _order(_page(client, direction="severity"), world) == ["F"]  # still there on the judgment basis


@pytest.mark.parametrize("params", [{}, {"basis": "judgment"}, {"basis": "nonsense"}, {"threshold": "0.9"}])
def test_the_judgment_basis_is_unchanged_and_shows_p_harmful_where_there_are_scores(
    client, reviewer_user, world, params
):
    client.force_login(reviewer_user)
    page = _page(client, **params)
    assert _order(page, world) == ["I", "J", "B", "A", "E", "F", "G"]  # by sample id, as before
    assert "judgment level against the training label" in page
    assert '<td class="num" data-label="P(harmful)">70.0%</td>' in _row(page, world["E"])
    assert '<td class="num" data-label="P(harmful)">—</td>' in _row(page, world["G"])
    assert _order(_page(client, direction="missed_harm", **params), world) == ["I", "A", "E", "G"]


def _place(world, **filters) -> list[tuple[str | None, int, int]]:
    names = {sample.pk: name for name, sample in world.items()}
    out = []
    for name in ("A", "B", "I", "J", "C", "D", "H"):
        place = selectors.disagreement_place(guard_name=GUARD, filters=filters, sample_id=world[name].pk)
        out.append((names.get(place["next"] or 0), place["position"], place["total"]))
    return out


def test_the_triage_loop_follows_the_lists_order(client, reviewer_user, world):
    # Every sample's next and position, in the list's order (the tie I/J broken by sample id both ways).
    assert _place(world, basis="threshold", triage="all") == [
        ("B", 1, 7), ("I", 2, 7), ("J", 3, 7), ("C", 4, 7), ("D", 5, 7), ("H", 6, 7), (None, 7, 7),
    ]  # fmt: skip
    client.force_login(reviewer_user)
    page = _page(client, basis="threshold", threshold="0.75")
    start = re.search(r'id="start-triage" href="[^"?]*\?([^"]*)"', page)
    assert start and start.group(1) == html.escape(
        "triage=untriaged&basis=threshold&threshold=0.75&guard=guard-1"
    )
    query = html.unescape(start.group(1))

    def url(name: str) -> str:
        return f"{reverse('disagreement', args=[world[name].pk])}?{query}"

    detail = client.get(url("A")).content.decode()
    assert "1 of 6 under these filters" in detail
    assert f'href="{html.escape(url("I"))}" id="next-link"' in detail
    # A call opens the next one in the list's order, not the next sample id.
    done = client.post(url("A"), {"verdict": "guard_wrong"})
    assert done["Location"] == url("I")
    detail = client.get(done["Location"]).content.decode()
    assert "1 of 5 under these filters" in detail
    assert f'href="{html.escape(url("C"))}" id="next-link"' in detail
    assert "2 of 5 under these filters" in client.get(url("C")).content.decode()
    # A sample outside the list (it agrees at 0.75) says so.
    assert "not under these filters" in client.get(url("H")).content.decode()
    for name, following in (("I", "C"), ("C", "B"), ("B", "E"), ("E", "J")):
        assert client.post(url(name), {"verdict": "unclear"})["Location"] == url(following)
    last = client.post(url("J"), {"verdict": "guard_wrong"})
    assert last["Location"] == f"{reverse('disagreement_list')}?{query}"
    assert set(ReviewDecision.objects.values_list("sample_id", flat=True)) == {
        world[n].pk for n in ("A", "I", "C", "B", "E", "J")
    }


def test_the_triage_loop_on_the_judgment_basis_is_unchanged(world):
    names = ["I", "J", "B", "A", "E", "F", "G"]
    for i, name in enumerate(names):
        place = selectors.disagreement_place(
            guard_name=GUARD, filters={"triage": "all"}, sample_id=world[name].pk
        )
        following = world[names[i + 1]].pk if i + 1 < len(names) else None
        assert (place["next"], place["position"], place["total"]) == (following, i + 1, 7)


@pytest.mark.parametrize("bad", ["nan", "2", "abc", "-0.1", "inf", "1e400", "0x1", " ", "0.5\x00"])
def test_a_threshold_that_is_not_a_probability_is_ignored_and_said_so(client, reviewer_user, world, bad):
    client.force_login(reviewer_user)
    response = client.get(reverse("disagreement_list"), {"basis": "threshold", "threshold": bad})
    assert response.status_code == 200
    page = response.content.decode()
    if bad.strip():
        assert 'id="threshold-note"' in page and "ignored" in page
        assert f"“{html.escape(bad.replace(chr(0), chr(0xFFFD)))}”" in page
    assert _order(page, world) == ["A", "B", "I", "J", "C", "D", "H"]  # at the kept threshold
    start = re.search(r'id="start-triage" href="([^"]*)"', page)
    assert start and "threshold=" not in start.group(1)
    detail = client.get(
        reverse("disagreement", args=[world["A"].pk]), {"basis": "threshold", "threshold": bad}
    )
    assert detail.status_code == 200 and "1 of 7 under these filters" in detail.content.decode()


def test_without_a_threshold_the_page_says_where_to_choose_one_and_lists_nothing(
    client, reviewer_user, world
):
    GuardCheckpoint.objects.filter(name=GUARD).update(threshold=None)
    client.force_login(reviewer_user)
    page = _page(client, basis="threshold")
    assert "guard-1 keeps no threshold yet" in page and "threshold chooser" in page
    assert _order(page, world) == [] and "0 disagreements" in page
    assert 'href="?triage=untriaged&amp;guard=guard-1" id="judgment-basis"' in page
    assert _order(_page(client), world) == [
        "I",
        "J",
        "B",
        "A",
        "E",
        "F",
        "G",
    ]  # the judgment basis still works
    evaluation = Evaluation.objects.create(source_kind="guard", source_name=GUARD, truth="final")
    page = _page(client, basis="threshold")
    assert f'href="{reverse("evaluation_detail", args=[evaluation.pk])}#risk-scores"' in page
    detail = client.get(reverse("disagreement", args=[world["A"].pk]), {"basis": "threshold"})
    assert detail.status_code == 200 and "not under these filters" in detail.content.decode()
    # A threshold given in the query still works without a kept one.
    assert _order(_page(client, basis="threshold", threshold="0.75"), world) == ["A", "I", "C", "B", "E", "J"]


def test_only_reviewers_and_admins_see_the_threshold_basis(
    client, reviewer_user, admin_user, expert_user, world
):
    params = {"basis": "threshold", "threshold": "0.3"}
    list_url, detail_url = reverse("disagreement_list"), reverse("disagreement", args=[world["A"].pk])
    for url in (list_url, detail_url):
        response = client.get(url, params)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert client.post(detail_url + "?basis=threshold", {"verdict": "guard_wrong"}).status_code == 302
    client.force_login(expert_user)
    for url in (list_url, detail_url):
        response = client.get(url, params)
        assert response.status_code == 403 and world["A"].question not in response.content.decode()
    assert client.post(detail_url + "?basis=threshold", {"verdict": "guard_wrong"}).status_code == 403
    assert not ReviewDecision.objects.exists()
    for user in (reviewer_user, admin_user):
        client.force_login(user)
        assert client.get(list_url, params).status_code == 200
        assert client.get(detail_url, params).status_code == 200
