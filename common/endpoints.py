"""Testing a model endpoint an admin configured — a juror, a generator, a served guard checkpoint: one small real
request to a served model (`qta.endpoint.aprobe`: the model listing, or one token), or a look at a local checkpoint
directory, which is never loaded. Answers name the endpoint and never hold its API key."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from common.errors import MissingApiKey
from common.models import Backend, ModelEndpoint, api_key
from qta.endpoint import Probe, aprobe, wait
from qta.loading import CheckpointError, check_checkpoint_dir, is_local

DETAIL_CHARS = 200  # of a server's own words, quoted in an answer
MODELS_SHOWN = 8


@dataclass(frozen=True)
class EndpointTarget:
    """What to check: a served model (`base_url` and `model`) or a local checkpoint directory (`path`)."""

    who: str  # "juror alpha", as answers name it
    base_url: str = ""
    model: str = ""
    api_key_env: str = ""
    path: str = ""
    timeout_s: float | None = None  # the endpoint's own, when it has one


@dataclass
class EndpointCheck:
    target: EndpointTarget
    ok: bool
    message: str
    probe: Probe | None = None  # None: no request was made


def endpoint_target(endpoint: ModelEndpoint) -> EndpointTarget:
    who = f"{endpoint._meta.verbose_name} {endpoint.name}"
    if endpoint.backend == Backend.OPENAI:
        return EndpointTarget(
            who,
            base_url=endpoint.base_url,
            model=endpoint.model_name,
            api_key_env=endpoint.api_key_env,
            timeout_s=endpoint.timeout_s,
        )
    return EndpointTarget(who, path=endpoint.model_name)


def endpoints_check(targets: list[EndpointTarget]) -> list[EndpointCheck]:
    """Each target's check, in order; the served ones are asked at the same time, each within
    GUARDTRACE_ENDPOINT_CHECK_S (or its own timeout, when shorter)."""
    checks: dict[int, EndpointCheck] = {}
    served: list[tuple[int, EndpointTarget, str | None]] = []
    for index, target in enumerate(targets):
        if not target.base_url:
            checks[index] = _check_local(target)
            continue
        try:
            key = api_key(target.api_key_env, who=target.who)
        except MissingApiKey as exc:
            checks[index] = EndpointCheck(
                target, False, f"{exc.message} in the web process: nothing was sent"
            )
            continue
        served.append((index, target, key))
    if served:
        probes = wait(_probe_all(served))
        for (index, target, _), probe in zip(served, probes, strict=True):
            checks[index] = EndpointCheck(target, probe.ok, _served_message(target, probe), probe)
    return [checks[index] for index in range(len(targets))]


async def _probe_all(served: list[tuple[int, EndpointTarget, str | None]]) -> list[Probe]:
    limit = settings.GUARDTRACE_ENDPOINT_CHECK_S
    return list(
        await asyncio.gather(
            *(
                aprobe(
                    target.base_url,
                    target.model,
                    api_key=key,
                    timeout_s=min(limit, target.timeout_s or limit),
                )
                for _, target, key in served
            )
        )
    )


def _check_local(target: EndpointTarget) -> EndpointCheck:
    path = target.path
    if not path:
        return EndpointCheck(target, False, f"{target.who}: no checkpoint directory is set")
    if not is_local(path):
        hub = "transformers would look it up as a hub id, and nothing is downloaded at run time"
        return EndpointCheck(target, False, f"{target.who}: {path!r} is not a local directory: {hub}")
    directory = Path(path).expanduser()
    try:
        check_checkpoint_dir(directory)
    except CheckpointError as exc:
        return EndpointCheck(target, False, f"{target.who}: local checkpoint: {exc}")
    return EndpointCheck(target, True, f"{target.who}: local checkpoint: loads from {directory.resolve()}")


def _served_message(target: EndpointTarget, probe: Probe) -> str:
    who, url, model = target.who, probe.url, target.model
    detail = " ".join(probe.detail.split())[:DETAIL_CHARS]
    answered = f"HTTP {probe.status} in {probe.latency_ms:g} ms"
    if probe.outcome == "ok":
        return f"{who}: reachable — {answered}; {model!r} is served ({url})"
    if probe.outcome == "unreachable":
        return f"{who}: not reachable at {url} — {detail} (after {probe.latency_ms:g} ms)"
    if probe.outcome == "timeout":
        return f"{who}: no answer from {url} — {detail}"
    if probe.outcome == "refused":
        key = (
            f"the API key in {target.api_key_env}"
            if target.api_key_env
            else "a request without an API key (name the variable holding one in 'API key env')"
        )
        return f"{who}: reachable, but {url} answered {answered}: it refused {key}"
    if probe.outcome == "redirect":
        return (
            f"{who}: {url} answered {answered}, a redirect to {detail}; not followed — set the base URL to "
            "the address the server means"
        )
    if probe.outcome == "not served":
        if probe.models or probe.status == 200:
            listed = ", ".join(probe.models[:MODELS_SHOWN]) + (
                " …" if len(probe.models) > MODELS_SHOWN else ""
            )
            serves = f"it serves {listed}" if listed else "it lists no model"
            return (
                f"{who}: reachable — {answered}, but {model!r} is not served at {target.base_url}: {serves}"
            )
        return f"{who}: reachable — {answered}, but {model!r} is not served at {url}: {detail}"
    return f"{who}: reachable, but {url} answered {answered}: {detail or probe.outcome}"
