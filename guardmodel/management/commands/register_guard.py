from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from guardmodel import services
from qta.loading import CheckpointError


class Command(BaseCommand):
    help = "Register a guard checkpoint: a local directory (checked now) or an OpenAI-compatible endpoint."

    def add_arguments(self, parser):
        parser.add_argument("name")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--path", default="")
        source.add_argument("--endpoint", default="", help="Base URL, e.g. http://gpu-host:8000/v1")
        parser.add_argument(
            "--replica",
            action="append",
            default=[],
            metavar="URL",
            help="Another base URL serving the same model (a vLLM replica); repeat for more. Requests are spread "
            "over the endpoint and its replicas.",
        )
        parser.add_argument("--served-model", default="", help="Model name the endpoint serves.")
        parser.add_argument("--api-key-env", default="", help="Environment variable holding the API key.")
        parser.add_argument("--base-model", default="")
        parser.add_argument("--activate", action="store_true")
        parser.add_argument(
            "--prompt-version", default="qta-v1",
            help="The template it is asked with: qta-v1, qa-v1, or a version add_prompt_template printed.",
        )  # fmt: skip
        parser.add_argument("--max-new-tokens", type=int, default=None)
        parser.add_argument("--max-input-tokens", type=int, default=None, help="Input budget in tokens.")
        parser.add_argument("--sampling", action="store_true", help="Sample instead of greedy decoding.")
        parser.add_argument(
            "--release-settings", action="store_true",
            help="The GuardTrace-VL release's generation settings: greedy, 2,000 new tokens, inputs cut at 8,192 "
            "(a local checkpoint; an endpoint's inputs are bounded by its server).",
        )  # fmt: skip

    def handle(self, *args, **o):
        generation = {"max_new_tokens": o["max_new_tokens"], "max_input_tokens": o["max_input_tokens"],
                      "greedy": not o["sampling"]}  # fmt: skip
        if o["release_settings"]:
            generation.update(services.release_settings(endpoint=bool(o["endpoint"])))
        try:
            checkpoint = services.checkpoint_register(
                name=o["name"], path=o["path"], endpoint=o["endpoint"], replicas=o["replica"],
                served_model=o["served_model"], api_key_env=o["api_key_env"], base_model=o["base_model"],
                activate=o["activate"],
                prompt_version=o["prompt_version"], **generation,
            )  # fmt: skip
        except CheckpointError as exc:
            raise CommandError(str(exc)) from exc
        except IntegrityError as exc:
            raise CommandError(f"a checkpoint named {o['name']!r} already exists") from exc
        active = " (active)" if checkpoint.is_active else ""
        servers = f", served by {len(checkpoint.base_urls)} replicas" if len(checkpoint.base_urls) > 1 else ""
        self.stdout.write(
            f"registered {checkpoint.name}{active}, asked with {checkpoint.prompt_version}{servers}"
        )
