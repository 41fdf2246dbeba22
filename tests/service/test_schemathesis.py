"""schemathesis against the served /openapi.json: no 5xx, and every response matches the document.

Runs the schemathesis CLI (coverage phase: boundary and invalid values of every parameter and body
field; fuzzing phase: 5 random cases per operation) against a real server process with a valid token,
after some mail was delivered. /v1/events is excluded: it is an endless stream by design (test_smtp
covers it). Bounded: a fixed seed, --max-examples 5, and a hard 150 s subprocess timeout.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

from .helpers import Service, rfc822

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _schemathesis() -> list[str]:
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    return [exe]


def test_schemathesis_no_server_errors_and_schema_conformance(service: Service) -> None:
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as s:
        for i in range(5):
            s.sendmail("x@remote.test", ["alice@example.com"],
                       rfc822("x@remote.test", "alice@example.com", f"fuzz {i}", msgid=f"fz{i}@remote"))
    cmd = [*_schemathesis(), "run", f"{service.url}/openapi.json",
           "-H", f"Authorization: Bearer {service.tokens['alice']}",
           "--checks", CHECKS, "--max-examples", "5", "--phases", "examples,coverage,fuzzing",
           "--exclude-path", "/v1/events", "--request-timeout", "20", "--seed", "20240601",
           "--warnings", "off", "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "No issues found" in out, out[-3000:]
