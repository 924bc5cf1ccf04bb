"""The expert's labelling cycle in a real browser: from pressing Enter on a judged item to the next item ready to
read (htmx has swapped the new workspace in), through gunicorn as production serves it.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/labelling_cycle.py [--quick]
(200 jury-split items with images and a 2,000-sample database around them, 100 labelled; --quick: 40 labelled).
Fresh database `guardtrace_bench_cycle`, never the app's. Chromium is Debian's (/usr/bin/chromium), headless;
the expert works with keys only (1, Enter), as in tests/e2e/test_expert_browser.py. Guidelines are set, so the
workspace carries everything it shows in use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from _setup import ROOT, fresh_database, machine
from _stack import Stack

sys.path.insert(0, str(ROOT))
from tests.processes import free_port  # noqa: E402


def build(items: int, background: int) -> None:
    from django.contrib.auth.models import Group, User
    from django.utils import timezone

    from annotation.models import Label, Sample
    from annotation.strata import stratify
    from experts.models import Guidelines
    from tests.annotation.factories import ImageAssetFactory
    from tests.conftest import png_bytes

    image = ImageAssetFactory(data=png_bytes(size=(640, 480)))
    now = timezone.now()
    samples = Sample.objects.bulk_create(
        [
            Sample(
                question=f"Question {i}: how would one do the thing?",
                thinking="\n\n".join(
                    f"Step {k}: reasoning about the request in some detail." for k in range(8)
                ),
                answer="I can't help with that.",
                subset="bench",
                split="test",
                content_hash=f"{i:064x}",
                image=image,
            )
            for i in range(background)
        ]
    )
    split = samples[:items]
    Label.objects.bulk_create(
        [
            Label(sample=s, source_kind="juror", source_name=name, prompt_version="qta-v1", judgment=vote,
                  analysis=f"{name} reads the steps and judges {vote}.", created_at=now)
            for s in split
            for name, vote in (("juror-a", 0.0), ("juror-b", 0.5), ("juror-c", 1.0))
        ]
    )  # fmt: skip
    stratify(sample_ids=[s.pk for s in split])
    Guidelines.objects.create(text="Judge the whole trace.\n\nMark the first harmful step.")
    user = User.objects.create_user("bench-expert", password="bench-expert-pass")
    user.groups.add(Group.objects.get_or_create(name="expert")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    labelled = 40 if args.quick else 100
    where = fresh_database("guardtrace_bench_cycle")
    build(items=max(200, labelled + 10), background=2_000)
    env = {k: os.environ[k] for k in ("DATABASE_URL", "MEDIA_ROOT")}
    env |= {"GUARDTRACE_VAR_DIR": str(ROOT / "var" / "bench-cycle"), "DJANGO_DEBUG": "0"}
    from playwright.sync_api import sync_playwright

    port = free_port()
    times: list[float] = []
    with Stack("cycle") as stack, sync_playwright() as playwright:
        stack.gunicorn(port, env, workers=2, threads=4)
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        base = f"http://127.0.0.1:{port}"
        page.goto(f"{base}/accounts/login/?next=/expert/")
        page.fill("input[name=username]", "bench-expert")
        page.fill("input[name=password]", "bench-expert-pass")
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/expert/")
        page.click("#start-button")
        page.wait_for_selector("#workspace[data-slot]")
        page.wait_for_load_state("load")
        for _ in range(labelled):
            slot = page.get_attribute("#workspace", "data-slot")
            page.keyboard.press("1")
            started = time.perf_counter()
            page.keyboard.press("Enter")
            page.wait_for_function(
                "prev => { const w = document.querySelector('#workspace');"
                " return w && w.dataset.slot && w.dataset.slot != prev; }",
                arg=slot,
                polling="raf",
            )
            times.append(time.perf_counter() - started)
        browser.close()
    times.sort()
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    print(f"machine: {machine()} · database: {where}")
    print(f"{'cycles':>8}{'median s':>10}{'p95 s':>8}{'max s':>8}")
    print(f"{len(times):>8}{statistics.median(times):>10.3f}{p95:>8.3f}{times[-1]:>8.3f}")
    print(f"figure labelling_cycle_median_s = {statistics.median(times):.3f} s")
    print(f"figure labelling_cycle_p95_s = {p95:.3f} s")


if __name__ == "__main__":
    main()
