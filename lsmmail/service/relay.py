"""Outbox relay: drain remote recipients of sent mail to a smarthost over SMTP, with retries.

``MailStore.send`` queues one outbox entry per message with remote recipients (durable in the same batch
as the Sent copy). The relay, a background thread, hands each entry to the configured smarthost:

* A recipient the smarthost accepts is done. A ``5xx`` for a recipient (or for the whole transaction) is
  a **permanent failure**: the sender gets a bounce in their INBOX naming the recipient and the reason.
* A ``4xx``, a refused connection or a timeout is **temporary**: the entry is retried after a delay that
  doubles each attempt (``base_delay``, 2x, 4x, ... capped at ``max_delay``); after ``max_attempts`` the
  remaining recipients bounce too.
* The retry state (attempts, next attempt time, recipients still to do, last error) is stored durably
  under ``K | "r" | entry id``, so backoff and progress survive a restart.

Delivery is at-least-once (SMTP's own semantics): a crash after the smarthost accepted but before the
entry was removed sends that entry again on restart. Bounces are deduplicated (their Message-ID is derived
from the entry and recipients), so a crash between bounce and removal never bounces twice.
"""

from __future__ import annotations

import email
import hashlib
import json
import logging
import smtplib
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate

from lsmmail.mail import MailStore, OutboxEntry, UnknownUser
from lsmmail.mail.ids import id_from_str

from .auth import RELAY_FAMILY

log = logging.getLogger("lsmmail.service.relay")
#: Outbox entries read per page (MailStore.outbox cursor): bounds memory (an entry holds its raw message,
#: ~20 KB on average, so ~20 MB per page) however long the queue grows.
PAGE = 1000


@dataclass
class RelayConfig:
    host: str
    port: int = 25
    #: Seconds for connect and each SMTP command (RFC 5321 §4.5.3.2 suggests minutes; 30 s keeps a dead
    #: smarthost from stalling the queue for long, and the entry is simply retried).
    timeout: float = 30.0
    helo: str | None = None
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    #: First retry after 60 s, doubling to at most an hour: 10 attempts span ~4.3 hours of outage.
    base_delay: float = 60.0
    max_delay: float = 3600.0
    max_attempts: int = 10

    @classmethod
    def parse(cls, spec: str, **kwargs: object) -> RelayConfig:
        """``host`` or ``host:port`` (port 25 by default)."""
        host, sep, port = spec.rpartition(":")
        if not sep or not port.isdigit():
            return cls(spec, **kwargs)  # type: ignore[arg-type]
        return cls(host, int(port), **kwargs)  # type: ignore[arg-type]


@dataclass
class _State:
    attempts: int
    next_at: float
    remaining: list[str]
    error: str

    def dumps(self) -> bytes:
        return json.dumps({"a": self.attempts, "n": self.next_at, "r": self.remaining,
                           "e": self.error}).encode("utf-8")


class OutboxRelay:
    """Background sender. ``start``/``stop`` the thread, ``wake`` after queueing, ``run_once`` to process
    every due entry synchronously (returns how many entries were finished). A bounce is an ordinary
    ``MailStore.deliver``, so the sender's SSE streams learn of it through the store's change listener."""

    def __init__(self, store: MailStore, config: RelayConfig, *, poll_interval: float = 1.0) -> None:
        self.store = store
        self.config = config
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.bounced = 0

    # ---- thread ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lsmmail-relay", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - keep draining; the entry is retried next round
                log.exception("relay round failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    # ---- one round -------------------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> int:
        """One pass over the whole queue, PAGE entries at a time (oldest first); entries not yet due are
        skipped. Entries queued during the pass are reached too (they sort after the cursor)."""
        finished = 0
        after: str | None = None
        while not self._stop.is_set():
            page = self.store.outbox(after=after, limit=PAGE)
            for entry in page:
                if self._stop.is_set():
                    break
                if self._process(entry, time.time() if now is None else now):
                    finished += 1
            if len(page) < PAGE:
                break
            after = page[-1].id
        return finished

    def _state_key(self, entry: OutboxEntry) -> bytes:
        return RELAY_FAMILY + id_from_str(entry.id)

    def _load(self, entry: OutboxEntry) -> _State:
        raw = self.store.db.get(self._state_key(entry))
        if raw is None:
            return _State(0, 0.0, list(entry.recipients), "")
        d = json.loads(raw)
        return _State(d["a"], d["n"], d["r"], d["e"])

    def _process(self, entry: OutboxEntry, now: float) -> bool:
        st = self._load(entry)
        if st.next_at > now:
            return False
        permanent, temporary = self._attempt(entry, st.remaining)
        st.attempts += 1
        if temporary and st.attempts >= self.config.max_attempts:
            permanent.update({r: f"{reason} (gave up after {st.attempts} attempts)"
                              for r, reason in temporary.items()})
            temporary = {}
        if permanent:
            self._bounce(entry, permanent)
        self.sent += len(st.remaining) - len(permanent) - len(temporary)
        if not temporary:
            self.store.outbox_done(entry.id)
            self.store.db.delete(self._state_key(entry), sync=True)
            return True
        delay = min(self.config.max_delay, self.config.base_delay * 2 ** (st.attempts - 1))
        st.next_at = now + delay
        st.remaining = [r for r in st.remaining if r in temporary]
        st.error = next(iter(temporary.values()))
        self.store.db.put(self._state_key(entry), st.dumps(), sync=True)
        log.info("outbox %s: %d recipient(s) deferred %.0fs: %s", entry.id, len(temporary), delay, st.error)
        return False

    def _attempt(self, entry: OutboxEntry, rcpts: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Try once. Returns (permanent failures, temporary failures), each recipient -> reason."""
        c = self.config
        try:
            with smtplib.SMTP(c.host, c.port, local_hostname=c.helo, timeout=c.timeout) as smtp:
                if c.starttls:
                    smtp.starttls()
                if c.username:
                    smtp.login(c.username, c.password or "")
                refused = smtp.sendmail(entry.sender, rcpts, entry.raw)
        except smtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            reason = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            if 500 <= exc.smtp_code < 600:
                return dict.fromkeys(rcpts, reason), {}
            return {}, dict.fromkeys(rcpts, reason)
        except (OSError, smtplib.SMTPException) as exc:  # refused, timeout (an OSError), 421 close
            return {}, dict.fromkeys(rcpts, f"smarthost unreachable: {exc}")
        permanent: dict[str, str] = {}
        temporary: dict[str, str] = {}
        for r, (code, msg) in refused.items():
            (permanent if 500 <= code < 600 else temporary)[r] = f"{code} {_text(msg)}"
        return permanent, temporary

    def _bounce(self, entry: OutboxEntry, failures: dict[str, str]) -> None:
        domain = entry.sender.rpartition("@")[2] or "localhost"
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{domain}>"
        msg["To"] = entry.sender
        msg["Subject"] = "Undelivered Mail Returned to Sender"
        msg["Date"] = formatdate(localtime=False)
        key = entry.id + "." + ",".join(sorted(failures))
        msg["Message-ID"] = f"<bounce.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"
        msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: never auto-answer a bounce
        lines = ["Your message could not be delivered to the following recipient(s):", ""]
        lines += [f"  <{r}>: {reason}" for r, reason in sorted(failures.items())]
        lines += ["", "The original message is attached."]
        msg.set_content("\n".join(lines) + "\n")
        try:  # the original as message/rfc822 (RFC 3464 style), so mail clients show it inline
            msg.add_attachment(email.message_from_bytes(entry.raw, policy=SMTP_POLICY))
        except Exception:  # noqa: BLE001 - unparsable original: attach the bytes as they are
            msg.add_attachment(entry.raw, maintype="application", subtype="octet-stream",
                               filename="original.eml")
        try:
            self.store.deliver(entry.user_id, msg.as_bytes(), "INBOX")
        except UnknownUser:  # the sender was removed: nobody to tell
            log.warning("bounce for outbox %s: sender %s is gone", entry.id, entry.user_id)
            return
        self.bounced += 1


def _text(msg: bytes | str) -> str:
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
