"""Typed errors of the mail layer. Everything raised on purpose derives from :class:`MailError`."""

from __future__ import annotations


class MailError(Exception):
    """Base class of every error the mail layer raises on purpose."""


class UnknownUser(MailError, KeyError):
    """No user with this id (create_user first)."""


class UserExists(MailError):
    """create_user for an id that exists, or an address another user already has."""


class UnknownFolder(MailError, KeyError):
    """No folder with this id for this user."""


class FolderExists(MailError):
    """A folder with this name (case-insensitive) already exists for this user."""


class FolderNotAllowed(MailError):
    """The operation is not allowed on this folder (renaming or deleting a system folder)."""


class UnknownMessage(MailError, KeyError):
    """No message with this id for this user (never existed, deleted for good, or another user's)."""


class UnknownAttachment(MailError, KeyError):
    """The message has no attachment with this part number."""


class MessageTooLarge(MailError, ValueError):
    """The raw message is larger than ``MailOptions.max_message_size`` (25 MiB by default)."""


class InvalidAddress(MailError, ValueError):
    """An e-mail address that is not ``local@domain`` (or a user with no address sends mail)."""


class InvalidCursor(MailError, ValueError):
    """A pagination cursor that is malformed or belongs to another listing."""


class StateTooOld(MailError):
    """changes(since_state) for a state older than the retained change log: the client must resync."""
