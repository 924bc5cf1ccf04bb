"""Calls to OpenAI-compatible chat servers (vLLM, SGLang, Ollama, hosted APIs), many in flight on one event loop.

Each process runs one event loop in a thread of its own; every request to a model server is a coroutine on it, so a
thousand calls in flight cost sockets, not threads. Drivers hand it many calls at once (`submit`); code that needs one
answer waits for it (`wait`). Replies are read as plain JSON — no response models — and failures are retried with
exponential backoff and full jitter, each attempt logged.
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
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
