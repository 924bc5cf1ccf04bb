"""Long work on Celery workers — imports, guard jobs, jury runs, generation runs, expansions, training rounds —
shares one abstract model (status, creator, times, holder and heartbeat, progress, error) with its claim, beat, end
and cancel, one requeue of work whose worker died, one driver loop for work against a model, and one place where a
starting worker resumes what each app left unfinished."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from queue import Empty, SimpleQueue
from typing import Any

from celery.signals import worker_ready
from django.conf import settings
from django.db import connection, models
from django.db.models import Q
from django.utils import timezone

from common.models import lease_acquire, lease_clear, lease_release, leases_run_out
from qta import endpoint
from qta.endpoint import RetryPolicy
from qta.workers import worker_gone, worker_id

log = logging.getLogger(__name__)


class JobStatus(models.TextChoices):
    """Lifecycle of every kind of long work."""

    PENDING = "pending", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    # Stopped by a dead worker with its progress kept; resuming carries on from there.
    INTERRUPTED = "interrupted", "Interrupted (resumable)"


# The statuses after which long work does no more (interrupted work can still be resumed).
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
_STATE: dict[str, str] = {
    JobStatus.PENDING: "is queued",
    JobStatus.RUNNING: "is running",
    JobStatus.SUCCEEDED: "has succeeded",
    JobStatus.FAILED: "has failed",
    JobStatus.CANCELLED: "was cancelled",
    JobStatus.INTERRUPTED: "was interrupted",
}
STATUS_LENGTH = 12


class LongWork(models.Model):
    """What every kind of long work records: its status, who asked for it and when, which worker holds it and when
    that worker last showed life, how far it got (`done` of `total`), and why it failed.

    A worker takes the work by conditional update (`take`), reports progress and life while it still holds it
    (`beat`: False once it was cancelled or taken over, so stop), and records the end unless it lost the work
    meanwhile (`end`). Anyone may `cancel` work not yet finished, and `requeue` work that stopped.
    `requeue_abandoned` hands back work whose worker died."""

    Status = JobStatus

    status = models.CharField(
        max_length=STATUS_LENGTH, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Who works it (host:pid) and when it last showed life: a worker that starts on the same host finds work whose
    # process is gone at once; work anywhere whose heartbeat is older than its kind's limit is taken over.
    worker = models.CharField(max_length=200, blank=True, help_text="Who works it (host:pid).")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life from its worker.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def state(self) -> str:
        """Where it stands, as a sentence says it: "is queued", "has succeeded", "was cancelled"…"""
        return _STATE[self.status]

    @property
    def percent(self) -> int:
        return min(100, int(100 * self.done / self.total)) if self.total else 0

    @classmethod
    def take(
        cls, pk: int, *, stale_before: datetime | None = None, also_running: bool = False, **fields
    ) -> bool:
        """Claim the work for this worker: when it is pending, or running with no heartbeat since `stale_before`
        (its worker died elsewhere), or — `also_running` — running at all (its message was redelivered because its
        worker died). `fields` are set with it. False: someone else has it, or it is over."""
        Status = cls.Status
        claimable = Q(status=Status.PENDING)
        if also_running:
            claimable |= Q(status=Status.RUNNING)
        elif stale_before is not None:
            claimable |= Q(status=Status.RUNNING) & (
                Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True, started_at__lt=stale_before)
            )
        now = timezone.now()
        return bool(
            cls._default_manager.filter(claimable, pk=pk).update(
                status=Status.RUNNING,
                worker=worker_id(),
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
                error="",
                **fields,
            )
        )

    @classmethod
    def beat(cls, pk: int, **fields) -> bool:
        """Record progress (`fields`, F() expressions welcome) and a sign of life while this worker still holds the
        running work. False: it was cancelled or taken over — stop, writing nothing more."""
        return bool(
            cls._default_manager.filter(pk=pk, status=cls.Status.RUNNING, worker=worker_id()).update(
                heartbeat_at=timezone.now(), **fields
            )
        )

    @classmethod
    def end(cls, pk: int, status: str, **fields) -> bool:
        """Record how the work this worker holds ended; nothing changes when it was cancelled or taken over."""
        now = timezone.now()
        return bool(
            cls._default_manager.filter(pk=pk, status=cls.Status.RUNNING, worker=worker_id()).update(
                status=status, finished_at=now, heartbeat_at=now, **fields
            )
        )

    @classmethod
    def requeue(cls, pk: int, *, only: Q | None = None, **fields) -> bool:
        """Put stopped work (failed, cancelled, interrupted) back in the queue, with `fields` reset; the caller sends
        its message once this commits. `only` adds a kind's own condition to the same update. False when it is
        queued, running or has succeeded (or fails `only`)."""
        Status = cls.Status
        return bool(
            cls._default_manager.filter(
                only or Q(), pk=pk, status__in=[Status.FAILED, Status.CANCELLED, Status.INTERRUPTED]
            ).update(
                status=Status.PENDING,
                worker="",
                error="",
                started_at=None,
                heartbeat_at=None,
                finished_at=None,
                **fields,
            )
        )

    @classmethod
    def cancel(cls, pk: int) -> bool:
        """Stop work not yet finished: pending work never starts, running work stops at its next `beat`."""
        Status = cls.Status
        return bool(
            cls._default_manager.filter(
                pk=pk, status__in=[Status.PENDING, Status.RUNNING, Status.INTERRUPTED]
            ).update(status=Status.CANCELLED, finished_at=timezone.now())
        )


def requeue_abandoned(
    model: type[LongWork],
    *,
    enqueue: Callable[[int], object],
    host: str | None = None,
    stale_before: datetime | None = None,
) -> list[int]:
    """Put back to pending the running work of `model` whose worker died on this host, or — with `stale_before` —
    whose worker anywhere showed no life since then; then queue every pending row, whose message may be lost.
    `take` makes work queued twice run once. Returns the ids queued."""
    Status = model.Status
    manager = model._default_manager
    running = manager.filter(status=Status.RUNNING)
    for pk, worker, beat, started in running.values_list("pk", "worker", "heartbeat_at", "started_at"):
        last = beat or started
        silent = stale_before is not None and (last is None or last < stale_before)
        if (worker and worker_gone(worker, host=host)) or silent:
            manager.filter(pk=pk, status=Status.RUNNING, worker=worker).update(
                status=Status.PENDING, worker=""
            )
    queued = list(manager.filter(status=Status.PENDING).values_list("pk", flat=True))
    for pk in queued:
        enqueue(pk)
    return queued


def connection_recover() -> None:
    """After a database error outside any transaction, drop this thread's connection if it is broken, so the next
    query opens a new one: a connection the server dropped would otherwise fail every later query of the task —
    including the one recording that the work failed, leaving it *running* while its worker lives on."""
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


def retry_policy() -> RetryPolicy:
    """How every model call is retried (jurors, generators): attempts and backoff from settings."""
    return RetryPolicy(
        attempts=settings.GUARDTRACE_JURY_ATTEMPTS,
        base_delay_s=settings.GUARDTRACE_JURY_BACKOFF_S,
        max_delay_s=settings.GUARDTRACE_JURY_BACKOFF_MAX_S,
    )


class Driver:
    """The one loop that works claimed items against a model: claim → call with N in flight → flush the results it
    still owns → renew its hold → stop on cancel; whatever it claimed and did not write goes back on the way out.

    Subclasses say how: `claim(want)` returns units of (items, payload) taken by conditional update; the call runs
    either as `acall(payload)`, a coroutine on the process's event loop (`asynchronous = True`: model servers over
    HTTP, thousands in flight for the cost of sockets), or as `call(payload)` on a pool thread (local models);
    either touches no database and returns one result per item (never raising). `flush(done)` writes the (item,
    result) pairs the driver still owns, in one transaction, and returns how many it wrote; `renew()` keeps its
    lease (False: another driver took over, so stop); `cancelled(items)` names in-flight items whose work was
    cancelled; `more()` is asked when nothing is left to claim (True: look again — a dead driver's claims came
    free); `release()` gives back what is still claimed. The database is touched from the driving thread only."""

    workers = 1  # calls in flight
    target = 1  # items held at once (in flight and waiting for a thread)
    refill_at: int | None = None  # claim more once this few are held (default: half the target)
    flush_every = 1  # results buffered before a write
    flush_after_s = 0.5  # …or this long after the last write
    renew_every_s: float | None = None
    cancel_every_s = 1.0
    idle_poll_s = 1.0  # with work in flight and nothing to claim, look again this often
    asynchronous = False  # calls are `acall` coroutines on the event loop, not `call` on threads
    name = "driver"

    def claim(self, want: int) -> Sequence[tuple[Sequence[Hashable], Any]]:
        raise NotImplementedError

    def call(self, payload: Any) -> Sequence[Any]:
        raise NotImplementedError

    async def acall(self, payload: Any) -> Sequence[Any]:
        raise NotImplementedError

    def flush(self, done: list[tuple[Hashable, Any]]) -> int:
        raise NotImplementedError

    def renew(self) -> bool:
        return True

    def cancelled(self, items: list[Hashable]) -> set[Hashable]:
        return set()

    def dropped(self, items: list[Hashable]) -> None:
        """Cancelled items whose calls never started: give them back now."""

    def more(self) -> bool:
        return False

    def release(self) -> None:
        pass

    def run(self) -> int:
        refill_at = self.target // 2 if self.refill_at is None else self.refill_at
        inflight: dict[Future, Sequence[Hashable]] = {}
        completed: SimpleQueue[Future] = SimpleQueue()  # futures as they finish: no scan of all in flight
        buffer: list[tuple[Hashable, Any]] = []
        written = 0
        last_beat = last_flush = last_cancel_check = next_claim = time.monotonic()
        pool = None if self.asynchronous else ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        gate = asyncio.Semaphore(self.workers)
        started: set[int] = (
            set()
        )  # id() of the items whose async call is past the gate (the rest can be dropped)

        async def gated(payload: Any, items: Sequence[Hashable]) -> Sequence[Any]:
            async with gate:
                started.add(id(items))
                try:
                    return await self.acall(payload)
                finally:
                    started.discard(id(items))

        def launch(items: Sequence[Hashable], payload: Any) -> None:
            if pool is not None:
                future = pool.submit(self.call, payload)
            else:
                future = endpoint.submit(gated(payload, items))
            inflight[future] = items
            future.add_done_callback(completed.put)

        try:
            while True:
                now = time.monotonic()
                if self.renew_every_s is not None and now - last_beat > self.renew_every_s:
                    if not self.renew():
                        log.warning("%s: lease lost; another driver took over", self.name)
                        return written
                    last_beat = now
                held = sum(len(items) for items in inflight.values())
                claimed_nothing = False
                if held <= refill_at and (now >= next_claim or not inflight):
                    units = self.claim(self.target - held)
                    for items, payload in units:
                        launch(items, payload)
                    if not units:
                        claimed_nothing = True
                        next_claim = (
                            now + self.idle_poll_s
                        )  # new work, or a dead driver's, is looked for again
                if not inflight and not buffer and claimed_nothing:
                    if self.more():
                        next_claim = 0.0
                        continue
                    return written
                if inflight:
                    try:
                        finished = [completed.get(timeout=0.1)]
                    except Empty:
                        finished = []
                    while not completed.empty():
                        finished.append(completed.get_nowait())
                    for future in finished:
                        # Dropped (cancelled) calls were taken out of `inflight` already.
                        if (items := inflight.pop(future, ())) and not future.cancelled():
                            buffer.extend(zip(items, future.result(), strict=True))
                now = time.monotonic()
                if buffer and (
                    len(buffer) >= self.flush_every or now - last_flush >= self.flush_after_s or not inflight
                ):
                    written += self.flush(buffer)
                    buffer, last_flush = [], now
                if inflight and now - last_cancel_check >= self.cancel_every_s:
                    stopped = self.cancelled([item for items in inflight.values() for item in items])
                    dropped: list[Hashable] = []
                    for future, items in list(inflight.items()):
                        not_started = pool is not None or id(items) not in started
                        if stopped and items[0] in stopped and not_started and future.cancel():
                            dropped.extend(items)
                            del inflight[future]
                    if dropped:
                        self.dropped(dropped)
                    last_cancel_check = now
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            for future in inflight:
                future.cancel()  # async calls still in flight stop; their items go back with release()
            self.release()


@dataclass
class DriveOutcome:
    written: int = 0  # results the drivers wrote (labels, samples)
    busy_for: float | None = None  # another driver holds the lease: try again after this many seconds


def drive_under_lease(
    key: str, lease_s: float, drive: Callable[[str], int], more: Callable[[], bool]
) -> DriveOutcome:
    """Drive while holding the lease `key` (`drive(token)` returns the results it wrote), give the lease back, and
    drive again while `more()` finds work (made while this driver was finishing, it found the lease held and was
    left to it). When another driver holds the lease, `busy_for` says when that lease could run out."""
    outcome = DriveOutcome()
    while True:
        token = uuid.uuid4().hex
        if (wait_s := lease_acquire(key, token, lease_s)) is not None:
            outcome.busy_for = wait_s
            return outcome
        try:
            outcome.written += drive(token)
        finally:
            lease_release(key, token)
        if not more():
            return outcome


def drivers_requeue_orphaned(
    prefix: str, has_work: Callable[[int], bool], enqueue: Callable[[list[int]], object]
) -> list[int]:
    """Queue a driver for each lease under `prefix` (`juror:<id>`, `generator:<id>`) that ran out while its id still
    has work (`has_work(id)`): the driver's worker died with the message unacknowledged, which the broker hands out
    again only after its visibility timeout. Live workers run this every half lease (`on_worker_watch`); giving the
    dead lease back is a conditional update, so one of them queues the driver (`enqueue(ids)`)."""
    queued = []
    for key, token in leases_run_out(prefix):
        pk = int(key.removeprefix(prefix))
        if has_work(pk) and lease_clear(key, token):
            queued.append(pk)
    if queued:
        log.warning("%s%s: the driver's lease ran out with work left; drivers queued", prefix, queued)
        enqueue(queued)
    return queued


_resumers: dict[str, Callable[[], object]] = {}


def on_worker_start(resume: Callable[[], object]) -> Callable[[], object]:
    """Register `resume` to run when a worker starts (after a crash, a deploy, a reboot). Each kind of long work
    registers one, next to its tasks; registering the same function twice keeps one."""
    _resumers[f"{resume.__module__}.{resume.__qualname__}"] = resume
    return resume


def resume_all() -> dict[str, object]:
    """Run every registered resume; one that fails is logged and does not stop the others."""
    results: dict[str, object] = {}
    for name, resume in _resumers.items():
        try:
            results[name] = resume()
        except Exception:  # noqa: BLE001 - a broken resume must not keep the worker from resuming the rest
            log.exception("resuming %s on worker start failed", name)
            results[name] = None
    return results


_watches: dict[str, tuple[tuple[str, ...], Callable[[], float], Callable[[], object]]] = {}
_watching: list[Any] = []  # the worker's timer entries running them


def on_worker_watch(
    queues: tuple[str, ...], every_s: Callable[[], float], watch: Callable[[], object]
) -> None:
    """Register `watch` to run every `every_s()` seconds in each worker that consumes one of `queues`: how a live
    worker finds work whose driver died with its worker, with no restart (`on_worker_start`) or scheduler to notice."""
    _watches[f"{watch.__module__}.{watch.__qualname__}"] = (queues, every_s, watch)


def _watch(name: str, watch: Callable[[], object]) -> None:
    try:
        watch()
    except Exception:  # noqa: BLE001 - a failed look is logged and tried again at the next tick
        log.exception("worker watch %s failed", name)
        connection_recover()


def start_watches(consumer) -> list[str]:
    """Put the watches of the queues this worker consumes on its timer (again, after a consumer restart)."""
    for entry in _watching:
        entry.cancel()
    _watching.clear()
    consumed = consumer.app.amqp.queues.consume_from
    started = []
    for name, (queues, every_s, watch) in _watches.items():
        if consumed is None or any(queue in consumed for queue in queues):
            _watching.append(consumer.timer.call_repeatedly(every_s(), _watch, (name, watch)))
            started.append(name)
    return started


@worker_ready.connect
def _resume_on_start(sender=None, **kwargs) -> None:
    resume_all()
    if sender is not None and getattr(sender, "timer", None) is not None:
        start_watches(sender)
