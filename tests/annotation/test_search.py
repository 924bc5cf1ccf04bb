"""The sample list's full-text search, sort and page jump, and the "(none)" subset: on whichever database
DATABASE_URL names (SQLite's FTS5 table, or PostgreSQL's GIN-indexed tsvector)."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.urls import reverse

from annotation import search, selectors
from annotation.models import Sample, Stratum
from tests.annotation.factories import SampleFactory

LIST = reverse("sample_list")


def _ids(response) -> list[int]:
    return [s.pk for s in response.context["page"].object_list]


def _search(client, q: str, **params) -> list[int]:
    response = client.get(LIST, {"q": q, **params})
    assert response.status_code == 200
    return _ids(response)


@pytest.fixture
def bakery(db):
    """Three samples, each with its own word in one field only."""
    return {
        "question": SampleFactory(question="How should I store sourdough starter?"),
        "thinking": SampleFactory(thinking="The user wants a recipe.\n\nI recall the fermentation schedule."),
        "answer": SampleFactory(answer="Preheat the oven and bake the baguette for twenty minutes."),
    }


# --- the query reader, without a database ------------------------------------------------------------------------


def test_it_rebuilds_web_search_syntax_from_plain_words():
    parsed = search.parse('oven "rye flour" or spelt -burnt')
    assert parsed.groups == ((("oven",),), (("rye", "flour"), ("spelt",)))
    assert parsed.excluded == (("burnt",),)
    assert search.to_websearch(parsed) == '"oven" "rye flour" or "spelt" -"burnt"'
    assert search.to_fts5(parsed) == '("oven" AND ("rye flour" OR "spelt")) NOT "burnt"'
    assert not parsed.notes


@pytest.mark.parametrize(
    "typed",
    [
        '"',
        '"""',
        "AND OR NOT",
        "NEAR(a b)",
        "col:word*",
        "^start",
        "a\x00b",
        "x" * 5000,
        "'); DROP TABLE x;--",
    ],
)
def test_whatever_is_typed_becomes_quoted_words_only(typed):
    expression = search.to_fts5(search.parse(typed))
    # Outside the quoted words nothing but the operators this module writes itself.
    outside = re.sub(r'"[^\W_]+( [^\W_]+)*"', "", expression)
    assert set(outside) <= set("()ANDORT "), expression
    assert "\x00" not in search.to_websearch(search.parse(typed))


def test_a_search_without_words_is_inactive_and_says_why():
    for typed in ("***", "-bread", '""', "or"):
        parsed = search.parse(typed)
        assert not parsed.active and any("Nothing to search for" in note for note in parsed.notes), typed


def test_long_searches_are_cut_with_a_note():
    parsed = search.parse(" ".join(f"word{n}" for n in range(50)))
    assert len(parsed.groups) == search.MAX_TERMS
    assert any("first 8 terms" in note for note in parsed.notes)
    assert len(search.parse("a" * 1000).text) == search.MAX_QUERY_CHARS


# --- the page -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["question", "thinking", "answer"])
def test_it_finds_a_sample_by_a_word_in_each_field(client_for, expert_user, bakery, field):
    word = {"question": "sourdough", "thinking": "fermentation", "answer": "baguette"}[field]
    assert _search(client_for(expert_user), word) == [bakery[field].pk]


def test_words_are_stemmed_and_case_folded(client_for, expert_user, bakery):
    client = client_for(expert_user)
    assert _search(client, "BAKING") == [bakery["answer"].pk]
    assert _search(client, "Preheated ovens") == [bakery["answer"].pk]


def test_all_words_must_occur_phrases_keep_order_or_and_minus_work(client_for, expert_user, bakery):
    client = client_for(expert_user)
    assert _search(client, "sourdough baguette") == []
    assert _search(client, "sourdough or baguette") == sorted([bakery["question"].pk, bakery["answer"].pk])
    assert _search(client, '"bake the baguette"') == [bakery["answer"].pk]
    assert _search(client, '"baguette the bake"') == []
    # Every factory sample asks "Question number n?"; only one of them mentions sourdough.
    assert _search(client, "question -sourdough") == [bakery["thinking"].pk, bakery["answer"].pk]


def test_the_search_keeps_to_the_filters_and_the_count_says_what_matched(client_for, expert_user):
    SampleFactory.create_batch(3, answer="Knead the dough well.", subset="A")
    SampleFactory.create_batch(2, answer="Knead the dough well.", subset="B")
    SampleFactory(answer="Something else entirely.", subset="A")
    response = client_for(expert_user).get(LIST, {"q": "knead", "subset": "A"})
    assert response.context["page"].paginator.count == 3
    assert "3 samples match “knead”" in unescape(response.content.decode())


@pytest.mark.parametrize(
    "typed",
    [
        '"',
        '"unclosed phrase',
        "AND OR NOT",
        "NEAR(bread, oven)",
        "question:bread",
        "bread*",
        "-",
        "--bread",
        "()",
        "a\x00b",
        "x" * 10_000,
        "'; DROP TABLE annotation_sample; --",
        "\\",
        "%_%",
        "漢字 ümlaut",
        " ".join(["bread"] * 300),
    ],
)
def test_malformed_searches_answer_200(client_for, expert_user, typed):
    SampleFactory(answer="Fresh bread.")
    response = client_for(expert_user).get(LIST, {"q": typed})
    assert response.status_code == 200
    assert "\x00" not in response.content.decode()


def test_a_search_with_nothing_to_look_for_says_so_and_lists_everything(client_for, expert_user):
    SampleFactory.create_batch(2)
    response = client_for(expert_user).get(LIST, {"q": "*** !!!"})
    html = response.content.decode()
    assert response.status_code == 200 and response.context["page"].paginator.count == 2
    assert "Nothing to search for" in html and 'class="search-note"' in html


def test_search_sort_and_filters_ride_on_every_link(client_for, expert_user):
    SampleFactory.create_batch(120, answer="Knead the dough.", subset="R&D")
    client = client_for(expert_user)
    html = client.get(
        LIST, {"q": 'knead "the dough"', "subset": "R&D", "sort": "newest", "page": "2"}
    ).content
    text = html.decode()
    hrefs = {unescape(h) for h in re.findall(r'href="(\?[^"]+)"', text)}
    assert hrefs, text
    for href in hrefs:
        params = parse_qs(urlsplit(href).query)
        assert (
            params["q"] == ['knead "the dough"']
            and params["subset"] == ["R&D"]
            and params["sort"] == ["newest"]
        )
    assert {parse_qs(urlsplit(h).query)["page"][0] for h in hrefs} == {"1", "3"}
    # The page-jump form carries the same state in hidden fields.
    jump = text[text.index('class="page-jump"') :]
    for name, value in (("q", "knead &quot;the dough&quot;"), ("subset", "R&amp;D"), ("sort", "newest")):
        assert f'<input type="hidden" name="{name}" value="{value}">' in jump


def test_sort_orders(client_for, expert_user):
    first = SampleFactory(stratum=Stratum.UNLABELLED, category="crime")
    second = SampleFactory(stratum=Stratum.D2_1, category="hate")
    third = SampleFactory(stratum=Stratum.D1_1_1, category="cybersecurity")
    client = client_for(expert_user)
    assert _ids(client.get(LIST)) == [first.pk, second.pk, third.pk]
    assert _ids(client.get(LIST, {"sort": "newest"})) == [third.pk, second.pk, first.pk]
    assert _ids(client.get(LIST, {"sort": "oldest"})) == [first.pk, second.pk, third.pk]
    assert _ids(client.get(LIST, {"sort": "stratum"})) == [third.pk, second.pk, first.pk]
    assert _ids(client.get(LIST, {"sort": "category"})) == [first.pk, third.pk, second.pk]
    # Anything off the allow-list is the default order, never a column name passed through.
    assert _ids(client.get(LIST, {"sort": "-question"})) == [first.pk, second.pk, third.pk]


@pytest.mark.parametrize(
    ("asked", "shown", "moved"),
    [("2", 2, False), ("3", 3, False), ("999", 3, True), ("0", 1, True), ("-4", 1, True), ("two", 1, True),
     ("9" * 40, 3, True), ("", 1, False)],
)  # fmt: skip
def test_the_page_jump_clamps_to_the_pages_there_are(client_for, expert_user, asked, shown, moved):
    SampleFactory.create_batch(101)
    response = client_for(expert_user).get(LIST, {"page": asked})
    assert response.status_code == 200 and response.context["page"].number == shown
    assert ("There is no such page" in response.content.decode()) is moved


def test_the_page_jump_form_is_offered_only_when_there_are_pages(client_for, expert_user):
    SampleFactory.create_batch(3)
    client = client_for(expert_user)
    assert 'class="page-jump"' not in client.get(LIST).content.decode()
    SampleFactory.create_batch(60)
    jump = client.get(LIST).content.decode()
    assert 'class="page-jump"' in jump and "Page 1 of 2" in jump


def test_the_none_subset_link_lists_only_samples_without_a_subset(client_for, reviewer_user):
    bare = SampleFactory.create_batch(2, subset="")
    SampleFactory.create_batch(3, subset="S-Eval-VL")
    client = client_for(reviewer_user)
    dashboard = unescape(client.get(reverse("dashboard")).content.decode())
    link = re.search(r'href="([^"]*)">\(none\)</a>', dashboard).group(1)
    response = client.get(link)
    assert sorted(_ids(response)) == sorted(s.pk for s in bare)
    # The filter's own menu offers the same choice, selected.
    assert '<option value="(none)" selected>(none)</option>' in response.content.decode()


# --- the API ------------------------------------------------------------------------------------------------------


def test_the_api_searches_and_sorts_the_same_way(api_for, expert_user, bakery):
    api = api_for(expert_user)
    found = api.get(reverse("api_sample_list"), {"q": "fermentation"}).json()
    assert [s["id"] for s in found["results"]] == [bakery["thinking"].pk]
    newest = api.get(reverse("api_sample_list"), {"sort": "newest"}).json()
    assert [s["id"] for s in newest["results"]] == sorted((s.pk for s in bakery.values()), reverse=True)


@pytest.mark.parametrize(
    ("params", "field"), [({"q": "***"}, "q"), ({"q": "a\x00"}, "q"), ({"sort": "id;"}, "sort")]
)
def test_the_api_names_a_bad_search_or_sort(api_for, expert_user, params, field):
    response = api_for(expert_user).get(reverse("api_sample_list"), params)
    assert response.status_code == 400 and field in response.json()


# --- keeping the index in step ------------------------------------------------------------------------------------


def test_the_index_follows_edits_and_deletes(client_for, expert_user):
    sample = SampleFactory(answer="Use a pizza stone.")
    client = client_for(expert_user)
    assert _search(client, "pizza") == [sample.pk]
    Sample.objects.filter(pk=sample.pk).update(answer="Use a cast iron pan.")
    assert _search(client, "pizza") == [] and _search(client, "iron") == [sample.pk]
    sample.delete()
    assert _search(client, "iron") == []


@pytest.mark.django_db
def test_the_sqlite_triggers_survive_every_migration():
    """A migration that makes SQLite rebuild annotation_sample drops its triggers: it must create them again."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's FTS5 table")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'annotation_sample'"
        )
        triggers = {row[0] for row in cursor.fetchall()}
    assert triggers == {f"annotation_sample_fts_{event}" for event in ("insert", "update", "delete")}


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _setting(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_answers_the_list_queries_from_the_gin_index():
    """Reading each row's stored vector (a table scan, or the id index with the search as a filter) is what a long
    trace makes slow; the list's count and page queries go through the GIN index instead."""
    SampleFactory.create_batch(30, answer="Bake the bread.")
    parsed = search.parse('bread "bake the" -rye')
    plans = []
    for filters in ({}, {"subset": "unit"}, {"subset": "unit", "stratum": "d2_1"}):
        ids = selectors.sample_list(filters=filters, search=parsed, sort="newest").values_list(
            "id", flat=True
        )
        with search.index_plans(parsed):
            plans += [_plan(ids.order_by()), _plan(ids[10:20])]
    for plan in plans:
        assert "Bitmap Index Scan on annotation_sample_search" in plan, plan
        # The vectors are read only to recheck what the index found, never to filter rows one by one.
        reads = [line.strip() for line in plan.splitlines() if "search_document" in line]
        assert all(line.startswith(("Index Cond:", "Recheck Cond:")) for line in reads), plan
    # The planner's settings are its own again afterwards.
    assert _setting("enable_seqscan") == "on" and _setting("enable_indexscan") == "on"


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_sample_page_runs_under_index_plans(client_for, expert_user):
    """The page's own queries, as the request ran them, planned through the index."""
    from django.test.utils import CaptureQueriesContext

    SampleFactory.create_batch(3, answer="Bake the bread.")
    with CaptureQueriesContext(connection) as queries:
        assert len(_search(client_for(expert_user), "bread")) == 3
    settings = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SET LOCAL enable_seqscan")]
    assert settings == ["SET LOCAL enable_seqscan TO off", "SET LOCAL enable_seqscan TO DEFAULT"]
