"""StoreCore: the state every part of MailStore shares and the primitives they all build on.

Loading a user's cached state, resolving folder and message ids, reading a message record, and the
write transaction: building one (``_txn``), the records of a move, the dedup lookup that sees the
transaction's own changes, and committing it (with the attachment refcount step when needed).
"""

from __future__ import annotations

import threading
from typing import Any

from . import schema
from .errors import UnknownFolder, UnknownMessage, UnknownUser
from .ids import IdGenerator, id_from_str, id_to_str
from .listeners import ChangeListeners
from .options import MailOptions
from .records import (
    SYSTEM_FOLDERS,
    USER_FOLDER_BASE,
    decode_message_head,
    loads,
    message_with,
    summary_is_read,
    unpack_user_state,
)
from .txn import FolderState, Txn, UserState


class StoreCore(ChangeListeners):
    """Base of the MailStore mixins. MailStore.__init__ sets the attributes below."""

    _db: Any
    _opts: MailOptions
    _batch_factory: Any
    _ids: IdGenerator
    _users: dict[str, UserState]
    _users_lock: threading.Lock  # guards _users and create_user
    _att_lock: threading.Lock  # attachment refcount check-and-write (see _commit_with_attachments)
    _search: Any  # a SearchIndex, or None while lsmmail.search is not installed

    # ---- users -------------------------------------------------------------------------------------------

    def users(self) -> list[str]:
        return [k[1:].decode("utf-8") for k, _ in self._db.scan(prefix=schema.USER)]

    def _user(self, user_id: str) -> UserState:
        u = self._users.get(user_id)
        if u is not None:
            return u
        with self._users_lock:
            u = self._users.get(user_id)
            if u is not None:
                return u
            raw = self._db.get(schema.user_record_key(user_id))
            if raw is None:
                raise UnknownUser(user_id)
            rec = loads(raw)
            uk = schema.user_key(rec["n"])
            seq, oldest, next_folder = unpack_user_state(self._db.get(schema.user_state_key(uk)))
            folders = {}
            for k, v in self._db.scan(prefix=schema.folder_prefix(uk)):
                f = loads(v)
                folders[schema.folder_of_key(k)] = FolderState(f["n"], f["t"], f["u"])
            u = UserState(user_id, uk, rec["a"], folders, seq, oldest, next_folder, threading.RLock())
            self._users[user_id] = u
            return u

    # ---- folders and messages ----------------------------------------------------------------------------

    def _folder_num(self, u: UserState, folder_id: str) -> int:
        for n, name in SYSTEM_FOLDERS.items():
            if folder_id == name or folder_id.casefold() == name.casefold():
                return n
        if folder_id.startswith("f") and folder_id[1:].isdigit():
            n = int(folder_id[1:])
            if n in u.folders and n >= USER_FOLDER_BASE:
                return n
        raise UnknownFolder(folder_id)

    def _mid(self, message_id: str) -> bytes:
        try:
            return id_from_str(message_id)
        except ValueError as exc:
            raise UnknownMessage(message_id) from exc

    def _message_record(self, u: UserState, mid: bytes, snapshot: Any = None) -> bytes:
        """The message record (encoded; records.decode_message_head / decode_message_details read it)."""
        raw = self._db.get(schema.message_key(u.uk, mid), snapshot=snapshot)
        if raw is None:
            raise UnknownMessage(id_to_str(mid))
        return raw

    # ---- transactions ------------------------------------------------------------------------------------

    def _txn(self) -> Txn:
        return Txn(self._batch_factory(), self._opts.change_log_retention)

    def _commit(self, txn: Txn) -> None:
        txn.finish()
        self._db.write(txn.batch, sync=self._opts.sync)
        self._written(txn)

    def _written(self, txn: Txn) -> None:
        """After ``txn``'s batch was written: install its state, tell search, queue the notifications."""
        txn.install()
        if self._search is not None:
            for token in txn.search_pending:
                self._search.committed(token)
        for ut in txn.users.values():  # listeners run later, outside the user locks (see _notifies)
            self._announce(ut.user.user_id, str(ut.next_seq))

    def _commit_with_attachments(self, txn: Txn) -> None:
        if txn.holders_added or txn.holders_removed:
            # The "does any other holder exist" check and the write must not interleave with another
            # operation changing the same attachment's holders (a delete reclaiming the blob while a
            # delivery relies on it). Attachments are in ~5% of mail, so one lock costs little.
            with self._att_lock:
                self._resolve_attachments(txn)
                self._commit(txn)
        else:
            self._commit(txn)

    def _lookup_dedup(self, txn: Txn, key: bytes) -> bytes | None:
        if key in txn.dedup:
            return txn.dedup[key]
        if key in txn.dedup_removed:
            return None
        return self._db.get(key)

    def _resolve_attachments(self, txn: Txn) -> None:
        """Write each newly referenced attachment blob once; delete blobs whose last holder goes."""
        for sha, blob in txn.att_data.items():
            if sha in txn.attachments_written:
                continue
            if not self._other_holders(txn, sha):
                txn.put(schema.attachment_key(sha), blob)
            txn.attachments_written.add(sha)
        for sha in {hk[1:1 + schema.SHA_LEN] for hk in txn.holders_removed}:
            if txn.holders_added.get(sha):
                continue
            if not self._other_holders(txn, sha):
                txn.delete(schema.attachment_key(sha))

    def _other_holders(self, txn: Txn, sha: bytes) -> bool:
        """Does a committed holder of ``sha`` exist that this transaction does not remove?"""
        for k, _ in self._db.scan(prefix=schema.holder_prefix(sha)):
            if k not in txn.holders_removed:
                return True
        return False

    def _move(self, txn: Txn, u: UserState, mid: bytes, rec: bytes, target: int) -> None:
        ut = txn.user(u)
        src, sm = decode_message_head(rec)
        unread = 0 if summary_is_read(sm) else 1
        txn.put(schema.message_key(u.uk, mid), message_with(rec, target, sm))
        txn.delete(schema.listing_key(u.uk, src, mid))
        txn.put(schema.listing_key(u.uk, target, mid), sm)
        if unread:
            txn.delete(schema.unread_key(u.uk, src, mid))
            txn.put(schema.unread_key(u.uk, target, mid), sm)
        ut.count(src, -1, -unread)
        ut.count(target, 1, unread)
        txn.log_change(ut, schema.CHANGE_UPDATED, mid)
