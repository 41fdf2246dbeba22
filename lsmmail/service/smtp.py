"""SMTP ingress (aiosmtpd): the receiving path of a mail server, delivering through MailStore.

Acceptance policy, in protocol order:

1. ``MAIL FROM ... SIZE=n`` over the limit -> ``552`` (RFC 1870; aiosmtpd enforces ``data_size_limit``
   and also answers 552 when the DATA itself grows past it).
2. ``RCPT TO`` an address no user of this store has -> ``550 5.1.1``. More than MAX_RECIPIENTS -> ``452``.
3. After DATA, the **filter stage** (:class:`MessageFilter`) gives a verdict: ``accept`` (INBOX),
   ``spam`` (the Spam folder) or ``reject`` (``554 5.7.1``, nothing stored).
4. The message gets a ``Received:`` header and is delivered to every recipient's user. The ``250`` reply
   is sent only after every ``MailStore.deliver`` returned, i.e. after the batch was fdatasync'ed. If a
   delivery fails the reply is ``451`` and nothing is acknowledged; the sender retries, and deliver's
   idempotency per (user, Message-ID) keeps the users already served from getting a second copy.

Store calls block, so they run in a thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

from lsmmail.mail import MailStore, MessageTooLarge

log = logging.getLogger("lsmmail.service.smtp")

#: RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients per message; we accept exactly that.
MAX_RECIPIENTS = 100


@dataclass(frozen=True)
class InboundMessage:
    """What the filter sees: the envelope and the raw bytes as received (before our Received header)."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer: str
    helo: str


@dataclass(frozen=True)
class Verdict:
    action: Literal["accept", "spam", "reject"]
    reason: str = ""


ACCEPT = Verdict("accept")


class MessageFilter(Protocol):
    """The filter stage. ``check`` runs once per message, in a worker thread (it may block, e.g. call a
    spam scanner), after the recipients were accepted and before anything is stored. It must not
    modify the message. An exception from ``check`` answers ``451`` (try again later), so a broken
    filter delays mail rather than losing or misfiling it."""

    def check(self, message: InboundMessage) -> Verdict: ...


class AcceptAll:
    """The default filter: every message is accepted."""

    def check(self, message: InboundMessage) -> Verdict:
        return ACCEPT


@dataclass
class HeaderRulesFilter:
    """A small example filter driven by header rules (used by the tests, handy as a template):
    ``X-Spam-Flag: YES`` (set by an upstream SpamAssassin) files as spam, and any header matching one
    of ``reject_patterns`` (regexes over ``Name: value`` lines) is rejected."""

    reject_patterns: list[str] = field(default_factory=list)

    def check(self, message: InboundMessage) -> Verdict:
        head = message.raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("latin-1")
        for pat in self.reject_patterns:
            if re.search(pat, head, re.IGNORECASE | re.MULTILINE):
                return Verdict("reject", "message refused by policy")
        if re.search(r"^X-Spam-Flag:\s*YES", head, re.IGNORECASE | re.MULTILINE):
            return Verdict("spam", "X-Spam-Flag")
        return ACCEPT


class IngressHandler:
    """aiosmtpd handler implementing the acceptance policy above."""

    def __init__(self, store: MailStore, *, message_filter: MessageFilter | None = None,
                 hostname: str = "lsmmail") -> None:
        self.store = store
        self.filter: MessageFilter = message_filter or AcceptAll()
        self.hostname = hostname
        self.delivered = 0  # messages acknowledged with 250 (for stats and tests)

    async def handle_RCPT(self, server: object, session: object, envelope: object, address: str,
                          rcpt_options: list[str]) -> str:
        loop = asyncio.get_running_loop()
        rcpts = envelope.rcpt_tos  # type: ignore[attr-defined]
        if len(rcpts) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        user = await loop.run_in_executor(None, self.store.user_for_address, address)
        if user is None:
            return f"550 5.1.1 <{_printable(address)}>: Recipient address rejected: user unknown"
        rcpts.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        loop = asyncio.get_running_loop()
        env = envelope
        raw = env.original_content if env.original_content is not None else env.content  # type: ignore[attr-defined]
        if isinstance(raw, str):  # only if someone runs SMTP with decode_data=True
            raw = raw.encode("utf-8", "surrogateescape")
        peer = session.peer  # type: ignore[attr-defined]
        peer_s = peer[0] if isinstance(peer, tuple) else str(peer)
        helo = session.host_name or ""  # type: ignore[attr-defined]
        inbound = InboundMessage(env.mail_from or "", list(env.rcpt_tos), raw, peer_s, helo)  # type: ignore[attr-defined]
        try:
            verdict = await loop.run_in_executor(None, self.filter.check, inbound)
        except Exception:  # noqa: BLE001 - a broken filter delays mail, never loses it
            log.exception("filter failed")
            return "451 4.3.0 Filter failure, try again later"
        if verdict.action == "reject":
            return f"554 5.7.1 {_printable(verdict.reason) or 'Message rejected'}"
        folder = "Spam" if verdict.action == "spam" else "INBOX"
        stamped = self._received(helo, peer_s, inbound.rcpt_tos) + raw
        try:
            await loop.run_in_executor(None, self._deliver, inbound.rcpt_tos, stamped, folder)
        except MessageTooLarge:
            return "552 5.3.4 Message size exceeds fixed maximum message size"
        except Exception:  # noqa: BLE001 - not acknowledged: the sender keeps the message and retries
            log.exception("delivery failed")
            return "451 4.3.0 Delivery failed, try again later"
        self.delivered += 1  # (each deliver already woke the user's SSE streams: MailStore's listener)
        return "250 2.0.0 OK: delivered"

    def _deliver(self, rcpts: list[str], raw: bytes, folder: str) -> list[str]:
        users: dict[str, None] = {}
        for addr in rcpts:
            u = self.store.user_for_address(addr)
            if u is not None:
                users[u] = None
        for u in users:  # each deliver is one durable batch; all are done before the 250
            self.store.deliver(u, raw, folder)
        return list(users)

    def _received(self, helo: str, peer: str, rcpts: list[str]) -> bytes:
        for_part = f"\r\n\tfor <{_printable(rcpts[0])}>" if len(rcpts) == 1 else ""
        line = (f"Received: from {_printable(helo) or 'unknown'} ([{_printable(peer)}])\r\n"
                f"\tby {self.hostname} (lsmmail) with ESMTP{for_part};\r\n"
                f"\t{email.utils.formatdate(localtime=False)}\r\n")
        return line.encode("ascii", "replace")


def _printable(s: str) -> str:
    """``s`` restricted to printable ASCII without angle brackets (safe inside an SMTP reply/header)."""
    return "".join(ch for ch in s if 32 < ord(ch) < 127 and ch not in "<>")[:200]
