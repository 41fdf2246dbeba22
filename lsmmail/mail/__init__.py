"""The mail layer: MailStore (users, folders, messages) on lsmmail.DB. See docs/mail.md."""

from __future__ import annotations

from .errors import (
    FolderExists,
    FolderNotAllowed,
    InvalidAddress,
    InvalidCursor,
    MailError,
    MessageTooLarge,
    StateTooOld,
    UnknownAttachment,
    UnknownFolder,
    UnknownMessage,
    UnknownUser,
    UserExists,
)
from .records import (
    AttachmentInfo,
    Changes,
    Folder,
    ImportResult,
    Message,
    MessageSummary,
    OutboxEntry,
    OutgoingMessage,
    Page,
)
from .store import MailOptions, MailStore

__all__ = [
    "AttachmentInfo", "Changes", "Folder", "FolderExists", "FolderNotAllowed", "ImportResult",
    "InvalidAddress", "InvalidCursor", "MailError", "MailOptions", "MailStore", "Message",
    "MessageSummary", "MessageTooLarge", "OutboxEntry", "OutgoingMessage", "Page", "StateTooOld",
    "UnknownAttachment", "UnknownFolder", "UnknownMessage", "UnknownUser", "UserExists",
]
