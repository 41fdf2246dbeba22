"""JSON shapes of the REST API (pydantic models, so the OpenAPI document describes them exactly).

Strings that come out of stored mail may hold lone surrogates (undecodable header bytes kept with
``surrogateescape``); :func:`clean` replaces them so every response encodes as UTF-8 JSON.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lsmmail.mail import AttachmentInfo, Folder, Message, MessageSummary

#: Recipients per header. 100 is the minimum an SMTP server must accept per message (RFC 5321 §4.5.3.1.8).
MAX_RECIPIENTS = 100
#: Attachments per JSON send (the size limit bounds the bytes; this bounds the per-part work).
MAX_ATTACHMENTS = 100

#: A loose shape check (the store validates fully); it lets the OpenAPI document say what an address is.
_ADDR_PATTERN = r"^[^@\s<>,;]+@[^@\s<>,;]+$"
Addr = Annotated[str, Field(max_length=254, pattern=_ADDR_PATTERN)]
_CTYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"


def clean(s: str | None) -> str:
    if not s:
        return ""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


class Address(BaseModel):
    name: str
    address: str


class Summary(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    folder_id: str
    thread_id: str
    subject: str
    from_: list[Address] = Field(alias="from")
    to: list[Address]
    cc: list[Address]
    date: float | None = Field(description="the message's own Date header, Unix seconds (None if unusable)")
    received: float = Field(description="arrival time, Unix seconds")
    preview: str
    size: int
    has_attachments: bool
    is_read: bool


class MessagePage(BaseModel):
    items: list[Summary]
    next_cursor: str | None


class ThreadOut(BaseModel):
    thread_id: str
    items: list[Summary]


class FolderOut(BaseModel):
    id: str
    name: str
    total: int
    unread: int
    system: bool


class FolderList(BaseModel):
    folders: list[FolderOut]


class AttachmentOut(BaseModel):
    part: int
    filename: str
    content_type: str
    size: int
    sha256: str
    url: str


class MessageOut(Summary):
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    bcc: list[Address]
    text: str
    html: str = Field(description="sanitised HTML (allowlist of tags and attributes; no scripts, styles, "
                                  "event handlers or images); the original is only in /raw")
    attachments: list[AttachmentOut]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field("application/octet-stream", pattern=_CTYPE_PATTERN)
    content_base64: str = Field(description="the attachment bytes, standard base64")


class SendRequest(BaseModel):
    """A message to send as the caller (From is the caller's first address)."""

    model_config = ConfigDict(extra="forbid")

    to: list[Addr] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    cc: list[Addr] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Addr] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: str = Field("", max_length=998)  # RFC 5322 line length limit
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    in_reply_to: str | None = Field(None, max_length=998)


class SendResult(BaseModel):
    id: str = Field(description="id of the copy in the sender's Sent folder")
    folder_id: str


class MessagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    is_read: bool | None = None
    folder_id: str | None = Field(None, min_length=1, max_length=64)


class DeleteResult(BaseModel):
    id: str
    status: Literal["trashed", "purged"]


class FolderName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class FolderDeleted(BaseModel):
    id: str
    moved_to_trash: int


class ChangesOut(BaseModel):
    created: list[str]
    updated: list[str]
    deleted: list[str]
    new_state: str


def _addrs(pairs: list[tuple[str, str]]) -> list[Address]:
    return [Address(name=clean(n), address=clean(a)) for n, a in pairs]


def summary_dict(s: MessageSummary) -> dict:
    return {
        "id": s.id, "folder_id": s.folder_id, "thread_id": s.thread_id, "subject": clean(s.subject),
        "from": _addrs(s.from_), "to": _addrs(s.to), "cc": _addrs(s.cc), "date": s.date,
        "received": s.received, "preview": clean(s.preview), "size": s.size,
        "has_attachments": s.has_attachments, "is_read": s.is_read,
    }


def summary_out(s: MessageSummary) -> Summary:
    return Summary(**summary_dict(s))


def folder_out(f: Folder) -> FolderOut:
    return FolderOut(id=f.id, name=clean(f.name), total=f.total, unread=f.unread, system=f.system)


def attachment_out(mid: str, a: AttachmentInfo) -> AttachmentOut:
    return AttachmentOut(part=a.part, filename=clean(a.filename), content_type=clean(a.content_type),
                         size=a.size, sha256=a.sha256, url=f"/v1/messages/{mid}/attachments/{a.part}")


def message_out(m: Message, html: str) -> MessageOut:
    return MessageOut(
        **summary_dict(m.summary), message_id=clean(m.message_id) if m.message_id else None,
        in_reply_to=[clean(x) for x in m.in_reply_to], references=[clean(x) for x in m.references],
        bcc=_addrs(m.bcc), text=clean(m.text), html=clean(html),
        attachments=[attachment_out(m.summary.id, a) for a in m.attachments],
    )
