"""The dependency audit (scripts/audit_deps.py) fails on known vulnerabilities and says plainly when pip-audit's
service could not be asked — including when it answered for no package, which pip-audit itself reports as a clean
pass. pip-audit's network service is stood in for by a small program that answers as pip-audit does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_RUN = "pip-audit: vulnerability service unreachable — dependency audit NOT run"

_FAKE = """
import json, sys
args = sys.argv[1:]
answer = json.loads({answer!r})
if answer.get("raise"):
    sys.stderr.write(answer["raise"] + "\\n")
    sys.exit(1)
with open(args[args.index("--output") + 1], "w") as out:
    json.dump(answer, out)
sys.exit(1 if any(d.get("vulns") for d in answer["dependencies"]) else 0)
"""


def _audit(tmp_path: Path, answer: dict, **env: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "fake_pip_audit.py"
    fake.write_text(_FAKE.format(answer=json.dumps(answer)))
    return subprocess.run(
        [sys.executable, "scripts/audit_deps.py"],
        cwd=ROOT,
        env={**os.environ, "GUARDTRACE_PIP_AUDIT": f"{sys.executable} {fake}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_known_vulnerabilities_fail_the_audit_with_their_list(tmp_path):
    answer = {
        "dependencies": [
            {
                "name": "django",
                "version": "5.2.0",
                "vulns": [
                    {
                        "id": "PYSEC-2025-1",
                        "fix_versions": ["5.2.1"],
                        "aliases": ["CVE-2025-0001"],
                        "description": "…",
                    }
                ],
            },
            {"name": "pillow", "version": "11.0.0", "vulns": []},
            {"name": "guardtrace-studio", "skip_reason": "Dependency not found on PyPI"},
        ],
        "fixes": [],
    }
    done = _audit(tmp_path, answer)
    assert done.returncode == 1
    assert "django 5.2.0: PYSEC-2025-1 (CVE-2025-0001); fixed in 5.2.1" in done.stdout
    assert "NOT audited: guardtrace-studio" in done.stdout


def test_a_clean_audit_passes_and_names_what_it_could_not_audit(tmp_path):
    answer = {
        "dependencies": [
            {"name": "pillow", "version": "11.0.0", "vulns": []},
            {"name": "guardtrace-studio", "skip_reason": "Dependency not found on PyPI"},
        ]
    }
    done = _audit(tmp_path, answer)
    assert done.returncode == 0
    assert "no known vulnerabilities in 1 audited packages; 1 not audited" in done.stdout
    assert NOT_RUN not in done.stdout


@pytest.mark.parametrize(
    "answer",
    [
        {
            "raise": "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev'): Max retries exceeded"
        },
        {
            "dependencies": [
                {"name": n, "skip_reason": f"Dependency not found on PyPI: {n}"} for n in ("a", "b")
            ]
        },
    ],
    ids=["service-unreachable", "service-answered-for-nothing"],
)
def test_an_audit_that_could_not_run_says_so_plainly(tmp_path, answer):
    done = _audit(tmp_path, answer)
    assert done.returncode == 0 and done.stdout.startswith(NOT_RUN)
    strict = _audit(tmp_path, answer, GUARDTRACE_REQUIRE_AUDIT="1")
    assert strict.returncode == 2 and NOT_RUN in strict.stdout


def test_any_other_pip_audit_failure_fails(tmp_path):
    done = _audit(tmp_path, {"raise": "pip_audit: error: unrecognized arguments"})
    assert done.returncode == 1 and "pip-audit failed" in done.stdout and NOT_RUN not in done.stdout
