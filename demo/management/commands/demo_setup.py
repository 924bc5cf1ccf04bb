"""manage.py demo_setup: demo users (printed) and a synthetic demo set, for `make run`. Safe to run twice."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from annotation import services
from annotation.models import Sample
from common.roles import ADMIN, EXPERT, REVIEWER
from experts.services import expert_queue_send
from qta.images import DirectoryImageSource
from qta.synthetic import generate

DEMO_QUEUE = 12
DEMO_USERS = (
    ("admin", "admin-demo-pass", (ADMIN,), True),
    ("expert", "expert-demo-pass", (EXPERT,), False),
    ("reviewer", "reviewer-demo-pass", (REVIEWER,), False),
)


class Command(BaseCommand):
    help = "Create demo users and import a synthetic demo set (only when the database has no samples)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--count", type=int, default=400)

    def handle(self, *args, count: int, **options):
        User = get_user_model()
        for username, password, roles, staff in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = staff
                user.save()
                user.groups.set(Group.objects.filter(name__in=roles))
                self.stdout.write(f"created demo user {username} / {password} ({', '.join(roles)})")
            else:
                self.stdout.write(f"demo user {username} exists (password {password} unless changed)")
        if Sample.objects.exists():
            self.stdout.write(f"{Sample.objects.count()} samples already stored; no demo import")
            return
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            generate(folder, count=count, seed=0)
            report = services.samples_import(
                data=(folder / "samples.jsonl").read_bytes(),
                name="demo/samples.jsonl",
                fmt="jsonl",
                images=DirectoryImageSource(folder),
            )
        self.stdout.write(self.style.SUCCESS(f"imported {report.created} synthetic demo samples"))
        # Something for the demo expert to label: a dozen samples sent to the expert queue, as a reviewer would.
        reviewer = User.objects.get(username="reviewer")
        for sample in Sample.objects.filter(split="train").order_by("id")[:DEMO_QUEUE]:
            expert_queue_send(sample=sample, user=reviewer, note="Demo: try the expert queue on these.")
        self.stdout.write(
            f"sent {DEMO_QUEUE} demo samples to the expert queue (log in as expert, open Expert queue)"
        )
