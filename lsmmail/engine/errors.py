"""Typed errors of the engine.

Every error the engine raises on purpose derives from :class:`LsmError`, so a caller can catch the
family at once. OS errors from the file system that the engine cannot handle reach the caller as
:class:`IOFailure` (with the original ``OSError`` as ``__cause__``).
"""

from __future__ import annotations


class LsmError(Exception):
    """Base class of every error raised by lsmmail's engine."""


class Corruption(LsmError):
    """Stored data failed a check (checksum, magic, length, ordering).

    Raised instead of returning data that may be wrong. The message names the file and offset.
    """


class DBClosed(LsmError):
    """The database (or the iterator / snapshot's database) was closed."""


class Locked(LsmError):
    """Another process (or another open handle in this process) holds the database's LOCK file."""


class ReadOnlyError(LsmError):
    """The database refuses writes.

    Raised after a failed fsync/fdatasync or a failed WAL write: the kernel may have dropped the dirty
    pages, and a retried fsync can report success for data that is gone, so the only safe course is to
    stop accepting writes until the database is reopened (recovery then reads what truly reached disk).
    """


class InvalidArgument(LsmError, ValueError):
    """A caller passed something the engine cannot accept (a non-bytes or empty key, a bad option)."""


class IOFailure(LsmError, OSError):
    """An operating-system I/O error the engine could not work around (EIO, ENOSPC, ...)."""
