"""MailSearch: how the mail layer uses lsmmail.search (search, reindex, the state lookup of is:/in:)."""

from __future__ import annotations

from typing import Any

from . import mime, schema
from .records import (
    SYSTEM_FOLDERS,
    Page,
    decode_message_head,
    folder_id_str,
    loads,
    summaries_in,
    summary_is_read,
)
from .store_core import StoreCore

try:  # the search layer is optional until it lands; without it MailStore.search raises NotImplementedError
    from lsmmail.search import DocState, IndexedDocument, SearchIndex
except ImportError:  # pragma: no cover - depends on the tree
    SearchIndex = None  # type: ignore[assignment,misc]


class MailSearch(StoreCore):
    """Mixin of MailStore: full-text search over a user's mail."""

    def search(self, user_id: str, query: str, limit: int = 50, cursor: str | None = None) -> Page:
        """Search a user's mail (query language of DESIGN.md §4); the same page shape as list_messages.
        Raises NotImplementedError while lsmmail.search is not installed in this tree."""
        if self._search is None:
            raise NotImplementedError("lsmmail.search is not available")
        u = self._user(user_id)
        ids, next_cursor = self._search.search(u.uk, query, limit=limit, cursor=cursor)
        # One engine read per result (the ids are spread over the whole mailbox: a scan of the span of 50
        # hits read ~1,000-2,000 records here, 20-40x more), then one decode call for the page.
        get = self._db.get
        uk = u.uk
        rows = []
        for mid in ids:
            raw = get(schema.message_key(uk, mid))
            if raw is not None:
                rows.append((mid, *decode_message_head(raw)))
        return Page(summaries_in(rows), next_cursor)

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
