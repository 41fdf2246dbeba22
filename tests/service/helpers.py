"""Helpers for the service tests: an lsmmail server (uvicorn + aiosmtpd) in a subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lsmmail.service.auth import add_user

REPO = Path(__file__).resolve().parents[2]
#: Start-up is ~1-2 s (imports); 60 s is only hit if something is badly wrong, and then we fail loudly.
START_TIMEOUT = 60.0
#: Small limit so the 413/552 tests need only ~200 KB bodies.
TEST_SIZE_LIMIT = 200_000


@dataclass
class ServerProc:
    data: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    url: str = ""
    smtp_port: int = 0
    log: Path | None = None

    def start(self) -> ServerProc:
        ready = self.data.parent / f"{self.data.name}.ready.json"
        ready.unlink(missing_ok=True)
        self.log = self.data.parent / f"{self.data.name}.log"
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "lsmmail.service", "serve", "--data", str(self.data),
               "--http-host", "127.0.0.1", "--http-port", "0", "--smtp-host", "127.0.0.1",
               "--smtp-port", "0", "--ready-file", str(ready), "--max-message-size",
               str(TEST_SIZE_LIMIT), *self.extra]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.url = info["http"]
        self.smtp_port = info["smtp_port"]
        return self

    def stop(self) -> int:
        """SIGINT (Ctrl-C) and wait for a clean exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def client(self, token: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kw)  # type: ignore[arg-type]


@dataclass
class Service:
    server: ServerProc
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def smtp_port(self) -> int:
        return self.server.smtp_port

    def client(self, user: str | None = None) -> httpx.Client:
        return self.server.client(self.tokens[user] if user else None)


def make_users(data: Path, *addresses: str) -> dict[str, str]:
    return {a.split("@")[0]: add_user(str(data), a) for a in addresses}


def rfc822(sender: str, to: str, subject: str, body: str = "hello", msgid: str | None = None,
           extra: str = "") -> bytes:
    mid = f"Message-ID: <{msgid}>\r\n" if msgid else ""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{mid}{extra}"
            f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\n{body}\r\n").encode()
