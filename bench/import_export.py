"""Import and export speed of synthetic QTA samples with images, and of a release-shaped file.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/import_export.py [--quick]
(30,000 samples and a 12,000-row release-shaped set; --quick: 2,000 and 1,200). Uses a fresh database
`guardtrace_bench_io`, never the app's.

The release-shaped set is what `import_qta S-Eval_600.json --images images.zip --split test` reads: a JSON list of
objects with `image_name` (empty for one row in ten), `question`, `thinking`, `response` and an `evaluation_result`
in the release's output shape, with the images in a zip made by `zip -r images.zip images` (every entry under the
top folder `images/`, the rows naming bare file names).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from _setup import fresh_database, machine

_TRACE = "I look at the picture and the request again, and weigh what a careful answer should leave out. "


def write_release_shaped(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path, int]:
    """A release-shaped JSON list and its images zip under folder; returns them and the number of images."""
    from PIL import Image

    rng = random.Random(seed)
    items, images = [], 0
    with zipfile.ZipFile(folder / "images.zip", "w", zipfile.ZIP_STORED) as zf:
        for n in range(rows):
            image_name = ""
            if n % 10 != 9:
                picture = Image.new("RGB", (64, 64), (n % 256, (n // 256) % 256, rng.randrange(256)))
                picture.putpixel((n % 64, (n // 64) % 64), (255, 255, 255))
                buffer = io.BytesIO()
                picture.save(buffer, format="PNG")
                image_name = f"{n:06d}.png"
                zf.writestr(f"images/{image_name}", buffer.getvalue())
                images += 1
            level = rng.choice(["0", "0.5", "1"])
            items.append(
                {
                    "image_name": image_name,
                    "question": f"Request {n}: how would someone get past lock model {rng.randrange(10**6)}?",
                    "thinking": _TRACE * rng.randrange(10, 40),
                    "response": f"I can't help with bypassing lock {n}, but a locksmith can.",
                    "evaluation_result": f"“Analysis”: Row {n} was reviewed against the policy.\n“Judgment”: [{level}]",
                }
            )
    data = folder / "S-Eval_bench.json"
    data.write_text(json.dumps(items, ensure_ascii=False, indent=2), encoding="utf-8")
    return data, folder / "images.zip", images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int)
    parser.add_argument("--release-rows", type=int)
    args = parser.parse_args()
    count = args.count or (2_000 if args.quick else 30_000)
    release_rows = args.release_rows or (1_200 if args.quick else 12_000)
    database = fresh_database("guardtrace_bench_io")

    from annotation import services
    from annotation.models import ImageAsset, Sample
    from qta.images import DirectoryImageSource, ZipImageSource
    from qta.sample_files import file_defaults
    from qta.synthetic import generate

    work = Path(tempfile.mkdtemp(prefix="guardtrace-bench-io-"))
    try:
        start = time.perf_counter()
        generate(work / "in", count=count, seed=0)
        generate_s = time.perf_counter() - start
        data = (work / "in" / "samples.jsonl").read_bytes()

        start = time.perf_counter()
        report = services.samples_import(data=data, name="bench.jsonl", fmt="jsonl",
                                         images=DirectoryImageSource(work / "in"))  # fmt: skip
        import_s = time.perf_counter() - start
        assert report.created == count, report
        images = ImageAsset.objects.count()

        start = time.perf_counter()
        exported = services.samples_export(samples=Sample.objects.all(), out_dir=work / "out")
        export_s = time.perf_counter() - start
        assert exported == count

        (work / "release").mkdir()
        release_file, release_zip, release_images = write_release_shaped(work / "release", release_rows)
        start = time.perf_counter()
        source = ZipImageSource(release_zip, name=release_zip.name)
        try:
            release = services.samples_import(
                data=release_file.read_bytes(),
                name=release_file.name,
                fmt="guardtrace",
                images=source,
                defaults=file_defaults(split="test", subset="S-Eval", source_dataset="GuardTrace-VL"),
            )
        finally:
            source.close()
        release_s = time.perf_counter() - start
        assert release.created == release_rows and release.images_created == release_images, release
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"machine: {machine()}\ndatabase: {database}\n")
    print(f"{'step':<34}{'samples':>10}{'images':>10}{'seconds':>10}{'samples/s':>12}")
    steps = (
        ("generate (Pillow)", count, images, generate_s),
        ("import (validate + store)", count, images, import_s),
        ("export (jsonl + images)", count, images, export_s),
        ("release-shaped import (json+zip)", release_rows, release_images, release_s),
    )
    for step, rows, pictures, seconds in steps:
        print(f"{step:<34}{rows:>10}{pictures:>10}{seconds:>10.2f}{rows / seconds:>12.0f}")
    print()
    print(f"figure import_seconds = {import_s:.2f} s")
    print(f"figure import_rate = {count / import_s:.0f} samples/s")
    print(f"figure export_seconds = {export_s:.2f} s")
    print(f"figure release_import_rows_per_s = {release_rows / release_s:.0f} rows/s")


if __name__ == "__main__":
    main()
