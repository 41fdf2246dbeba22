"""lsmmail: an embedded, write-optimised mailbox storage engine.

Layers (each usable alone; arrows point down only): service -> mail -> search -> engine -> native.

The public names below are imported on first use (PEP 562), so ``import lsmmail.mail.mime`` in a bulk
import's worker process does not load the engine and the mail store (~0.17 s of imports per worker).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "WriteBatch": ".engine.batch",
    "DB": ".engine.db",
    "Snapshot": ".engine.db",
    "Corruption": ".engine.errors",
    "DBClosed": ".engine.errors",
    "InvalidArgument": ".engine.errors",
    "IOFailure": ".engine.errors",
    "Locked": ".engine.errors",
    "LsmError": ".engine.errors",
    "ReadOnlyError": ".engine.errors",
    "Options": ".engine.options",
    "MailOptions": ".mail",
    "MailStore": ".mail",
    "OutgoingMessage": ".mail",
}

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
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lsmmail' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next access is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
