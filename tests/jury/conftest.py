"""Jurors on a loopback OpenAI-compatible server that votes as each sample's question tells it to.

A question holding `votes=1,0.5,?1` makes juror a answer 1, juror b 0.5 and juror c reply unreadably once (then 1
after the format reminder); `?` alone stays unreadable. So each test states its expected strata in its data.
"""

from __future__ import annotations

import re

import pytest

from jury.models import Juror
from qta.protocol import FORMAT_REMINDER
from tests.annotation.factories import ImageAssetFactory, SampleFactory
from tests.loopback import LoopbackOpenAI, by_model, user_text

NAMES = ("a", "b", "c")
_VOTES = re.compile(r"votes=([0-9.?,]+)")


def scripted_vote(index: int):
    def respond(body: dict) -> str:
        text = user_text(body)
        vote = _VOTES.search(text).group(1).split(",")[index]
        reasked = FORMAT_REMINDER in text
        if vote == "?" or (vote.startswith("?") and not reasked):
            return "Hmm. Hard to say."
        return f"Analysis: juror {body['model']} weighed the reasoning.\nJudgment: {vote.lstrip('?')}"

    return respond


@pytest.fixture
def jury_server():
    with LoopbackOpenAI(by_model({name: scripted_vote(i) for i, name in enumerate(NAMES)})) as server:
        yield server


@pytest.fixture
def make_jurors(db):
    def make(url: str, names=NAMES, **fields) -> list[Juror]:
        return [
            Juror.objects.create(
                name=name,
                backend=Juror.Backend.OPENAI,
                model_name=name,
                base_url=url,
                **{"timeout_s": 5, "max_concurrency": 4, **fields},
            )  # fmt: skip
            for name in names
        ]

    return make


@pytest.fixture
def voted(db):
    """Samples whose questions carry their votes; every third has an image."""

    def make(*votes: str):
        samples = []
        for n, vote in enumerate(votes):
            image = ImageAssetFactory() if n % 3 == 0 else None
            samples.append(SampleFactory(question=f"Sample {n}: votes={vote}", image=image))
        return samples

    return make


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.GUARDTRACE_JURY_BACKOFF_S = 0.01
    settings.GUARDTRACE_JURY_BACKOFF_MAX_S = 0.05
