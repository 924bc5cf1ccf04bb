"""The full loop on CPU: synthetic set → jury → strata → expert labels → SFT → DPO → OGDPO on a tiny checkpoint.

Run: .venv/bin/python bench/training_loop.py [--quick]
(420 synthetic samples; --quick: 210, still trained from the untrained tiny checkpoint). Three jurors and the oracle
answer over loopback HTTP from the synthetic ground truth, splitting on purpose so every stratum fills; experts label
the 1:1:1 items through the expert service; each round is launched and driven through `training.services` exactly as
the gpu worker does (a child process running TRL), registered and evaluated on the synthetic test subsets. Reports the
average F1 over the test subsets (synthetic-id, synthetic-ood) after each stage and the loop's wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _setup import fresh_database, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="210 samples instead of 420")
    args = parser.parse_args()
    count = 210 if args.quick else 420
    database = fresh_database("guardtrace_bench_training")

    from django.conf import settings

    from annotation.models import Sample, Stratum
    from guardmodel.management.commands.build_tiny_guard import synthetic_texts
    from guardmodel.models import Evaluation
    from guardmodel.services import checkpoint_register, guard_job_create, guard_job_run
    from qta.tiny import build_tiny_guard
    from tests.loopback import LoopbackOpenAI
    from tests.training import loop
    from training import services
    from training.models import TrainingRun

    work = Path(tempfile.mkdtemp(prefix="guardtrace-bench-training-"))
    settings.GUARDTRACE_TRAINING_DIR = work / "training"
    settings.GUARDTRACE_TRAIN_DEVICE = "cpu"
    settings.GUARDTRACE_GUARD_DEVICE = "cpu"
    settings.GUARDTRACE_GUARD_MAX_NEW_TOKENS = 40
    rows: list[tuple[str, float, float]] = []  # (stage, F1, seconds)

    def f1(name: str) -> float:
        evaluation = Evaluation.objects.filter(source_name=name).order_by("-pk").first()
        return (evaluation.metrics["average"]["f1"] or 0.0) if evaluation else 0.0

    def round_(stage: str, **kwargs) -> TrainingRun:
        started = time.perf_counter()
        run = services.training_run_launch(stage=stage, tiny=True, enqueue=False, **kwargs)
        outcome = services.training_run_execute(run_id=run.pk)
        run = TrainingRun.objects.get(pk=run.pk)
        if outcome != "succeeded":
            raise SystemExit(f"{run} {outcome}: {run.error}")
        rows.append((stage, f1(run.output_checkpoint.name), time.perf_counter() - started))
        return run

    started = time.perf_counter()
    world = loop.import_synthetic(work / "syn", count=count)
    base_dir = build_tiny_guard(work / "tiny-base", texts=synthetic_texts())
    with LoopbackOpenAI(loop.GroundTruthJury(world.records)) as server:
        loop.make_jurors(server.url)
        loop.run_jury()
        strata = {s: Sample.objects.filter(stratum=s).count() for s in Stratum.values}
        loop.experts_label(world)
        base = checkpoint_register(name="tiny-base", path=str(base_dir), base_model="tiny (untrained)")
        t = time.perf_counter()
        test_ids = list(Sample.objects.filter(split="test").values_list("pk", flat=True))
        guard_job_run(job_id=guard_job_create(checkpoint=base, sample_ids=test_ids, enqueue=False,
                                              evaluate_subsets=["synthetic-id", "synthetic-ood"]).pk)  # fmt: skip
        rows.append(("base", f1("tiny-base"), time.perf_counter() - t))
        sft = round_("sft", base_checkpoint=base)
        dpo = round_("dpo", parent=sft)
        round_("ogdpo", parent=dpo)
    loop_seconds = time.perf_counter() - started

    print(f"machine: {machine()} · database: {database} · samples: {count}")
    print(f"strata: {', '.join(f'{k} {v}' for k, v in strata.items() if v)}")
    print(f"{'stage':<8}{'avg F1':>10}{'seconds':>10}")
    for stage, score, seconds in rows:
        print(f"{stage:<8}{score:>10.3f}{seconds:>10.1f}")
    for stage, score, _ in rows:
        print(f"figure f1_{stage} = {score:.3f} F1")
    print(f"figure loop_seconds = {loop_seconds:.1f} s")


if __name__ == "__main__":
    main()
