"""Locust users for the load soak (`bench/soak_load.py` starts locust on this file; it is not run alone).

50 experts label through the expert queue API (claim → read → submit) with their own API tokens; 5 reviewers browse
the dashboard, the sample list, sample pages and the disagreement inspector with sessions made in the database (no
login, so the lockout never counts them). SOAK_LOAD_USERS names the JSON file of tokens, session keys and sample ids;
at the end each expert's acknowledged submissions (slot, label id) go to SOAK_LOAD_OUT.
"""

from __future__ import annotations

import itertools
import json
import os
import random

from locust import HttpUser, between, events, task

_USERS = json.loads(open(os.environ["SOAK_LOAD_USERS"]).read())  # noqa: SIM115 - read once at import
_tokens = itertools.count()
_sessions = itertools.count()
ACKNOWLEDGED: list[dict] = []


class Expert(HttpUser):
    fixed_count = len(_USERS["tokens"])
    wait_time = between(1, 3)  # between items: a quick expert, far faster than a person reads a trace

    def on_start(self) -> None:
        self.token = _USERS["tokens"][next(_tokens) % len(_USERS["tokens"])]
        self.client.headers["Authorization"] = f"Token {self.token}"

    @task
    def label_one(self) -> None:
        with self.client.post(
            "/api/v1/expert/claim", name="POST expert claim", catch_response=True
        ) as response:
            if response.status_code == 204:
                response.success()  # the queue is empty: nothing to do
                return
            if response.status_code != 200:
                response.failure(f"claim {response.status_code} {response.error or ''}".rstrip())
                return
            slot = response.json()
        self.wait()  # reading the item
        body = {
            "token": slot["token"],
            "judgment": random.choice([0, 0.5, 1]),
            "analysis": "Checked by load.",
        }
        with self.client.post(
            f"/api/v1/expert/slots/{slot['slot']}/submit", json=body, name="POST expert submit",
            catch_response=True,
        ) as response:  # fmt: skip
            if response.status_code == 201:
                ACKNOWLEDGED.append(
                    {"slot": slot["slot"], "label": response.json()["id"], "token": self.token}
                )
            else:
                response.failure(f"submit {response.status_code} {response.error or ''}".rstrip())


class Reviewer(HttpUser):
    fixed_count = len(_USERS["sessions"])
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.client.cookies.set("sessionid", _USERS["sessions"][next(_sessions) % len(_USERS["sessions"])])

    def _get(self, path: str, name: str) -> None:
        with self.client.get(path, name=name, catch_response=True, allow_redirects=False) as response:
            if response.status_code != 200:
                response.failure(f"{name} {response.status_code} {response.error or ''}".rstrip())

    @task(2)
    def dashboard(self) -> None:
        self._get("/", "GET dashboard")

    @task(3)
    def sample_list(self) -> None:
        self._get("/samples/", "GET sample list")

    @task(3)
    def sample_detail(self) -> None:
        self._get(f"/samples/{random.choice(_USERS['samples'])}/", "GET sample detail")

    @task(2)
    def disagreements(self) -> None:
        self._get("/review/disagreements/", "GET disagreements")

    @task(1)
    def jury_runs(self) -> None:
        self._get("/jury/runs/", "GET jury runs")


@events.test_stop.add_listener
def _save(**kwargs) -> None:
    with open(os.environ["SOAK_LOAD_OUT"], "w") as out:
        json.dump(ACKNOWLEDGED, out)
