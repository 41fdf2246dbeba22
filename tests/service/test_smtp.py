"""smtplib against the real SMTP listener, then the result over REST; SSE push of an SMTP delivery."""

from __future__ import annotations

import json
import queue
import smtplib
import threading
import time
import uuid

import httpx
import pytest

from .helpers import TEST_SIZE_LIMIT, Service, rfc822


def _smtp(service: Service) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30)


def test_delivery_then_listed_and_searchable(service: Service) -> None:
    word = f"zebra{uuid.uuid4().hex[:8]}"
    with _smtp(service) as s:
        code, caps = s.ehlo()
        assert code == 250 and s.has_extn("size") and int(s.esmtp_features["size"]) == TEST_SIZE_LIMIT
        refused = s.sendmail("sender@remote.test", ["alice@example.com", "Bob@Example.com"],
                             rfc822("sender@remote.test", "alice@example.com, bob@example.com",
                                    f"smtp {word}", body=f"the {word} crossed the road"))
        assert refused == {}
    for user in ("alice", "bob"):
        with service.client(user) as c:
            hits = c.get("/v1/search", params={"q": word}).json()["items"]
            assert len(hits) == 1 and hits[0]["folder_id"] == "INBOX"
            listed = c.get("/v1/folders/INBOX/messages", params={"limit": 200}).json()["items"]
            assert hits[0]["id"] in [m["id"] for m in listed]
            raw = c.get(f"/v1/messages/{hits[0]['id']}/raw").content
            assert raw.startswith(b"Received: from ") and f"the {word} crossed".encode() in raw


def test_unknown_recipient_550_and_partial_acceptance(service: Service) -> None:
    with _smtp(service) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
            s.sendmail("x@remote.test", ["nobody@example.com"], rfc822("x@remote.test", "n@e", "n"))
        assert exc.value.recipients["nobody@example.com"][0] == 550
        word = f"partial{uuid.uuid4().hex[:8]}"
        refused = s.sendmail("x@remote.test", ["nobody@example.com", "carol@example.org"],
                             rfc822("x@remote.test", "carol@example.org", word))
        assert refused["nobody@example.com"][0] == 550
    with service.client("carol") as c:
        assert len(c.get("/v1/search", params={"q": f"subject:{word}"}).json()["items"]) == 1


def test_size_limit_552(service: Service) -> None:
    word = f"huge{uuid.uuid4().hex[:8]}"
    body = ("z" * 98 + "\r\n") * (TEST_SIZE_LIMIT // 100 + 1)
    big = rfc822("x@remote.test", "alice@example.com", word, body=body)
    with _smtp(service) as s:
        s.ehlo()
        code, _ = s.mail("x@remote.test", [f"SIZE={len(big)}"])  # declared size (RFC 1870)
        assert code == 552
        s.rset()
        assert s.mail("x@remote.test")[0] == 250  # undeclared size: refused when the data grows too big
        assert s.rcpt("alice@example.com")[0] == 250
        assert s.data(big)[0] == 552
    with service.client("alice") as c:
        assert c.get("/v1/search", params={"q": f"subject:{word}"}).json()["items"] == []


def test_filter_spam_and_reject(service: Service) -> None:
    word = f"filt{uuid.uuid4().hex[:8]}"
    with _smtp(service) as s:
        s.sendmail("x@remote.test", ["bob@example.com"],
                   rfc822("x@remote.test", "bob@example.com", f"spam {word}", extra="X-Spam-Flag: YES\r\n"))
        with pytest.raises(smtplib.SMTPDataError) as exc:
            s.sendmail("x@remote.test", ["bob@example.com"],
                       rfc822("x@remote.test", "bob@example.com", f"rej {word}", extra="X-Reject-Me: 1\r\n"))
        assert exc.value.smtp_code == 554
    with service.client("bob") as c:
        hits = c.get("/v1/search", params={"q": word}).json()["items"]
        assert [(h["subject"], h["folder_id"]) for h in hits] == [(f"spam {word}", "Spam")]


class _Events:
    """An SSE client in a thread: ``(arrival time, event, data)`` tuples on a queue."""

    def __init__(self, service: Service, user: str) -> None:
        self.queue: queue.Queue[tuple[float, str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._service = service
        self._user = user
        threading.Thread(target=self._listen, daemon=True).start()
        assert self.next(timeout=30)[1] == "ready"

    def _listen(self) -> None:
        headers = {"Authorization": f"Bearer {self._service.tokens[self._user]}"}
        timeout = httpx.Timeout(30, read=60)
        with httpx.Client(base_url=self._service.url, headers=headers, timeout=timeout) as c:
            with c.stream("GET", "/v1/events") as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                kind = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        self.queue.put((time.monotonic(), kind, line[6:]))
                    if self._stop.is_set():
                        return

    def next(self, timeout: float = 10) -> tuple[float, str, str]:
        # 10 s is below the 15 s keepalive re-check, so an event that arrives at all was pushed.
        return self.queue.get(timeout=timeout)

    def close(self) -> None:
        self._stop.set()


def test_sse_new_mail_event_within_one_second_of_smtp_delivery(service: Service) -> None:
    events = _Events(service, "alice")
    word = f"push{uuid.uuid4().hex[:8]}"
    with _smtp(service) as s:
        s.sendmail("x@remote.test", ["alice@example.com"], rfc822("x@remote.test", "alice@example.com", word))
        acked = time.monotonic()
    when, kind, data = events.next()
    events.close()
    assert kind == "message.created" and word in data
    assert when - acked < 1.0, f"event {when - acked:.3f}s after the 250"


def test_sse_pushes_changes_made_through_other_store_calls(service: Service) -> None:
    """A REST send from another user and a REST mark-read/delete: the routes do not talk to the event hub;
    the event comes from MailStore's change listener."""
    events = _Events(service, "carol")
    word = f"hook{uuid.uuid4().hex[:8]}"
    with service.client("alice") as a:
        r = a.post("/v1/messages", json={"to": ["carol@example.org"], "subject": word, "text": "hi"})
        assert r.status_code == 201, r.text
        sent = time.monotonic()
    when, kind, data = events.next()
    assert kind == "message.created" and word in data, (kind, data)
    assert when - sent < 1.0, f"event {when - sent:.3f}s after the send returned"
    mid = json.loads(data)["id"]
    with service.client("carol") as c:
        assert c.patch(f"/v1/messages/{mid}", json={"is_read": True}).status_code == 200
        marked = time.monotonic()
        when, kind, data = events.next()
        assert kind == "message.updated" and json.loads(data)["id"] == mid and json.loads(data)["is_read"]
        assert when - marked < 1.0, f"event {when - marked:.3f}s after mark_read returned"
        assert c.delete(f"/v1/messages/{mid}").json()["status"] == "trashed"
        _, kind, data = events.next()
        assert kind == "message.updated" and json.loads(data)["folder_id"] == "Trash"
    events.close()
