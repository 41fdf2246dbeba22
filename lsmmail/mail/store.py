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

import threading
from typing import Any

from ..engine.errors import ReadOnlyError
from .delivery import Delivery
from .folders import Folders
from .ids import IdGenerator
from .listeners import Listener
from .options import MailOptions
from .reads import Reads
from .search_bridge import MailSearch, SearchIndex
from .sending import Sending
from .txn import UserState
from .updates import MessageUpdates
from .users import UserAccounts

__all__ = ["Listener", "MailOptions", "MailStore"]


class MailStore(UserAccounts, Folders, Reads, MessageUpdates, Sending, Delivery, MailSearch):
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
        if self._search is not None:  # is:/in: queries look states up in batches (one get_many)
            self._search.state_lookup_many = self._doc_states
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
        segment is persisted first (an optimisation: it is rebuilt from durable records otherwise).

        After an I/O failure the database refuses writes; the segment is then not persisted (the next open
        rebuilds it) and close succeeds. Any other failure to persist it is raised after the database is
        closed."""
        if not self._closed:
            self._closed = True
            try:
                if self._search is not None and hasattr(self._search, "flush"):
                    try:
                        self._search.flush()
                    except ReadOnlyError:
                        pass  # nothing acknowledged is lost: the postings are rebuilt from the records
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
