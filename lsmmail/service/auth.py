"""Bearer tokens per user, stored hashed in the MailStore's database.

Key family (one byte tag, agreed for the service layer; the mail schema owns ``A`` for addresses, so the
service uses ``K``; see docs/service.md):

* ``K | "t" | sha256(token)(32)``            -> user id (utf-8)
* ``K | "i" | sha256(user \\0 key)(32)``      -> idempotency record (JSON; see lsmmail.service.idempotency)
* ``K | "r" | outbox entry id(16)``           -> relay retry state (JSON; see lsmmail.service.relay)

A token is 32 random bytes (256 bits, so guessing is hopeless and a plain, unsalted SHA-256 is enough: a
hash of a uniformly random secret cannot be brute-forced the way a password hash can), shown to the user
once, URL-safe base64 with the prefix ``lsm_`` so it is easy to spot in logs and secret scanners. Only the
hash is stored: a copy of the data directory does not leak usable tokens.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

from lsmmail.mail import MailStore, UnknownUser, schema

#: Reserved for the service by the mail schema (schema.SERVICE_RESERVED), like S/s for search.
SERVICE_TAG = schema.SERVICE_RESERVED
TOKEN_FAMILY = SERVICE_TAG + b"t"
IDEMPOTENCY_FAMILY = SERVICE_TAG + b"i"
RELAY_FAMILY = SERVICE_TAG + b"r"
TOKEN_PREFIX = "lsm_"
#: 32 bytes = 256 bits of entropy (RFC 6750 leaves the size open; 128 bits would do, 256 costs nothing).
TOKEN_BYTES = 32
#: Longest Authorization value we hash; a real token is 47 characters, so anything far longer is junk.
MAX_TOKEN_CHARS = 512


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_key(token: str) -> bytes:
    return TOKEN_FAMILY + hash_token(token)


def new_token() -> str:
    body = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").rstrip("=")
    return TOKEN_PREFIX + body


class TokenAuth:
    """Maps bearer tokens to user ids through the store's database (``store.db``).

    ``authenticate`` returns None for any token it does not know (never raises for bad input), so the
    HTTP layer answers 401 the same way for a missing, malformed or revoked token."""

    def __init__(self, store: MailStore) -> None:
        self._store = store

    def issue(self, user_id: str) -> str:
        """Create and durably store a new token for an existing user; returns it (the only time it is
        visible). Raises UnknownUser."""
        self._store.addresses(user_id)  # raises UnknownUser
        token = new_token()
        self._store.db.put(token_key(token), user_id.encode("utf-8"), sync=True)
        return token

    def revoke(self, token: str) -> bool:
        key = token_key(token)
        if self._store.db.get(key) is None:
            return False
        self._store.db.delete(key, sync=True)
        return True

    def authenticate(self, token: str | None) -> str | None:
        if not token or len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
            return None
        raw = self._store.db.get(token_key(token))
        if raw is None:
            return None
        # No timing side channel to guard: the lookup is by SHA-256 of the token, so response time says
        # nothing about how close a guess was.
        return raw.decode("utf-8")


def add_user(store_or_data_dir: MailStore | str | Path, address: str, user_id: str | None = None) -> str:
    """Create user ``user_id`` (default: the address) with ``address`` and return a new bearer token.

    If the user already exists with this address, a fresh token is issued (so ``lsmmail user add`` can
    be re-run to get another token). Raises UserExists if the address belongs to another user,
    InvalidAddress for a malformed address. With a data directory, the store is opened and closed here
    (the server must not be running: one process holds the DB lock)."""
    if isinstance(store_or_data_dir, MailStore):
        return _add_user(store_or_data_dir, address, user_id)
    with MailStore.open(str(store_or_data_dir)) as store:
        return _add_user(store, address, user_id)


def _add_user(store: MailStore, address: str, user_id: str | None) -> str:
    uid = user_id or address.strip().lower()
    try:
        existing = store.addresses(uid)
    except UnknownUser:
        existing = None
    if existing is None:
        store.create_user(uid, [address])
    elif address.strip().casefold() not in {a.casefold() for a in existing}:
        from lsmmail.mail import UserExists

        raise UserExists(f"user {uid!r} exists without address {address!r}")
    return TokenAuth(store).issue(uid)
