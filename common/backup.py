"""Backups of one instance — its database and its media folder — in one archive, and their restore into a fresh
instance.

An archive (`guardtrace-<UTC time>.tar.gz`) holds `database.sqlite3` (SQLite, copied online with sqlite3's backup
API) or `database.pgdump` (PostgreSQL, `pg_dump -Fc`), then `media/…` (every file under MEDIA_ROOT), then
`manifest.json`: the rows in each table, and the size and SHA-256 of every file. The database is copied first, so
every file it names is in the archive (a file written meanwhile is an extra, which harms nothing).

A restore stages and checks the whole archive before it writes anything to the instance, refuses a database that
already holds data (or a media folder that holds files) unless forced, and checks the manifest again afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
import zlib
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

FORMAT = 1
MANIFEST = "manifest.json"
MEDIA = "media"
_DATABASE_FILES = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
# The rows `migrate` writes into a new database: a database holding only these holds no data yet.
_SEEDED_BY_MIGRATE = frozenset(
    {"django_migrations", "django_content_type", "auth_permission", "auth_group", "auth_group_permissions"}
)
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what was (not) written."""


@dataclass
class BackupReport:
    path: Path
    size_bytes: int
    seconds: float
    tables: dict[str, int]
    files: int
    media_bytes: int


@dataclass
class RestoreReport:
    archive: Path
    seconds: float
    tables: dict[str, int]
    files: int
    # Migrations the code has and the restored database has not applied: run `manage.py migrate`.
    unapplied_migrations: list[str] = field(default_factory=list)


def backup_dir() -> Path:
    return Path(settings.GUARDTRACE_BACKUP_DIR)


def backup_create(*, dest_dir: Path | None = None) -> BackupReport:
    """Write one archive of the database and MEDIA_ROOT under `dest_dir` (default GUARDTRACE_BACKUP_DIR); it appears
    under its final name only once complete."""
    started = time.monotonic()
    vendor = connection.vendor
    if vendor not in _DATABASE_FILES:
        raise BackupError(f"cannot back up a {vendor} database: SQLite and PostgreSQL only")
    dest_dir = Path(dest_dir or backup_dir())
    dest_dir.mkdir(parents=True, exist_ok=True)
    media_root = Path(settings.MEDIA_ROOT)
    final = _new_archive_path(dest_dir)
    partial = final.with_name(final.name + ".partial")
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=dest_dir) as work:
        dump = Path(work) / _DATABASE_FILES[vendor]
        counts = _sqlite_dump(dump) if vendor == "sqlite" else _postgres_dump(dump)
        try:
            with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
                database = _add(tar, dump, dump.name)
                files = {}
                for rel, path in _media_files(media_root, dest_dir):
                    try:
                        files[rel] = _add(tar, path, f"{MEDIA}/{rel}")
                    except FileNotFoundError:
                        continue  # deleted since it was listed (an upload past its retention): not in the archive
                manifest = {
                    "format": FORMAT,
                    "created_at": datetime.now(UTC).isoformat(),
                    "database": {"vendor": vendor, "name": dump.name, **database},
                    "tables": counts,
                    "media": {"files": files, "count": len(files)},
                }
                body = json.dumps(manifest, indent=1, sort_keys=True).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime, info.mode = len(body), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(body))
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
    return BackupReport(
        path=final,
        size_bytes=final.stat().st_size,
        seconds=time.monotonic() - started,
        tables=counts,
        files=len(files),
        media_bytes=sum(entry["size"] for entry in files.values()),
    )


def archive_resolve(name: str) -> Path:
    """An archive named by its path, or by its file name in the backup folder."""
    path = Path(name)
    if path.is_file():
        return path
    in_dir = backup_dir() / name
    if in_dir.is_file():
        return in_dir
    raise BackupError(f"{name}: no such archive (looked for it as a path and in {backup_dir()})")


def backup_restore(*, archive: Path, force: bool = False) -> RestoreReport:
    """Restore `archive` into this instance's database and MEDIA_ROOT, which must hold no data unless `force`
    (then both are replaced). The archive is checked in full first: a truncated or altered one writes nothing."""
    started = time.monotonic()
    media_root = Path(settings.MEDIA_ROOT)
    if not force:
        if held := _tables_with_data():
            raise BackupError(
                f"the database already holds data (in {', '.join(held[:4])}{'…' if len(held) > 4 else ''}): "
                "restore into a fresh instance, or pass --force to replace it"
            )
        if any(True for _ in _media_files(media_root, None)):
            raise BackupError(
                f"{media_root} already holds files: restore into an empty media folder, or pass --force"
            )
    media_root.parent.mkdir(parents=True, exist_ok=True)
    # Staged next to the media folder: moving the files in is then a rename on the same file system.
    staging = Path(tempfile.mkdtemp(prefix=".guardtrace-restore-", dir=media_root.parent))
    try:
        manifest = _stage(archive, staging)
        database = manifest["database"]
        if database["vendor"] != connection.vendor:
            raise BackupError(
                f"{archive.name} holds a {database['vendor']} database; this instance runs on "
                f"{connection.vendor}: nothing was restored"
            )
        if connection.vendor == "sqlite":
            _sqlite_restore(staging / database["name"])
        else:
            _postgres_restore(staging / database["name"])
        _media_move(staging / MEDIA, media_root, clear=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    connection.close()
    problems = _verify(manifest, media_root)
    if problems:
        raise BackupError(
            "restored, but the instance does not match the archive's manifest:\n  " + "\n  ".join(problems)
        )
    return RestoreReport(
        archive=archive,
        seconds=time.monotonic() - started,
        tables=manifest["tables"],
        files=len(manifest["media"]["files"]),
        unapplied_migrations=_unapplied_migrations(),
    )


def _new_archive_path(dest_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        path = dest_dir / (f"guardtrace-{stamp}.tar.gz" if n == 1 else f"guardtrace-{stamp}-{n}.tar.gz")
        if not path.exists() and not path.with_name(path.name + ".partial").exists():
            return path
    raise BackupError(f"{dest_dir}: too many archives named guardtrace-{stamp}")


def _tables() -> list[str]:
    """The tables of the installed models (and the migration record) that exist in the database."""
    existing = set(connection.introspection.table_names())
    names = {model._meta.db_table for model in apps.get_models(include_auto_created=True)}
    return sorted((names | {"django_migrations"}) & existing)


def _count(cursor: Any, tables: list[str]) -> dict[str, int]:
    counts = {}
    for table in tables:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
        counts[table] = cursor.fetchone()[0]
    return counts


def _tables_with_data() -> list[str]:
    connection.close()  # a fresh look, whatever this process did before
    with connection.cursor() as cursor:
        counts = _count(cursor, _tables())
    return [table for table, n in counts.items() if n and table not in _SEEDED_BY_MIGRATE]


def _sqlite_dump(dest: Path) -> dict[str, int]:
    """Copy the live database with sqlite3's backup API (consistent while others write), and count the copy's rows,
    so that the counts describe exactly what was copied."""
    tables = _tables()
    with (
        closing(sqlite3.connect(connection.settings_dict["NAME"])) as live,
        closing(sqlite3.connect(dest)) as copy,
    ):
        live.backup(copy)
        # One self-contained file: no write-ahead log beside it.
        copy.execute("PRAGMA journal_mode=DELETE")
        return _count(copy.cursor(), tables)


def _pg_env() -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if db.get(key):
            env[var] = str(db[key])
    if sslmode := (db.get("OPTIONS") or {}).get("sslmode"):
        env["PGSSLMODE"] = str(sslmode)
    return env


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} not found: install the PostgreSQL client tools (postgresql-client) of the server's major "
            "version or newer"
        )
    return path


def _postgres_dump(dest: Path) -> dict[str, int]:
    """`pg_dump -Fc` inside a repeatable-read snapshot that the row counts are taken in too."""
    pg_dump = _pg_tool("pg_dump")
    tables = _tables()
    raw = connection.get_new_connection(connection.get_connection_params())
    try:
        raw.autocommit = True  # the transaction below is ours, opened and closed by hand
        with raw.cursor() as cursor:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
            counts = _count(cursor, tables)
            done = subprocess.run(
                [pg_dump, "-Fc", f"--snapshot={snapshot}", "-f", str(dest), connection.settings_dict["NAME"]],
                env=_pg_env(),
                capture_output=True,
                text=True,
            )
            cursor.execute("COMMIT")
    finally:
        raw.close()
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()[-2000:]}")
    return counts


def _sqlite_restore(staged: Path) -> None:
    with closing(sqlite3.connect(staged)) as check:
        verdict = check.execute("PRAGMA integrity_check").fetchone()[0]
    if verdict != "ok":
        raise BackupError(
            f"the archive's database fails SQLite's integrity check ({verdict}): nothing was restored"
        )
    connection.close()
    target = Path(connection.settings_dict["NAME"])
    target.parent.mkdir(parents=True, exist_ok=True)
    # The backup API replaces every page of the target under its lock: readers see the old or the new database.
    with closing(sqlite3.connect(staged)) as source, closing(sqlite3.connect(target)) as live:
        source.backup(live)


def _postgres_restore(staged: Path) -> None:
    pg_restore = _pg_tool("pg_restore")
    connection.close()
    # --clean: a database `migrate` created (docker compose's web service migrates as it starts) has the tables
    # already; one transaction, so a failure leaves the database as it was.
    done = subprocess.run(
        [
            pg_restore,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            "--dbname",
            connection.settings_dict["NAME"],
            str(staged),
        ],
        env=_pg_env(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed, the database is unchanged: {done.stderr.strip()[-2000:]}")


def _media_files(media_root: Path, skip: Path | None):
    """(relative POSIX path, path) of every regular file under `media_root`, sorted; `skip` (a backup folder kept
    inside it) is left out."""
    if not media_root.is_dir():
        return
    skip_resolved = skip.resolve() if skip is not None else None
    for folder, dirs, names in os.walk(media_root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if skip_resolved is None or (here / d).resolve() != skip_resolved)
        for name in sorted(names):
            path = here / name
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(media_root).as_posix(), path


class _Hashing:
    """Reads a file (for tarfile, for a copy, or to the end), counting and hashing exactly the bytes read: what the
    manifest records of a file, and what backup, staging and the check after a restore compare."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.sha, self.size = handle, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.sha.update(chunk)
        self.size += len(chunk)
        return chunk

    def entry(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha.hexdigest()}


def _add(tar: tarfile.TarFile, path: Path, arcname: str) -> dict[str, Any]:
    info = tar.gettarinfo(str(path), arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    with path.open("rb") as handle:
        reader = _Hashing(handle)
        tar.addfile(info, reader)
    return reader.entry()


def _safe_name(member: tarfile.TarInfo) -> str:
    name = member.name
    parts = PurePosixPath(name).parts
    if not member.isfile():
        raise BackupError(f"{name}: not a plain file; a GuardTrace archive holds only files")
    allowed = parts and (
        (len(parts) == 1 and parts[0] in {MANIFEST, *_DATABASE_FILES.values()})
        or (len(parts) > 1 and parts[0] == MEDIA)
    )
    if not allowed or name.startswith("/") or any(part in {"..", "."} for part in parts):
        raise BackupError(f"{name!r}: a name a GuardTrace archive never holds")
    return "/".join(parts)


def _stage(archive: Path, staging: Path) -> dict[str, Any]:
    """Unpack `archive` into `staging`, hashing each file, and check it against the manifest: every file there
    with its size and checksum, nothing more. Returns the manifest."""
    got: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _safe_name(member)
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                try:
                    out = target.open("xb")
                except FileExistsError:
                    raise BackupError(f"{name}: twice in the archive") from None
                reader = _Hashing(source)
                with out:
                    shutil.copyfileobj(reader, out, _CHUNK)
                got[name] = reader.entry()
            # tarfile stops quietly at a damaged header; reading the compressed stream to its end checks its CRC.
            while tar.fileobj is not None and tar.fileobj.read(_CHUNK):
                pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(
            f"{archive.name}: truncated or corrupted archive ({exc or type(exc).__name__}); nothing was restored"
        ) from exc
    if MANIFEST not in got:
        raise BackupError(
            f"{archive.name}: no {MANIFEST} — a truncated archive, or not a GuardTrace backup; nothing was restored"
        )
    try:
        manifest = json.loads((staging / MANIFEST).read_text())
        expected = {manifest["database"]["name"]: manifest["database"]}
        expected |= {f"{MEDIA}/{rel}": entry for rel, entry in manifest["media"]["files"].items()}
        if not isinstance(manifest["tables"], dict):
            raise TypeError("tables: not a mapping")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{archive.name}: unreadable {MANIFEST} ({exc}); nothing was restored") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive.name}: archive format {manifest.get('format')!r}, expected {FORMAT}")
    got.pop(MANIFEST)
    problems = _compare(expected, got)
    if problems:
        raise BackupError(
            f"{archive.name} does not match its manifest; nothing was restored:\n  "
            + "\n  ".join(problems[:20])
        )
    return manifest


def _compare(expected: dict[str, dict[str, Any]], got: dict[str, dict[str, Any]]) -> list[str]:
    problems = [f"{name}: missing" for name in sorted(expected.keys() - got.keys())]
    problems += [f"{name}: not in the manifest" for name in sorted(got.keys() - expected.keys())]
    for name in sorted(expected.keys() & got.keys()):
        want, have = expected[name], got[name]
        if (want.get("size"), want.get("sha256")) != (have["size"], have["sha256"]):
            problems.append(
                f"{name}: {have['size']} bytes, sha256 {have['sha256'][:12]}… (manifest: "
                f"{want.get('size')} bytes, {str(want.get('sha256'))[:12]}…)"
            )
    return problems


def _media_move(staged: Path, media_root: Path, *, clear: bool) -> None:
    media_root.mkdir(parents=True, exist_ok=True)
    if clear:
        for entry in media_root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    if not staged.is_dir():
        return
    for rel, path in list(_media_files(staged, None)):
        target = media_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)


def _verify(manifest: dict[str, Any], media_root: Path) -> list[str]:
    """What differs between the restored instance and the manifest: rows per table, then the media files."""
    with connection.cursor() as cursor:
        present = set(connection.introspection.table_names(cursor))
        wanted = [table for table in manifest["tables"] if table in present]
        counts = _count(cursor, wanted)
    problems = [f"table {table}: missing" for table in manifest["tables"] if table not in present]
    problems += [
        f"table {table}: {counts[table]} rows, the manifest says {n}"
        for table, n in manifest["tables"].items()
        if table in counts and counts[table] != n
    ]
    got = {}
    for rel in manifest["media"]["files"]:
        path = media_root / rel
        if path.is_file():
            with path.open("rb") as handle:
                reader = _Hashing(handle)
                while reader.read(_CHUNK):
                    pass
            got[rel] = reader.entry()
    return problems + _compare(manifest["media"]["files"], got)


def _unapplied_migrations() -> list[str]:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]
