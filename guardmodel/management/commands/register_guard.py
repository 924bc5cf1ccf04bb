from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from guardmodel import services
from guardmodel.loading import CheckpointError


class Command(BaseCommand):
    help = "Register a guard checkpoint: a local directory (checked now) or an OpenAI-compatible endpoint."

    def add_arguments(self, parser):
        parser.add_argument("name")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--path", default="")
        source.add_argument("--endpoint", default="", help="Base URL, e.g. http://gpu-host:8000/v1")
        parser.add_argument("--served-model", default="", help="Model name the endpoint serves.")
        parser.add_argument("--api-key-env", default="", help="Environment variable holding the API key.")
        parser.add_argument("--base-model", default="")
        parser.add_argument("--activate", action="store_true")

    def handle(self, *args, **o):
        try:
            checkpoint = services.checkpoint_register(
                name=o["name"], path=o["path"], endpoint=o["endpoint"], served_model=o["served_model"],
                api_key_env=o["api_key_env"], base_model=o["base_model"], activate=o["activate"],
            )  # fmt: skip
        except CheckpointError as exc:
            raise CommandError(str(exc)) from exc
        except IntegrityError as exc:
            raise CommandError(f"a checkpoint named {o['name']!r} already exists") from exc
        self.stdout.write(f"registered {checkpoint.name}{' (active)' if checkpoint.is_active else ''}")
