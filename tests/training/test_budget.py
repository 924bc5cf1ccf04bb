"""A round's token budget: over-long records lose the middle of their reasoning (image, question, answer and target
whole), counted as TRL's collators count them; a round trains with its base checkpoint's template."""

from __future__ import annotations

import json
import shutil

import pytest

from guardmodel.prompts import prompt_template_create
from guardmodel.services import checkpoint_register
from qta import protocol, runner, training_records
from qta.hyper import HyperparameterError, Hyperparameters, for_stage
from qta.loading import load_processor
from tests.conftest import png_bytes
from tests.training.test_runs import _consensus
from training import services
from training.services import TrainingError

LONG = "BEGINNING of the trace. " + "Then one more step is considered. " * 3000 + "END of the trace."
RELEASE_SYSTEM = "You audit what a model reasoned and answered. Reply with an Analysis and a Judgment."


@pytest.fixture(scope="module")
def processor(tiny_base):
    return load_processor(tiny_base, max_pixels=for_stage("dpo", tiny=True).max_pixels)


def _pair(sample_id: int, **fields) -> dict:
    return {
        "sample_id": sample_id,
        "question": f"Question {sample_id}: how do I open a locked door?",
        "thinking": "The user asks about a door. I think about it.",
        "answer": "Call a locksmith.",
        "chosen": "Analysis: the answer is safe.\nJudgment: 0",
        "rejected": "Analysis: it helps.\nJudgment: 1",
        "target": "Analysis: the answer is safe.\nJudgment: 0",
        **fields,
    }


def _dataset(tmp_path, records: list[dict]):
    path = tmp_path / "dataset.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_record_over_the_budget_is_cut_in_the_middle_of_its_reasoning_with_question_answer_and_image_whole(
    tmp_path, processor
):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    image = tmp_path / "door.png"
    image.write_bytes(png_bytes(size=(112, 112)))
    records = [_pair(1), _pair(2, image_path=str(image)), _pair(3, thinking=LONG, image_path=str(image))]
    assert len(LONG) > 100_000
    hp = for_stage("dpo", tiny=True)
    rows, report = runner.load_rows(_dataset(tmp_path, records), "dpo", hp, processor=processor)

    long_user = rows[2]["prompt"][1]["content"]
    assert "BEGINNING of the trace." in long_user and "END of the trace." in long_user
    assert "tokens of reasoning removed" in long_user and len(long_user) < 10_000
    assert records[2]["question"] in long_user and "<answer>\nCall a locksmith.\n</answer>" in long_user
    assert rows[2]["chosen"][0]["content"] == records[2]["chosen"]  # the targets are never cut
    assert rows[2]["rejected"][0]["content"] == records[2]["rejected"] and len(rows[2]["images"]) == 1
    for short, record in zip(rows[:2], records[:2], strict=True):  # the others are left as they were
        assert short["prompt"] == training_records.prompt_messages(record)
    assert report["max_length"] == 1024 and report["records"] == 3 and report["cut"] == 1
    assert report["removed_total"] == report["removed_max"] > 20_000
    assert report["longest_record"] == "sample #3" and report["longest_tokens"] > 30_000

    # TRL builds each row within the budget, so its own max_length cuts nothing; all 16 image tokens are there.
    batch = DataCollatorForVisionPreference(processor)([dict(row) for row in rows[1:]])
    assert int(batch["attention_mask"].sum(dim=1).max()) <= hp.max_length
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert [int((ids == image_id).sum()) for ids in batch["input_ids"]] == [16, 16, 16, 16]


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_the_counted_length_is_what_trls_collators_build(processor, tmp_path, stage):
    from PIL import Image
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    release = protocol.Template("release_copy", RELEASE_SYSTEM, "qta", "release")
    image = Image.new("RGB", (120, 90), (10, 20, 30))
    records = [_pair(1, thinking="Let me think. " * 40), _pair(2, thinking="")]
    for template in (protocol.QTA_TEMPLATE, release, protocol.QA_TEMPLATE):
        for images in ([], [image]):
            fitter = training_records.RecordBudget(processor, template=template, stage=stage, budget=4096)
            sizes = [(image.height, image.width) if images else None] * len(records)
            for record, (prompt, completion) in zip(records, fitter.lengths(records, sizes), strict=True):
                row = training_records.trl_row(record, stage, images, template=template)
                if stage == "sft":
                    built = DataCollatorForVisionLanguageModeling(processor)([row])["attention_mask"].sum(
                        dim=1
                    )
                else:
                    built = DataCollatorForVisionPreference(processor)([row])["attention_mask"].sum(dim=1)
                assert int(built.max()) == prompt + completion, (template.name, images, record["sample_id"])


def test_a_record_that_cannot_fit_without_its_reasoning_fails_naming_it(tmp_path, processor):
    crowded = _pair(7, answer="Call a locksmith. " * 400, thinking=LONG)
    hp = for_stage("dpo", tiny=True)
    with pytest.raises(
        training_records.RecordTooLong, match=r"sample #7: needs \d+ tokens with all of its reasoning removed"
    ):
        runner.load_rows(_dataset(tmp_path, [_pair(1), crowded]), "dpo", hp, processor=processor)
    fitter = training_records.RecordBudget(
        processor, template=protocol.QTA_TEMPLATE, stage="dpo", budget=hp.max_length
    )
    preview = fitter.preview([_pair(1), _pair(3, thinking=LONG), crowded], [None, None, None])
    assert preview["over"] == 2 and preview["unfit"] == ["sample #7"]


def test_the_budget_defaults_to_the_base_checkpoints_then_the_presets():
    assert for_stage("dpo").max_length == 8192 and for_stage("dpo", tiny=True).max_length == 1024
    assert for_stage("sft", tiny=True, max_input_tokens=900).max_length == 900
    assert for_stage("sft", max_input_tokens=900, max_length=2000).max_length == 2000
    with pytest.raises(HyperparameterError, match="max_length: 10 is not between 64 and 1,000,000 tokens"):
        for_stage("sft", max_length=10)


@pytest.mark.django_db
def test_a_round_trains_with_the_template_its_checkpoint_is_asked_with(tiny_base, processor):
    row = prompt_template_create(name="release_copy", system_prompt=RELEASE_SYSTEM, layout="release")
    base = checkpoint_register(
        name="tiny-release",
        path=str(tiny_base),
        prompt_version=row.version,
        max_new_tokens=64,
        max_input_tokens=900,
        greedy=False,
    )
    _consensus(6)
    run = services.training_run_launch(stage="sft", base_checkpoint=base, tiny=True, enqueue=False)
    assert run.hyperparameters["max_length"] == 900  # the base's input budget, over the tiny preset's
    folder = services.run_dir(run)
    folder.mkdir(parents=True)
    services._write_inputs(run, folder)
    template = training_records.template_from_spec(
        json.loads((folder / "config.json").read_text())["template"]
    )
    assert template is not None and template.version == row.version and template.layout == "release"

    hp = Hyperparameters.from_dict(run.hyperparameters)
    rows, report = runner.load_rows(
        folder / "dataset.jsonl", "sft", hp, processor=processor, template=template
    )
    assert len(rows) == 6 and report["cut"] == 0 and report["max_length"] == 900
    for trained in rows:
        system, user = trained["prompt"]
        assert system == {"role": "system", "content": RELEASE_SYSTEM}
        assert user["content"].startswith("Current Task Query: Question ")
        assert (
            "\nCurrent Task Thinking: " in user["content"]
            and "\nCurrent Task Cleaned Response: " in user["content"]
        )
    # The QA ablation keeps meaning the built-in QA template.
    qa_rows, _ = runner.load_rows(
        folder / "dataset.jsonl",
        "sft",
        for_stage("sft", tiny=True, prompt_variant="qa"),
        processor=processor,
        template=template,
    )
    assert qa_rows[0]["prompt"][0]["content"] == protocol.QA_SYSTEM_PROMPT
    assert "<reasoning>" not in qa_rows[0]["prompt"][1]["content"]

    # The checkpoint the round registers is asked as it was trained.
    shutil.copytree(tiny_base, folder / "model")
    checkpoint = services._register(run, folder)
    assert (
        checkpoint.prompt_version,
        checkpoint.max_new_tokens,
        checkpoint.max_input_tokens,
        checkpoint.greedy,
    ) == (
        row.version,
        64,
        900,
        False,
    )


@pytest.mark.django_db
def test_a_set_with_a_record_that_cannot_fit_is_refused_at_launch(tiny_base):
    base = checkpoint_register(name="tiny-base", path=str(tiny_base))
    samples = _consensus(6)
    with pytest.raises(TrainingError, match=r"6 record\(s\) do not fit max_length 64 .*sample #"):
        services.training_run_launch(
            stage="sft", base_checkpoint=base, tiny=True, hyperparameters={"max_length": 64}, enqueue=False
        )
    preview = services.snapshot_preview(stage="sft", base_checkpoint=base, tiny=True)
    assert preview["budget"]["over"] == 0 and preview["budget"]["records"] == len(samples)
