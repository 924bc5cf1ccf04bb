"""The whole loop on the synthetic set, through the real services: import → jury (three jurors and an oracle on a
loopback OpenAI-compatible server) → strata → expert labels (submitted as experts do) → SFT → DPO → OGDPO.

The loopback jurors know the synthetic ground truth and disagree on purpose, so every stratum fills: most samples
3:0, some 2:1 (one juror wrong), some 1:1:1 (all three different). Shared by tests/training and bench/training_loop.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import Group, User
from PIL import Image

from annotation.models import Label, Sample
from annotation.services import samples_import
from annotation.strata import stratify_all
from common.roles import EXPERT
from demo.tiny_models import ANALYSES
from experts.models import ExpertQueueItem, ReviewStatus
from experts.services import ExpertSubmission, expert_label_submit, expert_slot_claim
from guardmodel.services import sample_input
from jury import services as jury_services
from jury.models import Juror
from qta import protocol, synthetic
from qta.engine import AuditInput, EngineOptions, TransformersGuard
from qta.images import DirectoryImageSource
from tests.loopback import user_text

JURORS = ("juror-a", "juror-b", "juror-c")
ORACLE = "oracle"


def _image_is_harmful(body: dict) -> bool | None:
    for message in body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else []:
            if part.get("type") == "image_url":
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                with Image.open(io.BytesIO(data)) as image:
                    red, green, blue = image.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
                return red > green + 60 and red > blue + 60
    return None


class GroundTruthJury:
    """Answers per juror name from the synthetic ground truth: the oracle always right, the jurors split on a
    deterministic share of samples (2:1 with `minority` of them, 1:1:1 with `split` of them)."""

    def __init__(self, records: list[dict], *, minority: float = 0.2, split: float = 0.1):
        self.minority, self.split = minority, split
        self.by_text: dict[str, set[float]] = {}
        for record in records:
            key = protocol.user_text(
                question=record["question"], thinking=record["thinking"], answer=record["answer"]
            )
            self.by_text.setdefault(key, set()).add(record["label"])

    def truth(self, body: dict) -> float:
        text = user_text(body).strip()  # an image part adds an empty text before the words
        labels = self.by_text[text]
        if len(labels) == 1:
            return next(iter(labels))
        return 1.0 if _image_is_harmful(body) else 0.0  # the same words with two scenes: the image decides

    def __call__(self, body: dict) -> str:
        truth = self.truth(body)
        if body["model"] != ORACLE:
            roll = (
                int(hashlib.sha256(user_text(body).encode() + str(truth).encode()).hexdigest()[:8], 16)
                / 16**8
            )
            index = JURORS.index(body["model"])
            others = [v for v in protocol.JUDGMENTS if v != truth]
            if roll < self.split:
                truth = [truth, *others][index]
            elif roll < self.split + self.minority and index == int(roll * 1000) % 3:
                truth = others[int(roll * 10000) % 2]
        return f"Analysis: {ANALYSES[truth]}\nJudgment: {protocol.format_judgment(truth)}"


@dataclass
class World:
    records: list[dict]
    truth: dict[int, float] = field(default_factory=dict)  # sample id → ground truth
    kinds: dict[int, str] = field(
        default_factory=dict
    )  # sample id → reasoning / image / answer / benign / leak


def import_synthetic(folder: Path, *, count: int, seed: int = 0) -> World:
    synthetic.generate(folder, count=count, seed=seed)
    data = (folder / "samples.jsonl").read_bytes()
    samples_import(data=data, name="synthetic", fmt="jsonl", images=DirectoryImageSource(folder))
    records = [json.loads(line) for line in data.decode().splitlines()]
    world = World(records)
    by_external = {r["external_id"]: r for r in records}
    for pk, external in Sample.objects.values_list("pk", "external_id"):
        record = by_external[external]
        world.truth[pk] = record["label"]
        kind = external.rsplit("-", 1)[1]
        # The refused harmful request with a harmless picture: the reasoning case's twin, told apart only by the
        # reasoning (harmful steps there, or a clean refusal).
        world.kinds[pk] = "refusal" if kind == "benign" and record["image"] else kind
    return world


def make_jurors(url: str) -> list[Juror]:
    jurors = [
        Juror.objects.create(name=name, backend=Juror.Backend.OPENAI, model_name=name, base_url=url,
                             timeout_s=10, max_concurrency=8, is_oracle=name == ORACLE)
        for name in (*JURORS, ORACLE)
    ]  # fmt: skip
    return jurors


def run_jury() -> None:
    run = jury_services.jury_run_create(selection={}, enqueue=False)
    for juror in run.jurors.all():
        jury_services.juror_drive(juror.pk)
    stratify_all()


def experts_label(world: World, count: int = 3) -> int:
    """Each expert works the queue as the browser would (claim, submit), answering the ground truth."""
    group, _ = Group.objects.get_or_create(name=EXPERT)
    submitted = 0
    for i in range(count):
        user, _ = User.objects.get_or_create(username=f"loop-expert-{i}")
        user.groups.add(group)
        while (slot := expert_slot_claim(user=user)) is not None:
            truth = world.truth[slot.item.sample_id]
            expert_label_submit(
                slot_id=slot.pk, user=user, token=slot.claim_token,
                submission=ExpertSubmission(judgment=truth, analysis=ANALYSES[truth]),
            )  # fmt: skip
            submitted += 1
    return submitted


def decided_items() -> int:
    return ExpertQueueItem.objects.filter(status=ReviewStatus.DONE).count()


def judge_test_set(
    path: str, *, variant: protocol.Variant = "qta", withhold_image: bool = False
) -> dict[int, float | None]:
    """The checkpoint's judgment of each test sample (None: unreadable), judged directly with the engine."""
    samples = list(Sample.objects.filter(split="test").select_related("image"))
    guard = TransformersGuard(
        path, EngineOptions(max_new_tokens=40, batch_size=16, device="cpu", variant=variant)
    )
    inputs: list[AuditInput] = []
    for sample in samples:
        item = sample_input(sample)
        inputs.append(
            AuditInput(item.question, item.thinking, item.answer, None if withhold_image else item.image)
        )
    return {s.pk: v.judgment for s, v in zip(samples, guard.judge(inputs), strict=True)}


GROUPS = {"reasoning_only": ("reasoning", "refusal"), "image_only": ("image",)}


def accuracy_by_kind(world: World, judged: dict[int, float | None]) -> dict[str, float]:
    """Binary accuracy per kind of case (0.5 counts as harmful; an unreadable answer counts as wrong), and for the
    cases only the reasoning decides (`reasoning_only`) and only the image decides (`image_only`)."""
    hits: dict[str, list[bool]] = {}
    for pk, judgment in judged.items():
        right = judgment is not None and protocol.is_harmful(judgment) == protocol.is_harmful(world.truth[pk])
        hits.setdefault(world.kinds[pk], []).append(right)
        for group, kinds in GROUPS.items():
            if world.kinds[pk] in kinds:
                hits.setdefault(group, []).append(right)
    return {kind: sum(v) / len(v) for kind, v in sorted(hits.items())}


def juror_label_count() -> int:
    return Label.objects.filter(source_kind=Label.SourceKind.JUROR).count()
