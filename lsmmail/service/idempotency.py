"""Idempotency-Key for POST /v1/messages: a retried request sends exactly once.

Two layers, so "exactly once" survives a crash at any point:

1. **Deterministic Message-ID.** For a JSON request with a key, the Message-ID is derived from
   (user, key). MailStore.send is idempotent per (user, Message-ID), so even if the process dies after the
   send was durable but before the record below was written, the retry finds the same message and
   returns its id instead of sending again. (Raw uploads carry their own Message-ID, or are deduplicated
   by their bytes, with the same effect.)
2. **The record** ``K | "i" | sha256(user \\0 key)`` -> {id, fingerprint, time} answers retries without
   building the message again, and detects reuse of a key for a different request: the fingerprint
   (SHA-256 of content type and body) must match, otherwise 422 (draft-ietf-httpapi-idempotency-key).
   A second request with the same key while the first is still running gets 409.

Records expire after RETENTION seconds (24 h, the window clients are told to retry within); an expired
record is simply replaced.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass

from lsmmail.mail import MailStore

from .auth import IDEMPOTENCY_FAMILY

#: 24 hours: long enough for any client retry loop, short enough that old keys may be reused.
RETENTION = 24 * 3600.0
#: Longest accepted key (the draft recommends keys up to 255 characters; UUIDs are 36).
MAX_KEY_CHARS = 255


@dataclass(frozen=True)
class IdempotentResult:
    message_id: str
    fingerprint: str


class KeyInFlight(Exception):
    """The same key is being processed by another request right now (answer 409)."""


class IdempotencyKeys:
    def __init__(self, store: MailStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._in_flight: set[bytes] = set()

    @staticmethod
    def digest(user_id: str, key: str) -> bytes:
        return hashlib.sha256(user_id.encode("utf-8") + b"\0" + key.encode("utf-8")).digest()

    @staticmethod
    def fingerprint(content_type: str, body: bytes) -> str:
        return hashlib.sha256(content_type.encode("utf-8") + b"\0" + body).hexdigest()

    def message_id_for(self, user_id: str, key: str, domain: str) -> str:
        """The deterministic Message-ID of a JSON send with this key."""
        return f"<idem.{self.digest(user_id, key).hex()[:32]}@{domain or 'localhost'}>"

    def lookup(self, user_id: str, key: str) -> IdempotentResult | None:
        raw = self._store.db.get(IDEMPOTENCY_FAMILY + self.digest(user_id, key))
        if raw is None:
            return None
        rec = json.loads(raw)
        if time.time() - rec["t"] > RETENTION:
            return None
        return IdempotentResult(rec["id"], rec["fp"])

    def record(self, user_id: str, key: str, result: IdempotentResult) -> None:
        value = json.dumps({"id": result.message_id, "fp": result.fingerprint, "t": time.time()})
        self._store.db.put(IDEMPOTENCY_FAMILY + self.digest(user_id, key), value.encode("utf-8"), sync=True)

    def begin(self, user_id: str, key: str) -> bytes:
        """Mark the key in flight; raises KeyInFlight if it already is. Pair with :meth:`end`."""
        d = self.digest(user_id, key)
        with self._lock:
            if d in self._in_flight:
                raise KeyInFlight(key)
            self._in_flight.add(d)
        return d

    def end(self, token: bytes) -> None:
        with self._lock:
            self._in_flight.discard(token)
