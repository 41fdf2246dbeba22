"""MessageUpdates: mark_read, move and delete (to Trash, then for good) of one message."""

from __future__ import annotations

from . import schema
from .errors import UnknownMessage
from .ids import ID_LEN, id_to_str
from .listeners import _notifies
from .records import (
    MESSAGE_HEAD_LEN,
    TRASH,
    decode_message_details,
    decode_message_head,
    message_with_read,
    pack_user_state,
    summary_is_read,
    summary_thread,
)
from .store_core import StoreCore
from .txn import FolderState, Txn, UserState

#: The value prefix of an "updated" change-log entry (kind byte; the id follows).
_UPDATED = bytes([schema.CHANGE_UPDATED])


class MessageUpdates(StoreCore):
    """Mixin of MailStore: changes to stored messages (the records of a move are in StoreCore)."""

    @_notifies
    def mark_read(self, user_id: str, message_id: str, read: bool = True) -> None:
        """Set the read flag: one durable batch of the message record, its listing summary, its unread
        index entry (put or delete), the folder counter, a change-log entry and the user state. No-op
        (nothing written, no notification) if the flag already has that value.

        Raises UnknownUser / UnknownMessage; Corruption for a damaged record; the engine's write errors
        (IOFailure, ReadOnlyError), after which memory still equals disk (nothing is installed).

        The batch is built here directly instead of through :class:`Txn` (the general transaction of a
        move or delivery): a durable mark is one fdatasync plus this code, and after the fdatasync's
        sleep the code runs with cold caches, where every object and module it touches costs a few
        hundred ns. In-process A/B, sync off, 3 runs interleaved with SQLite's mark: 28.0 -> 23.9 us
        back to back, 42-60 -> 32-46 us right after an fdatasync (SQLite's: 45-65 us). The entries are
        the ones Txn would write (tests/mail/test_updates_mark.py compares both)."""
        u = self._user(user_id)
        mid = self._mid(message_id)
        uk = u.uk
        with u.lock:
            mkey = schema.message_key(uk, mid)
            rec = self._db.get(mkey)
            if rec is None:
                raise UnknownMessage(id_to_str(mid))
            folder, sm = decode_message_head(rec)  # checks the record's format and lengths
            if summary_is_read(sm) == read:
                return
            rec = message_with_read(rec, read)
            sm = rec[MESSAGE_HEAD_LEN:MESSAGE_HEAD_LEN + len(sm)]  # the same flag flipped in the copy
            lkey = schema.listing_key(uk, folder, mid)
            batch = self._batch_factory()
            put = batch.put
            put(mkey, rec)
            put(lkey, sm)
            ukey = schema.UNREAD + lkey[1:]  # same fields as the listing key, other tag (docs/schema.md)
            if read:
                batch.delete(ukey)
            else:
                put(ukey, sm)
            # The change-log entry and the counters: what Txn.log_change / UserTxn.count / Txn.finish
            # write, from local copies installed only after the write succeeded.
            seq, oldest = u.next_seq, u.oldest_seq
            put(schema.change_key(uk, seq), _UPDATED + mid)
            seq += 1
            retention = self._opts.change_log_retention
            while seq - oldest > retention:
                batch.delete(schema.change_key(uk, oldest))
                oldest += 1
            f = u.folders[folder]
            nf = FolderState(f.name, f.total, f.unread - 1 if read else f.unread + 1)
            put(schema.folder_key(uk, folder), nf.record())
            put(schema.user_state_key(uk), pack_user_state(seq, oldest, u.next_folder))
            self._db.write(batch, sync=self._opts.sync)
            # Installed under the user's lock; a FolderState is never changed once installed (readers
            # take the lock too), so replacing the one entry is the whole install.
            u.folders[folder] = nf
            u.next_seq, u.oldest_seq = seq, oldest
            self._announce(u.user_id, str(seq))

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
