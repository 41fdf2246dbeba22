"""Delivery: the write path that stores incoming messages (deliver, bulk import).

``_add_message`` puts one message's records (message, raw bytes, body, list and unread indexes, dedup,
thread, attachment holders, change log, search record) into a transaction; send builds on it too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from . import mime, schema
from .errors import MessageTooLarge
from .ids import ID_LEN, id_to_str
from .listeners import _notifies
from .records import ImportResult, encode_body, encode_message, encode_summary
from .search_bridge import _indexed_document
from .store_core import StoreCore
from .txn import Txn, UserState


class Delivery(StoreCore):
    """Mixin of MailStore: deliver and import_messages, and the records of one new message."""

    @_notifies
    def deliver(self, user_id: str, raw: bytes, folder: str = "INBOX", *, read: bool = False) -> str:
        """Store ``raw`` (kept byte-exact) in ``folder`` and return the message id.

        Idempotent: a message whose Message-ID (or, without one, whose exact bytes) this user already
        has is not stored again; the first message's id is returned. Durable before returning (one
        WriteBatch written with fdatasync; concurrent deliveries share fsyncs through group commit).
        Malformed messages are stored with whatever could be parsed. Raises MessageTooLarge above
        ``max_message_size``, UnknownUser, UnknownFolder."""
        self._check_size(raw)
        parsed = mime.parse(raw)
        u = self._user(user_id)
        with u.lock:
            n = self._folder_num(u, folder)
            txn = self._txn()
            mid, created = self._add_message(txn, u, raw, parsed, n, read=read)
            if created:
                self._commit_with_attachments(txn)
            return id_to_str(mid)

    def import_messages(
        self, user_id: str, raws: Iterable[bytes], folder: str = "INBOX", *, read: bool = False,
        batch_size: int | None = None,
    ) -> Iterator[ImportResult]:
        """Bulk import: like deliver for each message, but ``batch_size`` messages (default
        ``import_batch_size``, 64) share ONE WriteBatch and one fdatasync. Results are yielded only after
        their batch is durable; a crash loses at most the batch being written, never part of a message
        (each batch is atomic). Oversized messages yield status ``too_large`` instead of raising."""
        size = batch_size or self._opts.import_batch_size
        u = self._user(user_id)
        n = self._folder_num(u, folder)
        pending: list[tuple[int, bytes, mime.ParsedMessage | None]] = []
        for i, raw in enumerate(raws):
            parsed = mime.parse(raw) if len(raw) <= self._opts.max_message_size else None
            pending.append((i, raw, parsed))
            if len(pending) >= size:
                yield from self._import_batch(u, n, pending, read)
                pending = []
        if pending:
            yield from self._import_batch(u, n, pending, read)

    @_notifies
    def _import_batch(self, u: UserState, folder: int, items: list, read: bool) -> list[ImportResult]:
        results = []
        with u.lock:
            txn = self._txn()
            any_created = False
            for i, raw, parsed in items:
                if parsed is None:
                    results.append(ImportResult(i, "too_large", None))
                    continue
                mid, created = self._add_message(txn, u, raw, parsed, folder, read=read)
                any_created |= created
                results.append(ImportResult(i, "stored" if created else "duplicate", id_to_str(mid)))
            if any_created:
                self._commit_with_attachments(txn)
        return results

    def _check_size(self, raw: bytes) -> None:
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError("raw message must be bytes")
        if len(raw) > self._opts.max_message_size:
            raise MessageTooLarge(f"message of {len(raw)} bytes exceeds the limit of "
                                  f"{self._opts.max_message_size} bytes")

    def _dedup_key(self, u: UserState, raw: bytes, parsed: mime.ParsedMessage) -> bytes:
        if parsed.message_id:
            return schema.dedup_key(u.uk, schema.DEDUP_MESSAGE_ID,
                                    parsed.message_id.encode("utf-8", "surrogatepass"))
        return schema.dedup_key(u.uk, schema.DEDUP_CONTENT, hashlib.sha256(raw).digest())

    def _add_message(
        self, txn: Txn, u: UserState, raw: bytes, parsed: mime.ParsedMessage, folder: int, *,
        read: bool, register_dedup: bool = True,
    ) -> tuple[bytes, bool]:
        """Add one message's records to ``txn``. Returns (id, created); created is False for a duplicate."""
        raw = bytes(raw)
        dkey = self._dedup_key(u, raw, parsed)
        if register_dedup:
            hit = self._lookup_dedup(txn, dkey)
            if hit is not None:
                return hit[:ID_LEN], False
        mid = self._ids.new()
        thread = self._find_thread(txn, u, parsed) or mid
        ut = txn.user(u)
        uk = u.uk
        shas = [a.sha256 for a in parsed.attachments]  # a property that hashes the data: once per part
        atts = [[a.filename, a.content_type, len(a.data), sha.hex()]
                for a, sha in zip(parsed.attachments, shas, strict=True)]
        sm = encode_summary(
            subject=parsed.subject, preview=parsed.preview, from_=parsed.from_, to=parsed.to, cc=parsed.cc,
            date=parsed.date, size=len(raw), has_attachments=bool(atts), read=read, thread=thread,
        )
        details = {
            "m": parsed.message_id, "i": parsed.in_reply_to, "r": parsed.references, "b": parsed.bcc,
            "a": atts, "k": dkey.hex() if register_dedup else None,
        }
        txn.put(schema.message_key(uk, mid), encode_message(folder, sm, details))
        txn.put(schema.listing_key(uk, folder, mid), sm)
        if not read:
            txn.put(schema.unread_key(uk, folder, mid), sm)
        txn.put(schema.raw_key(uk, mid), raw)
        if parsed.text or parsed.html:
            txn.put(schema.body_key(uk, mid), encode_body(parsed.text, parsed.html))
        if register_dedup:
            value = mid + thread
            txn.put(dkey, value)
            txn.dedup[dkey] = value
            txn.dedup_removed.discard(dkey)
        txn.put(schema.thread_key(uk, thread, mid), b"")
        norm = mime.normalise_subject(parsed.subject)
        if norm:
            txn.put(schema.subject_key(uk, norm), thread)
        for part, (a, sha) in enumerate(zip(parsed.attachments, shas, strict=True)):
            hk = schema.holder_key(sha, uk, mid, part)
            txn.put(hk, b"")
            txn.holders_added[sha] = txn.holders_added.get(sha, 0) + 1
            txn.holders_removed.discard(hk)
            # The blob itself is written (once) in _resolve_attachments, under the attachment lock.
            txn.att_data[sha] = a.data
        ut.count(folder, 1, 0 if read else 1)
        txn.log_change(ut, schema.CHANGE_CREATED, mid)
        if self._search is not None:
            txn.search_pending.append(self._search.index(txn.batch, uk, mid, _indexed_document(parsed)))
        return mid, True

    def _find_thread(self, txn: Txn, u: UserState, parsed: mime.ParsedMessage) -> bytes | None:
        """Thread of the first known message this one refers to (In-Reply-To, then References newest
        first); else, for a reply-style subject ("Re: ..."), the thread last seen with that subject."""
        for ref in [*parsed.in_reply_to, *reversed(parsed.references)]:
            hit = self._lookup_dedup(txn, schema.dedup_key(u.uk, schema.DEDUP_MESSAGE_ID,
                                                           ref.encode("utf-8", "surrogatepass")))
            if hit is not None:
                return hit[ID_LEN:]
        if mime.is_reply_subject(parsed.subject):
            norm = mime.normalise_subject(parsed.subject)
            if norm:
                return self._db.get(schema.subject_key(u.uk, norm))
        return None
