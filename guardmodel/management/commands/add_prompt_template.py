from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from guardmodel.prompts import TemplateError, prompt_template_create


class Command(BaseCommand):
    help = (
        "Store a prompt template from a system-prompt file (for example your copy of a released guard's prompt) "
        "and print its version, which checkpoints and jurors name with --prompt-version."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Lower-case letters, digits, '_' or '.'; at most 19 characters.")
        parser.add_argument("system_prompt_file", type=Path)
        parser.add_argument(
            "--layout", choices=["tagged", "release"], default="tagged",
            help="User turn: tagged (this app's) or release (Current Task Query / Thinking / Cleaned Response).",
        )  # fmt: skip
        parser.add_argument("--variant", choices=["qta", "qa"], default="qta")

    def handle(self, *args, **o):
        path: Path = o["system_prompt_file"]
        try:
            if path.stat().st_size > 400_000:  # checked before reading: the limit is 100,000 characters
                raise CommandError(f"{path}: over 400 kB; a system prompt is at most 100,000 characters")
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from exc
        try:
            row = prompt_template_create(
                name=o["name"],
                system_prompt=data,
                variant=o["variant"],
                layout=o["layout"],
                source_file=path.name,
            )
        except TemplateError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(row.version)
