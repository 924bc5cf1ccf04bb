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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat

from django.conf import settings
from django.db import transaction

from annotation.formats import RecordError
from annotation.images import ImageInfo, ImageRejected, ImageSource, inspect_image
from annotation.models import ImageAsset, InputVariant
from annotation.services import ImportRejected, image_store
from generation import embedding, seeds
from generation.models import ImagePool, PoolImage, SeedQuery, SeedSet, Variant
from generation.typography import (
    FIGSTEP_INSTRUCTION,
    TypographyError,
    TypographyOptions,
    render_typographic,
    resolve_font_path,
)

EXPANSIONS = (InputVariant.TEXT_ONLY, InputVariant.IRRELEVANT_IMAGE, InputVariant.ALIGNED_IMAGE,
              InputVariant.TYPOGRAPHIC)  # fmt: skip


CHUNK = 1000


class ExpansionError(ValueError):
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
    rows: list[seeds.SeedRow] = []
    errors: list[RecordError] = []
    checked: dict[int, tuple[bytes, ImageInfo]] = {}
    for item in seeds.parse_seeds(data, name=name, fmt=fmt, pairs=bool(pairs)):
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
    *, name: str, images: ImageSource, entries: list[tuple[str, str]], description: str = ""
) -> ImagePool:
    """An image pool (new, or added to) from (relative path, caption) entries read from `images`; every image is
    checked first, and on any error nothing is stored."""
    errors, checked = [], []
    for index, (relative, caption) in enumerate(entries, start=1):
        try:
            data = images.read(relative, max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES)
            info = inspect_image(data, max_pixels=settings.GUARDTRACE_MAX_IMAGE_PIXELS,
                                 max_bytes=settings.GUARDTRACE_MAX_IMAGE_BYTES)  # fmt: skip
        except ImageRejected as exc:
            errors.append(RecordError(name, index, "image", f"{relative}: {exc}"))
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
    embedding_model: str | None = None,
) -> ExpansionReport:  # fmt: skip
    """Make the asked kinds of variant for each seed (see EXPANSIONS); checks everything before writing."""
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
    _render_all([variant for variant in new if variant.kind == "typographic"], typography)
    with transaction.atomic():
        # A concurrent expansion of the same recipe may have written some meanwhile: the constraint keeps one.
        Variant.objects.bulk_create(new, batch_size=CHUNK, ignore_conflicts=True)
    report.created, report.kept = len(new), len(rows) - len(new)
    for variant in new:
        report.by_kind[variant.kind] = report.by_kind.get(variant.kind, 0) + 1
    return report


PARALLEL_RENDER_FROM = 200  # typographic images; fewer are drawn here, more by one process per core


def _render_all(variants: list[Variant], options: TypographyOptions) -> None:
    texts = [variant.seed.text for variant in variants]
    workers = min(os.cpu_count() or 1, 8)
    try:
        if len(texts) >= PARALLEL_RENDER_FROM and workers > 1:
            # Spawned, not forked: the caller may be a threaded worker; the children only import Pillow code.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                drawn = list(pool.map(render_typographic, texts, repeat(options), chunksize=64))
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
    """An aligned image chosen by hand for a seed."""
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
