"""lsmmail: an embedded, write-optimised mailbox storage engine.

Layers (each usable alone; arrows point down only): service -> mail -> search -> engine -> native.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .engine.batch import WriteBatch
from .engine.db import DB, Snapshot
from .engine.errors import (
    Corruption,
    DBClosed,
    InvalidArgument,
    IOFailure,
    Locked,
    LsmError,
    ReadOnlyError,
)
from .engine.options import Options
from .mail import MailOptions, MailStore, OutgoingMessage

__all__ = [
    "DB",
    "Corruption",
    "DBClosed",
    "IOFailure",
    "InvalidArgument",
    "Locked",
    "LsmError",
    "MailOptions",
    "MailStore",
    "Options",
    "OutgoingMessage",
    "ReadOnlyError",
    "Snapshot",
    "WriteBatch",
]
