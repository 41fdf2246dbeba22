"""Outbox relay against a second aiosmtpd instance acting as the smarthost (127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from lsmmail.mail import MailStore, OutgoingMessage
from lsmmail.service.auth import RELAY_FAMILY, add_user
from lsmmail.service.relay import OutboxRelay, RelayConfig

from .helpers import ServerProc


class Smarthost:
    """Accepts everything except addresses listed in ``perm`` (550) and ``temp`` (451)."""

    def __init__(self) -> None:
        self.perm: set[str] = set()
        self.temp: set[str] = set()
        self.received: list[tuple[str, list[str], bytes]] = []
        self.rcpt_attempts: dict[str, int] = {}
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: ANN001, ANN201
        with self.lock:
            self.rcpt_attempts[address] = self.rcpt_attempts.get(address, 0) + 1
            if address in self.perm:
                return "550 5.1.1 No such user here"
            if address in self.temp:
                return "451 4.3.0 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK queued"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def smarthost() -> Iterator[tuple[Smarthost, int]]:
    handler = Smarthost()
    port = _free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield handler, port
    finally:
        ctl.stop()


def _store(tmp_path: Path) -> MailStore:
    store = MailStore.open(str(tmp_path / "data"))
    add_user(store, "alice@example.com")
    return store


def test_delivers_accepted_and_bounces_permanent_failures(tmp_path: Path, smarthost) -> None:  # noqa: ANN001
    host, port = smarthost
    host.perm.add("gone@remote.test")
    with _store(tmp_path) as store:
        sent = store.send("alice@example.com", OutgoingMessage(
            to=["ok@remote.test", "gone@remote.test"], subject="relay me", text="hello remote"))
        relay = OutboxRelay(store, RelayConfig("127.0.0.1", port, timeout=10, base_delay=1))
        assert relay.run_once() == 1
        assert store.outbox() == []
        assert [(f, r) for f, r, _ in host.received] == [("alice@example.com", ["ok@remote.test"])]
        assert b"Subject: relay me" in host.received[0][2]
        inbox = store.list_messages("alice@example.com", "INBOX").items
        assert [m.subject for m in inbox] == ["Undelivered Mail Returned to Sender"]
        bounce = store.get_message("alice@example.com", inbox[0].id)
        assert "gone@remote.test" in bounce.text and "550" in bounce.text
        assert "ok@remote.test" not in bounce.text
        assert list(store.db.scan(prefix=RELAY_FAMILY)) == []
        assert sent


def test_temporary_failure_backs_off_persistently_then_delivers(tmp_path: Path, smarthost) -> None:  # noqa: ANN001
    host, port = smarthost
    host.temp.add("busy@remote.test")
    cfg = RelayConfig("127.0.0.1", port, timeout=10, base_delay=10, max_delay=25, max_attempts=10)
    store = _store(tmp_path)
    store.send("alice@example.com", OutgoingMessage(to=["busy@remote.test", "fine@remote.test"],
                                                    subject="partly busy", text="x"))
    t0 = 1_000_000.0
    assert OutboxRelay(store, cfg).run_once(now=t0) == 0
    assert host.rcpt_attempts == {"busy@remote.test": 1, "fine@remote.test": 1}
    assert [r for _, r, _ in host.received] == [["fine@remote.test"]]
    store.close()
    # "Restart": a new store and relay see the persisted backoff: nothing before t0 + 10 s.
    store = MailStore.open(str(tmp_path / "data"))
    relay = OutboxRelay(store, cfg)
    assert relay.run_once(now=t0 + 9) == 0 and host.rcpt_attempts["busy@remote.test"] == 1
    assert relay.run_once(now=t0 + 10) == 0 and host.rcpt_attempts["busy@remote.test"] == 2
    assert relay.run_once(now=t0 + 10 + 19) == 0 and host.rcpt_attempts["busy@remote.test"] == 2  # 2nd: 20 s
    assert relay.run_once(now=t0 + 30) == 0 and host.rcpt_attempts["busy@remote.test"] == 3
    host.temp.clear()
    assert relay.run_once(now=t0 + 30 + 25) == 1  # capped at max_delay
    assert host.rcpt_attempts == {"busy@remote.test": 4, "fine@remote.test": 1}  # fine@ never re-sent
    assert [r for _, r, _ in host.received] == [["fine@remote.test"], ["busy@remote.test"]]
    assert store.outbox() == [] and store.folders("alice@example.com")[0].total == 0  # no bounce
    store.close()


def test_gives_up_after_max_attempts_with_a_bounce(tmp_path: Path) -> None:
    dead_port = _free_port()  # nothing listens: connection refused, a temporary failure
    with _store(tmp_path) as store:
        store.send("alice@example.com", OutgoingMessage(to=["x@remote.test"], subject="doomed", text="x"))
        relay = OutboxRelay(store, RelayConfig("127.0.0.1", dead_port, timeout=5, base_delay=1,
                                               max_attempts=3))
        assert [relay.run_once(now=1e6 + i * 100) for i in range(3)] == [0, 0, 1]
        inbox = store.list_messages("alice@example.com", "INBOX").items
        assert len(inbox) == 1
        text = store.get_message("alice@example.com", inbox[0].id).text
        assert "x@remote.test" in text and "gave up after 3 attempts" in text
        assert relay.run_once(now=2e6) == 0 and store.outbox() == []


def test_served_relay_retries_across_restart_and_bounces(tmp_path: Path, smarthost) -> None:  # noqa: ANN001
    host, port = smarthost
    host.temp.add("later@remote.test")
    host.perm.add("never@remote.test")
    data = tmp_path / "data"
    token = add_user(str(data), "alice@example.com")
    args = ["--smarthost", f"127.0.0.1:{port}", "--relay-base-delay", "0.2"]
    srv = ServerProc(data, args).start()
    try:
        with srv.client(token) as c:
            r = c.post("/v1/messages", json={"to": ["later@remote.test", "never@remote.test"],
                                             "subject": "across restarts", "text": "x"})
            assert r.status_code == 201
            deadline = time.monotonic() + 30
            while host.rcpt_attempts.get("later@remote.test", 0) < 2:  # retried with backoff
                assert time.monotonic() < deadline
                time.sleep(0.05)
            inbox = c.get("/v1/folders/INBOX/messages").json()["items"]
            assert [m["subject"] for m in inbox] == ["Undelivered Mail Returned to Sender"]
    finally:
        assert srv.stop() == 0
    assert host.received == []
    host.temp.clear()
    srv = ServerProc(data, args).start()
    try:
        deadline = time.monotonic() + 30
        while not host.received:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert [r for _, r, _ in host.received] == [["later@remote.test"]]
        with srv.client(token) as c:  # still exactly one bounce
            assert len(c.get("/v1/folders/INBOX/messages").json()["items"]) == 1
    finally:
        assert srv.stop() == 0
