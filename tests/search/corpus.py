"""Deterministic samples of ../shared/corpus parsed (stdlib email) into IndexedDocuments."""

from __future__ import annotations

import email
import email.policy
import email.utils
import lzma
import mailbox
import os
import shutil
import tempfile
from pathlib import Path

from lsmmail.search import IndexedDocument

CORPUS = (Path(__file__).parents[2] / ".." / "shared" / "corpus").resolve()


def _header(msg: email.message.Message, name: str) -> str:
    try:
        v = msg.get(name)
        return "" if v is None else str(v)
    except Exception:  # noqa: BLE001 - a few real headers make CPython's email package raise
        return ""


def _addresses(msg: email.message.Message, name: str) -> list[tuple[str, str]]:
    raw = _header(msg, name)
    return [(n, a) for n, a in email.utils.getaddresses([raw]) if n or a] if raw else []


def _text(part: email.message.Message) -> str:
    try:
        content = part.get_content()
        return content if isinstance(content, str) else ""
    except Exception:  # noqa: BLE001 - unknown charsets, broken encodings
        payload = part.get_payload(decode=True) or b""
        return payload.decode("latin-1") if isinstance(payload, bytes) else ""


def to_document(raw: bytes) -> IndexedDocument:
    """The mail layer's job, done simply: headers, text/plain + text/html bodies, attachment names."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    plain: list[str] = []
    html: list[str] = []
    names: list[str] = []
    has_attachment = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        try:
            filename = part.get_filename()
            disposition = part.get_content_disposition()
        except Exception:  # noqa: BLE001
            filename, disposition = None, None
        if filename or disposition == "attachment":
            has_attachment = True
            if filename:
                names.append(str(filename))
        elif ctype == "text/plain":
            plain.append(_text(part))
        elif ctype == "text/html":
            html.append(_text(part))
        elif ctype.split("/")[0] in ("image", "audio", "video", "application"):
            has_attachment = True
    return IndexedDocument(
        subject=_header(msg, "Subject"),
        from_=_addresses(msg, "From"),
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        body_text="\n".join(plain),
        body_html="\n".join(html),
        attachment_names=names,
        has_attachment=has_attachment,
    )


def read_mbox_xz(name: str, every: int = 1, limit: int | None = None) -> list[bytes]:
    """Every ``every``-th message of ``name`` (in file order), at most ``limit`` of them."""
    fd, tmp = tempfile.mkstemp(suffix=".mbox")
    try:
        with os.fdopen(fd, "wb") as dst, lzma.open(CORPUS / name, "rb") as src:
            shutil.copyfileobj(src, dst)
        box = mailbox.mbox(tmp, create=False)
        out = []
        for i, key in enumerate(box.iterkeys()):
            if i % every == 0:
                out.append(box.get_bytes(key))
                if limit is not None and len(out) >= limit:
                    break
        box.close()
        return out
    finally:
        os.unlink(tmp)


def sample(n_spam: int = 760, n_usrp_att: int = 240) -> list[IndexedDocument]:
    """~1,000 documents: every 8th SpamAssassin message (ham and spam, HTML, odd charsets) and the
    USRP messages with attachments (modern mail, file names)."""
    raws = read_mbox_xz("spamassassin.mbox.xz", every=8, limit=n_spam)
    raws += read_mbox_xz("usrp-users-attachments.mbox.xz", every=1, limit=n_usrp_att)
    return [to_document(r) for r in raws]
