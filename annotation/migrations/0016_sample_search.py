"""Full-text search over samples (annotation/search.py).

PostgreSQL: a stored generated tsvector column, search_document, with a GIN index. The model does not declare it
(SQLite could not build it); inserts and updates compute it. SQLite: an FTS5 table over question, thinking and
answer that reads its text from annotation_sample (external content: no second copy of the texts), filled here and
kept in step by triggers.

A later migration that makes SQLite rebuild annotation_sample (Django copies it to a new table and drops the old)
drops these triggers with it: it must create them again (tests/annotation/test_search.py checks they exist)."""

from django.db import migrations

# Each field is cut before it is indexed: PostgreSQL refuses a tsvector over 1 MB (the insert would fail), and
# 200,000 characters in all stay under it even when every token is a distinct short hyphenated word.
POSTGRESQL_CREATE = [
    """ALTER TABLE annotation_sample ADD COLUMN search_document tsvector GENERATED ALWAYS AS (
        to_tsvector('english'::regconfig,
            left(question, 20000) || ' ' || left(thinking, 150000) || ' ' || left(answer, 30000))
    ) STORED""",
    "CREATE INDEX annotation_sample_search ON annotation_sample USING gin (search_document)",
]
POSTGRESQL_DROP = [
    "DROP INDEX IF EXISTS annotation_sample_search",
    "ALTER TABLE annotation_sample DROP COLUMN IF EXISTS search_document",
]

SQLITE_CREATE = [
    """CREATE VIRTUAL TABLE annotation_sample_fts USING fts5(
        question, thinking, answer,
        content='annotation_sample', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER annotation_sample_fts_insert AFTER INSERT ON annotation_sample BEGIN
        INSERT INTO annotation_sample_fts(rowid, question, thinking, answer)
        VALUES (new.id, new.question, new.thinking, new.answer);
    END""",
    """CREATE TRIGGER annotation_sample_fts_delete AFTER DELETE ON annotation_sample BEGIN
        INSERT INTO annotation_sample_fts(annotation_sample_fts, rowid, question, thinking, answer)
        VALUES ('delete', old.id, old.question, old.thinking, old.answer);
    END""",
    """CREATE TRIGGER annotation_sample_fts_update AFTER UPDATE OF question, thinking, answer ON annotation_sample
    BEGIN
        INSERT INTO annotation_sample_fts(annotation_sample_fts, rowid, question, thinking, answer)
        VALUES ('delete', old.id, old.question, old.thinking, old.answer);
        INSERT INTO annotation_sample_fts(rowid, question, thinking, answer)
        VALUES (new.id, new.question, new.thinking, new.answer);
    END""",
    # Index the samples already stored.
    "INSERT INTO annotation_sample_fts(annotation_sample_fts) VALUES ('rebuild')",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS annotation_sample_fts_insert",
    "DROP TRIGGER IF EXISTS annotation_sample_fts_delete",
    "DROP TRIGGER IF EXISTS annotation_sample_fts_update",
    "DROP TABLE IF EXISTS annotation_sample_fts",
]


def _run(schema_editor, statements: dict[str, list[str]]) -> None:
    for statement in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def create(apps, schema_editor) -> None:
    _run(schema_editor, {"postgresql": POSTGRESQL_CREATE, "sqlite": SQLITE_CREATE})


def drop(apps, schema_editor) -> None:
    _run(schema_editor, {"postgresql": POSTGRESQL_DROP, "sqlite": SQLITE_DROP})


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0015_export_job"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
