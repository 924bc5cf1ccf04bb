"""Vulnerability audit of the installed dependencies with pip-audit: `.venv/bin/python scripts/audit_deps.py`
(`make audit`, and `.ci/run`).

Exit 0 when every package pip-audit could look up has no known vulnerability; 1 with the list when some have. When
the vulnerability service cannot be reached — or answers for none of the packages, which pip-audit itself reports as
"No known vulnerabilities found" — it says plainly that the audit did NOT run, and exits 0 (2 with
GUARDTRACE_REQUIRE_AUDIT=1): never a silent pass. Any other pip-audit failure exits 1 with its output.
Set GUARDTRACE_AUDIT_SERVICE=osv to ask OSV instead of PyPI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NOT_RUN = "pip-audit: vulnerability service unreachable — dependency audit NOT run"
# What pip-audit prints when it cannot reach the service (requests' and urllib3's connection errors, timeouts, TLS).
_UNREACHABLE = (
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "NameResolutionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "SSLError",
    "ProxyError",
    "ServiceError",
)


def main() -> int:
    service = os.environ.get("GUARDTRACE_AUDIT_SERVICE", "pypi")
    strict = os.environ.get("GUARDTRACE_REQUIRE_AUDIT") == "1"
    command = os.environ.get("GUARDTRACE_PIP_AUDIT", f"{sys.executable} -m pip_audit").split()
    with tempfile.TemporaryDirectory() as work:
        report = Path(work) / "audit.json"
        done = subprocess.run(
            [
                *command,
                "--vulnerability-service",
                service,
                "--format",
                "json",
                "--output",
                str(report),
                "--progress-spinner",
                "off",
            ],
            capture_output=True,
            text=True,
        )
        body = report.read_text() if report.is_file() else ""
    output = (done.stdout + done.stderr).strip()
    try:
        dependencies = json.loads(body)["dependencies"] if body else None
    except (ValueError, KeyError, TypeError):
        dependencies = None
    if dependencies is None:
        if any(marker in output for marker in _UNREACHABLE):
            return _not_run(f"{service}: {output.splitlines()[-1] if output else 'no answer'}", strict)
        print(f"pip-audit failed (exit {done.returncode}); no audit result:\n{output[-4000:]}")
        return 1
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = [d for d in dependencies if "skip_reason" in d]
    if not audited:
        reason = skipped[0]["skip_reason"] if skipped else "no packages"
        return _not_run(
            f"{service} answered for none of the {len(dependencies)} packages (e.g. {reason})", strict
        )
    vulnerable = [d for d in audited if d.get("vulns")]
    for dependency in skipped:
        print(f"pip-audit: NOT audited: {dependency['name']}: {dependency['skip_reason']}")
    if vulnerable:
        print(f"pip-audit: known vulnerabilities in {len(vulnerable)} of {len(audited)} audited packages:")
        for dependency in vulnerable:
            for vuln in dependency["vulns"]:
                fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
                aliases = ", ".join(vuln.get("aliases") or [])
                print(
                    f"  {dependency['name']} {dependency['version']}: {vuln['id']}"
                    f"{f' ({aliases})' if aliases else ''}; fixed in {fixes}"
                )
        return 1
    print(
        f"pip-audit ({service}): no known vulnerabilities in {len(audited)} audited packages"
        f"{f'; {len(skipped)} not audited (listed above)' if skipped else ''}"
    )
    return 0


def _not_run(detail: str, strict: bool) -> int:
    print(NOT_RUN)
    print(f"  ({detail})")
    return 2 if strict else 0


if __name__ == "__main__":
    sys.exit(main())
