"""Public result types of the mail layer and the encoding of the values stored under schema keys.

Values are compact JSON (the C-accelerated ``json`` module encodes a summary in a few microseconds) so
records stay readable in a debugger and can gain fields without a format change: readers ignore keys they
do not know and default the ones that are missing.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from .ids import id_time_ms, id_to_str

# System folders: fixed numbers (never reused by user folders, which start at USER_FOLDER_BASE) and ids
# equal to their names, so "INBOX" is a valid folder id for every user.
INBOX, SENT, DRAFTS, TRASH, SPAM, ARCHIVE = 1, 2, 3, 4, 5, 6
SYSTEM_FOLDERS: dict[int, str] = {
    INBOX: "INBOX", SENT: "Sent", DRAFTS: "Drafts", TRASH: "Trash", SPAM: "Spam", ARCHIVE: "Archive",
}
USER_FOLDER_BASE = 16


def folder_id_str(number: int) -> str:
    """Public folder id: the name for system folders, ``f<number>`` for user folders (stable under rename)."""
    return SYSTEM_FOLDERS.get(number) or f"f{number}"


@dataclass(frozen=True)
class Folder:
    id: str
    name: str
    total: int
    unread: int
    system: bool


@dataclass(frozen=True)
class MessageSummary:
    """One row of a message list. ``received`` is the time in the id (Unix seconds); ``date`` is the
    message's own Date header (None when missing or unusable)."""

    id: str
    folder_id: str
    thread_id: str
    subject: str
    from_: list[tuple[str, str]]
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    date: float | None
    received: float
    preview: str
    size: int
    has_attachments: bool
    is_read: bool


@dataclass(frozen=True)
class AttachmentInfo:
    part: int
    filename: str
    content_type: str
    size: int
    sha256: str  # hex


@dataclass(frozen=True)
class Message:
    summary: MessageSummary
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    bcc: list[tuple[str, str]]
    text: str
    html: str
    attachments: list[AttachmentInfo]


@dataclass(frozen=True)
class Page:
    items: list[MessageSummary]
    next_cursor: str | None


@dataclass(frozen=True)
class Changes:
    """Ids created, updated (folder or read flag) and deleted for good since a state, and the new state.
    An id created and deleted in the range appears in neither list; created wins over updated."""

    created: list[str]
    updated: list[str]
    deleted: list[str]
    new_state: str


@dataclass(frozen=True)
class OutgoingMessage:
    """Fields of a message for :meth:`MailStore.send` to build (From, Date and Message-ID are added)."""

    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # (filename, type, data)
    in_reply_to: str | None = None


@dataclass(frozen=True)
class ImportResult:
    """Outcome of one message of a bulk import: status is ``stored``, ``duplicate`` or ``too_large``."""

    index: int
    status: str
    id: str | None


@dataclass(frozen=True)
class OutboxEntry:
    id: str
    user_id: str
    sender: str
    recipients: list[str]
    raw: bytes


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes) -> dict:
    return json.loads(data)


def summary_from(mid: bytes, folder: int, rec: dict) -> MessageSummary:
    """Build a MessageSummary from a summary record (the value of LISTING / UNREAD keys)."""
    return MessageSummary(
        id=id_to_str(mid),
        folder_id=folder_id_str(folder),
        thread_id=rec["th"],
        subject=rec["s"],
        from_=[tuple(a) for a in rec["f"]],  # type: ignore[misc]
        to=[tuple(a) for a in rec["t"]],  # type: ignore[misc]
        cc=[tuple(a) for a in rec["c"]],  # type: ignore[misc]
        date=rec["d"],
        received=id_time_ms(mid) / 1000.0,
        preview=rec["p"],
        size=rec["z"],
        has_attachments=rec["a"],
        is_read=rec["r"],
    )


_STATE = struct.Struct(">QQI")


def pack_user_state(next_seq: int, oldest_seq: int, next_folder: int) -> bytes:
    return _STATE.pack(next_seq, oldest_seq, next_folder)


def unpack_user_state(data: bytes) -> tuple[int, int, int]:
    return _STATE.unpack(data)  # type: ignore[return-value]
