"""Full-text search over a sample's question, reasoning trace and answer.

What people type is read as web-search syntax (words, "quoted phrases", `or` between two terms, `-word` to exclude)
and rebuilt from plain words only, so nothing a user types reaches the database's query parser as syntax: quotes,
operators, punctuation and control characters can only narrow or widen a search, never break it.

- PostgreSQL: `websearch_to_tsquery` against a stored generated tsvector column with a GIN index (migration
  0016_sample_search). A stored column rather than an index on the to_tsvector expression: the planner costs
  to_tsvector as cheap whatever the text's length, so for a common word it reads the table instead of the index, and
  an expression index then parses and stems every trace again on every search (`bench/pages.py --quick`, 10,000
  short samples: search p95 885 ms with an expression index, 47 ms with the stored column). The stored vector costs
  space, and both cost the same at write time (the text is parsed once either way). Each field is cut to a bounded
  prefix before it is indexed, since PostgreSQL refuses a tsvector over 1 MB.
- Stop words: PostgreSQL's English configuration drops them ("the", "how"), FTS5 keeps them, so a search of stop
  words alone finds nothing on PostgreSQL.
- SQLite, the embedded default: an FTS5 table over the same fields, kept in step with the samples by triggers.
- Any other database: case-insensitive containment of each word, unindexed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.contrib.postgres.search import SearchQuery, SearchVectorField
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

# PostgreSQL's text-search configuration, the one the stored column was built with: English stemming, so "baking"
# finds "bake", as FTS5's porter tokenizer does on SQLite.
CONFIG = "english"
# Neither is a model field: the migration made them, for one database each.
DOCUMENT_COLUMN = "search_document"
FTS_TABLE = "annotation_sample_fts"

MAX_QUERY_CHARS = 256
MAX_TERMS = 8
MAX_PHRASE_WORDS = 8
MAX_WORD_CHARS = 100

# A word is a run of letters and digits; everything else (underscore included) separates words, as both databases'
# tokenizers do.
_WORD = re.compile(r"[^\W_]+")
# One term: an optionally negated "quoted phrase" (the closing quote may be missing) or a run of non-space text.
_TERM = re.compile(r'(-?)"([^"]*)"?|(-?)(\S+)')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ParsedSearch:
    """A search as AND of OR-groups of phrases (a phrase is one or more words in order), minus excluded phrases;
    `notes` say what was left out of what was typed."""

    text: str = ""
    groups: tuple[tuple[tuple[str, ...], ...], ...] = ()
    excluded: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def active(self) -> bool:
        """Whether there is anything to look for (exclusions alone search for nothing)."""
        return bool(self.groups)


def parse(text: str | None) -> ParsedSearch:
    """Read a search box's text; never fails."""
    raw = unicodedata.normalize("NFKC", text or "")
    raw = _CONTROL.sub(" ", raw).strip()
    if not raw:
        return ParsedSearch()
    notes: list[str] = []
    if len(raw) > MAX_QUERY_CHARS:
        raw = raw[:MAX_QUERY_CHARS]
        notes.append(f"The search was cut to its first {MAX_QUERY_CHARS} characters.")
    groups: list[list[tuple[str, ...]]] = []
    excluded: list[tuple[str, ...]] = []
    join_next = False
    dropped = False
    for match in _TERM.finditer(raw):
        quoted = match.group(2) is not None
        negated = bool(match.group(1) if quoted else match.group(3))
        body = match.group(2) if quoted else match.group(4)
        if not quoted and not negated and body.lower() == "or":
            join_next = bool(groups)
            continue
        words = [w for w in _WORD.findall(body) if len(w) <= MAX_WORD_CHARS]
        dropped |= len(words) != len(_WORD.findall(body)) or not words
        if not words:
            continue
        phrase = tuple(words[:MAX_PHRASE_WORDS])
        dropped |= len(words) > MAX_PHRASE_WORDS
        if len(groups) + len(excluded) >= MAX_TERMS:
            notes.append(f"Only the first {MAX_TERMS} terms are searched.")
            break
        if negated:
            excluded.append(phrase)
        elif join_next:
            groups[-1].append(phrase)
        else:
            groups.append([phrase])
        join_next = False
    if dropped:
        notes.append("Only letters and digits are searched; the rest of the search was left out.")
    if not groups:
        notes.append("Nothing to search for: type a word (a search of only -excluded words finds nothing).")
    return ParsedSearch(
        text=raw,
        groups=tuple(tuple(g) for g in groups),
        excluded=tuple(excluded),
        notes=tuple(dict.fromkeys(notes)),
    )


def _quoted(phrase: tuple[str, ...]) -> str:
    # Words hold only letters and digits, so a double-quoted string needs no escaping in either syntax.
    return '"' + " ".join(phrase) + '"'


def to_websearch(parsed: ParsedSearch) -> str:
    """The search in PostgreSQL's websearch_to_tsquery syntax."""
    parts = [" or ".join(_quoted(p) for p in group) for group in parsed.groups]
    parts += ["-" + _quoted(p) for p in parsed.excluded]
    return " ".join(parts)


def to_fts5(parsed: ParsedSearch) -> str:
    """The search as an FTS5 query expression. FTS5's NOT is binary, so exclusions follow the positive part."""
    groups = [
        _quoted(group[0]) if len(group) == 1 else "(" + " OR ".join(_quoted(p) for p in group) + ")"
        for group in parsed.groups
    ]
    expression = " AND ".join(groups)
    for phrase in parsed.excluded:
        expression = f"({expression}) NOT {_quoted(phrase)}"
    return expression


def search_samples(queryset: QuerySet, parsed: ParsedSearch) -> QuerySet:
    """`queryset` (of samples) narrowed to those matching `parsed`; unchanged when there is nothing to look for."""
    if not parsed.active:
        return queryset
    vendor = connections[queryset.db].vendor
    if vendor == "postgresql":
        query = SearchQuery(to_websearch(parsed), search_type="websearch", config=CONFIG)
        # Unqualified, so it names the samples' column however the query aliases their table.
        document = RawSQL(DOCUMENT_COLUMN, [], output_field=SearchVectorField())
        matching = queryset.model._default_manager.alias(search_document=document).filter(
            search_document=query
        )
        if not queryset.query.where:
            return matching
        # Other conditions: the search gets a subquery of its own, whose only condition index_plans then leaves to
        # the GIN index; the filters apply to the outer rows, whose vectors are never read. (In one query the
        # planner would rather look the filters up and test each of those rows' vectors.)
        return queryset.filter(id__in=matching.values("id"))
    if vendor == "sqlite":
        matching = RawSQL(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s", [to_fts5(parsed)])
        return queryset.filter(id__in=matching)
    return queryset.filter(_contains(parsed))


# Plans PostgreSQL may not choose while a search runs: each could read the stored vector of every row it passes (a
# nested loop by looking the matches up one outer row at a time).
_ROW_BY_ROW_PLANS = ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan", "enable_nestloop")


@contextmanager
def index_plans(parsed: ParsedSearch, *, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """PostgreSQL: plan the block's queries with bitmap scans, the search from its GIN index. The planner costs `@@`
    on a stored tsvector as cheap, but a real trace's vector is tens of kilobytes kept out of line (TOAST), and for
    a common word it would read every row's vector (a table scan, or the id index with the search as a filter):
    460 ms for 5,000 samples of 20,000-character traces, against 2 ms from the index (bench/search_plans.py)."""
    if not parsed.active or connections[using].vendor != "postgresql":
        yield
        return
    with transaction.atomic(using=using):
        _set_plans(using, "off")
        yield
        # SET LOCAL lasts to the end of the outermost transaction, which may be a caller's.
        _set_plans(using, "DEFAULT")


def _set_plans(using: str, value: str) -> None:
    with connections[using].cursor() as cursor:
        for setting in _ROW_BY_ROW_PLANS:
            cursor.execute(f"SET LOCAL {setting} TO {value}")


def _contains(parsed: ParsedSearch) -> Q:
    def phrase_q(phrase: tuple[str, ...]) -> Q:
        text = " ".join(phrase)
        return Q(question__icontains=text) | Q(thinking__icontains=text) | Q(answer__icontains=text)

    condition = Q()
    for group in parsed.groups:
        alternatives = Q()
        for phrase in group:
            alternatives |= phrase_q(phrase)
        condition &= alternatives
    for phrase in parsed.excluded:
        condition &= ~phrase_q(phrase)
    return condition
