"""MailStore: users, folders and messages on an ordered key-value store (lsmmail.DB).

Contract (DESIGN.md §3, docs/mail.md):

* **One operation = one WriteBatch.** deliver, send, mark_read, move, delete, folder operations and every
  bulk-import batch put all their records (message, raw bytes, body, list and unread indexes, folder
  counters, thread and dedup entries, change log, search postings) into one batch, written atomically.
* **Durability.** Every write uses ``sync=True`` (``MailOptions.sync``): a call returns only after the
  batch was fdatasync'ed, so an acknowledged delivery survives a crash or power loss. The engine's group
  commit lets concurrent callers (different users, or different threads) share one fdatasync.
* **Counters** (folder total/unread, change sequence) are kept in memory under a per-user lock and
  written as absolute values in the same batch; they always equal a recount of the indexes.
* **Storage seam.** Only ``get``, ``write(batch)``, ``scan`` and ``snapshot`` of the DB are used.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from . import compose, mime, schema
from .errors import (
    FolderExists,
    FolderNotAllowed,
    InvalidAddress,
    InvalidCursor,
    MessageTooLarge,
    StateTooOld,
    UnknownAttachment,
    UnknownFolder,
    UnknownMessage,
    UnknownUser,
    UserExists,
)
from .ids import ID_LEN, IdGenerator, id_from_str, id_to_str
from .records import (
    INBOX,
    SENT,
    SYSTEM_FOLDERS,
    TRASH,
    USER_FOLDER_BASE,
    AttachmentInfo,
    Changes,
    Folder,
    ImportResult,
    Message,
    MessageSummary,
    OutboxEntry,
    OutgoingMessage,
    Page,
    decode_body,
    decode_message_details,
    decode_message_head,
    dumps,
    encode_body,
    encode_message,
    encode_summary,
    folder_id_str,
    loads,
    message_with,
    pack_user_state,
    summaries,
    summary_from,
    summary_is_read,
    summary_thread,
    summary_with_read,
    unpack_user_state,
)
from .txn import FolderState, Txn, UserState

try:  # the search layer is optional until it lands; without it MailStore.search raises NotImplementedError
    from lsmmail.search import DocState, IndexedDocument, SearchIndex
except ImportError:  # pragma: no cover - depends on the tree
    SearchIndex = None  # type: ignore[assignment,misc]

MiB = 1024 * 1024
log = logging.getLogger(__name__)
#: A change listener: called with (user_id, new_state) after a committed write (see MailStore.add_listener).
Listener = Callable[[str, str], None]
_F = TypeVar("_F", bound=Callable[..., Any])


def _notifies(method: _F) -> _F:
    """Mark a public write method: the change listeners for the writes it committed run when it returns
    (or raises), i.e. after every lock it took is released. Nested calls notify once, at the outermost.
    Every public method that commits (via _commit) must carry it; without it, its notifications wait for
    the same thread's next decorated call."""

    @functools.wraps(method)
    def wrapper(self: MailStore, *args: Any, **kwargs: Any) -> Any:
        local = self._local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            local.depth = depth
            if depth == 0:
                self._notify_listeners()

    return wrapper  # type: ignore[return-value]


@dataclass
class MailOptions:
    #: Largest raw message accepted; larger raises MessageTooLarge. Default 25 MiB (a common MTA limit).
    max_message_size: int = 25 * MiB
    #: Change-log entries kept per user; changes() from an older state raises StateTooOld. Default 10,000
    #: (a day of heavy mail; a client offline longer resyncs).
    change_log_retention: int = 10_000
    #: Messages per WriteBatch in import_messages. 64 amortises one fdatasync over ~1.3 MB of average mail.
    import_batch_size: int = 64
    #: fdatasync every write before returning (True) or only hand it to the OS (False: survives a process
    #: crash, not power loss). Default True.
    sync: bool = True
    #: Options passed to lsmmail.DB.open (None: engine defaults).
    db_options: Any = None


def _encode_cursor(tag: bytes, folder: int, mid: bytes) -> str:
    return base64.urlsafe_b64encode(tag + folder.to_bytes(4, "big") + mid).decode("ascii")


def _folder_order(item: tuple[int, FolderState]) -> tuple[bool, str, int]:
    n, f = item
    return (True, f.name.casefold(), n) if n >= USER_FOLDER_BASE else (False, "", n)


class MailStore:
    """Mailboxes of many users in one database. Thread-safe; one process per database (engine LOCK)."""

    def __init__(self, db: Any, options: MailOptions | None = None, *, batch_factory: Any = None) -> None:
        self._db = db
        self._opts = options or MailOptions()
        if batch_factory is None:
            from lsmmail import WriteBatch

            batch_factory = WriteBatch
        self._batch_factory = batch_factory
        self._ids = IdGenerator()
        self._users: dict[str, UserState] = {}
        self._users_lock = threading.Lock()  # guards _users and create_user
        self._att_lock = threading.Lock()  # attachment refcount check-and-write (see _add_attachments)
        self._closed = False
        self._search = SearchIndex(db, self._doc_state) if SearchIndex is not None else None
        self._listeners: tuple[Listener, ...] = ()  # replaced, never mutated: callers iterate lock-free
        self._listeners_lock = threading.Lock()
        self._local = threading.local()  # per thread: write depth and (user, state) pairs to announce

    # ---- lifecycle ---------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Any, options: MailOptions | None = None) -> MailStore:
        """Open (creating if missing) the mail store in directory ``path``."""
        from lsmmail import DB

        opts = options or MailOptions()
        db = DB.open(path, opts.db_options) if opts.db_options is not None else DB.open(path)
        return cls(db, opts)

    def close(self) -> None:
        """Close the database. Every acknowledged operation is already durable; the search index's memory
        segment is persisted first (an optimisation: it is rebuilt from durable records otherwise)."""
        if not self._closed:
            self._closed = True
            try:
                if self._search is not None and hasattr(self._search, "flush"):
                    self._search.flush()
            finally:
                self._db.close()

    def __enter__(self) -> MailStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> Any:
        return self._db

    @property
    def max_message_size(self) -> int:
        """The largest raw message (bytes) deliver/send/import accept (``MailOptions.max_message_size``);
        larger raises MessageTooLarge. Read-only: fixed when the store is opened."""
        return self._opts.max_message_size

    # ---- change listeners ---------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(user_id, new_state)`` after every committed write that changes a user's mailbox.

        Contract:

        * **When.** After the write is durable and the in-memory state is installed, so ``state(user_id)``
          already returns ``new_state`` (or a later state) and reads see the change. Called by the thread
          that made the write, just before the MailStore method returns, with **no MailStore lock held**:
          a listener may call MailStore (even write; its own notifications follow at once).
        * **What.** One call per user per committed batch: ``deliver``, each ``import_messages`` batch that
          stored something, ``send`` (the sender and every local recipient), ``mark_read``, ``move``,
          ``delete``, the folder operations and ``create_user`` (state ``"0"``). No call for a no-op
          (duplicate delivery, mark to the same flag, move to the same folder) or a failed write.
          ``new_state`` is the user's state after the write; folder create/rename are not in the change
          log, so they report an unchanged state. ``outbox_done`` changes no mailbox and is not reported.
        * **Order.** Calls for one thread's writes come in commit order; calls made by different threads
          may interleave in any order, so treat a call as "look again" (compare states numerically, or
          call ``changes``) rather than as an ordered log.
        * **Failure.** An exception from a listener is logged (logger ``lsmmail.mail.store``) and
          swallowed: the mail operation has already committed and returns normally; the other listeners
          still run.
        * **Cost.** The listener delays the writer's return, so keep it short (e.g. hand off to a queue
          or an event loop). Adding the same function twice makes it run twice."""
        if not callable(fn):
            raise TypeError("listener must be callable")
        with self._listeners_lock:
            self._listeners = (*self._listeners, fn)

    def remove_listener(self, fn: Listener) -> None:
        """Unregister one registration of ``fn`` (a function not registered is ignored). A write that is
        already notifying may still call it once."""
        with self._listeners_lock:
            items = list(self._listeners)
            if fn in items:
                items.remove(fn)
                self._listeners = tuple(items)

    def _announce(self, user_id: str, state: str) -> None:
        """Queue a notification for the current thread's outermost write method to deliver."""
        if self._listeners:
            pending = getattr(self._local, "pending", None)
            if pending is None:
                pending = self._local.pending = []
            pending.append((user_id, state))

    def _notify_listeners(self) -> None:
        pending = getattr(self._local, "pending", None)
        if not pending:
            return
        self._local.pending = []
        listeners = self._listeners
        for user_id, state in pending:
            for fn in listeners:
                try:
                    fn(user_id, state)
                except Exception:  # noqa: BLE001 - the write is committed; a listener cannot undo it
                    log.exception("mail change listener %r failed for user %r", fn, user_id)

    # ---- users -------------------------------------------------------------------------------------------

    @_notifies
    def create_user(self, user_id: str, addresses: Iterable[str] = ()) -> None:
        """Create a user with the system folders and the given addresses (used to route local mail).

        Raises UserExists if the id or one of the addresses is taken, InvalidAddress for a bad address."""
        addrs = [compose.validate_address(a) for a in addresses]
        if not user_id:
            raise ValueError("empty user id")
        with self._users_lock:
            if self._db.get(schema.user_record_key(user_id)) is not None:
                raise UserExists(f"user {user_id!r} exists")
            for a in addrs:
                if self._db.get(schema.address_key(a)) is not None:
                    raise UserExists(f"address {a!r} belongs to another user")
            raw_next = self._db.get(schema.global_key(b"next_user"))
            number = int.from_bytes(raw_next, "big") if raw_next else 1
            uk = schema.user_key(number)
            batch = self._batch_factory()
            batch.put(schema.global_key(b"next_user"), (number + 1).to_bytes(4, "big"))
            batch.put(schema.user_record_key(user_id), dumps({"n": number, "a": addrs}))
            for a in addrs:
                batch.put(schema.address_key(a), user_id.encode("utf-8"))
            for n, name in SYSTEM_FOLDERS.items():
                batch.put(schema.folder_key(uk, n), FolderState(name, 0, 0).record())
            batch.put(schema.user_state_key(uk), pack_user_state(0, 0, USER_FOLDER_BASE))
            self._db.write(batch, sync=self._opts.sync)
            self._announce(user_id, "0")

    def users(self) -> list[str]:
        return [k[1:].decode("utf-8") for k, _ in self._db.scan(prefix=schema.USER)]

    def user_for_address(self, address: str) -> str | None:
        """The id of the user owning ``address``, or None. Case-insensitive (addresses are stored
        case-folded, the same rule ``send`` uses to route local mail); surrounding whitespace is ignored.
        Never raises for malformed input (an empty, non-string or unencodable address is simply unknown);
        engine errors (IOFailure, Corruption) pass through."""
        if not isinstance(address, str) or not address.strip():
            return None
        try:
            key = schema.address_key(address.strip())
        except UnicodeEncodeError:  # e.g. surrogate-escaped bytes from an SMTP envelope
            return None
        raw = self._db.get(key)
        return raw.decode("utf-8") if raw is not None else None

    def addresses(self, user_id: str) -> list[str]:
        return list(self._user(user_id).addresses)

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

    # ---- folders -----------------------------------------------------------------------------------------

    def folders(self, user_id: str) -> list[Folder]:
        """System folders in fixed order, then user folders by name, with total and unread counts."""
        u = self._user(user_id)
        with u.lock:
            items = sorted(u.folders.items(), key=_folder_order)
            base = USER_FOLDER_BASE
            return [Folder(folder_id_str(n), f.name, f.total, f.unread, n < base) for n, f in items]

    def _folder_num(self, u: UserState, folder_id: str) -> int:
        for n, name in SYSTEM_FOLDERS.items():
            if folder_id == name or folder_id.casefold() == name.casefold():
                return n
        if folder_id.startswith("f") and folder_id[1:].isdigit():
            n = int(folder_id[1:])
            if n in u.folders and n >= USER_FOLDER_BASE:
                return n
        raise UnknownFolder(folder_id)

    def _check_name(self, u: UserState, name: str, exclude: int | None = None) -> str:
        name = name.strip()
        if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
            raise ValueError(f"invalid folder name {name!r}")
        for n, f in u.folders.items():
            if n != exclude and f.name.casefold() == name.casefold():
                raise FolderExists(name)
        return name

    @_notifies
    def create_folder(self, user_id: str, name: str) -> Folder:
        """Create a user folder. Names are unique per user, case-insensitively (FolderExists)."""
        u = self._user(user_id)
        with u.lock:
            name = self._check_name(u, name)
            txn = self._txn()
            ut = txn.user(u)
            n = ut.next_folder
            ut.next_folder += 1
            ut.folders[n] = FolderState(name, 0, 0)
            ut.touched_folders.add(n)
            self._commit(txn)
            return Folder(folder_id_str(n), name, 0, 0, False)

    @_notifies
    def rename_folder(self, user_id: str, folder_id: str, new_name: str) -> None:
        """Rename a user folder (its id does not change). System folders: FolderNotAllowed."""
        u = self._user(user_id)
        with u.lock:
            n = self._folder_num(u, folder_id)
            if n < USER_FOLDER_BASE:
                raise FolderNotAllowed(f"cannot rename system folder {folder_id}")
            new_name = self._check_name(u, new_name, exclude=n)
            txn = self._txn()
            ut = txn.user(u)
            ut.folder(n).name = new_name
            self._commit(txn)

    @_notifies
    def delete_folder(self, user_id: str, folder_id: str) -> int:
        """Delete a user folder. Its messages are first moved to Trash (not destroyed) in the same batch;
        returns how many were moved. System folders: FolderNotAllowed."""
        u = self._user(user_id)
        with u.lock:
            n = self._folder_num(u, folder_id)
            if n < USER_FOLDER_BASE:
                raise FolderNotAllowed(f"cannot delete system folder {folder_id}")
            txn = self._txn()
            ut = txn.user(u)
            moved = 0
            for k, _ in self._db.scan(prefix=schema.list_prefix(schema.LISTING, u.uk, n)):
                mid = schema.id_of_list_key(k)
                self._move(txn, u, mid, self._message_record(u, mid), TRASH)
                moved += 1
            ut.removed_folders.add(n)
            self._commit(txn)
            return moved

    # ---- transactions ------------------------------------------------------------------------------------

    def _txn(self) -> Txn:
        return Txn(self._batch_factory(), self._opts.change_log_retention)

    def _commit(self, txn: Txn) -> None:
        txn.finish()
        self._db.write(txn.batch, sync=self._opts.sync)
        txn.install()
        if self._search is not None:
            for token in txn.search_pending:
                self._search.committed(token)
        for ut in txn.users.values():  # listeners run later, outside the user locks (see _notifies)
            self._announce(ut.user.user_id, str(ut.next_seq))

    # ---- delivery ----------------------------------------------------------------------------------------

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

    def _lookup_dedup(self, txn: Txn, key: bytes) -> bytes | None:
        if key in txn.dedup:
            return txn.dedup[key]
        if key in txn.dedup_removed:
            return None
        return self._db.get(key)

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
        atts = [[a.filename, a.content_type, len(a.data), a.sha256.hex()] for a in parsed.attachments]
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
        for part, a in enumerate(parsed.attachments):
            sha = a.sha256
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

    # ---- send --------------------------------------------------------------------------------------------

    @_notifies
    def send(self, user_id: str, message: bytes | OutgoingMessage) -> str:
        """Send mail as ``user_id``; returns the id of the copy stored in the sender's Sent folder.

        ``message`` is raw bytes (its To/Cc/Bcc are the recipients) or an OutgoingMessage to build
        (From is the user's first address; Date and Message-ID are added). In ONE batch: the Sent copy
        (with Bcc), a copy without Bcc in the INBOX of each local recipient (an address of a user of this
        store), and an outbox entry for the remote recipients (drained later over SMTP). Durable before
        returning. Sending the same message (same Message-ID) twice is a no-op returning the first id.
        Raises InvalidAddress (bad or no recipients, or the sender has no address), MessageTooLarge."""
        u = self._user(user_id)
        if isinstance(message, OutgoingMessage):
            if not u.addresses:
                raise InvalidAddress(f"user {user_id!r} has no address to send from")
            raw = compose.build(u.addresses[0], message)
        else:
            raw = bytes(message)
        self._check_size(raw)
        parsed = mime.parse(raw)
        recipients = compose.parse_recipients([a for _, a in parsed.to + parsed.cc + parsed.bcc])
        if not recipients:
            raise InvalidAddress("message has no recipients")
        sender = parsed.from_[0][1] if parsed.from_ else (u.addresses[0] if u.addresses else "")
        local: dict[str, UserState] = {}
        remote: list[str] = []
        for addr in dict.fromkeys(recipients):
            owner = self._db.get(schema.address_key(addr))
            if owner is None:
                remote.append(addr)
            else:
                local.setdefault(owner.decode("utf-8"), self._user(owner.decode("utf-8")))
        without_bcc = compose.strip_bcc(raw)
        parsed_nobcc = mime.parse(without_bcc) if parsed.bcc else parsed
        involved = sorted({u.uk: u, **{r.uk: r for r in local.values()}}.items())
        locks = [state.lock for _, state in involved]
        for lock in locks:  # sorted by user key: no deadlock between concurrent sends
            lock.acquire()
        try:
            txn = self._txn()
            sent_id, created = self._add_message(txn, u, raw, parsed, SENT, read=True)
            if not created:
                return id_to_str(sent_id)
            for rid, r in local.items():
                self._add_message(txn, r, without_bcc, parsed_nobcc, INBOX, read=False,
                                  register_dedup=rid != user_id)
            if remote:
                entry = self._ids.new()
                head = dumps({"u": user_id, "s": sender, "r": remote, "m": id_to_str(sent_id)})
                txn.put(schema.outbox_key(entry), len(head).to_bytes(4, "big") + head + without_bcc)
            self._commit_with_attachments(txn)
            return id_to_str(sent_id)
        finally:
            for lock in reversed(locks):
                lock.release()

    def outbox(self, after: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` queued remote deliveries, oldest first. ``after``: an entry id from a previous
        page; only entries queued after it are returned (it need not still exist, so entries finished
        meanwhile do not disturb paging). A page shorter than ``limit`` is the end of the queue.
        InvalidCursor if ``after`` is not an entry id; ValueError if ``limit`` < 1."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        start = schema.OUTBOX
        if after is not None:
            try:
                start = schema.outbox_key(id_from_str(after)) + b"\x00"  # first key after that entry
            except (TypeError, ValueError) as exc:
                raise InvalidCursor(str(after)) from exc
        out: list[OutboxEntry] = []
        for k, v in self._db.scan(start, schema.prefix_end(schema.OUTBOX)):
            n = int.from_bytes(v[:4], "big")
            head = loads(v[4:4 + n])
            out.append(OutboxEntry(id_to_str(k[1:]), head["u"], head["s"], head["r"], v[4 + n:]))
            if len(out) >= limit:
                break
        return out

    def outbox_done(self, entry_id: str) -> None:
        """Remove a delivered (or permanently failed) outbox entry. Durable before returning."""
        batch = self._batch_factory()
        batch.delete(schema.outbox_key(id_from_str(entry_id)))
        self._db.write(batch, sync=self._opts.sync)

    # ---- reading -----------------------------------------------------------------------------------------

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

    def list_messages(
        self, user_id: str, folder_id: str, *, limit: int = 50, cursor: str | None = None,
        unread_only: bool = False,
    ) -> Page:
        """A page of a folder, newest first (a forward scan of the list index, or of the denormalised
        unread index when ``unread_only``). ``next_cursor`` (None on the last page) names the position
        after the last item, so pages stay correct while mail arrives (newer mail sorts before it) or
        moves (a moved message simply leaves or joins the sequence)."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        u = self._user(user_id)
        n = self._folder_num(u, folder_id)
        tag = schema.UNREAD if unread_only else schema.LISTING
        prefix = schema.list_prefix(tag, u.uk, n)
        start = prefix
        if cursor is not None:
            try:
                data = base64.urlsafe_b64decode(cursor.encode("ascii"))
            except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
                raise InvalidCursor(cursor) from exc
            if len(data) != 5 + ID_LEN or data[:1] != tag or int.from_bytes(data[1:5], "big") != n:
                raise InvalidCursor(cursor)
            start = schema.list_prefix(tag, u.uk, n) + schema.invert(data[5:]) + b"\x00"
        rows: list[tuple[bytes, bytes]] = []
        more = False
        for k, v in self._db.scan(start, schema.prefix_end(prefix)):
            if len(rows) == limit:
                more = True
                break
            rows.append((schema.id_of_list_key(k), v))
        next_cursor = _encode_cursor(tag, n, rows[-1][0]) if more else None
        return Page(summaries(rows, n), next_cursor)

    def get_message(self, user_id: str, message_id: str) -> Message:
        u = self._user(user_id)
        mid = self._mid(message_id)
        rec = self._message_record(u, mid)
        folder, sm = decode_message_head(rec)
        d = decode_message_details(rec, len(sm))
        body = self._db.get(schema.body_key(u.uk, mid))
        text, html = decode_body(body) if body else ("", "")
        return Message(
            summary=summary_from(mid, folder, sm),
            message_id=d["m"], in_reply_to=d["i"], references=d["r"],
            bcc=[tuple(a) for a in d["b"]],  # type: ignore[misc]
            text=text, html=html,
            attachments=[AttachmentInfo(i, a[0], a[1], a[2], a[3]) for i, a in enumerate(d["a"])],
        )

    def get_summary(self, user_id: str, message_id: str) -> MessageSummary:
        u = self._user(user_id)
        mid = self._mid(message_id)
        folder, sm = decode_message_head(self._message_record(u, mid))
        return summary_from(mid, folder, sm)

    def get_raw(self, user_id: str, message_id: str) -> bytes:
        """The message exactly as delivered (byte for byte)."""
        u = self._user(user_id)
        mid = self._mid(message_id)
        raw = self._db.get(schema.raw_key(u.uk, mid))
        if raw is None:
            raise UnknownMessage(message_id)
        return raw

    def get_attachment(self, user_id: str, message_id: str, part: int) -> bytes:
        """Decoded bytes of attachment number ``part`` (index into Message.attachments)."""
        u = self._user(user_id)
        mid = self._mid(message_id)
        atts = decode_message_details(self._message_record(u, mid))["a"]
        if not 0 <= part < len(atts):
            raise UnknownAttachment(f"{message_id} has no attachment {part}")
        data = self._db.get(schema.attachment_key(bytes.fromhex(atts[part][3])))
        if data is None:  # a holder without its blob would be a broken invariant, never silently empty
            from lsmmail.engine.errors import Corruption

            raise Corruption(f"attachment blob {atts[part][3]} of {message_id} is missing")
        return data

    def open_raw(self, user_id: str, message_id: str) -> io.BytesIO:
        """The raw message as a binary file-like object (``read(n)``, ``seek``), for copying out in chunks.

        Honest cost: the engine stores a value whole and returns it whole, so this reads the entire
        message into memory first (as get_raw does) and wraps it without a copy; it saves nothing
        today. It exists so callers stream through a file interface that can later be served from the
        blob file directly without changing them. Same errors as get_raw."""
        return io.BytesIO(self.get_raw(user_id, message_id))

    def open_attachment(self, user_id: str, message_id: str, part: int) -> io.BytesIO:
        """Attachment ``part`` as a binary file-like object. Like open_raw: read whole, then wrapped (see
        its note). Same errors as get_attachment."""
        return io.BytesIO(self.get_attachment(user_id, message_id, part))

    def thread(self, user_id: str, thread_id: str) -> list[MessageSummary]:
        """Messages of a thread, oldest first (empty if none remain)."""
        u = self._user(user_id)
        tid = self._mid(thread_id)
        out = []
        for k, _ in self._db.scan(prefix=schema.thread_prefix(u.uk, tid)):
            mid = k[-ID_LEN:]
            raw = self._db.get(schema.message_key(u.uk, mid))
            if raw is not None:
                out.append(summary_from(mid, *decode_message_head(raw)))
        return out

    # ---- changing messages -------------------------------------------------------------------------------

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
            sm = summary_with_read(sm, read)
            txn.put(schema.message_key(u.uk, mid), message_with(rec, folder, sm))
            txn.put(schema.listing_key(u.uk, folder, mid), sm)
            if read:
                txn.delete(schema.unread_key(u.uk, folder, mid))
            else:
                txn.put(schema.unread_key(u.uk, folder, mid), sm)
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

    # ---- sync --------------------------------------------------------------------------------------------

    def state(self, user_id: str) -> str:
        """The user's current state string (pass it to changes() later)."""
        u = self._user(user_id)
        with u.lock:
            return str(u.next_seq)

    def changes(self, user_id: str, since_state: str) -> Changes:
        """Messages created, updated and deleted since ``since_state``. StateTooOld when the change log
        no longer reaches back that far (or the state is not one this store issued): resync."""
        u = self._user(user_id)
        with u.lock:
            now, oldest = u.next_seq, u.oldest_seq
        try:
            since = int(since_state)
        except (TypeError, ValueError) as exc:
            raise StateTooOld(f"unknown state {since_state!r}") from exc
        if since < oldest or since > now:
            raise StateTooOld(f"state {since_state} is older than the change log (oldest {oldest})")
        status: dict[bytes, int] = {}
        created: set[bytes] = set()
        start = schema.change_key(u.uk, since)
        end = schema.change_key(u.uk, now)
        for _k, v in self._db.scan(start, end):
            kind, mid = v[0], v[1:]
            if kind == schema.CHANGE_CREATED:
                created.add(mid)
            status[mid] = kind
        out_c, out_u, out_d = [], [], []
        for mid, kind in status.items():
            if kind == schema.CHANGE_DELETED:
                if mid not in created:
                    out_d.append(id_to_str(mid))
            elif mid in created:
                out_c.append(id_to_str(mid))
            else:
                out_u.append(id_to_str(mid))
        return Changes(sorted(out_c), sorted(out_u), sorted(out_d), str(now))

    # ---- search ------------------------------------------------------------------------------------------

    def search(self, user_id: str, query: str, limit: int = 50, cursor: str | None = None) -> Page:
        """Search a user's mail (query language of DESIGN.md §4); the same page shape as list_messages.
        Raises NotImplementedError while lsmmail.search is not installed in this tree."""
        if self._search is None:
            raise NotImplementedError("lsmmail.search is not available")
        u = self._user(user_id)
        ids, next_cursor = self._search.search(u.uk, query, limit=limit, cursor=cursor)
        items = []
        for mid in ids:
            raw = self._db.get(schema.message_key(u.uk, mid))
            if raw is not None:
                items.append(summary_from(mid, *decode_message_head(raw)))
        return Page(items, next_cursor)

    def reindex(self, user_id: str | None = None) -> int:
        """Rebuild the search index of ``user_id`` (default: every user) from the stored raw messages, by
        the same parse and analysis as delivery, so queries answer exactly as before. Holds the user's lock
        meanwhile (deliveries to that user wait). Returns how many messages were indexed."""
        if self._search is None:
            raise NotImplementedError("lsmmail.search is not available")
        total = 0
        for uid in [user_id] if user_id is not None else self.users():
            u = self._user(uid)
            with u.lock:
                prefix = schema.MESSAGE + u.uk
                mids = [k[len(prefix):] for k, _ in self._db.scan(prefix=prefix)]
                docs = []
                for mid in mids:
                    raw = self._db.get(schema.raw_key(u.uk, mid))
                    if raw is not None:
                        docs.append((mid, _indexed_document(mime.parse(raw))))
                self._search.rebuild(u.uk, docs)
                total += len(docs)
        if user_id is None:
            self._search.mark_current()
        return total

    def _doc_state(self, uk: bytes, doc_id: bytes, snapshot: object) -> Any:
        raw = self._db.get(schema.message_key(uk, doc_id), snapshot=snapshot)
        if raw is None:
            return None
        n, sm = decode_message_head(raw)
        name = SYSTEM_FOLDERS.get(n)
        if name is None:  # a user folder: in:NAME is its current name (as of the query's snapshot)
            frec = self._db.get(schema.folder_key(uk, n), snapshot=snapshot)
            name = loads(frec)["n"] if frec is not None else folder_id_str(n)
        return DocState(name, summary_is_read(sm))


def _indexed_document(parsed: mime.ParsedMessage) -> Any:
    """What search indexes of a message: one definition for delivery and reindex (identical results)."""
    return IndexedDocument(
        subject=parsed.subject, from_=parsed.from_, to=parsed.to, cc=parsed.cc,
        body_text=parsed.text, body_html=parsed.html,
        attachment_names=[a.filename for a in parsed.attachments if a.filename],
        has_attachment=bool(parsed.attachments),
    )
