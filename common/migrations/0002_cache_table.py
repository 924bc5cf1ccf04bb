"""The table of the embedded setup's shared cache (settings.CACHES when GUARDTRACE_CACHE_URL is unset).

A migration, not `createcachetable` in a script: every database `migrate` builds has it, the test databases
included. Made whatever the cache setting says now, so that switching from Redis back to the database cache later
needs nothing more.
"""

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

TABLE = "guardtrace_cache"  # settings.CACHES["default"]["LOCATION"] of the database cache


def create(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, TABLE, dry_run=False)


def drop(apps, schema_editor):
    quoted = schema_editor.connection.ops.quote_name(TABLE)
    schema_editor.execute(f"DROP TABLE IF EXISTS {quoted}")


class Migration(migrations.Migration):
    dependencies = [("common", "0001_lease")]

    operations = [migrations.RunPython(create, drop)]
