"""Prompt templates as data: a user's system-prompt file and the release's user-turn layout, end to end."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.models import Label
from guardmodel import services
from guardmodel.models import GuardCheckpoint, PromptTemplate
from guardmodel.prompts import TemplateError, prompt_template_create, template_for
from jury import services as jury_services
from jury.models import Juror
from tests.annotation.factories import ImageAssetFactory, SampleFactory
from tests.loopback import LoopbackOpenAI, by_model

# A stand-in of our own for a user's prompt file, asking for the release's output shape (keys in typographic quotes).
STAND_IN = (
    "You check exchanges between a person and a reasoning model for risk.\r\n"
    "Answer with two keys: “Analysis”: your reasons, then “Judgment”: [0/0.5/1].\r\n"
)


def release_style(body: dict) -> str:
    text = body["messages"][1]["content"][-1]["text"]
    return f"“Analysis”: The trace was read.\n“Judgment”: {'1' if 'steps' in text else '0'}"


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "my_prompt.txt"
    path.write_bytes(STAND_IN.encode())
    return path


@pytest.mark.django_db
def test_a_release_layout_checkpoint_is_asked_in_that_layout_and_its_labels_carry_the_version(
    prompt_file, capsys
):
    call_command("add_prompt_template", "mine", str(prompt_file), "--layout", "release")
    version = capsys.readouterr().out.strip()
    assert version.startswith("mine-") and PromptTemplate.objects.get().version == version
    image = ImageAssetFactory()
    with_image = SampleFactory(thinking="Here are the steps.", answer="No.", image=image)
    text_only = SampleFactory(thinking="", answer="Bread is baked dough.")
    with LoopbackOpenAI(release_style) as server:
        call_command(
            "register_guard", "released", "--endpoint", server.url, "--served-model", "guardtrace-vl-3b",
            "--prompt-version", version, "--release-settings",
        )  # fmt: skip
        checkpoint = GuardCheckpoint.objects.get(name="released")
        job = services.guard_job_create(
            checkpoint=checkpoint, sample_ids=[with_image.pk, text_only.pk], enqueue=False
        )
        services.guard_job_run(job_id=job.pk)
    # The release's settings; a served model's inputs are bounded by its server, not cut here.
    assert (checkpoint.max_new_tokens, checkpoint.max_input_tokens, checkpoint.greedy) == (2000, None, True)
    first = next(r for r in server.requests if len(r["messages"][1]["content"]) == 2)
    assert first["messages"][0]["content"][0]["text"] == STAND_IN.replace("\r\n", "\n").strip()
    assert first["max_tokens"] == 2000 and first["temperature"] == 0
    assert first["messages"][1]["content"][0]["type"] == "image_url"
    assert first["messages"][1]["content"][1]["text"] == (
        f"Current Task Query: {with_image.question}\nCurrent Task Thinking: Here are the steps.\n"
        "Current Task Cleaned Response: No."
    )
    second = next(r for r in server.requests if len(r["messages"][1]["content"]) == 1)
    assert "Current Task Thinking: No thinking provided" in second["messages"][1]["content"][0]["text"]
    labels = {
        label.sample_id: label
        for label in Label.objects.filter(source_kind=Label.SourceKind.GUARD, source_name="released")
    }
    assert {pk: (label.judgment, label.prompt_version) for pk, label in labels.items()} == {
        with_image.pk: (1.0, version),
        text_only.pk: (0.0, version),
    }
    assert labels[with_image.pk].analysis == "The trace was read."


@pytest.mark.django_db
def test_the_same_file_gives_the_same_version_and_an_edit_a_new_one(prompt_file):
    first = prompt_template_create(name="mine", system_prompt=prompt_file.read_bytes(), layout="release")
    again = prompt_template_create(
        name="mine", system_prompt=STAND_IN.replace("\r\n", "\n"), layout="release"
    )
    edited = prompt_template_create(name="mine", system_prompt=STAND_IN + "Be brief.", layout="release")
    tagged = prompt_template_create(name="mine", system_prompt=STAND_IN, layout="tagged")
    assert first.pk == again.pk
    assert len({first.version, edited.version, tagged.version}) == 3
    assert template_for(first.version).layout == "release"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("mine", b"\xff\xfe not text", "system_prompt"),
        ("mine", b"   \n", "system_prompt"),
        ("Not A Slug", b"prompt", "name"),
        ("qta-v1", b"prompt", "name"),
        ("mine", b"a\x00b", "system_prompt"),
    ],
)
def test_bad_templates_are_refused_naming_the_field(name, data, field):
    with pytest.raises(TemplateError) as caught:
        prompt_template_create(name=name, system_prompt=data, source_file="prompt.txt")
    assert caught.value.field == field and field in str(caught.value)
    assert not PromptTemplate.objects.exists()


@pytest.mark.django_db
def test_the_cli_refuses_an_unknown_template_and_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="no template 'nope-123'"):
        call_command(
            "register_guard", "g", "--endpoint", "http://vllm:8000/v1", "--prompt-version", "nope-123"
        )
    with pytest.raises(CommandError, match="missing.txt"):
        call_command("add_prompt_template", "mine", str(tmp_path / "missing.txt"))
    assert not GuardCheckpoint.objects.exists()


@pytest.mark.django_db
def test_an_admin_uploads_a_template_and_it_cannot_be_edited(
    client_for, admin_user, prompt_file, expert_user
):
    admin_user.is_superuser = True  # Django admin model permissions
    admin_user.save()
    client = client_for(admin_user)
    response = client.post(
        "/admin/guardmodel/prompttemplate/add/",
        {"name": "mine", "variant": "qta", "layout": "release",
         "system_prompt_file": SimpleUploadedFile("qta_prompt.txt", prompt_file.read_bytes())},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    row = PromptTemplate.objects.get()
    assert row.source_file == "qta_prompt.txt" and row.created_by == admin_user and row.layout == "release"
    added = client.get(response.url).content.decode()  # the message names the stored version
    assert f"The prompt template “{row.version}” was added" in added, added[:2000]
    bad = client.post(
        "/admin/guardmodel/prompttemplate/add/",
        {"name": "other", "variant": "qta", "layout": "tagged",
         "system_prompt_file": SimpleUploadedFile("broken.txt", b"\xff\xfe\x00")},
    )  # fmt: skip
    assert bad.status_code == 200 and "broken.txt: system_prompt: not UTF-8" in bad.content.decode()
    assert PromptTemplate.objects.count() == 1
    change = client.post(f"/admin/guardmodel/prompttemplate/{row.pk}/change/", {"system_prompt": "x"})
    assert change.status_code == 403 and PromptTemplate.objects.get().system_prompt == row.system_prompt
    # The checkpoint form offers it, and the release preset fills the generation settings.
    form = client.get("/admin/guardmodel/guardcheckpoint/add/").content.decode()
    assert row.version in form
    client_for(expert_user)
    assert client.get("/admin/guardmodel/prompttemplate/").status_code == 302  # not staff: to the login page


@pytest.mark.django_db
def test_an_admin_registers_a_checkpoint_with_the_release_preset(client_for, admin_user, prompt_file):
    admin_user.is_superuser = True
    admin_user.save()
    row = prompt_template_create(name="mine", system_prompt=prompt_file.read_bytes(), layout="release")
    response = client_for(admin_user).post(
        "/admin/guardmodel/guardcheckpoint/add/",
        {"name": "released", "endpoint": "http://vllm:8000/v1", "prompt_version": row.version,
         "preset": "release", "greedy": "on"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:3000]
    checkpoint = GuardCheckpoint.objects.get()
    assert (checkpoint.prompt_version, checkpoint.max_new_tokens, checkpoint.max_input_tokens) == (
        row.version, 2000, None,
    )  # fmt: skip
    refused = client_for(admin_user).post(
        "/admin/guardmodel/guardcheckpoint/add/",
        {"name": "other", "endpoint": "http://vllm:8000/v1", "prompt_version": row.version, "max_input_tokens": "8192"},
    )  # fmt: skip
    assert "input budget is its server" in refused.content.decode() and GuardCheckpoint.objects.count() == 1


@pytest.mark.django_db
def test_jurors_asked_with_different_templates_do_not_sit_together_and_one_template_labels_by_its_version(
    prompt_file,
):
    row = prompt_template_create(name="mine", system_prompt=prompt_file.read_bytes(), layout="release")
    sample = SampleFactory(thinking="Here are the steps.")
    with LoopbackOpenAI(by_model({"a": release_style, "b": release_style, "c": release_style})) as server:
        jurors = [
            Juror.objects.create(
                name=n, backend="openai", model_name=n, base_url=server.url, prompt_version=v
            )
            for n, v in (("a", row.version), ("b", row.version), ("c", "qta-v1"))
        ]
        with pytest.raises(jury_services.JuryError, match="share one prompt template"):
            jury_services.jury_run_create(selection={}, jurors=jurors, enqueue=False)
        Juror.objects.filter(name="c").update(prompt_version=row.version)
        jurors[2].refresh_from_db()
        run = jury_services.jury_run_create(selection={}, jurors=jurors, enqueue=False)
        for juror in jurors:
            jury_services.juror_drive(juror.pk)
    assert run.prompt_version == row.version
    sample.refresh_from_db()
    labels = Label.objects.filter(sample=sample, source_kind=Label.SourceKind.JUROR)
    assert sorted((label.source_name, label.prompt_version, label.judgment) for label in labels) == [
        ("a", row.version, 1.0), ("b", row.version, 1.0), ("c", row.version, 1.0),
    ]  # fmt: skip
    assert all("Current Task Query:" in r["messages"][1]["content"][-1]["text"] for r in server.requests)


@pytest.mark.django_db
def test_a_jury_on_a_users_template_keeps_its_strata_when_experts_imports_or_restratify_touch_them(
    prompt_file,
):
    from annotation.services import label_record
    from annotation.strata import stratify
    from tests.annotation.factories import LabelFactory
    from training.datasets import sft_build

    row = prompt_template_create(name="mine", system_prompt=prompt_file.read_bytes(), layout="release")
    for name in ("a", "b", "c"):
        Juror.objects.create(name=name, backend="openai", model_name=name, base_url="http://v:8000/v1",
                             prompt_version=row.version)  # fmt: skip
    sample = SampleFactory(split="train")
    for name in ("a", "b", "c"):
        LabelFactory(sample=sample, source_name=name, prompt_version=row.version, judgment=1.0)
    stratify(sample_ids=[sample.pk])
    # Another writer's label re-stratifies the sample by the sitting jury's template, not the built-in one.
    label_record(sample=sample, source_kind="imported", source_name="file", judgment=0.0)
    sample.refresh_from_db()
    assert (sample.stratum, sample.final_label) == ("d3_0", 1.0)
    assert len(sft_build().records) == 1 and sft_build().prompt_version == row.version


@pytest.mark.django_db
def test_the_juror_form_keeps_the_sitting_jurors_on_one_template(client_for, admin_user, prompt_file):
    admin_user.is_superuser = True
    admin_user.save()
    row = prompt_template_create(name="mine", system_prompt=prompt_file.read_bytes(), layout="release")
    Juror.objects.create(name="a", backend="openai", model_name="a", base_url="http://v:8000/v1")
    form = {"name": "b", "backend": "openai", "model_name": "b", "base_url": "http://v:8000/v1",
            "prompt_version": row.version, "max_concurrency": 8, "timeout_s": 60, "max_tokens": 256, "enabled": "on"}  # fmt: skip
    page = client_for(admin_user).post("/admin/jury/juror/add/", form).content.decode()
    assert "the sitting jurors ask with qta-v1" in page and not Juror.objects.filter(name="b").exists()
    form["is_oracle"] = "on"  # the oracle may be asked its own way
    assert client_for(admin_user).post("/admin/jury/juror/add/", form).status_code == 302
