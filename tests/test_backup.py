"""Backups: `manage.py backup` of a populated instance restored by `manage.py restore` into a fresh database and media
folder gives the same rows and the same files (SQLite; PostgreSQL under CI). A database holding data is not
overwritten without --force, and a truncated, corrupted or altered archive is refused with nothing written."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection

from annotation.models import ImportJob, Label, Sample
from common.backup import MANIFEST
from tests.annotation.factories import ImageAssetFactory, LabelFactory, SampleFactory

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


def _populate() -> None:
    """Samples with images, juror labels, an expert's label and an import job with its uploaded file."""
    expert = User.objects.create_user("erin-backup", password="pw-erin-backup-long")
    samples = [SampleFactory(image=ImageAssetFactory()) for _ in range(3)] + [SampleFactory()]
    for sample in samples:
        for juror in ("juror-a", "juror-b", "juror-c"):
            LabelFactory(sample=sample, source_name=juror, judgment=0.5 if juror == "juror-c" else 0.0)
    LabelFactory(
        sample=samples[0], source_kind=Label.SourceKind.EXPERT, source_name=expert.username, judgment=1.0
    )
    ImportJob.objects.create(
        data_file=ContentFile(b'{"question": "Q?"}\n', name="upload.jsonl"),
        original_name="upload.jsonl",
        format="jsonl",
        status=ImportJob.Status.SUCCEEDED,
        created=4,
    )


def _backup(tmp_path: Path) -> Path:
    out = io.StringIO()
    call_command("backup", "--dir", str(tmp_path / "backups"), stdout=out)
    (archive,) = (tmp_path / "backups").glob("guardtrace-*.tar.gz")
    assert str(archive) in out.getvalue()
    return archive


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _restore(archive: Path, tmp_path: Path, database_url: str, *extra: str) -> subprocess.CompletedProcess:
    """`manage.py restore` in a fresh instance of its own: another database, media folder and var folder."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(tmp_path / "fresh" / "media"),
        "GUARDTRACE_VAR_DIR": str(tmp_path / "fresh" / "var"),
    }
    return subprocess.run(
        [sys.executable, "manage.py", "restore", str(archive), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _sqlite_rows(path: str) -> dict[str, list]:
    import sqlite3

    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def test_a_populated_sqlite_instance_round_trips_into_a_fresh_one(tmp_path, _media):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite round trip (the PostgreSQL one is below)")
    _populate()
    assert len(_files(_media)) == 4  # three images and the upload
    archive = _backup(tmp_path)

    fresh_db = tmp_path / "fresh" / "guardtrace.sqlite3"
    done = _restore(archive, tmp_path, f"sqlite:///{fresh_db}")

    assert done.returncode == 0, done.stderr
    assert "match its manifest" in done.stdout
    source = _sqlite_rows(connection.settings_dict["NAME"])
    restored = _sqlite_rows(str(fresh_db))
    assert restored == source
    assert len(restored["annotation_sample"]) == 4 and len(restored["annotation_label"]) == 13
    assert _files(tmp_path / "fresh" / "media") == _files(_media)

    # A second restore into the instance that now holds the data is refused, and changes nothing.
    again = _restore(archive, tmp_path, f"sqlite:///{fresh_db}")
    assert again.returncode != 0 and "already holds data" in again.stderr and "--force" in again.stderr
    assert _sqlite_rows(str(fresh_db)) == source


@pytest.mark.postgres
def test_a_populated_postgres_instance_round_trips_into_a_fresh_database(tmp_path, _media):
    import psycopg

    _populate()
    archive = _backup(tmp_path)
    db = connection.settings_dict
    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "user": db["USER"] or "postgres"}
    if db["PASSWORD"]:
        params["password"] = db["PASSWORD"]
    fresh = f"restore_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{fresh}"')
    try:
        url = f"postgres://{params['user']}:{db['PASSWORD'] or ''}@{params['host']}:{params['port']}/{fresh}"
        done = _restore(archive, tmp_path, url)
        assert done.returncode == 0, done.stderr

        def rows(name: str) -> dict[str, list]:
            with psycopg.connect(dbname=name, **params) as pg:
                query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
                tables = [r[0] for r in pg.execute(query)]
                return {t: sorted(pg.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}

        source, restored = rows(db["NAME"]), rows(fresh)
        assert restored == source
        assert len(restored["annotation_label"]) == 13
        assert _files(tmp_path / "fresh" / "media") == _files(_media)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


def _counts() -> tuple[int, int, int]:
    return Sample.objects.count(), Label.objects.count(), ImportJob.objects.count()


def _rewrite(archive: Path, dest: Path, change) -> Path:
    """A copy of `archive` whose members pass through `change(name, data) -> data`."""
    with tarfile.open(archive) as src, tarfile.open(dest, "w:gz") as out:
        for member in src:
            data = change(member.name, src.extractfile(member).read())
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    return dest


def test_a_truncated_corrupted_or_altered_archive_is_refused_and_nothing_is_written(tmp_path, _media):
    _populate()
    archive = _backup(tmp_path)
    data = archive.read_bytes()
    # An extra sample after the backup: a restore that went through would remove it.
    SampleFactory()
    before_rows, before_files = _counts(), _files(_media)

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    corrupted = tmp_path / "corrupted.tar.gz"
    middle = len(data) // 2
    corrupted.write_bytes(
        data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
    )
    image = next(name for name in before_files if name.startswith("images/"))
    altered = _rewrite(
        archive,
        tmp_path / "altered.tar.gz",
        lambda name, body: body[:-1] + bytes([body[-1] ^ 1]) if name == f"media/{image}" else body,
    )
    no_manifest = tmp_path / "no-manifest.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(no_manifest, "w:gz") as out:
        for member in src:
            if member.name != MANIFEST:
                out.addfile(member, src.extractfile(member))

    expected = {
        truncated: "truncated or corrupted",
        corrupted: "truncated or corrupted",
        altered: "does not match its manifest",
        no_manifest: f"no {MANIFEST}",
    }
    for bad, message in expected.items():
        # --force: even a restore allowed to replace everything checks the whole archive before writing.
        with pytest.raises(CommandError, match=message) as refused:
            call_command("restore", str(bad), "--force")
        assert "nothing was restored" in str(refused.value)
        assert _counts() == before_rows
        assert _files(_media) == before_files
        assert not list(_media.parent.glob(".guardtrace-restore-*"))  # the staging folder went too


def test_restore_refuses_a_database_holding_data_without_force(tmp_path, _media, settings):
    settings.GUARDTRACE_BACKUP_DIR = tmp_path / "backups"
    _populate()
    archive = _backup(tmp_path)
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
    assert manifest["tables"]["annotation_sample"] == 4 and manifest["tables"]["annotation_label"] == 13
    assert manifest["media"]["count"] == 4 and all(
        len(e["sha256"]) == 64 for e in manifest["media"]["files"].values()
    )
    SampleFactory()

    with pytest.raises(CommandError, match="already holds data"):
        call_command("restore", archive.name)  # by its name in the backup folder
    with pytest.raises(CommandError, match="already holds data"):
        call_command("restore", str(archive))
    assert Sample.objects.count() == 5


def test_force_replaces_an_instance_holding_data_with_the_archive(tmp_path, _media):
    _populate()
    archive = _backup(tmp_path)
    rows, files = _counts(), _files(_media)
    SampleFactory(image=ImageAssetFactory())  # a row and an image written after the backup
    assert _counts() != rows and len(_files(_media)) == len(files) + 1

    out = io.StringIO()
    call_command("restore", str(archive), "--force", stdout=out)

    assert "match its manifest" in out.getvalue()
    assert _counts() == rows and _files(_media) == files
