"""Reads: folder pages, messages, raw bytes, attachments, threads, and the change log (state/changes)."""

from __future__ import annotations

import base64
import binascii
import io

from . import schema
from .errors import InvalidCursor, StateTooOld, UnknownAttachment, UnknownMessage
from .ids import ID_LEN, id_to_str
from .records import (
    Changes,
    Message,
    MessageSummary,
    Page,
    decode_message_details,
    decode_message_head,
    message_from,
    summaries,
    summary_from,
)
from .store_core import StoreCore


def _encode_cursor(tag: bytes, folder: int, mid: bytes) -> str:
    return base64.urlsafe_b64encode(tag + folder.to_bytes(4, "big") + mid).decode("ascii")


class Reads(StoreCore):
    """Mixin of MailStore: every read-only operation on a user's mailbox."""

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
        """The whole message (UnknownMessage if absent). The message and body records are read together
        (one ``DB.get_many``, so both come from one state of the database); the summary is decoded now,
        the body and details on first access (records._LazyMessage: a malformed one raises Corruption
        from that access)."""
        u = self._user(user_id)
        mid = self._mid(message_id)
        rec, body = self._db.get_many((schema.message_key(u.uk, mid), schema.body_key(u.uk, mid)))
        if rec is None:
            raise UnknownMessage(message_id)
        return message_from(mid, rec, body)

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
        mids = [k[-ID_LEN:] for k, _ in self._db.scan(prefix=schema.thread_prefix(u.uk, tid))]
        recs = self._db.get_many([schema.message_key(u.uk, mid) for mid in mids])
        return [summary_from(mid, *decode_message_head(raw)) for mid, raw in zip(mids, recs, strict=True)
                if raw is not None]

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
