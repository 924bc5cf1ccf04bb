from __future__ import annotations

import io
import json
from collections import Counter

from PIL import Image

from qta.synthetic import generate


def test_it_writes_every_case_kind_with_known_labels_and_decodable_images(tmp_path):
    counts = generate(tmp_path, count=400, seed=7)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 400 and sum(counts.values()) == 400
    assert set(counts) == {"synthetic-train", "synthetic-id", "synthetic-ood"}
    assert {r["split"] for r in rows if r["subset"] != "synthetic-train"} == {"test"}
    kinds = Counter(r["external_id"].rsplit("-", 1)[1] for r in rows)
    assert set(kinds) == {"reasoning", "image", "answer", "benign", "leak"}
    assert {r["label"] for r in rows} == {0.0, 0.5, 1.0}
    # Harm only in the reasoning: the answer refuses and is the same as for a clean refusal.
    hidden = [r for r in rows if r["external_id"].endswith("reasoning")]
    assert all(r["label"] == 1.0 and ("Step 1" in r["thinking"] or "First," in r["thinking"]) for r in hidden)
    assert all("Step 1" not in r["answer"] and "First," not in r["answer"] for r in hidden)
    # Same text, different image: the image decides.
    by_text = {}
    for r in rows:
        if r["external_id"].endswith("-image"):
            by_text.setdefault((r["question"], r["thinking"], r["answer"]), []).append(
                (r["label"], r["image"])
            )
    pairs = [cases for cases in by_text.values() if len(cases) == 2]
    assert len(pairs) >= 40
    assert all({label for label, _ in cases} == {0.0, 1.0} and cases[0][1] != cases[1][1] for cases in pairs)
    for r in rows:
        if r["image"]:
            with Image.open(io.BytesIO((tmp_path / r["image"]).read_bytes())) as image:
                image.load()
                assert image.format == "PNG"


def test_it_is_reproducible(tmp_path):
    generate(tmp_path / "a", count=50, seed=5)
    generate(tmp_path / "b", count=50, seed=5)
    assert (tmp_path / "a" / "samples.jsonl").read_bytes() == (tmp_path / "b" / "samples.jsonl").read_bytes()
    assert (tmp_path / "a" / "images" / "0000001.png").read_bytes() == (
        tmp_path / "b" / "images" / "0000001.png"
    ).read_bytes()
