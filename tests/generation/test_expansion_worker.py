"""Queued expansions through real Celery workers on Redis: a worker killed mid-expansion (SIGKILL) and a new one
started, and the expansion still finishes with every seed's variants made once, none doubled, none half-written, and
no image file without its row; and which running expansions a starting worker takes to be abandoned."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db.models import Count
from django.utils import timezone
from PIL import Image

from annotation.models import ImageAsset
from generation import services
from generation.models import Expansion, PoolImage, Variant
from qta.images import DirectoryImageSource
from qta.workers import worker_id
from tests.conftest import REDIS_URL
from tests.workers import kill_worker, wait_for, worker

KINDS = ["text_only", "irrelevant_image", "typographic"]
SEEDS = 5000  # three chunks of EXPANSION_CHUNK (2,000): the worker is killed inside the second
# Small typographic images, so that a chunk takes seconds (the drawing, not the canvas, is what is under test).
WORKER_ENV = {"GUARDTRACE_FIGSTEP_WIDTH": "320", "GUARDTRACE_FIGSTEP_HEIGHT": "320",
              "GUARDTRACE_FIGSTEP_FONT_SIZE": "18"}  # fmt: skip


def _png(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(out, format="PNG")
    return out.getvalue()


def _files(media: Path) -> set[str]:
    return {p.relative_to(media).as_posix() for p in (media / "images").rglob("*") if p.is_file()}


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_expansion_whose_worker_is_killed_is_finished_by_the_next_with_nothing_doubled_or_orphaned(
    settings, tmp_path
):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()  # no messages left over from other tests
    assert services.EXPANSION_CHUNK < SEEDS <= 3 * services.EXPANSION_CHUNK
    data = "\n".join(
        json.dumps({"id": str(n), "text": f"Query {n}: how to pass gate {n}?"}) for n in range(SEEDS)
    )
    seed_set = services.seeds_import(data=data.encode(), name="seeds.jsonl")
    (tmp_path / "pool").mkdir()
    for n in range(4):
        (tmp_path / "pool" / f"{n}.png").write_bytes(_png((60 * n, 90, 200 - 40 * n)))
    pool = services.pool_import(
        name="scenes",
        images=DirectoryImageSource(tmp_path / "pool"),
        entries=[(f"{n}.png", "") for n in range(4)],
    )
    media = Path(settings.MEDIA_ROOT)
    broker = (
        REDIS_URL,
        {"visibility_timeout": 3600},
    )  # the killed worker's message is not redelivered in the test
    parameters = {"kinds": KINDS, "irrelevant_pool": pool.pk, "rng_seed": 7}
    with worker(*broker, settings.MEDIA_ROOT, extra_env=WORKER_ENV) as first:
        expansion = services.expansion_create(seed_sets=[seed_set], parameters=parameters)
        started = time.monotonic()
        # Killed once a chunk is committed and the next one is storing its drawn images (rows with no variant yet).
        wait_for(
            lambda: (
                0 < (done := Expansion.objects.get(pk=expansion.pk).done) < SEEDS
                and ImageAsset.objects.count() >= 4 + done + 300
            ),
            first,
            120,
            "no chunk expanded and the next storing images",
            lambda: str(Expansion.objects.values("status", "done", "error").get(pk=expansion.pk)),
        )
        kill_worker(first)
        first_pid = first.pid
    killed = Expansion.objects.get(pk=expansion.pk)
    made_before = Variant.objects.count()
    assets_before = set(ImageAsset.objects.values_list("file", flat=True))
    files_before = _files(media)
    unused_before = (
        ImageAsset.objects.exclude(pk__in=Variant.objects.exclude(image=None).values("image"))
        .exclude(pk__in=PoolImage.objects.values("image"))
        .count()
    )
    print(
        f"killed after {killed.done} of {killed.total} seeds ({time.monotonic() - started:.1f}s): "
        f"{made_before} variants, {len(assets_before)} image rows ({unused_before} of no variant yet), "
        f"{len(files_before)} files ({len(files_before - assets_before)} without a row)"
    )
    assert killed.status == "running" and 0 < killed.done < killed.total == SEEDS
    assert killed.worker.endswith(f":{first_pid}") and killed.started_at is not None
    # Each chunk's variants are written in one transaction: a seed has all its kinds or none.
    per_seed = Counter(Variant.objects.values("seed").annotate(n=Count("pk")).values_list("n", flat=True))
    assert set(per_seed) <= {len(KINDS)} and made_before >= killed.done * len(KINDS)

    # The new worker finds the holder's process gone and queues the expansion again at once (not after the
    # 600 s lease); the rerun keeps what was committed and makes the rest.
    restarted = time.monotonic()
    with worker(*broker, settings.MEDIA_ROOT, extra_env=WORKER_ENV) as second:
        wait_for(
            lambda: Expansion.objects.get(pk=expansion.pk).finished,
            second,
            180,
            "expansion not finished",
            lambda: str(Expansion.objects.values("status", "done", "error").get(pk=expansion.pk)),
        )
    finished = Expansion.objects.get(pk=expansion.pk)
    print(
        f"finished by the second worker in {time.monotonic() - restarted:.1f}s: created {finished.created}, "
        f"kept {finished.kept}, {Variant.objects.count()} variants, {len(_files(media))} files"
    )
    assert finished.status == "succeeded", finished.error
    assert finished.done == finished.total == SEEDS and finished.worker != killed.worker
    assert finished.created + finished.kept == SEEDS * len(KINDS) and finished.kept >= made_before

    # No variant doubled or missing: one per seed and kind, each key once.
    variants = Variant.objects.filter(seed__seed_set=seed_set)
    assert variants.count() == SEEDS * len(KINDS) == len(set(variants.values_list("key", flat=True)))
    per_seed_kind = variants.values("seed", "kind").annotate(n=Count("pk"))
    assert per_seed_kind.count() == SEEDS * len(KINDS) and {row["n"] for row in per_seed_kind} == {1}
    assert dict(Counter(variants.values_list("kind", flat=True))) == dict.fromkeys(KINDS, SEEDS)
    assert not variants.filter(kind__in=["irrelevant_image", "typographic"], image__isnull=True).exists()
    assert not variants.filter(kind="text_only", image__isnull=False).exists()
    # The draws do not depend on which worker made a variant: each irrelevant image is the one the seed draws.
    drawn = {
        v.seed.text: v.derivation["drawn"]
        for v in variants.filter(kind="irrelevant_image").select_related("seed")
    }
    assert all(services.draw_irrelevant(text, 4, 7) == n for text, n in drawn.items())

    # No orphans: every image file has its row, every row its file, and every row is a variant's or the pool's
    # (the files and rows the killed worker wrote for its unfinished chunk were taken up by the rerun).
    on_disk, stored = _files(media), set(ImageAsset.objects.values_list("file", flat=True))
    used = set(variants.exclude(image=None).values_list("image_id", flat=True)) | set(
        PoolImage.objects.values_list("image_id", flat=True)
    )
    assert on_disk == stored and files_before <= stored
    assert set(ImageAsset.objects.values_list("pk", flat=True)) == used
    assert len(set(variants.filter(kind="typographic").values_list("image_id", flat=True))) == SEEDS


def test_only_expansions_whose_worker_is_gone_or_silent_past_the_lease_are_queued_again(db, monkeypatch):
    seed_set = services.seeds_import(data=b'{"text": "q"}\n', name="s.jsonl")
    now = timezone.now()
    queued: list[int] = []
    monkeypatch.setattr(services, "enqueue_expansion", queued.append)

    def expansion(
        worker: str, silent_s: float, status: str = "running", started_ago_s: float = 0
    ) -> Expansion:
        made = Expansion.objects.create(parameters={"kinds": ["text_only"]}, total=1, status=status, worker=worker,
                                        started_at=now - timedelta(seconds=started_ago_s))  # fmt: skip
        made.seed_sets.set([seed_set])
        Expansion.objects.filter(pk=made.pk).update(heartbeat_at=now - timedelta(seconds=silent_s))
        return made

    host = worker_id().rpartition(":")[0]
    lease = services.EXPANSION_LEASE_S
    dead_here = expansion(f"{host}:{2**22 + 12345}", 5)  # no such process
    alive_here = expansion(worker_id(), 5)
    busy_elsewhere = expansion(
        "other-host:17", 5, started_ago_s=lease * 10
    )  # long, but still making progress
    silent_elsewhere = expansion("other-host:18", lease + 60)
    silent_unrecorded = expansion("", lease + 60)  # claimed before the holder was recorded
    waiting = expansion("", 0, status="pending")
    done = expansion("other-host:19", lease * 10, status="succeeded")
    assert (
        sorted(services.expansions_resume())
        == sorted(queued)
        == sorted([dead_here.pk, silent_elsewhere.pk, silent_unrecorded.pk, waiting.pk])
    )
    statuses = dict(Expansion.objects.values_list("pk", "status"))
    assert statuses[alive_here.pk] == statuses[busy_elsewhere.pk] == "running"
    assert statuses[done.pk] == "succeeded" and statuses[dead_here.pk] == "pending"

    # The queued message claims it once, recording its new holder.
    assert services.expansion_work(dead_here.pk).status == "succeeded"
    assert Expansion.objects.get(pk=dead_here.pk).worker == worker_id()
    assert services.expansion_work(alive_here.pk).status == "running"  # a live holder keeps it
