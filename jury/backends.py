"""A juror's model behind one interface: `judge(items)` for a unit of work, `unit` items at a time, with `workers`
units in flight. HTTP jurors take one sample per unit and many units in flight; a local model takes a batch per
unit, one at a time. Both re-ask once with the format reminder when an output cannot be read."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import MissingApiKey
from common.work import retry_policy
from guardmodel.prompts import TemplateError, template_for
from guardmodel.services import engine_options
from jury.models import Juror
from qta.engine import AuditInput, OpenAIGuard, TransformersGuard, Verdict


@dataclass
class JurorBackend:
    name: str
    unit: int
    workers: int
    guard: OpenAIGuard | TransformersGuard | None = None
    error: str = ""  # set when the backend could not be made: every unit then fails with it

    @property
    def asynchronous(self) -> bool:
        """Served: its calls are coroutines on the event loop (`ajudge`); else `judge` on a pool thread."""
        return isinstance(self.guard, OpenAIGuard)

    def judge(self, items: Sequence[AuditInput]) -> list[Verdict]:
        if self.guard is None:
            return [Verdict(status="failed", error=self.error, attempts=0) for _ in items]
        return self.guard.judge(items)

    async def ajudge(self, items: Sequence[AuditInput]) -> list[Verdict]:
        assert isinstance(self.guard, OpenAIGuard)
        return await self.guard.ajudge(items)


def _config(juror: Juror) -> tuple:
    return (juror.pk, juror.backend, juror.model_name, juror.base_url, juror.api_key_env, juror.max_concurrency,
            juror.timeout_s, juror.max_tokens, juror.prompt_version, retry_policy())  # fmt: skip


_cache: dict[int, tuple[tuple, JurorBackend]] = {}
_lock = threading.Lock()


def backend_for_juror(juror: Juror) -> JurorBackend:
    """The juror's backend, kept in this process while its configuration is unchanged. A backend that cannot be
    made (a checkpoint directory missing a file, say) is returned broken, with the reason, rather than raising."""
    config = _config(juror)
    with _lock:
        cached = _cache.get(juror.pk)
        if cached and cached[0] == config:
            return cached[1]
        try:
            template = template_for(juror.prompt_version)
        except TemplateError as exc:
            template, broken = None, str(exc)
        if template is None:
            backend = JurorBackend(juror.name, 1, juror.max_concurrency, error=broken)
        elif juror.backend == Juror.Backend.OPENAI:
            try:
                key = juror.api_key()
            except MissingApiKey as exc:
                backend = JurorBackend(juror.name, 1, juror.max_concurrency, error=exc.message)
            else:
                guard = OpenAIGuard(
                    juror.base_url, juror.model_name, name=juror.name, api_key=key, timeout_s=juror.timeout_s,
                    max_concurrency=juror.max_concurrency, max_tokens=juror.max_tokens, retry=retry_policy(),
                    reask=True, template=template,
                )  # fmt: skip
                backend = JurorBackend(juror.name, 1, juror.max_concurrency, guard)
        else:
            # One local model per process at a time: memory.
            for pk in [pk for pk, (cfg, _) in _cache.items() if cfg[1] == Juror.Backend.TRANSFORMERS]:
                del _cache[pk]
            options = engine_options()
            options.batch_size = juror.max_concurrency
            options.max_new_tokens = juror.max_tokens
            options.template = template
            options.scores = False  # a juror's label is its judgment: no extra pass for the levels' scores
            try:
                local = TransformersGuard(juror.model_name, options, name=juror.name, reask=True)
            except (
                Exception
            ) as exc:  # a missing file, a model transformers cannot load: the juror's work fails
                backend = JurorBackend(
                    juror.name, juror.max_concurrency, 1, error=f"{type(exc).__name__}: {exc}"
                )
            else:
                backend = JurorBackend(juror.name, juror.max_concurrency, 1, local)
        if not backend.error:  # a broken one is made again next time: the file may have been fixed
            _cache[juror.pk] = (config, backend)
        return backend
