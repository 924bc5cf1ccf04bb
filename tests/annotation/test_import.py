from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
import zlib

import pytest
from django.core.management import CommandError, call_command

from annotation import services
from annotation.models import ImageAsset, Label, LabelOrigin, Sample, Stratum
from qta.images import DirectoryImageSource, ZipImageSource
from tests.conftest import png_bytes, record, write_jsonl

pytestmark = pytest.mark.django_db


def _import(path, images=None, **kwargs):
    return services.samples_import(
        data=path.read_bytes(), name=path.name, fmt=kwargs.pop("fmt", "jsonl"),
        images=images or DirectoryImageSource(path.parent), **kwargs,
    )  # fmt: skip


def _snapshot():
    return (
        list(Sample.objects.order_by("id").values_list("id", "content_hash")),
        list(Label.objects.order_by("id").values_list("id", "judgment")),
        ImageAsset.objects.count(),
    )


def test_it_imports_samples_labels_and_images(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes())
    path = write_jsonl(tmp_path / "s.jsonl", [
        record(image="img/a.png", label=1, category="crime", input_variant="aligned_image"),
        record(question="Second", image="img/a.png", label=0.5),
        record(question="Third"),
    ])  # fmt: skip
    report = _import(path)
    assert (report.created, report.labels_created, report.images_created) == (3, 2, 1)
    first = Sample.objects.get(question="How do I bake bread?")
    assert first.image.width == 16 and first.image.format == "PNG"
    assert first.category == "crime" and first.input_variant == "aligned_image"
    assert (first.stratum, first.final_label, first.final_label_origin) == (
        Stratum.UNLABELLED,
        1.0,
        LabelOrigin.IMPORTED,
    )
    assert Sample.objects.get(question="Third").input_variant == "text_only"
    assert Sample.objects.filter(image=first.image).count() == 2


BAD_LINES = [
    ('{"question": "x", "answer": ', "", "malformed JSON"),
    (record(question=None), "question", "required field is missing"),
    (record(thinking=42), "thinking", "expected a string, got int"),
    (record(category="weapons"), "category", "unknown value 'weapons'"),
    (record(split="validation"), "split", "unknown value 'validation'"),
    (record(label=0.7), "label", "judgment 0.7 is not one of 0, 0.5, 1"),
    (record(label=True), "label", "is not one of"),
    (record(thinking="x" * (10 * 1024 * 1024)), "thinking", "over the 1,000,000-character limit"),
    (record(answer="a\x00b"), "answer", "NUL character"),
    (record(catgory="crime"), "catgory", "unknown field"),
    (
        record(labels=[{"source_kind": "juror", "source_name": "j", "judgment": 2}]),
        "labels[0].judgment",
        "not one of",
    ),
    ("[1, 2]", "", "expected a JSON object, got list"),
]


@pytest.mark.parametrize(("line", "field", "reason"), BAD_LINES)
def test_a_bad_line_names_file_line_field_and_leaves_the_database_unchanged(tmp_path, line, field, reason):
    _import(write_jsonl(tmp_path / "good.jsonl", [record(question="already here", label=0)]))
    before = _snapshot()
    path = write_jsonl(
        tmp_path / "bad.jsonl", [record(question="fine one"), line, record(question="fine two")]
    )
    with pytest.raises(services.ImportRejected) as caught:
        _import(path)
    assert len(caught.value.errors) == 1
    message = str(caught.value.errors[0])
    prefix = f"bad.jsonl:2: {field}: " if field else "bad.jsonl:2: "
    assert message.startswith(prefix), message
    assert reason in message
    assert _snapshot() == before


def test_skip_invalid_stores_the_good_lines_and_reports_the_rest(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl", [record(question="one"), record(split="dev"), record(question="three")]
    )
    report = _import(path, skip_invalid=True)
    assert report.created == 2
    assert [str(e) for e in report.errors] == [
        "mixed.jsonl:2: split: unknown value 'dev'; expected one of train, test"
    ]
    assert set(Sample.objects.values_list("question", flat=True)) == {"one", "three"}


def test_duplicates_are_reported_not_doubled(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [record(), record(), record(question="other")])
    report = _import(path)
    assert report.created == 2
    assert report.duplicates == ["d.jsonl:2: duplicate of line 1"]
    again = _import(path)
    assert again.created == 0 and len(again.duplicates) == 3
    assert "already stored as sample #" in again.duplicates[0]
    assert Sample.objects.count() == 2


def test_html_and_script_are_stored_verbatim(tmp_path):
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    _import(write_jsonl(tmp_path / "h.jsonl", [record(question=payload, thinking=payload, answer=payload)]))
    assert Sample.objects.get().question == payload


def _truncated_png() -> bytes:
    return png_bytes(size=(64, 64))[:-30]


def _bomb_png(width=30000, height=30000) -> bytes:
    """A valid PNG header announcing a huge image with almost no data."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("image_name", "content", "reason"),
    [
        ("notes.png", b"this is plain text, not a picture", "not an image"),
        ("cut.png", _truncated_png(), "broken or truncated image"),
        ("bomb.png", _bomb_png(), "decompression bomb"),
        ("/etc/passwd", None, "absolute image path"),
        ("../outside.png", None, "climbs out of the images folder"),
        ("missing.png", None, "not found"),
    ],
)
def test_bad_images_are_refused_with_a_clear_error(tmp_path, image_name, content, reason):
    if content is not None:
        (tmp_path / image_name).write_bytes(content)
    (tmp_path.parent / "outside.png").write_bytes(png_bytes())
    path = write_jsonl(tmp_path / "i.jsonl", [record(image=image_name)])
    with pytest.raises(services.ImportRejected) as caught:
        _import(path)
    message = str(caught.value.errors[0])
    assert message.startswith("i.jsonl:1: image: ")
    assert reason in message
    assert Sample.objects.count() == 0 and ImageAsset.objects.count() == 0


def test_images_over_the_byte_limit_are_refused(tmp_path, settings):
    settings.GUARDTRACE_MAX_IMAGE_BYTES = 100
    (tmp_path / "big.png").write_bytes(png_bytes(size=(64, 64)) + b"\x00" * 200)
    with pytest.raises(services.ImportRejected) as caught:
        _import(write_jsonl(tmp_path / "b.jsonl", [record(image="big.png")]))
    assert "over the 100-byte limit" in str(caught.value.errors[0])


def test_a_symlink_leaving_the_images_folder_is_refused(tmp_path):
    (tmp_path / "secret.png").write_bytes(png_bytes())
    (tmp_path / "imgs").mkdir()
    os.symlink(tmp_path / "secret.png", tmp_path / "imgs" / "link.png")
    path = write_jsonl(tmp_path / "l.jsonl", [record(image="link.png")])
    with pytest.raises(services.ImportRejected) as caught:
        _import(path, images=DirectoryImageSource(tmp_path / "imgs"))
    assert "resolves outside the images folder" in str(caught.value.errors[0])


def test_images_come_from_a_zip_archive(tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pics/a.png", png_bytes())
    report = _import(
        write_jsonl(tmp_path / "z.jsonl", [record(image="pics/a.png")]), images=ZipImageSource(archive)
    )
    assert report.created == 1 and ImageAsset.objects.get().sha256 == Sample.objects.get().image.sha256


def test_a_zip_entry_escaping_the_folder_refuses_the_archive(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.png", png_bytes())
        zf.writestr("../../etc/evil.png", png_bytes())
    with pytest.raises(
        CommandError, match=r"evil.zip: entry '../../etc/evil.png' escapes the archive folder"
    ):
        call_command("import_qta", str(write_jsonl(tmp_path / "e.jsonl", [record(image="ok.png")])),
                     images=archive, verbosity=0)  # fmt: skip
    assert Sample.objects.count() == 0


def test_the_guardtrace_release_format_is_read_with_its_labels(tmp_path):
    (tmp_path / "x.png").write_bytes(png_bytes())
    items = [
        {"image_name": "x.png", "question": "q1", "thinking": "t1", "response": "r1", "evaluation_result": 1},
        {"image_name": None, "question": "q2", "thinking": "t2", "response": "r2",
         "evaluation_result": "**Analysis:** leaks a hint.\n**Judgment:** [0.5]"},
        {"image_name": None, "question": "q3", "thinking": "t3", "response": "r3", "evaluation_result": "0"},
    ]  # fmt: skip
    path = tmp_path / "release.json"
    path.write_text(json.dumps(items, indent=2))
    report = _import(path, fmt="guardtrace")
    assert report.created == 3
    labels = {s.question: s.labels.get() for s in Sample.objects.all()}
    assert [labels[q].judgment for q in ("q1", "q2", "q3")] == [1.0, 0.5, 0.0]
    assert labels["q2"].analysis == "leaks a hint."
    assert labels["q1"].source_name == "guardtrace-vl"


def test_guardtrace_errors_carry_the_line_of_the_object(tmp_path):
    path = tmp_path / "release.json"
    good = {"image_name": None, "question": "q", "thinking": "t", "response": "r", "evaluation_result": 0}
    bad = dict(good, question="q2", evaluation_result="no verdict here")
    path.write_text(json.dumps([good, bad], indent=2))
    with pytest.raises(services.ImportRejected) as caught:
        _import(path, fmt="guardtrace")
    line = path.read_text().splitlines().index("  {", 2) + 1
    assert str(caught.value.errors[0]) == (
        f"release.json:{line}: evaluation_result: no judgment of 0, 0.5 or 1 can be read from the text"
    )
    path.write_text('[{"question": "q", ')
    with pytest.raises(services.ImportRejected, match="1 error"):
        _import(path, fmt="guardtrace")


def test_the_command_reports_errors_and_stores_nothing(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [record(), record(category="nope")])
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 invalid line"):
        call_command("import_qta", str(path), stderr=err, verbosity=0)
    assert "c.jsonl:2: category: unknown value 'nope'" in err.getvalue()
    assert Sample.objects.count() == 0
    out = io.StringIO()
    call_command("import_qta", str(path), skip_invalid=True, stdout=out, stderr=io.StringIO(), verbosity=0)
    assert "imported 1 samples" in out.getvalue()


def _release_rows(*images: str | None) -> list[dict]:
    """Rows shaped as the release's test files; an image of None leaves `image_name` out."""
    rows = []
    for n, image in enumerate(images):
        row = {
            "question": f"Release question {n}?",
            "thinking": f"Thinking {n}.",
            "response": f"Answer {n}.",
            "evaluation_result": n % 2,
        }
        if image is not None:
            row["image_name"] = image
        rows.append(row)
    return rows


def _write_release(path, rows):
    path.write_text(json.dumps(rows, indent=2))
    return path


def _zip(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_an_empty_or_missing_image_name_is_a_text_only_sample(tmp_path):
    path = _write_release(tmp_path / "S-Eval_600.json", _release_rows("", None, "  "))
    report = services.samples_import(data=path.read_bytes(), name=path.name, fmt="guardtrace", images=None)
    assert report.created == 3 and report.errors == []
    assert set(Sample.objects.values_list("image", "input_variant")) == {(None, "text_only")}
    # Our JSONL reads an empty `image` the same way.
    line = write_jsonl(tmp_path / "e.jsonl", [record(image="", question="jsonl one")])
    assert _import(line).created == 1 and Sample.objects.get(question="jsonl one").image is None


def test_images_are_found_under_the_zips_top_folder_or_by_a_unique_base_name(tmp_path):
    # As `zip -r images.zip images` stores them: every entry under images/.
    archive = _zip(
        tmp_path / "images.zip",
        {
            "images/a.png": png_bytes((1, 2, 3)),
            "images/deep/b.png": png_bytes((4, 5, 6)),
            "images/c.png": png_bytes((7, 8, 9)),
            "__MACOSX/images/._a.png": b"resource fork",
        },
    )
    path = _write_release(tmp_path / "MMBench_500.json", _release_rows("a.png", "b.png", "images/c.png", ""))
    report = services.samples_import(
        data=path.read_bytes(), name=path.name, fmt="guardtrace", images=ZipImageSource(archive)
    )
    assert report.created == 4 and report.images_created == 3
    by_question = {s.question: s for s in Sample.objects.select_related("image")}
    assert by_question["Release question 1?"].image.sha256 == hashlib.sha256(png_bytes((4, 5, 6))).hexdigest()
    # A folder is searched the same way.
    (tmp_path / "release" / "pics" / "sub").mkdir(parents=True)
    (tmp_path / "release" / "pics" / "sub" / "d.png").write_bytes(png_bytes((10, 11, 12)))
    again = write_jsonl(
        tmp_path / "d.jsonl", [record(image="d.png"), record(image="sub/d.png", question="q2")]
    )
    assert _import(again, images=DirectoryImageSource(tmp_path / "release")).created == 2


def test_an_ambiguous_base_name_is_an_error_naming_both_entries(tmp_path):
    archive = _zip(
        tmp_path / "images.zip", {"x/a.png": png_bytes((1, 1, 1)), "y/a.png": png_bytes((2, 2, 2))}
    )
    path = _write_release(tmp_path / "S-Eval_600.json", _release_rows("a.png"))
    with pytest.raises(services.ImportRejected) as caught:
        services.samples_import(
            data=path.read_bytes(), name=path.name, fmt="guardtrace", images=ZipImageSource(archive)
        )
    (error,) = caught.value.errors
    assert str(error).startswith("S-Eval_600.json:2: image: a.png: image 'a.png' is ambiguous: archive ")
    assert "both 'x/a.png' and 'y/a.png'" in str(error)
    # The full path picks one.
    path = _write_release(tmp_path / "S-Eval_600.json", _release_rows("y/a.png"))
    assert (
        services.samples_import(
            data=path.read_bytes(), name=path.name, fmt="guardtrace", images=ZipImageSource(archive)
        ).created
        == 1
    )


@pytest.mark.parametrize(
    ("image_name", "reason"),
    [("/images/a.png", "absolute image path"), ("../images/a.png", "climbs out"), ("C:\\a.png", "absolute")],
)
def test_the_lookup_by_base_name_never_bypasses_the_path_checks(tmp_path, image_name, reason):
    archive = _zip(tmp_path / "images.zip", {"images/a.png": png_bytes()})
    path = _write_release(tmp_path / "r.json", _release_rows(image_name))
    with pytest.raises(services.ImportRejected) as caught:
        services.samples_import(
            data=path.read_bytes(), name="r.json", fmt="guardtrace", images=ZipImageSource(archive)
        )
    assert reason in str(caught.value.errors[0]) and Sample.objects.count() == 0


def test_a_symlink_found_by_base_name_is_still_refused(tmp_path):
    (tmp_path / "secret.png").write_bytes(png_bytes())
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "secret.png", tmp_path / "imgs" / "sub" / "link.png")
    with pytest.raises(services.ImportRejected) as caught:
        _import(
            write_jsonl(tmp_path / "l.jsonl", [record(image="link.png")]),
            images=DirectoryImageSource(tmp_path / "imgs"),
        )
    assert "resolves outside the images folder" in str(caught.value.errors[0])


def test_the_command_sets_split_subset_and_source_for_rows_that_give_none(tmp_path):
    rows = _release_rows("", "")
    rows[1].update(split="train", subset="Own")
    path = _write_release(tmp_path / "S-Eval_600.json", rows)
    call_command(
        "import_qta",
        str(path),
        "--split",
        "Test",
        "--subset",
        "S-Eval",
        "--source-dataset",
        "GuardTrace-VL test",
        stdout=io.StringIO(),
        verbosity=0,
    )
    first, second = Sample.objects.order_by("question")
    assert (first.split, first.subset, first.source_dataset) == ("test", "S-Eval", "GuardTrace-VL test")
    assert (second.split, second.subset, second.source_dataset) == ("train", "Own", "GuardTrace-VL test")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--split", "dev"], "--split: unknown value 'dev'; expected one of train, test"),
        (["--subset", "s" * 65], "--subset: is 65 characters long, over the 64-character limit"),
        (["--source-dataset", "d\x00"], "--source-dataset: contains a NUL character"),
    ],
)
def test_a_bad_file_wide_value_on_the_command_line_is_refused_by_name(tmp_path, flags, message):
    path = _write_release(tmp_path / "S-Eval_600.json", _release_rows(""))
    with pytest.raises(CommandError) as caught:
        call_command("import_qta", str(path), *flags, verbosity=0)
    assert str(caught.value) == message and Sample.objects.count() == 0


def test_a_path_whose_folder_is_not_there_never_lands_silently_on_one_of_two_same_named_files(tmp_path):
    archive = _zip(
        tmp_path / "images.zip", {"cat.png": png_bytes((1, 1, 1)), "test/cat.png": png_bytes((2, 2, 2))}
    )
    path = _write_release(tmp_path / "S-Eval_600.json", _release_rows("train/cat.png"))
    with pytest.raises(services.ImportRejected) as caught:
        services.samples_import(
            data=path.read_bytes(), name=path.name, fmt="guardtrace", images=ZipImageSource(archive)
        )
    assert "both 'cat.png' and 'test/cat.png'" in str(caught.value.errors[0])
    assert not Sample.objects.exists()
