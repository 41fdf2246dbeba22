"""The mail layer: MailStore (users, folders, messages) on lsmmail.DB. See docs/mail.md.

``MailStore`` and ``MailOptions`` are imported on first use (PEP 562): a bulk import's worker process
imports ``lsmmail.mail.import_pool`` without loading the store and the engine under it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .store import MailOptions, MailStore

__all__ = [
    "AttachmentInfo", "Changes", "Folder", "FolderExists", "FolderNotAllowed", "ImportResult",
    "InvalidAddress", "InvalidCursor", "MailError", "MailOptions", "MailStore", "Message",
    "MessageSummary", "MessageTooLarge", "OutboxEntry", "OutgoingMessage", "Page", "StateTooOld",
    "UnknownAttachment", "UnknownFolder", "UnknownMessage", "UnknownUser", "UserExists",
]


def __getattr__(name: str) -> Any:
    if name not in ("MailOptions", "MailStore"):
        raise AttributeError(f"module 'lsmmail.mail' has no attribute {name!r}")
    value = getattr(importlib.import_module(".store", __name__), name)
    globals()[name] = value
    return value
