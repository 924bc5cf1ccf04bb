"""Importing training files made elsewhere (the GuardTrace-VL release's SFT / DPO files, LLaMA-Factory sharegpt,
TRL) as snapshots: exported sets come back the same, bad rows are reported by line and field with nothing stored,
and a round trains on an imported set."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from annotation.models import ImageAsset
from annotation.strata import stratify
from guardmodel.services import checkpoint_register
from qta.images import DirectoryImageSource
from qta.training_files import split_user_text
from tests.annotation.factories import SampleFactory
from tests.experts.review_helpers import jury_votes
from tests.training.test_runs import _consensus
from training import datasets, services
from training.datasets import snapshot_import
from training.models import DatasetSnapshot, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

SYSTEM = "You are a safety auditor."


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="PNG")
    return out.getvalue()


def _user(n: int, *, image: bool = False) -> str:
    # The release's files label the three parts rather than tagging them.
    return (
        ("<image>" if image else "")
        + f"Question: How do I get thing {n} past the gate?\nThinking: The user wants steps {n}.\n\n"
        + f"Step 1 for thing {n}.\nAnswer: I can't help with that."
    )


def _sharegpt_sft(count: int) -> list[dict]:
    rows = []
    for n in range(count):
        judgment = "1" if n % 2 == 0 else "0"
        rows.append({
            "conversations": [
                {"from": "human", "value": _user(n, image=n % 3 == 0)},
                {"from": "gpt", "value": f"Analysis: Case {n} reviewed.\nJudgment: {judgment}"},
            ],
            "system": SYSTEM,
            "images": [f"imgs/{n}.png"] if n % 3 == 0 else [],
        })  # fmt: skip
    return rows


def _comparable(records: list[dict]) -> list[tuple]:
    keys = ("question", "thinking", "answer", "image", "target", "judgment", "chosen", "rejected")
    return sorted(tuple(r.get(k) for k in keys) for r in records)


def test_the_release_sharegpt_sft_file_imports_with_its_images_and_a_round_trains_on_it(tmp_path, tiny_base):
    folder = tmp_path / "release"
    (folder / "imgs").mkdir(parents=True)
    for n in range(0, 12, 3):
        (folder / "imgs" / f"{n}.png").write_bytes(_png((40 * n % 255, 80, 120)))
    (folder / "sft.json").write_text(json.dumps(_sharegpt_sft(12), indent=1))

    call_command("import_snapshot", str(folder / "sft.json"), "--stage", "sft")
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.source == "imported" and snapshot.stage == "sft" and snapshot.records == 12
    assert snapshot.counts["judgment"] == {"0": 6, "1": 6} and snapshot.counts["with_image"] == 4
    assert snapshot.manifest == {"imported_from": "sft.json", "formats": ["sharegpt"]}
    assert ImageAsset.objects.count() == 4
    records = {r["source_line"]: r for r in datasets.snapshot_records(snapshot)}
    first = records[min(records)]
    assert first["question"] == "How do I get thing 0 past the gate?"
    assert first["thinking"] == "The user wants steps 0.\n\nStep 1 for thing 0."
    assert first["answer"] == "I can't help with that."
    assert first["target"] == "Analysis: Case 0 reviewed.\nJudgment: 1" and first["image"]
    # The same file again is the same snapshot.
    call_command("import_snapshot", str(folder / "sft.json"), "--stage", "sft")
    assert DatasetSnapshot.objects.count() == 1

    base = checkpoint_register(name="tiny-base", path=str(tiny_base), base_model="tiny")
    run = services.training_run_launch(stage="sft", base_checkpoint=base, snapshot=snapshot, tiny=True,
                                       hyperparameters={"epochs": 1.0}, enqueue=False)  # fmt: skip
    assert services.training_run_execute(run_id=run.pk) == "succeeded", TrainingRun.objects.get(
        pk=run.pk
    ).error
    run.refresh_from_db()
    assert run.snapshot == snapshot and run.step == run.max_steps > 0 and run.output_checkpoint is not None

    # A DPO round cannot take an SFT set, and an imported DPO round leaves nothing to mine.
    with pytest.raises(services.TrainingError, match="trains SFT rounds, not DPO ones"):
        services.training_run_launch(stage="dpo", parent=run, snapshot=snapshot, enqueue=False)


def test_bad_rows_are_reported_by_line_and_field_and_nothing_is_stored(tmp_path):
    good = {
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _user(1)}],
        "chosen": [{"role": "assistant", "content": "Analysis: Steps.\nJudgment: 1"}],
        "rejected": [{"role": "assistant", "content": "Analysis: Fine.\nJudgment: 0"}],
        "images": ["pic.png"],
    }
    lines = [
        json.dumps(good),
        '{"prompt": [',
        json.dumps({k: v for k, v in good.items() if k != "rejected"}),
        json.dumps({**good, "chosen": "Analysis: it is bad."}),
        json.dumps({**good, "prompt": [{"role": "user", "content": "Just a question with no parts."}]}),
        json.dumps({**good, "images": ["gone.png"]}),
        json.dumps({**good, "images": ["a.png", "b.png"]}),
        json.dumps({"text": "not a training row"}),
    ]
    (tmp_path / "pic.png").write_bytes(_png((200, 30, 30)))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    before = ImageAsset.objects.count()
    with pytest.raises(CommandError) as caught:
        call_command("import_snapshot", str(tmp_path / "pairs.jsonl"), "--stage", "dpo")
    message = str(caught.value)
    assert "7 error(s); nothing was imported" in message
    assert "pairs.jsonl:2: malformed JSON" in message
    assert "pairs.jsonl:3: rejected: missing: a DPO row needs chosen and rejected" in message
    assert (
        "pairs.jsonl:4: chosen: no Judgment of 0, 0.5 or 1 can be read from 'Analysis: it is bad.'" in message
    )
    assert "pairs.jsonl:5: user turn: no question / reasoning / answer section" in message
    assert "pairs.jsonl:6: images: gone.png:" in message
    assert "pairs.jsonl:7: images: 2 images in one row: a QTA sample has at most one" in message
    assert (
        "pairs.jsonl:8: not a training row: expected conversations, messages, prompt, instruction or question"
        in message
    )
    assert DatasetSnapshot.objects.count() == 0 and ImageAsset.objects.count() == before
    # A one-class SFT file is refused like a built one.
    one_class = [
        row
        for row in _sharegpt_sft(6)
        if not row["images"] and row["conversations"][1]["value"].endswith("1")
    ]
    with pytest.raises(datasets.SnapshotError, match="all harmful"):
        snapshot_import(json.dumps(one_class).encode(), name="one.json", stage="sft")


@pytest.mark.parametrize("fmt", ["trl", "llamafactory"])
def test_an_exported_snapshot_imports_back_as_the_same_training_set(fmt, tmp_path, settings):
    settings.GUARDTRACE_TRAINING_DIR = tmp_path / "training"
    _consensus(6)
    sft = datasets.snapshot_store(datasets.sft_build())
    pair_sample = SampleFactory(split="train", question="Which way past the fence?")
    jury_votes(pair_sample, (1.0, 1.0, 0.0))
    stratify(sample_ids=[pair_sample.pk])
    dpo = datasets.snapshot_store(datasets.dpo_build())
    for stage, snapshot in (("sft", sft), ("dpo", dpo)):
        out = tmp_path / fmt / stage
        data = datasets.snapshot_export(snapshot, out, fmt=fmt)
        back = snapshot_import(
            data.read_bytes(), name=data.name, stage=stage, images=DirectoryImageSource(out)
        )
        assert back.source == "imported" and back.pk != snapshot.pk
        assert _comparable(datasets.snapshot_records(back)) == _comparable(
            datasets.snapshot_records(snapshot)
        )


def test_the_admin_imports_a_training_set_with_a_zip_of_images(client_for, admin_user):
    admin_user.is_superuser = True  # Django admin model permissions
    admin_user.save()
    admin_client = client_for(admin_user)
    rows = _sharegpt_sft(6)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for n in (0, 3):
            zf.writestr(f"imgs/{n}.png", _png((10 * n, 90, 90)))
    archive.seek(0)
    page = admin_client.get("/admin/training/datasetsnapshot/")
    assert "Import a training set" in page.content.decode()
    data = io.BytesIO(json.dumps(rows).encode())
    data.name = "release-sft.json"
    archive.name = "images.zip"
    response = admin_client.post(
        "/admin/training/datasetsnapshot/add/", {"stage": "sft", "data_file": data, "images_archive": archive}
    )
    snapshot = DatasetSnapshot.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/training/snapshots/{snapshot.pk}/"
    assert snapshot.records == 6 and snapshot.counts["with_image"] == 2
    detail = admin_client.get(response["Location"])
    assert detail.status_code == 200 and "release-sft.json" in detail.content.decode()

    # Without the archive the rows naming images are each reported, and nothing more is stored.
    data = io.BytesIO(("[\n" + ",\n".join(json.dumps(row) for row in rows[:4]) + "\n]").encode())
    data.name = "again.json"  # one row per line: rows 0 and 3, with images, are on lines 2 and 5
    page = admin_client.post("/admin/training/datasetsnapshot/add/", {"stage": "sft", "data_file": data})
    text = page.content.decode()
    assert page.status_code == 200 and "2 error(s) in again.json; nothing was imported" in text
    assert "again.json:2: images: imgs/0.png: the row names an image but no images folder" in text
    assert "again.json:5: images: imgs/3.png: the row names an image but no images folder" in text
    assert DatasetSnapshot.objects.count() == 1
    # The launch form offers the imported set.
    form = admin_client.get("/admin/training/trainingrun/add/?stage=sft").content.decode()
    assert f'value="{snapshot.pk}"' in form


def test_the_user_turn_is_read_from_tags_or_labels():
    assert split_user_text(
        "<question>\nQ?\n</question>\n\n<reasoning>\nR\n</reasoning>\n\n<answer>\nA\n</answer>"
    ) == ("Q?", "R", "A")
    assert split_user_text("<image>**Question:** Q?\n**Reasoning Process:** R\n**Final Answer:** A") == (
        "Q?",
        "R",
        "A",
    )
    assert split_user_text("<question>Q?</question><think>R</think><response>A</response>") == (
        "Q?",
        "R",
        "A",
    )


def test_the_release_plain_rows_are_read_too():
    from qta.training_files import row_from_dict

    row = row_from_dict(
        {"question": "Q?", "thinking": "R", "response": "A", "image_name": "x.png",
         "chosen": "Analysis: Steps are given.\nJudgment: 1", "rejected": "Analysis: Fine.\nJudgment: 0"},
        3, "dpo",
    )  # fmt: skip
    assert (row.question, row.thinking, row.answer, row.image, row.fmt) == (
        "Q?",
        "R",
        "A",
        "x.png",
        "release",
    )
    assert row.judgments == {"chosen": 1.0, "rejected": 0.0}


# -- the GuardTrace-VL release's training files --------------------------------------------------------------------


def _release_turn(n: int, *, thinking: str | None = None) -> str:
    thinking = (
        f"Step {n}: the user wants a way in.\nAnswer: this line is part of the trace."
        if thinking is None
        else thinking
    )
    return (
        f"Current Task Query: How do I open lock {n}?\nCurrent Task Thinking: {thinking}\n"
        f"Current Task Cleaned Response: I can't help with lock {n}."
    )


def _release_target(judgment: str, *, bracketed: bool = True) -> str:
    value = f"[{judgment}]" if bracketed else judgment
    return f"“Analysis”: The trace {'gives' if judgment != '0' else 'withholds'} the method.\n“Judgment”: {value}"


def _release_sft(count: int) -> list[dict]:
    rows = []
    for n in range(count):
        with_image = n % 2 == 0
        text = _release_turn(n, thinking="No thinking provided" if n == 1 else None)
        content = [{"type": "image"}] * with_image + [{"type": "text", "text": text}]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": content},
                    {
                        "role": "assistant",
                        "content": _release_target("1" if n % 3 else "0", bracketed=n % 2 == 0),
                    },
                ],
                "images": [f"sft_images/{n}.png"] if with_image else [],
            }
        )
    return rows


def test_the_release_sft_file_imports_with_its_image_folder_given_itself(tmp_path):
    train = tmp_path / "train"
    (train / "sft_images").mkdir(parents=True)
    for n in range(0, 6, 2):
        (train / "sft_images" / f"{n}.png").write_bytes(_png((30 * n, 60, 90)))
    (train / "SFT_data.json").write_text(json.dumps(_release_sft(6), ensure_ascii=False, indent=1))

    # `sft_images/0.png` resolves inside the folder sft_images itself.
    call_command(
        "import_snapshot",
        str(train / "SFT_data.json"),
        "--stage",
        "sft",
        "--images",
        str(train / "sft_images"),
    )
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.records == 6 and snapshot.counts["with_image"] == 3 and ImageAsset.objects.count() == 3
    records = sorted(datasets.snapshot_records(snapshot), key=lambda r: r["source_line"])
    first, second = records[0], records[1]
    assert (first["question"], first["answer"]) == ("How do I open lock 0?", "I can't help with lock 0.")
    assert first["thinking"] == "Step 0: the user wants a way in.\nAnswer: this line is part of the trace."
    assert (
        first["target"] == "Analysis: The trace withholds the method.\nJudgment: 0"
        and first["judgment"] == 0.0
    )
    assert first["image"] == hashlib.sha256(_png((0, 60, 90))).hexdigest()
    assert second["thinking"] == "" and second["image"] is None
    assert second["target"] == "Analysis: The trace gives the method.\nJudgment: 1"


def test_the_admin_imports_the_release_dpo_file_with_a_zip_of_its_image_folder(client_for, admin_user):
    admin_user.is_superuser = True  # Django admin model permissions
    admin_user.save()
    rows = []
    for n in range(4):
        rows.append(
            {
                "prompt": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": _release_turn(n)}],
                    }
                ],
                "chosen": [{"role": "assistant", "content": _release_target("1")}],
                "rejected": [{"role": "assistant", "content": _release_target("0", bracketed=False)}],
                "images": [f"dpo_images/{n}.png"],
            }
        )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:  # zipped from inside the folder: entries 0.png, 1.png, …
        for n in range(4):
            zf.writestr(f"{n}.png", _png((n, 20 * n, 200)))
    archive.seek(0)
    archive.name = "dpo_images.zip"
    data = io.BytesIO(json.dumps(rows).encode())
    data.name = "DPO_data.json"
    response = client_for(admin_user).post(
        "/admin/training/datasetsnapshot/add/", {"stage": "dpo", "data_file": data, "images_archive": archive}
    )
    snapshot = DatasetSnapshot.objects.get()
    assert response.status_code == 302 and snapshot.stage == "dpo" and snapshot.records == 4
    record = sorted(datasets.snapshot_records(snapshot), key=lambda r: r["source_line"])[3]
    assert record["image"] == hashlib.sha256(_png((3, 60, 200))).hexdigest()
    assert (record["chosen_judgment"], record["rejected_judgment"]) == (1.0, 0.0)
    assert record["rejected"] == "Analysis: The trace withholds the method.\nJudgment: 0"


_USER = _release_turn(7)
_TARGET = _release_target("0.5")
_PARTS = [{"type": "image"}, {"type": "text", "text": _USER}]
SFT_SHAPES = {
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": SYSTEM},
            {"from": "human", "value": "<image>" + _USER},
            {"from": "gpt", "value": _TARGET},
        ],
        "images": ["sft_images/a.png"],
    },
    "messages": {
        "messages": [{"role": "user", "content": _PARTS}, {"role": "assistant", "content": _TARGET}],
        "images": ["sft_images/a.png"],
    },
    "trl": {
        "prompt": [{"role": "user", "content": _PARTS}],
        "completion": [{"role": "assistant", "content": _TARGET}],
        "images": ["sft_images/a.png"],
    },
    "path in the image part": {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "image": "sft_images/a.png"}, {"type": "text", "text": _USER}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": _TARGET}]},
        ]
    },
    "alpaca": {
        "instruction": "<image>" + _USER,
        "input": "",
        "output": _TARGET,
        "images": ["sft_images/a.png"],
    },
    "plain": {
        "question": "How do I open lock 7?",
        "thinking": _release_turn(7).split("Thinking: ")[1].split("\nCurrent")[0],
        "response": "I can't help with lock 7.",
        "image_name": "sft_images/a.png",
        "output": _TARGET,
    },
}
_PAIR = {
    "chosen": [{"role": "assistant", "content": _TARGET}],
    "rejected": [{"role": "assistant", "content": _release_target("0")}],
}
DPO_SHAPES = {
    "trl": {"prompt": [{"role": "user", "content": _PARTS}], **_PAIR, "images": ["sft_images/a.png"]},
    "trl implicit prompt": {
        "chosen": [{"role": "user", "content": _PARTS}, {"role": "assistant", "content": _TARGET}],
        "rejected": [
            {"role": "user", "content": _PARTS},
            {"role": "assistant", "content": _release_target("0")},
        ],
        "images": ["sft_images/a.png"],
    },
    "sharegpt": {
        "conversations": [{"from": "human", "value": "<image>" + _USER}],
        "chosen": {"from": "gpt", "value": _TARGET},
        "rejected": {"from": "gpt", "value": _release_target("0")},
        "images": ["sft_images/a.png"],
    },
    "plain": {**SFT_SHAPES["plain"], "output": None, "chosen": _TARGET, "rejected": _release_target("0")},
}


@pytest.mark.parametrize(
    ("stage", "shape"), [("sft", s) for s in SFT_SHAPES] + [("dpo", s) for s in DPO_SHAPES]
)
def test_every_row_shape_reads_as_the_same_sample_and_target(stage, shape):
    from qta.training_files import row_from_dict

    row = row_from_dict((SFT_SHAPES if stage == "sft" else DPO_SHAPES)[shape], 4, stage)
    assert (row.question, row.answer, row.image) == (
        "How do I open lock 7?",
        "I can't help with lock 7.",
        "sft_images/a.png",
    )
    assert row.thinking == "Step 7: the user wants a way in.\nAnswer: this line is part of the trace."
    expected = "Analysis: The trace gives the method.\nJudgment: 0.5"
    if stage == "sft":
        assert row.targets == {"target": expected} and row.judgments == {"target": 0.5}
    else:
        assert row.targets["chosen"] == expected and row.judgments == {"chosen": 0.5, "rejected": 0.0}


def test_bad_release_rows_are_reported_by_line_and_field_and_nothing_is_stored(tmp_path):
    def sft(user_content, target=_TARGET, **extra):
        return {
            "messages": [{"role": "user", "content": user_content}, {"role": "assistant", "content": target}],
            **extra,
        }

    rows = [
        sft(_PARTS, images=["sft_images/a.png"]),
        sft(_PARTS, images=["b.png"]),
        sft(
            [
                {
                    "type": "text",
                    "text": "Current Task Thinking: t\nCurrent Task Query: q\nCurrent Task Cleaned Response: r",
                }
            ]
        ),
        sft(
            "Current Task Query: No question provided\nCurrent Task Thinking: No thinking provided\n"
            "Current Task Cleaned Response: No response provided"
        ),
        sft(_PARTS),
        sft(_USER, target="“Analysis”: It is fine."),
        sft(
            [
                {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}},
                {"type": "text", "text": _USER},
            ]
        ),
        {"question": "q", "thinking": "t", "response": "r", "image_name": 5, "output": _TARGET},
    ]
    archive = tmp_path / "sft_images.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # `zip -r sft_images.zip sft_images`, with b.png in two folders
        for name in ("sft_images/a.png", "sft_images/x/b.png", "sft_images/y/b.png"):
            zf.writestr(name, _png((len(name), 0, 0)))
    (tmp_path / "SFT_data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(CommandError) as caught:
        call_command(
            "import_snapshot", str(tmp_path / "SFT_data.jsonl"), "--stage", "sft", "--images", str(archive)
        )
    lines = str(caught.value).splitlines()
    assert lines == [
        "7 error(s); nothing was imported",
        "SFT_data.jsonl:2: images: b.png: image 'b.png' is ambiguous: archive "
        f"{archive} holds both 'sft_images/x/b.png' and 'sft_images/y/b.png'; give the path inside it",
        "SFT_data.jsonl:3: user turn: the release layout needs Current Task Query:, Current Task Thinking:, "
        "Current Task Cleaned Response: in that order, each at the start of a line",
        "SFT_data.jsonl:4: user turn: the question, the reasoning and the answer are all empty",
        "SFT_data.jsonl:5: images: the user turn has an image part but the row names no image file",
        "SFT_data.jsonl:6: messages: no Judgment of 0, 0.5 or 1 can be read from '“Analysis”: It is fine.'",
        "SFT_data.jsonl:7: messages[0]: an image part must name a file in the images folder or zip, not a URL",
        "SFT_data.jsonl:8: image_name: expected a relative image path or a list of them",
    ]
    assert DatasetSnapshot.objects.count() == 0 and ImageAsset.objects.count() == 0


def test_the_release_user_turn_drops_the_prompts_preamble_and_reads_its_stand_ins():
    text = (
        "Judge the example below.\nQuery: an example's query\n\n" + "Current Task Query: Q?\n"
        "Current Task Thinking: No thinking provided\nCurrent Task Response: No response provided."
    )
    assert split_user_text(text) == ("Q?", "", "")
    assert split_user_text("<image>" + _release_turn(2)) == (
        "How do I open lock 2?",
        "Step 2: the user wants a way in.\nAnswer: this line is part of the trace.",
        "I can't help with lock 2.",
    )
