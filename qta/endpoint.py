"""Calls to OpenAI-compatible chat servers (vLLM, SGLang, Ollama, hosted APIs), many in flight on one event loop.

Each process runs one event loop in a thread of its own; every request to a model server is a coroutine on it, so a
thousand calls in flight cost sockets, not threads. Drivers hand it many calls at once (`submit`); code that needs one
answer waits for it (`wait`). Replies are read as plain JSON — no response models — and failures are retried with
exponential backoff and full jitter, each attempt logged. Several servers of one model (vLLM replicas) are called as
one through a `ReplicaPool`, which spreads the calls and takes a failing server out for a while.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiohttp

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass
class RetryPolicy:
    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    # Called with each pause instead of sleeping (tests record the pauses); None: wait on the event loop.
    sleep: Callable[[float], None] | None = None

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))

    async def pause(self, attempt: int) -> None:
        delay = self.delay(attempt)
        if self.sleep is None:
            await asyncio.sleep(delay)
        else:
            self.sleep(delay)


class EndpointError(Exception):
    """A call to a model server that did not give a chat completion."""

    retryable = False


class Unreachable(EndpointError):
    """No connection, or the server closed it before answering."""

    retryable = True

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message  # short: "connection refused", say


class TimedOut(EndpointError):
    """No complete answer within the endpoint's timeout."""

    retryable = True


class StatusError(EndpointError):
    def __init__(self, status: int, url: str, body: bytes) -> None:
        text = body[:300].decode("utf-8", "replace")
        super().__init__(f"{url} answered HTTP {status}: {text}")
        self.status = status
        self.retryable = status in RETRYABLE_STATUS


class NotAChatCompletion(EndpointError):
    """A 200 whose body is not a chat completion (not JSON, or no `choices` list)."""


# -- the process's event loop --------------------------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()


def event_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for model calls, started on first use (and again in a forked child, which
    inherits no threads)."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="model-calls", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def submit(call: Coroutine[Any, Any, T]) -> Future[T]:
    """Run `call` on the event loop; its result (or exception) comes back through the returned future."""
    return asyncio.run_coroutine_threadsafe(call, event_loop())


def wait(call: Coroutine[Any, Any, T]) -> T:
    """Run `call` on the event loop and wait for its result, from any thread but the loop's own."""
    return submit(call).result()


_sessions: dict[tuple, aiohttp.ClientSession] = {}  # used on the event loop only


async def _close_sessions() -> None:
    for session in list(_sessions.values()):
        await session.close()
    _sessions.clear()


@atexit.register
def _close_on_exit() -> None:
    """Close the open connections before the process ends (the loop's thread is still there)."""
    loop = _loop
    if loop is not None and _loop_pid == os.getpid() and loop.is_running() and _sessions:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close_sessions(), loop).result(timeout=2)


# -- one server ----------------------------------------------------------------------------------------------------


class ChatEndpoint:
    """One OpenAI-compatible server: `POST {base_url}/chat/completions` with its key and timeout, connections kept
    alive, at most `max_connections` open at once (more calls wait for a free one)."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout_s: float = 120.0, max_connections: int = 8
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.timeout_s = timeout_s
        self.max_connections = max(1, max_connections)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key or 'unused'}"}

    def new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=self.headers,
        )

    def _session(self) -> aiohttp.ClientSession:
        # Endpoints configured alike share one session (its connections) on a loop, however often they are made.
        key = (
            asyncio.get_running_loop(),
            self.headers["Authorization"],
            self.timeout_s,
            self.max_connections,
        )
        session = _sessions.get(key)
        if session is None or session.closed:
            session = self.new_session()
            _sessions[key] = session
        return session

    async def fetch(
        self,
        method: str,
        url: str,
        data: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        follow_redirects: bool = True,
    ) -> tuple[int, bytes, str]:
        """One request: (status, body, the Location header). No connection or no answer in time raise
        Unreachable / TimedOut."""
        try:
            async with (session or self._session()).request(
                method, url, data=data, allow_redirects=follow_redirects
            ) as response:
                return response.status, await response.read(), response.headers.get("Location", "")
        except TimeoutError:
            raise TimedOut(f"{url}: no complete answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            reason = str(exc)
            if isinstance(exc, aiohttp.ClientConnectorError):
                refused = isinstance(exc.os_error, ConnectionRefusedError)
                reason = (
                    "connection refused" if refused else f"cannot connect ({exc.os_error.strerror or exc})"
                )
            raise Unreachable(f"{url}: {type(exc).__name__}: {exc}", reason) from None

    async def post(self, body: dict) -> dict:
        """One attempt: the chat completion as a dict, or an EndpointError saying what went wrong."""
        status, raw, _ = await self.fetch("POST", self.url, json.dumps(body))
        if status != 200:
            raise StatusError(status, self.url, raw)
        try:
            reply = json.loads(raw)
        except ValueError:
            raise NotAChatCompletion(f"{self.url}: the reply is not JSON: {raw[:200]!r}") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("choices", []), list):
            raise NotAChatCompletion(f"{self.url}: not a chat completion: {str(reply)[:200]!r}")
        return reply

    async def chat(self, body: dict, retry: RetryPolicy, attempts: list[dict], name: str) -> dict:
        """The chat completion, retried with backoff and jitter while the failure is retryable and attempts are
        left; each attempt goes in `attempts`. Raises the last EndpointError otherwise."""
        while True:
            attempt = len(attempts) + 1
            started = time.perf_counter()
            try:
                reply = await self.post(body)
            except EndpointError as exc:
                attempts.append({"attempt": attempt, "outcome": f"{type(exc).__name__}: {exc}",
                                 "ms": round((time.perf_counter() - started) * 1000, 1)})  # fmt: skip
                again = exc.retryable and attempt < retry.attempts
                log.warning("%s attempt %d failed: %s%s", name, attempt, exc, "; retrying" if again else "")
                if not again:
                    raise
                await retry.pause(attempt)
                continue
            attempts.append(
                {"attempt": attempt, "outcome": "ok", "ms": round((time.perf_counter() - started) * 1000, 1)}
            )
            return reply


# -- several servers of one model ----------------------------------------------------------------------------------

COOLDOWN_S = 1.0  # how long a replica that failed a call first stays out
COOLDOWN_MAX_S = 30.0  # the cool-down doubles with each take-out in a row, up to this


class NoReplicaAnswered(EndpointError):
    """Every replica of a pool failed a call, through every round of retries."""


@dataclass(eq=False)
class Replica:
    """One server of a pool, and what the pool knows of it (read and written on the event loop only)."""

    endpoint: ChatEndpoint
    in_flight: int = 0
    sent: int = 0
    answered: int = 0
    # Take-outs in a row; back in service with failures > 0 it is on probation: one call at a time.
    failures: int = 0
    takeouts: int = 0  # a call remembers this when sent: a failure after a later take-out is old news
    out_until: float = 0.0  # time.monotonic() until which it gets no calls
    last_error: str = ""

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url


def _load(replica: Replica) -> tuple[int, int]:
    """Least loaded first: fewest calls in flight, then fewest sent (so that equal servers share alike)."""
    return replica.in_flight, replica.sent


def _reason(exc: EndpointError, timeout_s: float) -> str:
    if isinstance(exc, Unreachable):
        return exc.reason
    if isinstance(exc, TimedOut):
        return f"no complete answer within {timeout_s:g} s"
    if isinstance(exc, StatusError):
        return f"HTTP {exc.status}"
    return str(exc)[:100]


class ReplicaPool:
    """Several servers of one model (vLLM replicas) called as one ChatEndpoint (`chat`). Each call goes to the least
    loaded replica in service, at most `per_replica` calls in flight on each. A replica that fails a call with a
    retryable error (no connection, 429 or 5xx, no complete answer within `timeout_s`) is taken out for a cool-down
    — 1 s, doubling with each take-out in a row up to 30 s — and the call goes at once to another replica in
    service; back from its cool-down, a replica takes one call at a time until one succeeds. When no replica in
    service is left to try, the retry policy's backoff applies: the call waits, then tries again those in service,
    or with every one out the replica back soonest, as one endpoint is retried. An error that is the request's own (400, 413, 422 …) is no replica's fault: raised at once.

    With one base URL the pool is exactly that endpoint: `ChatEndpoint.chat`, its connections the limit."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        per_replica: int = 8,
        cooldown_s: float = COOLDOWN_S,
        max_cooldown_s: float = COOLDOWN_MAX_S,
    ) -> None:
        if not base_urls:
            raise ValueError("a pool needs at least one base URL")
        self.per_replica = max(1, per_replica)
        self.max_connections = self.per_replica * len(base_urls)  # calls in flight over all replicas
        self.timeout_s = timeout_s
        self.cooldown_s, self.max_cooldown_s = cooldown_s, max_cooldown_s
        # The replicas share one session whose connection limit is the pool's total; the pool holds each to its share.
        self.replicas = [
            Replica(
                ChatEndpoint(url, api_key=api_key, timeout_s=timeout_s, max_connections=self.max_connections)
            )
            for url in base_urls
        ]
        # Calls waiting for a slot: at a round's start, in order; and turned away by a replica this round.
        self._waiting: deque[tuple[set[int], asyncio.Future]] = deque()
        self._retrying: list[tuple[set[int], asyncio.Future]] = []

    @property
    def base_url(self) -> str:
        return self.replicas[0].base_url

    def state(self) -> list[dict]:
        """Each replica as the pool sees it now: calls in flight, sent and answered, and whether it is out."""
        now = time.monotonic()
        return [
            {
                "replica": r.base_url,
                "in_flight": r.in_flight,
                "sent": r.sent,
                "answered": r.answered,
                "out_for_s": round(max(0.0, r.out_until - now), 3),
                "last_error": r.last_error,
            }
            for r in self.replicas
        ]

    async def chat(self, body: dict, retry: RetryPolicy, attempts: list[dict], name: str) -> dict:
        """The chat completion from one of the replicas; each attempt, with its replica, goes in `attempts`. A round
        offers the call to every replica in service once; rounds are retried with backoff as `ChatEndpoint.chat`
        retries attempts (counted the same way, earlier entries of `attempts` included). Raises the request's own
        error at once, NoReplicaAnswered when the rounds run out."""
        if len(self.replicas) == 1:
            return await self.replicas[0].endpoint.chat(body, retry, attempts, name)
        round_ = len(attempts) + 1
        failed: dict[str, str] = {}  # replica → why it failed this call
        while True:
            tried: set[int] = set()
            while (picked := await self._acquire(tried)) is not None:
                replica, takeouts = picked
                tried.add(id(replica))
                try:
                    return await self._call(replica, takeouts, body, attempts, name)
                except EndpointError as exc:
                    if not exc.retryable:
                        raise
                    failed[replica.base_url] = _reason(exc, self.timeout_s)
            if round_ >= retry.attempts:
                raise NoReplicaAnswered(self._summary(failed, round_))
            log.warning("%s: no replica answered in round %d; retrying after a pause", name, round_)
            await retry.pause(round_)
            round_ += 1

    def _summary(self, failed: dict[str, str], rounds: int) -> str:
        why = []
        for r in self.replicas:
            reason = failed.get(r.base_url) or (f"out ({r.last_error})" if r.last_error else "not tried")
            why.append(f"{r.base_url}: {reason}")
        return f"none of the {len(self.replicas)} replicas answered in {rounds} rounds — " + "; ".join(why)

    async def _call(
        self, replica: Replica, takeouts: int, body: dict, attempts: list[dict], name: str
    ) -> dict:
        """One attempt on `replica`, whose slot `_acquire` took; the slot is given back however it ends."""
        attempt = len(attempts) + 1
        started = time.perf_counter()
        replica.sent += 1
        try:
            reply = await replica.endpoint.post(body)
        except EndpointError as exc:
            ms = round((time.perf_counter() - started) * 1000, 1)
            attempts.append(
                {
                    "attempt": attempt,
                    "outcome": f"{type(exc).__name__}: {exc}",
                    "ms": ms,
                    "replica": replica.base_url,
                }
            )
            log.warning("%s attempt %d on %s failed: %s", name, attempt, replica.base_url, exc)
            if exc.retryable:
                self._take_out(replica, takeouts, _reason(exc, self.timeout_s))
            raise
        else:
            ms = round((time.perf_counter() - started) * 1000, 1)
            attempts.append({"attempt": attempt, "outcome": "ok", "ms": ms, "replica": replica.base_url})
            replica.answered += 1
            if replica.takeouts == takeouts:  # an answer to a call sent before a take-out says nothing of now
                replica.failures, replica.out_until = 0, 0.0
            return reply
        finally:
            replica.in_flight -= 1
            self._wake()

    def _take_out(self, replica: Replica, takeouts: int, reason: str) -> None:
        replica.last_error = reason
        if replica.takeouts != takeouts:
            return  # taken out since this call was sent: the same trouble, already counted
        replica.takeouts += 1
        replica.failures += 1
        cooldown = min(self.max_cooldown_s, self.cooldown_s * 2 ** (replica.failures - 1))
        replica.out_until = time.monotonic() + cooldown
        # Its slots are free again then (a little after: a loop's timer may run a clock tick early).
        asyncio.get_running_loop().call_later(cooldown + 0.01, self._wake)
        log.warning("replica %s taken out for %g s: %s", replica.base_url, cooldown, reason)

    def _pick(self, tried: set[int], now: float) -> Replica | Literal["wait", "over"]:
        """The least loaded replica in service not tried this round with a slot free; with every replica out, the
        one back soonest (at a round's start only). "wait": none has a slot now; "over": the round is over, the
        replicas not tried being all out."""
        candidates = [r for r in self.replicas if id(r) not in tried]
        in_service = [r for r in candidates if r.out_until <= now]
        if in_service:
            free = [r for r in in_service if r.in_flight < (1 if r.failures else self.per_replica)]
        elif tried or not candidates:
            return "over"
        else:
            soonest = min(candidates, key=lambda r: r.out_until)
            free = [soonest] if soonest.in_flight < self.per_replica else []
        if not free:
            return "wait"
        return min(free, key=_load)

    def _slot(self, replica: Replica) -> tuple[Replica, int]:
        replica.in_flight += 1
        return replica, replica.takeouts

    async def _acquire(self, tried: set[int]) -> tuple[Replica, int] | None:
        """A slot on a replica (`_pick`) and its take-out count, waiting for one to free up; None: the round is
        over."""
        pick = self._pick(tried, time.monotonic())
        if isinstance(pick, Replica):
            return self._slot(pick)
        if pick == "over":
            return None
        waiter: asyncio.Future[tuple[Replica, int] | None] = asyncio.get_running_loop().create_future()
        (self._retrying if tried else self._waiting).append((tried, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and (slot := waiter.result()) is not None:
                slot[0].in_flight -= 1  # handed over as the call was cancelled
                self._wake()
            raise

    def _wake(self) -> None:
        """Hand the free slots to the waiting calls: first those already turned away by a replica this round
        (which may also learn that their round is over), then the others in the order they came."""
        now = time.monotonic()
        retrying, self._retrying = self._retrying, []
        for tried, waiter in retrying:
            pick = "over" if waiter.done() else self._pick(tried, now)
            if pick == "wait":
                self._retrying.append((tried, waiter))
            elif not waiter.done():
                waiter.set_result(self._slot(pick) if isinstance(pick, Replica) else None)
        while self._waiting:
            tried, waiter = self._waiting[0]
            if not waiter.done():
                pick = self._pick(tried, now)
                if not isinstance(pick, Replica):
                    break  # no slot for a call at its round's start: none for those behind it either
                waiter.set_result(self._slot(pick))
            self._waiting.popleft()


# -- checking a server ---------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """What one small request to a model server showed (the admin's "test connection")."""

    url: str  # the address asked last
    # ok, unreachable, timeout, refused (401/403), redirect, not served, http error or bad reply
    outcome: str = "ok"
    status: int | None = None  # None: no HTTP answer
    latency_ms: float = 0.0
    served: bool | None = None  # whether the model is served; None when the answer could not tell
    models: list[str] = field(default_factory=list)  # what the server lists, when it lists them
    detail: str = ""  # the server's words, or the connection's error

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def reachable(self) -> bool:
        return self.status is not None


def _model_ids(raw: bytes) -> list[str] | None:
    try:
        listing = json.loads(raw)
    except ValueError:
        return None
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return None
    return [str(entry["id"]) for entry in data if isinstance(entry, dict) and "id" in entry]


async def aprobe(base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 5.0) -> Probe:
    """Ask the server which models it serves (`GET {base_url}/models`); a server without that listing is asked
    for one token of `model` instead. One try each, on a new connection, within `timeout_s`; a redirect is
    reported, never followed (it could lead to another host, with the key). The key never appears in the result."""
    endpoint = ChatEndpoint(base_url, api_key=api_key, timeout_s=timeout_s, max_connections=1)
    probe = Probe(url=endpoint.base_url + "/models")
    started = time.perf_counter()
    try:
        async with endpoint.new_session() as session:
            status, raw, location = await endpoint.fetch(
                "GET", probe.url, session=session, follow_redirects=False
            )
            if status in (404, 405):  # no listing here: one token of the model says whether it is served
                probe.url = endpoint.url
                ping = [{"role": "user", "content": [{"type": "text", "text": "ping"}]}]
                body = {"model": model, "messages": ping, "max_tokens": 1}
                status, raw, location = await endpoint.fetch(
                    "POST", probe.url, json.dumps(body), session=session, follow_redirects=False
                )
    except TimedOut:
        probe.outcome, probe.detail = "timeout", f"timed out after {timeout_s:g} s"
    except Unreachable as exc:
        probe.outcome, probe.detail = "unreachable", exc.reason
    else:
        probe.status = status
        _read_answer(probe, model, status, raw, location)
    probe.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    if api_key:
        probe.detail = probe.detail.replace(api_key, "[key]")
    return probe


def _read_answer(probe: Probe, model: str, status: int, raw: bytes, location: str) -> None:
    text = raw[:300].decode("utf-8", "replace").strip()
    if 300 <= status < 400:
        # Where it points, without its query (which could hold a token).
        probe.outcome, probe.detail = "redirect", location.split("?", 1)[0] or "(no Location header)"
    elif status in (401, 403):
        probe.outcome, probe.detail = "refused", text
    elif status == 200 and probe.url.endswith("/models"):
        ids = _model_ids(raw)
        if ids is None:
            probe.outcome, probe.detail = "bad reply", f"not a model list: {text[:200]}"
        else:
            probe.models, probe.served = ids, model in ids
            if not probe.served:
                probe.outcome = "not served"
    elif status == 200:
        probe.served = True
    elif status == 404 or (status == 400 and "model" in text.lower()):
        probe.outcome, probe.served, probe.detail = "not served", False, text
    else:
        probe.outcome, probe.detail = "http error", text


def probe(base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 5.0) -> Probe:
    return wait(aprobe(base_url, model, api_key=api_key, timeout_s=timeout_s))
