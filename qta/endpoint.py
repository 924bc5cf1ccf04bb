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
from dataclasses import dataclass
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
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout_s = timeout_s
        self.max_connections = max(1, max_connections)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key or 'unused'}"}

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
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self.headers,
            )
            _sessions[key] = session
        return session

    async def post(self, body: dict) -> dict:
        """One attempt: the chat completion as a dict, or an EndpointError saying what went wrong."""
        try:
            async with self._session().post(self.url, data=json.dumps(body)) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise TimedOut(f"{self.url}: no complete answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise Unreachable(f"{self.url}: {type(exc).__name__}: {exc}") from None
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
