from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from annotation.models import Stratum
from tests.annotation.factories import ImageAssetFactory, LabelFactory, SampleFactory

pytestmark = pytest.mark.django_db

PAYLOAD = '<script>alert("pwned")</script>'


def test_the_dashboard_counts_by_stratum_subset_and_category(client_for, reviewer_user):
    SampleFactory.create_batch(3, subset="S-Eval-VL", category="crime", stratum=Stratum.D2_1)
    SampleFactory.create_batch(2, subset="HADES-Eval", category="hate")
    response = client_for(reviewer_user).get(reverse("dashboard"))
    counts = response.context["counts"]
    assert counts["total"] == 5
    assert ("d2_1", "D2:1", 3) in counts["by_stratum"] and ("unlabelled", "Unlabelled", 2) in counts[
        "by_stratum"
    ]
    assert dict(counts["by_subset"]) == {"HADES-Eval": 2, "S-Eval-VL": 3}
    assert ("crime", "Crime and illegal activity", 3) in counts["by_category"]


def test_the_sample_list_filters_and_paginates(client_for, expert_user):
    SampleFactory.create_batch(60, subset="A", split="train")
    SampleFactory.create_batch(5, subset="B", split="test")
    client = client_for(expert_user)
    page = client.get(reverse("sample_list")).context["page"]
    assert page.paginator.count == 65 and len(page.object_list) == 50
    page2 = client.get(reverse("sample_list") + "?subset=A&page=2").context["page"]
    assert page2.paginator.count == 60 and len(page2.object_list) == 10
    filtered = client.get(reverse("sample_list") + "?split=test&stratum=unlabelled&category=bogus").context[
        "page"
    ]
    assert {s.subset for s in filtered.object_list} == {"B"}


def test_htmx_requests_get_only_the_results_fragment(client_for, expert_user):
    SampleFactory(subset="A")
    client = client_for(expert_user)
    full = client.get(reverse("sample_list")).content.decode()
    fragment = client.get(reverse("sample_list"), HTTP_HX_REQUEST="true").content.decode()
    assert "<html" in full and 'id="results"' in full
    assert "<html" not in fragment and fragment.strip().startswith('<div id="results">')


def test_the_sample_page_shows_steps_and_labels_escaped(client_for, reviewer_user):
    sample = SampleFactory(
        question=PAYLOAD, thinking=f"Step one.\n\nStep two {PAYLOAD}.\n\nStep three.", answer=PAYLOAD
    )
    LabelFactory(sample=sample, analysis=PAYLOAD, judgment=0.5, source_name="gemma")
    response = client_for(reviewer_user).get(reverse("sample_detail", args=[sample.pk]))
    html = response.content.decode()
    assert len(response.context["steps"]) == 3
    assert PAYLOAD not in html
    assert html.count("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;") == 4
    assert "gemma" in html


def test_the_image_stays_hidden_until_revealed(client_for, expert_user):
    sample = SampleFactory(image=ImageAssetFactory())
    client = client_for(expert_user)
    image_url = reverse("image", args=[sample.image.sha256])
    hidden = client.get(reverse("sample_detail", args=[sample.pk])).content.decode()
    assert image_url not in hidden and "Reveal image" in hidden
    fragment = client.get(reverse("sample_image", args=[sample.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert f"{image_url}?sample={sample.pk}" in fragment and "<html" not in fragment
    fallback = client.get(reverse("sample_image", args=[sample.pk]))
    assert fallback.status_code == 302 and fallback["Location"].endswith("?reveal=1")
    assert image_url in client.get(fallback["Location"]).content.decode()


def test_login_with_the_form_reaches_the_dashboard(client, reviewer_user):
    response = client.post(reverse("login"), {"username": "rob", "password": "pw-rob"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("dashboard")
    assert b"Dashboard" in response.content


def test_static_htmx_is_served_locally(client):
    response = client.get("/static/vendor/htmx/htmx.min.js")
    assert response.status_code == 200
    assert b"htmx" in b"".join(response.streaming_content)


def test_pagination_links_keep_filters_with_spaces_and_ampersands(client_for, expert_user):
    SampleFactory.create_batch(55, subset="R&D set")
    SampleFactory(subset="R")
    client = client_for(expert_user)
    html = client.get(reverse("sample_list"), {"subset": "R&D set"}).content.decode()
    assert "?subset=R%26D+set&page=2" in html
    page2 = client.get(reverse("sample_list") + "?subset=R%26D+set&page=2").context["page"]
    assert page2.paginator.count == 55 and len(page2.object_list) == 5


def test_a_nul_character_in_a_list_filter_is_dropped_like_any_unknown_value(client_for, expert_user):
    """PostgreSQL refuses a NUL in a query's text: the page answered 500."""
    SampleFactory(subset="unit")
    response = client_for(expert_user).get(reverse("sample_list"), {"subset": "unit\x00"})
    assert response.status_code == 200


def test_every_page_names_an_icon_that_exists_so_browsers_stop_asking_for_favicon_ico(client):
    from django.contrib.staticfiles import finders
    from django.templatetags.static import static
    from django.test import RequestFactory

    from common.errors import server_error

    href = static("img/favicon.svg")
    pages = {  # the app's layout, the Django admin's, and the page a crash answers with
        "app": client.get(reverse("login")).content.decode(),
        "admin": client.get(reverse("admin:login")).content.decode(),
        "500": server_error(RequestFactory().get("/somewhere/")).content.decode(),
    }
    for name, page in pages.items():
        assert f'<link rel="icon" href="{href}" type="image/svg+xml">' in page, name
    icon = finders.find("img/favicon.svg")
    assert icon and Path(icon).read_text().startswith("<svg")
