"""manage.py launch_round --stage sft|dpo|ogdpo (--base NAME | --parent RUN|latest) [--snapshot ID|FILE]
[--set key=value …] [--tiny] [--sync]: the admin's "New … round" from the command line, with the same checks."""

from __future__ import annotations

import json
from dataclasses import fields

from django.core.management.base import BaseCommand, CommandError

from guardmodel.models import GuardCheckpoint
from qta.hyper import Hyperparameters
from training import services
from training.models import PARENT_STAGE, DatasetSnapshot, Stage, TrainingRun

_TYPES = {f.name: f.type for f in fields(Hyperparameters)}


def _no_constant(name: str) -> None:
    raise CommandError(f"--set: {name} is not a number a hyperparameter can take")


def _override(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or key not in _TYPES:
        raise CommandError(f"--set {text!r}: expected key=value with a key of {', '.join(sorted(_TYPES))}")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        value = raw  # a bare word: a string value
    return key, value


def _parent(given: str, stage: str) -> TrainingRun:
    if given == "latest":
        wanted = PARENT_STAGE.get(Stage(stage))
        runs = TrainingRun.objects.filter(stage=wanted, status=TrainingRun.Status.SUCCEEDED)
        run = runs.order_by("-created_at", "-pk").first() if wanted else None
        if run is None:
            raise CommandError(f"--parent: no succeeded {wanted or 'parent'} round to follow")
        return run
    run = TrainingRun.objects.filter(pk=int(given)).first() if given.isascii() and given.isdigit() else None
    if run is None:
        raise CommandError(f"--parent: no training run {given!r} (an id, or latest)")
    return run


def _snapshot(given: str, stage: str) -> DatasetSnapshot:
    if given.isascii() and given.isdigit():
        snapshot = DatasetSnapshot.objects.filter(pk=int(given)).first()
    else:
        imported = DatasetSnapshot.objects.filter(stage=stage, manifest__imported_from=given)
        snapshot = imported.order_by("-created_at", "-pk").first()
    if snapshot is None:
        raise CommandError(
            f"--snapshot: no {stage} training set {given!r} (an id, or an imported file's name)"
        )
    return snapshot


class Command(BaseCommand):
    help = "Launch a training round (queued on the gpu worker, or run in this process with --sync)."

    def add_arguments(self, parser):
        parser.add_argument("--stage", required=True, choices=Stage.values)
        origin = parser.add_mutually_exclusive_group(required=True)
        origin.add_argument("--base", help="Checkpoint name the policy starts from (an SFT round).")
        origin.add_argument(
            "--parent",
            help="The previous round (DPO: an SFT run; OGDPO: a DPO run): its id, or `latest` for the newest "
            "succeeded one of that stage.",
        )
        parser.add_argument(
            "--snapshot",
            help="Train on this stored set: its id, or the name of the file it was imported from (the newest "
            "import of that file for this stage).",
        )
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="A hyperparameter."
        )
        parser.add_argument("--tiny", action="store_true", help="The preset for tiny offline checkpoints.")
        parser.add_argument(
            "--sync", action="store_true", help="Train in this process instead of the worker."
        )

    def handle(self, *args, **o):
        base = parent = snapshot = None
        if o["base"]:
            base = GuardCheckpoint.objects.filter(name=o["base"]).first()
            if base is None:
                raise CommandError(f"--base: no checkpoint named {o['base']!r}")
        if o["parent"] is not None:
            parent = _parent(o["parent"], o["stage"])
        if o["snapshot"] is not None:
            snapshot = _snapshot(o["snapshot"], o["stage"])
        overrides = dict(_override(text) for text in o["set"])
        try:
            run = services.training_run_launch(
                stage=o["stage"], base_checkpoint=base, parent=parent, snapshot=snapshot, tiny=o["tiny"],
                hyperparameters=overrides, enqueue=not o["sync"],
            )  # fmt: skip
        except services.TrainingError as exc:
            raise CommandError(str(exc)) from None
        if not o["sync"]:
            self.stdout.write(f"{run} queued; follow it at /training/runs/{run.pk}/")
            return
        outcome = services.training_run_execute(run_id=run.pk)
        run.refresh_from_db()
        checkpoint = run.output_checkpoint
        cut = run.truncation.get("cut", 0)
        self.stdout.write(
            f"{run}: {outcome}, {run.step} steps, loss {'—' if run.loss is None else f'{run.loss:.4g}'}; "
            f"{cut} record(s) cut to the {run.hyperparameters.get('max_length')}-token budget"
            + (
                f"; checkpoint {checkpoint.name} (asked with {checkpoint.prompt_version})"
                if checkpoint
                else ""
            )
        )
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(run.error.splitlines()[-1] if run.error else f"{run} {run.status}")
