"""Incremental audits: the guard reads a sample as a reasoning model writes it and answers after each piece.

A `StreamAudit` is opened with the question (and image); reasoning text, then answer text, is appended as it is
written, and each append answers at once with the guard's P(harmful) on the text so far (read after its own
analysis of it, or straight away at the judgment cue), the reasoning step the text has reached, and whether the
threshold is crossed — so a deployment can stop the model mid-trace. Each append costs its new tokens (and the
analysis, when read after one): a local guard's PrefixSession keeps the key/value cache of the text before it; a
served guard's server (vLLM) keeps its own prefix cache.

A `SessionStore` keeps the open audits of one process (the audit worker's): each expires after an idle time, and
the store is bounded in sessions and in key/value cache memory, the least recently used going first. Plain Python
around a guard; the Django side (guardmodel.services) gives it its settings and checkpoints.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qta import protocol
from qta.engine import AuditInput, decode_image
from qta.scores import Scores, TooManyTokens

SEGMENTS = ("reasoning", "answer")


class StreamError(Exception):
    """An append the audit cannot take; `status` is the HTTP status the API answers with."""

    status = 400


class SessionGone(StreamError):
    status = 410


class SegmentClosed(StreamError):
    status = 409


class TooLong(StreamError):
    status = 413


class _LocalReader:
    """A local guard reading the text so far with a PrefixSession: each read costs its new tokens (and, read
    after the guard's analysis, that analysis)."""

    def __init__(self, guard: Any, image: bytes | None, reading: str) -> None:
        pixels = decode_image(image, max_pixels=guard.options.max_image_pixels) if image else None
        self.read, self.session = guard.reading_session(pixels, reading, max_tokens=guard.max_input_tokens)

    def score(self, item: AuditInput) -> Scores:
        try:
            return self.read(item)
        except TooManyTokens as exc:
            raise TooLong(str(exc)) from None

    @property
    def tokens(self) -> int | None:
        return self.session.tokens

    @property
    def nbytes(self) -> int:
        return self.session.nbytes

    def close(self) -> None:
        self.session.close()


class _ServedReader:
    """A served guard reading the text so far: judged, or continued from the judgment cue; the server's prefix cache
    (vLLM's) makes each cost its new tokens. Nothing is held here but the text."""

    def __init__(self, guard: Any, reading: str) -> None:
        self.guard = guard
        self.reading = reading
        self.tokens = None
        self.nbytes = 0

    def score(self, item: AuditInput) -> Scores:
        from qta.endpoint import wait

        scores = wait(self.guard.aread(item, self.reading))
        if scores is None:
            raise Unscored(
                f"{self.guard.name}'s server gave no log-probabilities for the judgment (or cannot continue a "
                "message); audit sessions need both, as vLLM serves them"
            )
        return scores

    def close(self) -> None:
        pass


class Unscored(StreamError):
    status = 502


class StreamAudit:
    """One incremental audit of one sample on a guard: local (a qta.engine.TransformersGuard, its key/value cache
    kept here) or served (a qta.engine.OpenAIGuard whose server gives log-probabilities)."""

    def __init__(
        self,
        guard: Any,
        question: str,
        image: bytes | None,
        *,
        threshold: float,
        max_chars: int | None = None,
        reading: str = "analysis",
    ) -> None:
        self.question = question
        self.reading = reading
        self.image = image
        self.threshold = threshold
        self.max_chars = max_chars
        self.thinking = ""
        self.answer = ""
        local = hasattr(guard, "scorer")
        self.reader: Any = _LocalReader(guard, image, reading) if local else _ServedReader(guard, reading)
        self.question_risk: float | None = None
        self.step_risk: list[float] = []  # per reasoning step: P(harmful) at its latest append
        self.answer_risk: float | None = None
        self.first_unsafe_step: int | None = None
        self.appends = 0

    @property
    def nbytes(self) -> int:
        return self.reader.nbytes + 2 * (len(self.thinking) + len(self.answer))

    def close(self) -> None:
        self.reader.close()

    def _score(self) -> tuple[Scores, float]:
        started = time.perf_counter()
        scores = self.reader.score(AuditInput(self.question, self.thinking, self.answer, self.image))
        return scores, (time.perf_counter() - started) * 1000

    def open(self) -> dict:
        """P(harmful) after the question (and image) alone: whether the harm comes in with the request."""
        scores, ms = self._score()
        self.question_risk = scores.harmful
        return self._answer("question", None, scores, ms)

    def append(self, segment: str, text: str) -> dict:
        if segment not in SEGMENTS:
            raise StreamError(f"segment must be one of {', '.join(SEGMENTS)}, not {segment!r}")
        if segment == "reasoning" and self.answer:
            raise SegmentClosed("the answer has begun: no more reasoning can be appended to this session")
        before = self.thinking if segment == "reasoning" else self.answer
        after = before + text
        if self.max_chars is not None and len(after) > self.max_chars:
            raise TooLong(
                f"the {segment} would be {len(after)} characters; no more than {self.max_chars} are accepted"
            )
        if segment == "reasoning":
            self.thinking = after
        else:
            self.answer = after
        try:
            scores, ms = self._score()
        except BaseException:
            # Nothing is half-taken: the text goes back out (the cache is re-cropped on the next score).
            if segment == "reasoning":
                self.thinking = before
            else:
                self.answer = before
            raise
        self.appends += 1
        harmful = scores.harmful
        step = None
        if segment == "reasoning":
            step = max(1, len(protocol.reasoning_steps(self.thinking)))
            del self.step_risk[step:]
            self.step_risk += [harmful] * (step - len(self.step_risk))
            self.step_risk[step - 1] = harmful
            if self.first_unsafe_step is None and harmful >= self.threshold:
                self.first_unsafe_step = step
        else:
            self.answer_risk = harmful
        return self._answer(segment, step, scores, ms)

    def _answer(self, segment: str, step: int | None, scores: Scores, ms: float) -> dict:
        return {
            "segment": segment,
            "step": step,
            **scores.as_dict(),
            "threshold": self.threshold,
            "reading": self.reading,
            "crossed": scores.harmful >= self.threshold,
            "first_unsafe_step": self.first_unsafe_step,
            "tokens": self.reader.tokens,
            "latency_ms": round(ms, 2),
        }

    def state(self) -> dict:
        """Where the audit stands: P(harmful) per segment and per reasoning step so far, the first unsafe step."""
        reasoning = self.step_risk[-1] if self.step_risk else None
        return {
            "segments": {
                "question": _round(self.question_risk),
                "reasoning": _round(reasoning),
                "answer": _round(self.answer_risk),
            },
            "steps": [round(p, 6) for p in self.step_risk],
            "threshold": self.threshold,
            "first_unsafe_step": self.first_unsafe_step,
            "appends": self.appends,
            "tokens": self.reader.tokens,
            "characters": {"reasoning": len(self.thinking), "answer": len(self.answer)},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass
class _Entry:
    audit: Any  # a StreamAudit (or anything with nbytes and close())
    owner: Any
    tag: Any  # what the audit runs on (the checkpoint): `drop_unless` ends the others
    used: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionStore:
    """The open audits of this process, by id. An audit is ended when it has been idle `ttl_s`, when there are
    more than `max_sessions`, or when the caches together hold more than `max_bytes` (least recently used first);
    an audit whose own cache is over `max_bytes` is ended with a TooLong. An ended id says why it ended."""

    def __init__(
        self, *, max_sessions: int, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._open: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._ended: OrderedDict[str, str] = OrderedDict()  # id → why, for the last few thousand
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    @property
    def nbytes(self) -> int:
        return sum(entry.audit.nbytes for entry in self._open.values())

    def add(self, audit: Any, *, owner: Any, tag: Any = None) -> str:
        sid = secrets.token_hex(16)
        with self._lock:
            self._sweep()
            self._open[sid] = _Entry(audit, owner, tag, self.clock())
            while len(self._open) > self.max_sessions:
                self._end(next(iter(self._open)), f"ended: more than {self.max_sessions} sessions were open")
        self.fit(sid)
        return sid

    def use(self, sid: str, owner: Any, action: Callable[[Any], Any]) -> Any:
        """Run `action(audit)` on the owner's open audit (one action at a time per audit), then fit the store to
        its bounds. SessionGone for an id that is not open, or not the owner's (which is not told apart)."""
        with self._lock:
            self._sweep()
            entry = self._open.get(sid)
            if entry is None or entry.owner != owner:
                why = self._ended.get(sid) if entry is None else None
                raise SessionGone(f"no open audit session with this id ({why})" if why else
                                  "no open audit session with this id")  # fmt: skip
            self._open.move_to_end(sid)
            entry.used = self.clock()
        with entry.lock:
            result = action(entry.audit)
        self.fit(sid)
        return result

    def end(self, sid: str, owner: Any, why: str = "closed by its caller") -> dict:
        """Close an audit; its last state is answered."""
        state = self.use(sid, owner, lambda audit: audit.state())
        with self._lock:
            self._end(sid, why)
        return state

    def drop_unless(self, tag: Any) -> int:
        """End the audits that run on anything but `tag` (their model is no longer the one kept loaded)."""
        with self._lock:
            gone = [sid for sid, entry in self._open.items() if entry.tag != tag]
            for sid in gone:
                self._end(sid, "ended: another checkpoint was loaded on this worker")
        return len(gone)

    def fit(self, sid: str) -> None:
        with self._lock:
            entry = self._open.get(sid)
            if entry is not None and entry.audit.nbytes > self.max_bytes:
                self._end(sid, "ended: its cache was over the memory bound")
                raise TooLong(
                    f"the session's key/value cache ({entry.audit.nbytes / 2**20:.1f} MiB) is over this worker's "
                    f"bound of {self.max_bytes / 2**20:.1f} MiB; audit this sample whole with POST /api/v1/audit"
                )
            total = self.nbytes
            for other in [k for k in self._open if k != sid]:
                if total <= self.max_bytes:
                    break
                total -= self._open[other].audit.nbytes
                self._end(other, "ended: the least recently used, to keep within the memory bound")

    def _sweep(self) -> None:
        now = self.clock()
        for sid in [k for k, entry in self._open.items() if now - entry.used > self.ttl_s]:
            self._end(sid, f"expired after {self.ttl_s:g} s without an append")

    def _end(self, sid: str, why: str) -> None:
        entry = self._open.pop(sid, None)
        if entry is not None:
            entry.audit.close()
        self._ended[sid] = why
        while len(self._ended) > 4096:
            self._ended.popitem(last=False)
