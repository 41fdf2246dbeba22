"""MessageUpdates: mark_read, move and delete (to Trash, then for good) of one message."""

from __future__ import annotations

from . import schema
from .ids import ID_LEN
from .listeners import _notifies
from .records import (
    MESSAGE_HEAD_LEN,
    TRASH,
    decode_message_details,
    decode_message_head,
    message_with_read,
    summary_is_read,
    summary_thread,
)
from .store_core import StoreCore
from .txn import Txn, UserState


class MessageUpdates(StoreCore):
    """Mixin of MailStore: changes to stored messages (the records of a move are in StoreCore)."""

    @_notifies
    def mark_read(self, user_id: str, message_id: str, read: bool = True) -> None:
        """Set the read flag (updates the unread index and counter in one durable batch; no-op if same)."""
        u = self._user(user_id)
        mid = self._mid(message_id)
        with u.lock:
            rec = self._message_record(u, mid)
            folder, sm = decode_message_head(rec)
            if summary_is_read(sm) == read:
                return
            txn = self._txn()
            ut = txn.user(u)
            rec = message_with_read(rec, read)
            sm = rec[MESSAGE_HEAD_LEN:MESSAGE_HEAD_LEN + len(sm)]  # the same flag flipped in the copy
            txn.put(schema.message_key(u.uk, mid), rec)
            lkey = schema.listing_key(u.uk, folder, mid)
            txn.put(lkey, sm)
            ukey = schema.UNREAD + lkey[1:]  # same fields as the listing key, other tag (docs/schema.md)
            if read:
                txn.delete(ukey)
            else:
                txn.put(ukey, sm)
            ut.count(folder, 0, -1 if read else 1)
            txn.log_change(ut, schema.CHANGE_UPDATED, mid)
            self._commit(txn)

    @_notifies
    def move(self, user_id: str, message_id: str, folder_id: str) -> None:
        """Move a message to another folder (one durable batch; no-op if already there)."""
        u = self._user(user_id)
        mid = self._mid(message_id)
        with u.lock:
            target = self._folder_num(u, folder_id)
            rec = self._message_record(u, mid)
            if decode_message_head(rec)[0] == target:
                return
            txn = self._txn()
            self._move(txn, u, mid, rec, target)
            self._commit(txn)

    @_notifies
    def delete(self, user_id: str, message_id: str) -> None:
        """Move to Trash; a message already in Trash is deleted for good: its records, raw bytes, body,
        indexes, search postings and its hold on attachments go (an attachment blob is reclaimed when
        its last holder goes). One durable batch."""
        u = self._user(user_id)
        mid = self._mid(message_id)
        with u.lock:
            rec = self._message_record(u, mid)
            txn = self._txn()
            if decode_message_head(rec)[0] != TRASH:
                self._move(txn, u, mid, rec, TRASH)
                self._commit(txn)
                return
            self._purge(txn, u, mid, rec)
            self._commit_with_attachments(txn)

    def _purge(self, txn: Txn, u: UserState, mid: bytes, rec: bytes) -> None:
        ut = txn.user(u)
        uk = u.uk
        folder, sm = decode_message_head(rec)
        unread = 0 if summary_is_read(sm) else 1
        d = decode_message_details(rec)
        for key in (schema.message_key(uk, mid), schema.listing_key(uk, folder, mid),
                    schema.raw_key(uk, mid), schema.body_key(uk, mid)):
            txn.delete(key)
        if unread:
            txn.delete(schema.unread_key(uk, folder, mid))
        if d["k"]:
            dkey = bytes.fromhex(d["k"])
            hit = self._lookup_dedup(txn, dkey)
            if hit is not None and hit[:ID_LEN] == mid:
                txn.delete(dkey)
                txn.dedup.pop(dkey, None)
                txn.dedup_removed.add(dkey)
        txn.delete(schema.thread_key(uk, summary_thread(sm), mid))
        for part, a in enumerate(d["a"]):
            hk = schema.holder_key(bytes.fromhex(a[3]), uk, mid, part)
            txn.delete(hk)
            txn.holders_removed.add(hk)
        ut.count(folder, -1, -unread)
        txn.log_change(ut, schema.CHANGE_DELETED, mid)
        if self._search is not None:
            txn.search_pending.append(self._search.unindex(txn.batch, uk, mid))
