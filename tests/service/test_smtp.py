"""smtplib against the real SMTP listener, then the result over REST; SSE push of an SMTP delivery."""

from __future__ import annotations

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


def test_sse_new_mail_event_within_one_second_of_smtp_delivery(service: Service) -> None:
    events: queue.Queue[tuple[float, str, str]] = queue.Queue()
    stop = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Bearer {service.tokens['alice']}"}
        with httpx.Client(base_url=service.url, headers=headers, timeout=httpx.Timeout(30, read=60)) as c:
            with c.stream("GET", "/v1/events") as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                kind = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        events.put((time.monotonic(), kind, line[6:]))
                    if stop.is_set():
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert events.get(timeout=30)[1] == "ready"
    word = f"push{uuid.uuid4().hex[:8]}"
    with _smtp(service) as s:
        s.sendmail("x@remote.test", ["alice@example.com"], rfc822("x@remote.test", "alice@example.com", word))
        acked = time.monotonic()
    when, kind, data = events.get(timeout=10)
    stop.set()
    assert kind == "message.created" and word in data
    assert when - acked < 1.0, f"event {when - acked:.3f}s after the 250"
