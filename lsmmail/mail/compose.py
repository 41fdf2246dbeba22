"""Building and preparing outgoing mail: address validation, MIME construction, removing Bcc."""

from __future__ import annotations

import email.utils
import re
from email.message import EmailMessage
from email.policy import SMTP

from .errors import InvalidAddress
from .records import OutgoingMessage

# local@domain: a dot-atom or quoted local part, and a domain of LDH labels (or an address literal).
# Deliberately stricter than RFC 5322's obsolete syntax: we refuse what an MTA would bounce anyway.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]"
_LOCAL = rf'(?:{_ATEXT}+(?:\.{_ATEXT}+)*|"[^"\\\r\n]*")'
_LABEL = r"[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\x80-\U0010ffff-]{0,61}[A-Za-z0-9\x80-\U0010ffff])?"
_DOMAIN = rf"(?:(?:{_LABEL}\.)*{_LABEL}|\[[0-9A-Fa-f:.]+\])"
_ADDR_RE = re.compile(rf"^{_LOCAL}@{_DOMAIN}$")


def validate_address(addr: str) -> str:
    """Return the address stripped; raise InvalidAddress unless it is a plain ``local@domain``."""
    a = addr.strip()
    if len(a) > 254 or not _ADDR_RE.match(a):
        raise InvalidAddress(f"invalid e-mail address: {addr!r}")
    return a


def parse_recipients(values: list[str]) -> list[str]:
    """Addresses from header-style strings (``"Name" <a@b>, c@d``), each validated."""
    out = []
    for _name, addr in email.utils.getaddresses(values):
        if not addr:
            continue
        out.append(validate_address(addr))
    return out


def build(sender: str, fields: OutgoingMessage) -> bytes:
    """A complete RFC 5322 message (CRLF line ends) with From, To, Cc, Bcc, Subject, Date, Message-ID."""
    for addr in [*fields.to, *fields.cc, *fields.bcc]:
        validate_address(email.utils.parseaddr(addr)[1] or addr)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    if fields.to:
        msg["To"] = ", ".join(fields.to)
    if fields.cc:
        msg["Cc"] = ", ".join(fields.cc)
    if fields.bcc:
        msg["Bcc"] = ", ".join(fields.bcc)
    msg["Subject"] = fields.subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    if fields.in_reply_to:
        msg["In-Reply-To"] = fields.in_reply_to
        msg["References"] = fields.in_reply_to
    if fields.text is not None or fields.html is None:
        msg.set_content(fields.text or "")
        if fields.html is not None:
            msg.add_alternative(fields.html, subtype="html")
    else:
        msg.set_content(fields.html, subtype="html")
    for filename, ctype, data in fields.attachments:
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    return msg.as_bytes()


_BCC_RE = re.compile(rb"^bcc[ \t]*:", re.IGNORECASE)


def strip_bcc(raw: bytes) -> bytes:
    """``raw`` with every Bcc header (and its continuation lines) removed from the top-level header
    block; the rest is left byte for byte."""
    out = []
    pos = 0
    skipping = False
    n = len(raw)
    while pos < n:
        end = raw.find(b"\n", pos)
        end = n if end < 0 else end + 1
        line = raw[pos:end]
        if line in (b"\n", b"\r\n"):  # end of the header block
            out.append(raw[pos:])
            return b"".join(out)
        if skipping and line[:1] in (b" ", b"\t"):
            pos = end
            continue
        skipping = bool(_BCC_RE.match(line))
        if not skipping:
            out.append(line)
        pos = end
    return b"".join(out)
