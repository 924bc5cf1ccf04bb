"""Scale out on one broker, as docker-compose.yml lays it out: two `jury` workers and one `gpu` worker, each started
from its service's own command in the compose file, on PostgreSQL and Redis. Six jurors label beside a guard job;
a jury worker is added while the other is full, then one is killed mid-run (SIGKILL) and a fresh one added.

A juror's work is driven by one pool process at a time (its lease keeps the juror's concurrency limit across
workers), so the unit that spreads over workers is a juror's driver: a worker drives as many jurors at once as it has
processes, and with prefetch 1 and late acknowledgement a busy worker takes no new driver, so a worker with free
processes gets it. (A driver retrying on a juror held elsewhere is an ETA message, which a busy worker may keep.)
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from celery.utils.nodenames import host_format
from django.conf import settings as django_settings
from django.db.models import Count, Max, Min
from django.utils import timezone

from annotation.models import Label
from guardmodel import services as guard_services
from guardmodel.models import GuardJob
from guardtrace.celery import app as celery_app
from jury import services
from jury.models import JuryRun, JuryTask
from tests.conftest import REDIS_URL
from tests.jury.conftest import scripted_vote
from tests.loopback import LoopbackOpenAI, by_model
from tests.workers import ROOT, kill_worker, wait_for, worker

COMPOSE = ROOT / "docker-compose.yml"
JURORS = ("j1", "j2", "j3", "j4", "j5", "j6")
SAMPLES = 300
# Each juror: 2 calls in flight answered in 0.3 s, so about 45 s of work — far longer than starting a worker.
DELAY_S, IN_FLIGHT = 0.3, 2
LEASE_S = 6  # renewed every 2 s: a loaded machine's pauses do not lose a live driver's lease
WORKER_ENV = {
    "GUARDTRACE_JURY_WORKER_CONCURRENCY": "3",
    "GUARDTRACE_JURY_LEASE_S": str(LEASE_S),
    "GUARDTRACE_JURY_BACKOFF_S": "0.01",
}


def compose_services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def compose_command(service: str, host: str, env: dict[str, str]) -> list[str]:
    """The service's command from docker-compose.yml as this machine runs it: compose's `${VAR:-default}` read from
    `env`, this interpreter's Celery, and the node's host part `host` (containers differ by hostname; workers
    sharing one host need their own node names)."""
    command = compose_services()[service]["command"]
    command = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], command)
    argv = shlex.split(command)
    assert argv[:4] == ["celery", "-A", "guardtrace", "worker"], f"{service}: not a Celery worker: {command}"
    at = argv.index("-n") + 1
    assert argv[at].endswith("@%h"), f"{service}: node name {argv[at]!r} is not <name>@%h"
    argv[at] = argv[at].replace("%h", host)
    return [sys.executable, "-m", *argv]


def _queues(argv: list[str]) -> set[str]:
    return set(argv[argv.index("-Q") + 1].split(","))


def test_every_routed_queue_has_a_compose_worker_and_the_jury_worker_prefetches_one():
    """No task goes to a queue nobody in the compose file consumes. A jury worker reserves no more drivers than it
    has processes: prefetch 1, and a driver's message is acknowledged only when it ends (late), so a busy worker's
    unacknowledged drivers fill its prefetch window."""
    from jury.tasks import juror_drive_task

    workers = {name: compose_command(name, "h", {}) for name, service in compose_services().items()
               if str(service.get("command", "")).startswith("celery -A guardtrace worker")}  # fmt: skip
    consumed = set().union(*(_queues(argv) for argv in workers.values()))
    routed = {route["queue"] for route in django_settings.CELERY_TASK_ROUTES.values()}
    assert routed | {django_settings.CELERY_TASK_DEFAULT_QUEUE} <= consumed
    jury = workers["jury-worker"]
    assert jury[jury.index("--prefetch-multiplier") + 1] == "1" and juror_drive_task.acks_late
    assert (
        compose_command("jury-worker", "h", {"GUARDTRACE_JURY_WORKER_CONCURRENCY": "3"})[
            jury.index("--concurrency") + 1
        ]
        == "3"
    )


def _compose_worker(stack: ExitStack, service: str, tag: str, media_root: str, logs: Path):
    """The compose service's worker on the test's Redis, host part `tag`, its output in `logs`/`tag`.log."""
    command = compose_command(service, f"{tag}.%h", WORKER_ENV)
    broker = (REDIS_URL, {"visibility_timeout": 3600}, media_root)
    return stack.enter_context(
        worker(*broker, extra_env=WORKER_ENV, command=command, log=logs / f"{tag}.log")
    )


def _nodes_answering() -> set[str]:
    return {name for reply in celery_app.control.ping(timeout=1.0) for name in reply}


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_jury_workers_and_a_gpu_worker_share_the_work_and_survive_losing_one(
    make_jurors, voted, tiny_dir, tmp_path, settings, admin_user
):
    """Six jurors at once, in two runs of three over the same samples, beside a guard job:
    - the first jury worker drives the first run's three jurors, all its processes busy;
    - a second jury worker is added, then the second run queued: the busy worker takes none of its drivers (it has
      no process free), the added worker drives all three at once;
    - the first worker is killed mid-run and a fresh one added: it takes the three orphaned jurors over once their
      dead driver's lease runs out; the live worker keeps its own."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()  # no messages left over from other tests
    votes = ["0,1,0.5,1,0,1", "1,1,0,0,1,0.5", "0,0,1,1,0.5,0"]
    samples = voted(*[votes[n % 3] for n in range(SAMPLES)])
    checkpoint = guard_services.checkpoint_register(name="tiny", path=str(tiny_dir))
    nodes = {tag: host_format(f"{kind}@{tag}.%h") for tag, kind in (("w1", "jury"), ("w2", "jury"),
                                                                     ("w3", "jury"), ("g1", "gpu"))}  # fmt: skip

    def start(stack: ExitStack, service: str, tag: str):
        process = _compose_worker(stack, service, tag, settings.MEDIA_ROOT, tmp_path)
        wait_for(
            lambda: nodes[tag] in _nodes_answering(), process, 120, f"worker {nodes[tag]} did not answer"
        )
        return process

    answers = {name: scripted_vote(i) for i, name in enumerate(JURORS)}
    with LoopbackOpenAI(by_model(answers), delay_s=DELAY_S) as server, ExitStack() as stack:
        jurors = make_jurors(server.url, names=JURORS, max_concurrency=IN_FLIGHT)
        first_three, last_three = jurors[:3], jurors[3:]
        w1, gpu = start(stack, "jury-worker", "w1"), start(stack, "gpu-worker", "g1")
        runs = [services.jury_run_create(selection={}, jurors=first_three)]
        job = guard_services.guard_job_create(
            checkpoint=checkpoint, sample_ids=[s.pk for s in samples[:32]], user=admin_user
        )
        written = JuryTask.objects.filter(completed_at__isnull=False)

        def per_juror() -> dict[str, int]:
            return dict(written.values_list("juror__name").annotate(n=Count("id")).order_by())

        wait_for(lambda: len(per_juror()) == 3, w1, 60, "the first run's jurors were not driven",
                 lambda: str(per_juror()))  # fmt: skip
        w2 = start(stack, "jury-worker", "w2")
        runs.append(services.jury_run_create(selection={}, jurors=last_three))
        queued = time.monotonic()
        wait_for(lambda: len(per_juror()) == 6 and min(per_juror().values()) >= 6, w2, 30,
                 "the second run's jurors were not all driven at once", lambda: str(per_juror()))  # fmt: skip
        all_driving_s = time.monotonic() - queued
        left = runs[0].tasks.exclude(status="valid").count()
        assert left >= SAMPLES, (
            f"the first run was nearly done before the kill ({left} tasks left): nothing to take over"
        )
        kill_worker(w1)
        killed_at = timezone.now()
        before = {j.name: set(written.filter(juror=j).values_list("driven_by", flat=True)) for j in jurors}
        w3 = start(stack, "jury-worker", "w3")
        w3_ready_at = timezone.now()
        wait_for(
            lambda: set(JuryRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True))
            == {"succeeded"} and GuardJob.objects.get(pk=job.pk).finished,
            w3, 240, "the runs or the guard job did not finish",
            lambda: f"{per_juror()} guard job {GuardJob.objects.get(pk=job.pk).status}",
        )  # fmt: skip
        assert w2.poll() is None and gpu.poll() is None
        job.refresh_from_db()
        job_group = _pgid(int(job.worker.rsplit(":", 1)[1]))

    # Every sample ends with exactly one label per juror, each run's counted once across the kill.
    per_pair = (
        Label.objects.filter(source_kind="juror").values("sample_id", "source_name").annotate(n=Count("id"))
    )
    assert len(per_pair) == SAMPLES * 6 and {row["n"] for row in per_pair} == {1}
    for run in runs:
        run.refresh_from_db()
        assert run.done == run.total == SAMPLES * 3
        assert not run.tasks.exclude(status="valid").exists()

    # The guard job ran beside the jury, on the gpu worker (a pool process of its group), never on a jury worker.
    assert job.status == "succeeded" and job.done == 32, job.error
    assert job.started_at < max(r.finished_at for r in runs) and job.finished_at > runs[0].created_at
    assert job_group == gpu.pid

    # Who drove what. Before the kill: the first worker the first run, the added worker the second, each juror by one.
    assert before == {
        **{j.name: {nodes["w1"]} for j in first_three},
        **{j.name: {nodes["w2"]} for j in last_three},
    }
    assert all_driving_s < 15  # the added worker's three jurors were labelling within seconds of being queued
    first, second = ({s.worker: s for s in services.run_workers(run)} for run in runs)
    # After it: the fresh worker took the three orphaned jurors over and no other; the live worker kept its own;
    # the gpu worker drove no juror.
    assert set(first) == {nodes["w1"], nodes["w3"]} and set(second) == {nodes["w2"]}
    assert set(first[nodes["w1"]].jurors) == set(first[nodes["w3"]].jurors) == {j.name for j in first_three}
    assert first[nodes["w1"]].labels + first[nodes["w3"]].labels == second[nodes["w2"]].labels == SAMPLES * 3
    span = {
        (juror, node): (earliest, latest)
        for juror, node, earliest, latest in written.values_list("juror__name", "driven_by")
        .annotate(earliest=Min("completed_at"), latest=Max("completed_at"))
        .order_by()
    }
    for juror in first_three:
        dead_last, fresh_first = span[(juror.name, nodes["w1"])][1], span[(juror.name, nodes["w3"])][0]
        # The dead worker was writing until it was killed, and the fresh one carried on after…
        assert (killed_at - dead_last).total_seconds() < 3 and fresh_first > killed_at
        # …which came once the dead driver's lease ran out (a retry comes due at most a lease and a second after
        # the fresh worker queued it on start), give or take a loaded machine: no orphan waited on a free process.
        assert (fresh_first - w3_ready_at).total_seconds() < LEASE_S + 1 + 10


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_live_jury_worker_takes_over_a_dead_ones_jurors_without_a_restart(
    make_jurors, voted, tmp_path, settings
):
    """Two jury workers share a run of three jurors; the one driving more is killed and nothing restarts. The dead
    drivers' messages stay unacknowledged (the broker would hand them out again after an hour): the survivor's watch
    finds their leases run out and queues their jurors, which it drives on its free processes."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    voted(*["1,0,1"] * 150)  # each juror: about 22 s of work
    nodes = {tag: host_format(f"jury@{tag}.%h") for tag in ("w1", "w2")}
    jurors = ("a", "b", "c")
    answers = {name: scripted_vote(i) for i, name in enumerate(jurors)}
    with LoopbackOpenAI(by_model(answers), delay_s=DELAY_S) as server, ExitStack() as stack:
        make_jurors(server.url, names=jurors, max_concurrency=IN_FLIGHT)
        workers = {
            tag: _compose_worker(stack, "jury-worker", tag, settings.MEDIA_ROOT, tmp_path) for tag in nodes
        }
        wait_for(
            lambda: set(nodes.values()) <= _nodes_answering(),
            workers["w1"],
            120,
            "the workers did not answer",
        )
        run = services.jury_run_create(selection={})
        written = JuryTask.objects.filter(run=run, completed_at__isnull=False)

        def drivers() -> dict[str, set[str]]:
            found: dict[str, set[str]] = {}
            for juror, node in written.values_list("juror__name", "driven_by").distinct():
                found.setdefault(node, set()).add(juror)
            return found

        wait_for(lambda: sum(map(len, drivers().values())) == 3, workers["w1"], 60, "not every juror was driven",
                 lambda: str(drivers()))  # fmt: skip
        before = drivers()
        victim = max(nodes, key=lambda tag: len(before.get(nodes[tag], ())))
        survivor = next(tag for tag in nodes if tag != victim)
        orphans = before[nodes[victim]]
        kill_worker(workers[victim])
        killed_at = timezone.now()
        wait_for(lambda: JuryRun.objects.get(pk=run.pk).status == "succeeded", workers[survivor], 120,
                 "the dead worker's jurors were not taken over", lambda: str(drivers()))  # fmt: skip
    run.refresh_from_db()
    assert run.done == run.total == 450 and not run.tasks.exclude(status="valid").exists()
    after = drivers()
    assert after[nodes[survivor]] == set(jurors)  # its own, and the orphans after the kill
    for juror in orphans:
        resumed = written.filter(juror__name=juror, driven_by=nodes[survivor]).aggregate(
            first=Min("completed_at")
        )
        # A lease to run out, then at most half a lease until the next look, give or take a loaded machine.
        assert (resumed["first"] - killed_at).total_seconds() < LEASE_S + LEASE_S / 2 + 8
