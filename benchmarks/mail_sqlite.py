"""An SQLite (+FTS5) mail store of the same shape as ``lsmmail.mail.MailStore``: the peer of the mail bench.

Written the way a competent engineer would write it with the stdlib ``sqlite3``, not as a straw man:

* ``journal_mode=WAL`` and ``synchronous=FULL``: every commit fsyncs the WAL, so an acknowledged delivery
  survives power loss -- the same durability as MailStore's ``sync=True`` (``NORMAL`` in WAL mode would
  not fsync on commit and could lose the last transactions on power loss, so it would not be comparable).
* One transaction per delivery / per bulk-import batch (64 messages, as MailStore's ``import_batch_size``),
  one per mark_read.
* Indexes: ``(user, folder, id)`` for newest-first folder listing (ids grow with arrival time, so
  ``ORDER BY id DESC`` is received-time order, like MailStore's UUIDv7 ids), a partial index on unread
  rows for the unread listing, ``UNIQUE (user, dedup)`` for Message-ID dedup (or the sha256 of the bytes
  when a message has no Message-ID), and ``(user, msgid)`` for threading by In-Reply-To / References.
* FTS5 (``unicode61`` tokenizer, contentless: the text already lives in ``bodies``) over subject, sender,
  recipients and body, rowid = message id, so "newest matches first" is ``ORDER BY rowid DESC``.
* Attachments stored once by sha256 with one holder row per (message, part).
* Folder counters (total, unread) and a per-user change log are kept in the same transaction, as
  MailStore keeps them.

MIME parsing uses ``lsmmail.mail.mime.parse``, the parser MailStore uses, so the bench compares storage
and indexing, not parsers. Not implemented (the bench does not need them): move, delete, send, outbox.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lsmmail.mail import mime

#: Rows per bulk-import transaction: the same 64 as MailStore.import_batch_size (one fsync per batch).
IMPORT_BATCH = 64
INBOX = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, change_seq INTEGER
    NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS folders (user INTEGER NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0, unread INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user, id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, user INTEGER NOT NULL, folder INTEGER NOT NULL, thread INTEGER NOT NULL,
    is_read INTEGER NOT NULL, dedup BLOB NOT NULL, msgid TEXT, subject TEXT NOT NULL,
    from_json TEXT NOT NULL, to_json TEXT NOT NULL, cc_json TEXT NOT NULL, date REAL,
    preview TEXT NOT NULL, size INTEGER NOT NULL, has_att INTEGER NOT NULL, meta_json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_list ON messages (user, folder, id);
CREATE INDEX IF NOT EXISTS messages_unread ON messages (user, folder, id) WHERE is_read = 0;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedup ON messages (user, dedup);
CREATE INDEX IF NOT EXISTS messages_msgid ON messages (user, msgid) WHERE msgid IS NOT NULL;
CREATE TABLE IF NOT EXISTS subjects (user INTEGER NOT NULL, norm TEXT NOT NULL, thread INTEGER NOT NULL,
    PRIMARY KEY (user, norm)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, raw BLOB NOT NULL, text TEXT NOT NULL,
    html TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attachments (sha BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS holders (message INTEGER NOT NULL, part INTEGER NOT NULL, sha BLOB NOT NULL,
    filename TEXT NOT NULL, ctype TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (message, part))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holders_sha ON holders (sha);
CREATE TABLE IF NOT EXISTS changes (user INTEGER NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL,
    message INTEGER NOT NULL, PRIMARY KEY (user, seq)) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (subject, sender, recipients, body, content='',
    tokenize='unicode61');
"""

_SUMMARY_COLS = "m.id, m.folder, m.thread, m.subject, m.from_json, m.to_json, m.cc_json, m.date, " \
                "m.preview, m.size, m.has_att, m.is_read"

#: Tables and indexes that exist only for search (their pages are the "index bytes").
FTS_TABLES = ("fts_data", "fts_idx", "fts_docsize", "fts_config")
#: Secondary indexes of the message table (listing, unread, dedup, threading).
LIST_INDEXES = ("messages_list", "messages_unread", "messages_dedup", "messages_msgid")


@dataclass(frozen=True)
class Summary:
    """One listed message: the same fields as lsmmail's MessageSummary (ids are integers here)."""

    id: int
    folder: int
    thread: int
    subject: str
    from_: list
    to: list
    cc: list
    date: float | None
    preview: str
    size: int
    has_attachments: bool
    is_read: bool


@dataclass(frozen=True)
class Message:
    summary: Summary
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    text: str
    html: str
    attachments: list[tuple[int, str, str, int, str]]  # (part, filename, content type, size, sha hex)


@dataclass(frozen=True)
class Page:
    items: list[Summary]
    next_cursor: int | None


def _summary(row: tuple) -> Summary:
    return Summary(row[0], row[1], row[2], row[3], json.loads(row[4]), json.loads(row[5]),
                   json.loads(row[6]), row[7], row[8], row[9], bool(row[10]), bool(row[11]))


def _addr_text(addrs: list[tuple[str, str]]) -> str:
    return " ".join(f"{name} {addr}" for name, addr in addrs)


class SqliteMailStore:
    """Mailboxes of many users in one SQLite file. Single-threaded (one connection)."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(os.path.join(path, "mail.sqlite"), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit: durable deliveries
        self._db.execute("PRAGMA foreign_keys=OFF")
        self._db.executescript(_SCHEMA)
        self._users: dict[str, int] = {}

    @classmethod
    def open(cls, path: str) -> SqliteMailStore:
        return cls(path)

    def close(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    # ---- users -------------------------------------------------------------------------------------------

    def create_user(self, user_id: str, addresses: Iterable[str] = ()) -> None:
        with self._tx():
            cur = self._db.execute("INSERT INTO users (name) VALUES (?)", (user_id,))
            uid = cur.lastrowid
            for n, name in enumerate(("INBOX", "Sent", "Drafts", "Trash", "Spam", "Archive"), start=1):
                self._db.execute("INSERT INTO folders (user, id, name) VALUES (?, ?, ?)", (uid, n, name))

    def _uid(self, user_id: str) -> int:
        uid = self._users.get(user_id)
        if uid is None:
            row = self._db.execute("SELECT id FROM users WHERE name = ?", (user_id,)).fetchone()
            if row is None:
                raise KeyError(f"unknown user {user_id!r}")
            uid = self._users[user_id] = row[0]
        return uid

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    # ---- delivery ----------------------------------------------------------------------------------------

    def deliver(self, user_id: str, raw: bytes, folder: int = INBOX, *, read: bool = False) -> int:
        """Store one message durably (one transaction, fsync'ed); idempotent per (user, Message-ID)."""
        parsed = mime.parse(raw)
        uid = self._uid(user_id)
        with self._tx():
            return self._add(uid, raw, parsed, folder, read)[0]

    def import_messages(self, user_id: str, raws: Iterable[bytes], folder: int = INBOX, *,
                        read: bool = False, batch_size: int = IMPORT_BATCH) -> Iterator[tuple[int, bool]]:
        """Bulk import: ``batch_size`` messages per transaction (one fsync each). Yields (id, created)
        after the batch is durable."""
        uid = self._uid(user_id)
        pending: list[bytes] = []
        for raw in raws:
            pending.append(raw)
            if len(pending) >= batch_size:
                yield from self._import_batch(uid, pending, folder, read)
                pending = []
        if pending:
            yield from self._import_batch(uid, pending, folder, read)

    def _import_batch(self, uid: int, raws: list[bytes], folder: int, read: bool) -> list[tuple[int, bool]]:
        parsed = [mime.parse(r) for r in raws]
        with self._tx():
            return [self._add(uid, r, p, folder, read) for r, p in zip(raws, parsed, strict=True)]

    def _add(self, uid: int, raw: bytes, p: mime.ParsedMessage, folder: int, read: bool) -> tuple[int, bool]:
        db = self._db
        dedup = ("m:" + p.message_id).encode("utf-8", "surrogatepass") if p.message_id else \
            b"h:" + hashlib.sha256(raw).digest()
        hit = db.execute("SELECT id FROM messages WHERE user = ? AND dedup = ?", (uid, dedup)).fetchone()
        if hit is not None:
            return hit[0], False
        thread = self._find_thread(uid, p)
        atts = p.attachments
        meta = json.dumps({"irt": p.in_reply_to, "refs": p.references, "bcc": p.bcc}, separators=(",", ":"))
        cur = db.execute(
            "INSERT INTO messages (user, folder, thread, is_read, dedup, msgid, subject, from_json, to_json,"
            " cc_json, date, preview, size, has_att, meta_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (uid, folder, thread or 0, int(read), dedup, p.message_id, p.subject, json.dumps(p.from_),
             json.dumps(p.to), json.dumps(p.cc), p.date, p.preview, len(raw), int(bool(atts)), meta))
        mid = cur.lastrowid
        assert mid is not None
        if thread is None:  # a new thread is named by its first message
            thread = mid
            db.execute("UPDATE messages SET thread = ? WHERE id = ?", (mid, mid))
        db.execute("INSERT INTO bodies (id, raw, text, html) VALUES (?, ?, ?, ?)", (mid, raw, p.text, p.html))
        norm = mime.normalise_subject(p.subject)
        if norm:
            db.execute("INSERT OR REPLACE INTO subjects (user, norm, thread) VALUES (?, ?, ?)",
                       (uid, norm, thread))
        for part, a in enumerate(atts):
            sha = a.sha256
            db.execute("INSERT OR IGNORE INTO attachments (sha, data) VALUES (?, ?)", (sha, a.data))
            db.execute("INSERT INTO holders VALUES (?, ?, ?, ?, ?, ?)",
                       (mid, part, sha, a.filename, a.content_type, len(a.data)))
        body = p.text + "\n" + mime.html_to_text(p.html) if p.html else p.text
        names = " ".join(a.filename for a in atts if a.filename)
        db.execute("INSERT INTO fts (rowid, subject, sender, recipients, body) VALUES (?, ?, ?, ?, ?)",
                   (mid, p.subject, _addr_text(p.from_), _addr_text(p.to + p.cc),
                    body + ("\n" + names if names else "")))
        db.execute("UPDATE folders SET total = total + 1, unread = unread + ? WHERE user = ? AND id = ?",
                   (0 if read else 1, uid, folder))
        self._log_change(uid, 1, mid)
        return mid, True

    def _find_thread(self, uid: int, p: mime.ParsedMessage) -> int | None:
        for ref in [*p.in_reply_to, *reversed(p.references)]:
            row = self._db.execute("SELECT thread FROM messages WHERE user = ? AND msgid = ?",
                                   (uid, ref)).fetchone()
            if row is not None:
                return row[0]
        if mime.is_reply_subject(p.subject):
            norm = mime.normalise_subject(p.subject)
            if norm:
                row = self._db.execute("SELECT thread FROM subjects WHERE user = ? AND norm = ?",
                                       (uid, norm)).fetchone()
                if row is not None:
                    return row[0]
        return None

    def _log_change(self, uid: int, kind: int, mid: int) -> None:
        seq = self._db.execute("UPDATE users SET change_seq = change_seq + 1 WHERE id = ?"
                               " RETURNING change_seq", (uid,)).fetchone()[0]
        self._db.execute("INSERT INTO changes VALUES (?, ?, ?, ?)", (uid, seq, kind, mid))

    # ---- reading -----------------------------------------------------------------------------------------

    def list_messages(self, user_id: str, folder: int = INBOX, *, limit: int = 50, cursor: int | None = None,
                      unread_only: bool = False) -> Page:
        """Newest first; ``next_cursor`` is the id of the last row (None on the last page)."""
        uid = self._uid(user_id)
        cond = " AND m.is_read = 0" if unread_only else ""
        if cursor is not None:
            cond += " AND m.id < ?"
        args: tuple = (uid, folder, cursor, limit + 1) if cursor is not None else (uid, folder, limit + 1)
        rows = self._db.execute(
            f"SELECT {_SUMMARY_COLS} FROM messages m WHERE m.user = ? AND m.folder = ?{cond}"
            " ORDER BY m.id DESC LIMIT ?", args).fetchall()
        items = [_summary(r) for r in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    def get_message(self, user_id: str, message_id: int) -> Message:
        uid = self._uid(user_id)
        row = self._db.execute(
            f"SELECT {_SUMMARY_COLS}, m.msgid, m.meta_json, b.text, b.html FROM messages m"
            " JOIN bodies b ON b.id = m.id WHERE m.id = ? AND m.user = ?", (message_id, uid)).fetchone()
        if row is None:
            raise KeyError(f"unknown message {message_id}")
        meta = json.loads(row[13])
        atts = [(r[0], r[1], r[2], r[3], r[4].hex()) for r in self._db.execute(
            "SELECT part, filename, ctype, size, sha FROM holders WHERE message = ? ORDER BY part",
            (message_id,))]
        return Message(_summary(row), row[12], meta["irt"], meta["refs"], row[14], row[15], atts)

    def get_attachment(self, user_id: str, message_id: int, part: int) -> bytes:
        self.get_message(user_id, message_id)  # ownership check
        row = self._db.execute("SELECT a.data FROM holders h JOIN attachments a ON a.sha = h.sha"
                               " WHERE h.message = ? AND h.part = ?", (message_id, part)).fetchone()
        if row is None:
            raise KeyError(f"message {message_id} has no attachment {part}")
        return row[0]

    def mark_read(self, user_id: str, message_id: int, read: bool = True) -> None:
        """Set the read flag, the folder's unread counter and a change-log entry in one durable commit."""
        uid = self._uid(user_id)
        with self._tx():
            row = self._db.execute("UPDATE messages SET is_read = ? WHERE id = ? AND user = ?"
                                   " AND is_read != ? RETURNING folder",
                                   (int(read), message_id, uid, int(read))).fetchone()
            if row is None:
                return
            self._db.execute("UPDATE folders SET unread = unread + ? WHERE user = ? AND id = ?",
                             (-1 if read else 1, uid, row[0]))
            self._log_change(uid, 2, message_id)

    def folders(self, user_id: str) -> list[tuple[int, str, int, int]]:
        return self._db.execute("SELECT id, name, total, unread FROM folders WHERE user = ? ORDER BY id",
                                (self._uid(user_id),)).fetchall()

    # ---- search ------------------------------------------------------------------------------------------

    def search(self, user_id: str, fts_query: str, limit: int = 50, cursor: int | None = None) -> Page:
        """Newest ``limit`` matches of an FTS5 MATCH expression (``sender : "a b c"`` for a sender)."""
        uid = self._uid(user_id)
        cond = " AND f.rowid < ?" if cursor is not None else ""
        args: tuple = (fts_query, uid) + ((cursor,) if cursor is not None else ()) + (limit + 1,)
        rows = self._db.execute(
            f"SELECT {_SUMMARY_COLS} FROM fts f JOIN messages m ON m.id = f.rowid"
            f" WHERE fts MATCH ? AND m.user = ?{cond} ORDER BY f.rowid DESC LIMIT ?", args).fetchall()
        items = [_summary(r) for r in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    def search_ids(self, user_id: str, fts_query: str, limit: int = 50, cursor: int | None = None) -> Page:
        """:meth:`search` without the summaries: the newest ``limit`` matching ids (as JMAP Email/query
        or IMAP SEARCH return), for the comparison with a search-only index."""
        uid = self._uid(user_id)
        cond = " AND f.rowid < ?" if cursor is not None else ""
        args: tuple = (fts_query, uid) + ((cursor,) if cursor is not None else ()) + (limit + 1,)
        rows = self._db.execute(
            f"SELECT f.rowid FROM fts f JOIN messages m ON m.id = f.rowid"
            f" WHERE fts MATCH ? AND m.user = ?{cond} ORDER BY f.rowid DESC LIMIT ?", args).fetchall()
        ids = [r[0] for r in rows[:limit]]
        return Page(ids, ids[-1] if len(rows) > limit else None)

    # ---- space -------------------------------------------------------------------------------------------

    def space(self) -> dict[str, int]:
        """On-disk page bytes (dbstat) of the search index (FTS5 shadow tables) and of the listing/unread/
        dedup indexes, plus the FTS5 payload bytes (the logical size, without page slack)."""
        out = {"fts_pages": 0, "fts_payload": 0, "list_index_pages": 0}
        for name, pgsize, payload in self._db.execute(
                "SELECT name, SUM(pgsize), SUM(payload) FROM dbstat GROUP BY name"):
            if name in FTS_TABLES:
                out["fts_pages"] += pgsize
                out["fts_payload"] += payload
            elif name in LIST_INDEXES:
                out["list_index_pages"] += pgsize
        return out


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
