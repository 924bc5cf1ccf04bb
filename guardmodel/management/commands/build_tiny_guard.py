from __future__ import annotations

import json
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from guardmodel import services
from qta import synthetic
from qta.loading import CheckpointError
from qta.tiny import TinySpec, build_tiny_guard


def synthetic_texts(count: int = 400, seed: int = 0) -> list[str]:
    """The synthetic set's wording, so the tiny tokenizer knows the words the demo and tests use."""
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.generate(Path(tmp), count=count, seed=seed)
        texts = []
        for line in (Path(tmp) / "samples.jsonl").read_text().splitlines():
            record = json.loads(line)
            texts.extend([record["question"], record["thinking"], record["answer"]])
    return texts


class Command(BaseCommand):
    help = "Build a tiny randomly-initialised Qwen2.5-VL guard checkpoint offline (for tests and the demo)."

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--vocab-size", type=int, default=TinySpec.vocab_size)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--register", metavar="NAME", help="Also register it as a guard checkpoint.")
        parser.add_argument("--activate", action="store_true", help="Make the registered checkpoint active.")

    def handle(self, *args, **options):
        out = Path(options["directory"])
        if out.exists() and any(out.iterdir()):
            raise CommandError(f"{out}: directory exists and is not empty")
        spec = TinySpec(vocab_size=options["vocab_size"], seed=options["seed"])
        build_tiny_guard(out, texts=synthetic_texts(), spec=spec)
        self.stdout.write(f"tiny guard written to {out}")
        if options["register"]:
            try:
                checkpoint = services.checkpoint_register(
                    name=options["register"], path=str(out), base_model="tiny-qwen2.5-vl (random)",
                    activate=options["activate"],
                )  # fmt: skip
            except CheckpointError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"registered as {checkpoint.name}{' (active)' if checkpoint.is_active else ''}")
