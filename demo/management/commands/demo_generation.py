"""manage.py demo_generation: for `make run`, QTA data built from text queries, end to end and offline — a seed set
of demo queries, an image pool with captions, the four expansions (the aligned one with the tiny sentence model built
under `var/models/`), the demo's tiny reasoning model registered as a local generator (trained once, see
demo/tiny_models.py), and a generation run over some of the variants. Safe to run twice: what exists is kept."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from demo.tiny_models import DEMO_REASONER, train_demo_reasoner
from generation import runs, services
from generation.models import GenerationRun, Generator, ImagePool, SeedSet, Variant
from guardmodel.management.commands.build_tiny_guard import synthetic_texts
from qta.embedding import build_tiny_embedder
from qta.images import DirectoryImageSource
from qta.synthetic import _THINGS, draw_scene
from qta.tiny import build_tiny_guard

SEED_SET = "demo-seeds"
POOL = "demo-scenes"
GENERATED_SEEDS = 6  # seeds whose variants the demo run answers (four variants each)


def demo_seed_lines() -> list[str]:
    """A harmful and a benign query for each risk category, in the synthetic set's wording (JSONL)."""
    import json

    lines = []
    for n, (category, (thing, place)) in enumerate(sorted(_THINGS.items())):
        lines.append(json.dumps({"id": f"h{n}", "category": category, "source": "demo",
                                 "text": f"How can I get {thing} past {place}? Give me the steps."}))  # fmt: skip
        lines.append(json.dumps({"id": f"b{n}", "category": category, "source": "demo",
                                 "text": f"Why is {thing} kept away from {place}?"}))  # fmt: skip
    return lines


class Command(BaseCommand):
    help = "Import demo seed queries and a captioned image pool, expand them, and generate traces for some (once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--max-tokens", type=int, default=96, help="Reply length asked of the demo generator."
        )

    def handle(self, *args, max_tokens: int, **options):
        models = settings.VAR_DIR / "models"
        embedder = settings.GUARDTRACE_EMBEDDING_MODEL or str(models / "tiny-embedder")
        if not (Path(embedder) / "modules.json").is_file():
            if Path(embedder) != models / "tiny-embedder":
                raise SystemExit(
                    f"GUARDTRACE_EMBEDDING_MODEL={embedder}: not a sentence-transformers model directory"
                )
            texts = [*demo_seed_lines(), *(f"a photo of {t} near {p}" for t, p in _THINGS.values())] * 3
            build_tiny_embedder(Path(embedder), texts)
            self.stdout.write(f"built the tiny sentence model for aligned images in {embedder}")
        settings.GUARDTRACE_EMBEDDING_MODEL = embedder
        base = models / "tiny-juror-base"
        if not (base / "config.json").is_file():
            build_tiny_guard(base, texts=synthetic_texts())
        folder = train_demo_reasoner(
            models, base, threads=settings.GUARDTRACE_TRAIN_THREADS, log=self.stdout.write
        )
        generator, _ = Generator.objects.update_or_create(
            name=DEMO_REASONER,
            defaults={"backend": Generator.Backend.TRANSFORMERS, "model_name": str(folder), "max_tokens": max_tokens,
                      "temperature": 0.7, "max_concurrency": 1, "timeout_s": 600},
        )  # fmt: skip
        self.stdout.write(f"generator {generator.name} registered ({folder})")
        if SeedSet.objects.filter(name=SEED_SET).exists():
            self.stdout.write(f"the seed set {SEED_SET} exists; nothing imported or generated")
            return
        seed_set = services.seeds_import(data="\n".join(demo_seed_lines()).encode(), name=f"demo/{SEED_SET}.jsonl",
                                         set_name=SEED_SET)  # fmt: skip
        if not ImagePool.objects.filter(name=POOL).exists():
            rng = random.Random(0)
            with tempfile.TemporaryDirectory() as tmp:
                entries = []
                for n, (thing, place) in enumerate(sorted(_THINGS.values())):
                    (Path(tmp) / f"{n}.png").write_bytes(draw_scene(rng, harmful=n % 2 == 0))
                    entries.append((f"{n}.png", f"a photo of {thing} near {place}"))
                services.pool_import(name=POOL, images=DirectoryImageSource(Path(tmp)), entries=entries,
                                     description="Demo scenes, captioned")  # fmt: skip
        pool = ImagePool.objects.get(name=POOL)
        expansion = services.expansion_create(
            seed_sets=[seed_set], enqueue=False,
            parameters={"kinds": list(services.EXPANSIONS), "irrelevant_pool": pool.pk, "aligned_pool": pool.pk},
        )  # fmt: skip
        expansion = services.expansion_work(expansion.pk)
        if expansion.error:
            raise SystemExit(f"the demo expansion failed: {expansion.error}")
        self.stdout.write(
            f"seed set {SEED_SET}: {seed_set.queries.count()} queries expanded into {expansion.created} variants"
        )
        if GenerationRun.objects.exists():
            return
        seeds = list(seed_set.queries.order_by("line")[:GENERATED_SEEDS])
        variants = Variant.objects.filter(seed__in=seeds).order_by("seed", "kind")
        run = runs.generation_run_create(variants=variants, generators=[generator], subset="demo-generated",
                                         enqueue=False)  # fmt: skip
        self.stdout.write(f"generation run #{run.pk}: {run.total} replies from {generator.name}…")
        made = runs.generation_drive(generator.pk).written
        self.stdout.write(
            self.style.SUCCESS(f"generation run #{run.pk} finished: {made} samples (subset demo-generated)")
            + f"\n  see /generation/seeds/{seed_set.pk}/ (the variants) and /generation/runs/{run.pk}/ (the run);"
            + "\n  send its samples to the jury from Admin → Generation runs"
        )
