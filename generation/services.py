"""Seed import, image pools and multimodal expansion of seed queries into recorded variants.

Expansion is idempotent: a variant's `key` hashes its kind, text, image and derivation, so expanding the same seeds
with the same settings again adds nothing, and a changed setting (another pool, rng seed or font) adds new variants
beside the old ones.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
from collections.abc import Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import repeat

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import ImageAsset, InputVariant
from annotation.services import ImportRejected, image_store
from common.errors import ApplicationError
from common.work import JobStatus, connection_recover, requeue_abandoned
from generation.models import Expansion, ImagePool, PoolImage, SeedQuery, SeedSet, Variant
from qta import embedding, seed_files
from qta.images import ImageInfo, ImageRejected, ImageSource, inspect_image
from qta.sample_files import RecordError
from qta.typography import (
    FIGSTEP_INSTRUCTION,
    TypographyError,
    TypographyOptions,
    render_typographic,
    resolve_font_path,
)

EXPANSIONS = (InputVariant.TEXT_ONLY, InputVariant.IRRELEVANT_IMAGE, InputVariant.ALIGNED_IMAGE,
              InputVariant.TYPOGRAPHIC)  # fmt: skip


CHUNK = 1000


class ExpansionError(ApplicationError):
    """An expansion that cannot run as asked; the message names the setting, pool or seed."""


PAIR_KINDS = (InputVariant.HADES, InputVariant.CS_DJ)


def seeds_import(
    *, data: bytes, name: str, fmt: str | None = None, user=None, set_name: str = "", pairs: str = "",
    images: ImageSource | None = None,
) -> SeedSet:  # fmt: skip
    """A seed set from a JSONL or CSV file. Every row is checked first: on any error nothing is stored and
    `ImportRejected` lists each as file:line: field: reason.

    `pairs` (hades or cs_dj): a file of image+text pairs made elsewhere; each row also becomes a variant of that kind,
    as given, with its image read from `images`."""
    if pairs and pairs not in PAIR_KINDS:
        raise ValueError(f"pairs: {pairs!r} is not one of {', '.join(PAIR_KINDS)}")
    rows: list[seed_files.SeedRow] = []
    errors: list[RecordError] = []
    checked: dict[int, tuple[bytes, ImageInfo]] = {}
    for item in seed_files.parse_seeds(data, name=name, fmt=fmt, pairs=bool(pairs)):
        if isinstance(item, RecordError):
            errors.append(item)
            continue
        if item.image is not None:
            try:
                if images is None:
                    raise ImageRejected("the row names an image but no images folder or zip was given")
                raw = images.read(item.image, max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES)
                checked[item.line] = (raw, inspect_image(raw, max_pixels=settings.GUARDTRACE_MAX_IMAGE_PIXELS,
                                                         max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES))  # fmt: skip
            except ImageRejected as exc:
                errors.append(RecordError(name, item.line, "image", f"{item.image}: {exc}"))
                continue
        rows.append(item)
    if not errors and not rows:
        errors.append(RecordError(name, 0, "", "the file holds no queries"))
    if errors:
        raise ImportRejected(errors)
    with transaction.atomic():
        seed_set = SeedSet.objects.create(name=set_name or name, source_file=name, created_by=user)
        created = SeedQuery.objects.bulk_create(
            SeedQuery(seed_set=seed_set, external_id=r.external_id, text=r.text, category=r.category,
                      source=r.source, line=r.line)
            for r in rows
        )  # fmt: skip
        if pairs:
            variants = []
            for query, row in zip(created, rows, strict=True):
                raw, info = checked[row.line]
                derivation = {"imported_from": name, "line": row.line, "image_path": row.image}
                asset = image_store(raw, info)
                variants.append(Variant(seed=query, kind=pairs, text=row.text, image=asset, derivation=derivation,
                                        key=_key(pairs, row.text, asset, derivation)))  # fmt: skip
            Variant.objects.bulk_create(variants)
    return seed_set


def pool_import(
    *, name: str, images: ImageSource, entries: list[tuple[str, str]], description: str = "",
    captions: bytes | None = None, captions_name: str = "captions.jsonl",
) -> ImagePool:  # fmt: skip
    """An image pool (new, or added to) from (relative path, caption) entries read from `images`, or from a captions
    file (`captions`, see seed_files.parse_captions); every entry is checked first, and on any error nothing is stored.
    Errors name the captions file and its line (or the pool and the entry's number)."""
    errors: list[RecordError] = []
    checked = []
    numbered: list[tuple[str, int, str, str]] = [(name, n, relative, caption)
                                                 for n, (relative, caption) in enumerate(entries, start=1)]  # fmt: skip
    if captions is not None:
        numbered = []
        for item in seed_files.parse_captions(captions, name=captions_name):
            if isinstance(item, RecordError):
                errors.append(item)
            else:
                numbered.append((captions_name, *item))
    for where, line, relative, caption in numbered:
        try:
            data = images.read(relative, max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES)
            info = inspect_image(data, max_pixels=settings.GUARDTRACE_MAX_IMAGE_PIXELS,
                                 max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES)  # fmt: skip
        except ImageRejected as exc:
            errors.append(RecordError(where, line, "image", f"{relative}: {exc}"))
            continue
        checked.append((data, info, caption.strip()))
    if not errors and not checked:
        errors.append(RecordError(name, 0, "", "no images given"))
    if errors:
        raise ImportRejected(errors)
    with transaction.atomic():
        pool, _ = ImagePool.objects.get_or_create(name=name, defaults={"description": description})
        for data, info, caption in checked:
            asset = image_store(data, info)
            PoolImage.objects.update_or_create(pool=pool, image=asset, defaults={"caption": caption})
    return pool


@dataclass
class ExpansionReport:
    created: int = 0
    kept: int = 0  # already there from an identical expansion
    by_kind: dict[str, int] = field(default_factory=dict)


def _key(kind: str, text: str, image: ImageAsset | None, derivation: dict) -> str:
    body = json.dumps(
        [kind, text, image.sha256 if image else None, derivation], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _pool_images(pool: ImagePool | None, kind: str) -> list[PoolImage]:
    if pool is None:
        raise ExpansionError(f"{kind}: choose an image pool")
    images = list(pool.images.select_related("image").order_by("image__sha256"))  # stable across databases
    if not images:
        raise ExpansionError(f"{kind}: the pool {pool.name} has no images")
    return images


def draw_irrelevant(seed_text: str, count: int, rng_seed: int) -> int:
    """The pool index drawn for a seed: seeded by the rng seed and the seed's text, so the same seeds draw the same
    images in any order and in any database."""
    digest = hashlib.sha256(f"{rng_seed}\n{seed_text}".encode()).digest()
    return random.Random(digest).randrange(count)


def expand(
    seed_queries: Iterable[SeedQuery], *, kinds: Iterable[str], irrelevant_pool: ImagePool | None = None,
    aligned_pool: ImagePool | None = None, rng_seed: int = 0, typography: TypographyOptions | None = None,
    embedding_model: str | None = None, drawing: Executor | None = None,
) -> ExpansionReport:  # fmt: skip
    """Make the asked kinds of variant for each seed (see EXPANSIONS); checks everything before writing.
    `drawing`: processes to draw typographic images in (made here for a large expansion when not given)."""
    kinds = list(dict.fromkeys(kinds))
    if unknown := [k for k in kinds if k not in EXPANSIONS]:
        raise ExpansionError(
            f"kinds: {', '.join(unknown)} cannot be expanded to; use {', '.join(EXPANSIONS)}"
        )
    queries = list(seed_queries)
    if not queries:
        raise ExpansionError("seeds: none selected")
    typography = typography or TypographyOptions(**settings.GUARDTRACE_FIGSTEP)  # type: ignore[arg-type]
    irrelevant = _pool_images(irrelevant_pool, "irrelevant_image") if "irrelevant_image" in kinds else []
    aligned_choice: list[tuple[int, float]] = []
    if "aligned_image" in kinds:
        pool_images = _pool_images(aligned_pool, "aligned_image")
        if missing := [p.image.sha256[:12] for p in pool_images if not p.caption]:
            raise ExpansionError(
                f"aligned_image: {len(missing)} image(s) of {aligned_pool} have no caption ({missing[0]} …)"
            )
        model = embedding_model if embedding_model is not None else settings.GUARDTRACE_EMBEDDING_MODEL
        try:
            scores = embedding.similarities(
                model, [q.text for q in queries], [p.caption for p in pool_images]
            )
        except embedding.EmbeddingError as exc:
            raise ExpansionError(f"aligned_image: {exc}") from None
        aligned_choice = [(int(row.argmax()), float(row.max())) for row in scores]
    font = ""
    if "typographic" in kinds:
        try:
            font = resolve_font_path(typography.font_path)
        except TypographyError as exc:
            raise ExpansionError(f"typographic: {exc}") from None
    report = ExpansionReport()
    planned: list[tuple[SeedQuery, str, str, ImageAsset | None, dict]] = []
    for index, query in enumerate(queries):
        for kind in kinds:
            if kind == "text_only":
                planned.append((query, kind, query.text, None, {"from": "seed"}))
            elif kind == "irrelevant_image":
                drawn = draw_irrelevant(query.text, len(irrelevant), rng_seed)
                entry = irrelevant[drawn]
                planned.append((query, kind, query.text, entry.image,
                                {"pool": irrelevant_pool.name, "rng_seed": rng_seed, "drawn": drawn,  # type: ignore[union-attr]
                                 "of": len(irrelevant)}))  # fmt: skip
            elif kind == "aligned_image":
                best, score = aligned_choice[index]
                entry = pool_images[best]
                planned.append((query, kind, query.text, entry.image,
                                {"pool": aligned_pool.name, "caption": entry.caption, "similarity": round(score, 4),  # type: ignore[union-attr]
                                 "model": str(model)}))  # fmt: skip
            else:
                # Rendered only when this recipe (the request, the options, the font) has no variant yet.
                recipe = {"typography": typography.as_dict(), "font": font}
                planned.append((query, kind, FIGSTEP_INSTRUCTION, None, recipe))
    rows = {
        (query.pk, key): Variant(
            seed=query, kind=kind, text=text, image=image, derivation=derivation, key=key
        )
        for query, kind, text, image, derivation in planned
        for key in [_key(kind, text if kind != "typographic" else f"{text}\n{query.text}", image, derivation)]
    }
    existing: set[tuple[int, str]] = set()
    seed_ids = sorted({query.pk for query in queries})
    for start in range(0, len(seed_ids), CHUNK):
        existing.update(
            Variant.objects.filter(seed_id__in=seed_ids[start : start + CHUNK]).values_list("seed_id", "key")
        )
    new = [variant for pair, variant in rows.items() if pair not in existing]
    _render_all([variant for variant in new if variant.kind == "typographic"], typography, drawing)
    with transaction.atomic():
        # A concurrent expansion of the same recipe may have written some meanwhile: the constraint keeps one.
        Variant.objects.bulk_create(new, batch_size=CHUNK, ignore_conflicts=True)
    report.created, report.kept = len(new), len(rows) - len(new)
    for variant in new:
        report.by_kind[variant.kind] = report.by_kind.get(variant.kind, 0) + 1
    return report


PARALLEL_RENDER_FROM = 200  # typographic images; fewer are drawn here, more by one process per core


def drawing_processes() -> ProcessPoolExecutor | None:
    """One process per core (at most 8) to draw typographic images in, or None on one core."""
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2:
        return None
    # Spawned, not forked: the caller may be a threaded worker; the children only import Pillow code.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _render_all(variants: list[Variant], options: TypographyOptions, drawing: Executor | None = None) -> None:
    texts = [variant.seed.text for variant in variants]
    try:
        if drawing is not None and len(texts) >= PARALLEL_RENDER_FROM:
            drawn = list(drawing.map(render_typographic, texts, repeat(options), chunksize=64))
        elif len(texts) >= PARALLEL_RENDER_FROM and (own := drawing_processes()) is not None:
            with own:
                drawn = list(own.map(render_typographic, texts, repeat(options), chunksize=64))
        else:
            drawn = [render_typographic(text, options) for text in texts]
    except TypographyError as exc:
        raise ExpansionError(f"typographic: {exc}") from None
    for variant, (png, info_drawn) in zip(variants, drawn, strict=True):
        # Drawn here, so known: no need to decode it again to check it.
        info = ImageInfo(hashlib.sha256(png).hexdigest(), options.width, options.height, "PNG", len(png))
        variant.image = image_store(png, info)
        variant.derivation = {**variant.derivation, **info_drawn}


def variant_attach(*, seed: SeedQuery, data: bytes, text: str = "", user=None) -> Variant:
    """An aligned image chosen by hand for a seed (attached again, the same image and text give the same variant)."""
    try:
        asset = image_store(data)
    except ImageRejected as exc:
        raise ExpansionError(f"image: {exc}") from None
    derivation = {"by_hand": getattr(user, "username", "") or "unknown"}
    variant, _ = Variant.objects.get_or_create(
        seed=seed, key=_key("aligned_image", text or seed.text, asset, derivation),
        defaults={"kind": "aligned_image", "text": text or seed.text, "image": asset, "derivation": derivation},
    )  # fmt: skip
    return variant


# Seeds expanded (and written) per step of a queued expansion; its progress moves by as much.
EXPANSION_CHUNK = 2000
# An expansion with no progress for this long is taken to have lost its worker, wherever it ran (one whose worker
# died on this host is noticed at once: its process is gone).
EXPANSION_LEASE_S = 600


def expansion_options(parameters: dict) -> dict:
    """expand()'s keyword arguments from a queued expansion's parameters: the pools looked up, the typography
    settled, and every setting checked (ExpansionError naming the one to fix) before anything is written."""
    kinds = list(parameters.get("kinds") or [])
    if not kinds:
        raise ExpansionError("kinds: choose at least one kind of variant")
    if unknown := [k for k in kinds if k not in EXPANSIONS]:
        raise ExpansionError(
            f"kinds: {', '.join(unknown)} cannot be expanded to; use {', '.join(EXPANSIONS)}"
        )
    pools: dict[str, ImagePool | None] = {}
    for field_name, kind in (("irrelevant_pool", "irrelevant_image"), ("aligned_pool", "aligned_image")):
        pool_id = parameters.get(field_name)
        pools[field_name] = ImagePool.objects.filter(pk=pool_id).first() if pool_id else None
        if pool_id and pools[field_name] is None:
            raise ExpansionError(f"{field_name}: image pool #{pool_id} no longer exists")
        if kind in kinds:
            _pool_images(pools[field_name], kind)
    typography = TypographyOptions(**settings.GUARDTRACE_FIGSTEP)  # type: ignore[arg-type]
    if size := parameters.get("font_size"):
        options = {**settings.GUARDTRACE_FIGSTEP, "font_size": int(size)}
        typography = TypographyOptions(**options, min_size=min(18, int(size)))  # type: ignore[arg-type]
    if "typographic" in kinds:
        try:
            resolve_font_path(typography.font_path)
        except TypographyError as exc:
            raise ExpansionError(f"typographic: {exc}") from None
    if "aligned_image" in kinds:
        try:
            embedding.check_model(settings.GUARDTRACE_EMBEDDING_MODEL)
        except embedding.EmbeddingError as exc:
            raise ExpansionError(f"aligned_image: {exc}") from None
    return {
        "kinds": kinds,
        "rng_seed": int(parameters.get("rng_seed") or 0),
        "typography": typography,
        **pools,
    }


def expansion_create(
    *, seed_sets: list[SeedSet], parameters: dict, user=None, enqueue: bool = True
) -> Expansion:
    """Check the settings now (ExpansionError), then queue the expansion for a worker."""
    if not seed_sets:
        raise ExpansionError("seed sets: none selected")
    expansion_options(parameters)
    total = SeedQuery.objects.filter(seed_set__in=seed_sets).count()
    if not total:
        raise ExpansionError("seeds: the selected sets hold no queries")
    with transaction.atomic():
        expansion = Expansion.objects.create(parameters=parameters, total=total, created_by=user)
        expansion.seed_sets.set(seed_sets)
        if enqueue:
            transaction.on_commit(lambda: enqueue_expansion(expansion.pk))
    return expansion


def expansion_cancel(expansion: Expansion) -> bool:
    """Stop an expansion after its current chunk (a queued one never starts); the variants made so far are kept."""
    return Expansion.cancel(expansion.pk)


def expansion_requeue(expansion: Expansion) -> bool:
    """Queue a stopped expansion again; it starts over and keeps what is there already (expanding is idempotent)."""
    if not Expansion.requeue(expansion.pk):
        return False
    transaction.on_commit(lambda: enqueue_expansion(expansion.pk))
    return True


def enqueue_expansion(expansion_id: int) -> None:
    from generation.tasks import expansion_task

    expansion_task.delay(expansion_id)


def expansion_work(expansion_id: int, *, chunk: int = EXPANSION_CHUNK) -> Expansion:
    """Expand the seeds of a queued expansion chunk by chunk, recording progress after each; stops when it is
    cancelled. A rerun (a redelivered message) starts over and finds what was made already there."""
    expansion = Expansion.objects.get(pk=expansion_id)
    ids = list(
        SeedQuery.objects.filter(seed_set__in=expansion.seed_sets.all())
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    # Taken only when waiting, or when the worker on it has made no progress within the lease (it died); the holder
    # is recorded so that a worker starting on this host can tell at once that it died.
    if not Expansion.take(
        expansion_id, stale_before=_stale(), total=len(ids), done=0, created=0, kept=0, by_kind={}
    ):
        return Expansion.objects.get(pk=expansion_id)
    drawing = None
    try:
        options = expansion_options(expansion.parameters)
        if "typographic" in options["kinds"] and len(ids) >= PARALLEL_RENDER_FROM:
            drawing = drawing_processes()  # started once for every chunk
        by_kind: dict[str, int] = {}
        for start in range(0, len(ids), chunk):
            if not Expansion.beat(expansion_id):  # cancelled, or taken over
                return Expansion.objects.get(pk=expansion_id)
            part = ids[start : start + chunk]
            report = expand(SeedQuery.objects.filter(pk__in=part).order_by("pk"), drawing=drawing, **options)
            for kind, n in report.by_kind.items():
                by_kind[kind] = by_kind.get(kind, 0) + n
            Expansion.beat(
                expansion_id, done=F("done") + len(part), created=F("created") + report.created,
                kept=F("kept") + report.kept, by_kind=by_kind,
            )  # fmt: skip
    except ExpansionError as exc:
        _expansion_finish(expansion_id, JobStatus.FAILED, str(exc))
    except Exception as exc:
        connection_recover()  # a dropped database connection would fail the write that records the failure too
        _expansion_finish(expansion_id, JobStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    else:
        _expansion_finish(expansion_id, JobStatus.SUCCEEDED)
    finally:
        if drawing is not None:
            drawing.shutdown()
    return Expansion.objects.get(pk=expansion_id)


def _expansion_finish(expansion_id: int, status: str, error: str = "") -> None:
    Expansion.end(expansion_id, status, error=error)


def _stale():
    return timezone.now() - timedelta(seconds=EXPANSION_LEASE_S)


def expansions_resume(*, host: str | None = None) -> list[int]:
    """Queue again the expansions a dead worker left unfinished — on this host, one whose process is gone; anywhere
    (or held by no recorded worker), one with no progress within EXPANSION_LEASE_S — and the pending ones, whose
    message may be lost. A rerun starts over and keeps what the dead worker committed (expanding is idempotent).
    Called when a worker starts; returns the expansions queued."""
    # Progress, not the start, tells a live expansion from a dead one elsewhere: a large one runs past the lease.
    return requeue_abandoned(Expansion, enqueue=enqueue_expansion, host=host, stale_before=_stale())
