"""MailSearch: how the mail layer uses lsmmail.search (search, reindex, the state lookup of is:/in:)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import mime, schema
from .ids import id_to_str
from .records import (
    SYSTEM_FOLDERS,
    MessageSummary,
    Page,
    decode_message_head,
    folder_id_str,
    loads,
    summaries_in,
    summary_is_read,
)
from .store_core import StoreCore

try:  # the search layer is optional until it lands; without it MailStore.search raises NotImplementedError
    from lsmmail.search import DocState, SearchIndex
    from lsmmail.search.documents import message_document
except ImportError:  # pragma: no cover - depends on the tree
    SearchIndex = None  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class IdPage:
    """A page of message ids (``MailStore.search_ids``): ``items`` newest first, as ``Page`` has summaries;
    ``next_cursor`` is None on the last page."""

    items: list[str]
    next_cursor: str | None


#: Message id bytes -> canonical text, shared by every store (the mapping is a pure function of the id).
#: ``id_to_str`` costs ~0.5 µs, 25 µs for a page of 50: more than the whole index lookup of a one-word
#: query (~5 µs); a dict lookup is ~40 ns. Cleared when full: 100k entries of ~200 bytes are ~20 MB.
_ID_TEXT: dict[bytes, str] = {}
_ID_TEXT_MAX = 100_000


def ids_text(ids: list[bytes]) -> list[str]:
    """Canonical text of each 16-byte id (``ids.id_to_str``), memoised."""
    out = list(map(_ID_TEXT.get, ids))
    if None in out:
        if len(_ID_TEXT) + len(ids) > _ID_TEXT_MAX:
            _ID_TEXT.clear()
        for i, t in enumerate(out):
            if t is None:
                out[i] = _ID_TEXT[ids[i]] = id_to_str(ids[i])
    return out  # type: ignore[return-value]


#: (message id, folder, summary record) -> its MessageSummary, shared by every store: the summary is a pure
#: function of the three (records.summaries_in), and a mark_read or a move writes a new summary record or
#: folder, i.e. a new key, so an entry can never be stale. Why: decoding took ~2.9 µs per summary here
#: (143 µs of a ~330 µs one-word page of 50), a hit ~0.5 µs. Searches repeat hot messages across queries
#: and pages. Cleared when full: 20k summaries of ~1.5 KB are ~30 MB at most.
_SUMMARIES: dict[tuple[bytes, int, bytes], MessageSummary] = {}
_SUMMARIES_MAX = 20_000


def page_summaries(rows: list[tuple[bytes, int, bytes]]) -> list[MessageSummary]:
    """``records.summaries_in(rows)``, from :data:`_SUMMARIES` where it can. Every returned summary is a
    fresh object with its own address lists: a caller changing one cannot change another's. Corruption
    if a record is malformed (as summaries_in)."""
    cache = _SUMMARIES
    out = list(map(cache.get, rows))
    for i, hit in enumerate(out):
        if hit is not None:
            out[i] = _copy_summary(hit)
    misses = [i for i, hit in enumerate(out) if hit is None]
    if misses:
        if len(cache) + len(misses) > _SUMMARIES_MAX:
            cache.clear()
        for i, fresh in zip(misses, summaries_in([rows[i] for i in misses]), strict=True):
            out[i] = fresh
            cache[rows[i]] = _copy_summary(fresh)
    return out  # type: ignore[return-value]


def _copy_summary(s: MessageSummary) -> MessageSummary:
    c = object.__new__(MessageSummary)  # as summaries_in: the frozen dataclass __init__ is ~4x slower
    d = c.__dict__
    d.update(s.__dict__)
    d["from_"] = [*d["from_"]]
    d["to"] = [*d["to"]]
    d["cc"] = [*d["cc"]]
    return c


class MailSearch(StoreCore):
    """Mixin of MailStore: full-text search over a user's mail."""

    def search(self, user_id: str, query: str, limit: int = 50, cursor: str | None = None) -> Page:
        """Search a user's mail (query language of DESIGN.md §4); the same page shape as list_messages.
        Raises NotImplementedError while lsmmail.search is not installed in this tree."""
        if self._search is None:
            raise NotImplementedError("lsmmail.search is not available")
        u = self._user(user_id)
        ids, next_cursor = self._search.search(u.uk, query, limit=limit, cursor=cursor)
        # One batched engine read for the page's records (the ids are spread over the whole mailbox: a scan
        # of the span of 50 hits read ~1,000-2,000 records here, 20-40x more), then one decode call.
        uk = u.uk
        key = schema.message_key
        keys = [key(uk, mid) for mid in ids]
        get_many = getattr(self._db, "get_many", None)
        if get_many is not None:
            raws = get_many(keys)
        else:  # an engine without the batched read
            get = self._db.get
            raws = [get(k) for k in keys]
        rows = [(mid, *decode_message_head(raw)) for mid, raw in zip(ids, raws, strict=True) if raw]
        return Page(page_summaries(rows), next_cursor)

    def search_ids(self, user_id: str, query: str, limit: int = 50, cursor: str | None = None) -> IdPage:
        """The ids of :meth:`search`'s page (the same ids in the same order, the same ``next_cursor``),
        without reading any message record: JMAP ``Email/query`` / IMAP ``SEARCH`` style. Fetch what you
        show with ``get_message``; the cursor pages exactly as :meth:`search`'s does (the two are
        interchangeable). Errors as :meth:`search` (``QuerySyntaxError``, ``InvalidArgument``,
        ``UnknownUser``).

        Consistency: a message is found from the moment its delivery (or import batch) returns until its
        permanent delete returns, at the latest; a page can be at most as stale as :meth:`search`'s, whose
        ids come from the same index call. In the instant between a delete's engine write and the index's
        commit (under the user's lock, before the delete returns) a concurrent ``search_ids`` may still list
        the id, as it may a message moved out of ``in:FOLDER`` (such queries read the folder through one
        engine snapshot); :meth:`search` drops ids whose record is gone."""
        if self._search is None:
            raise NotImplementedError("lsmmail.search is not available")
        ids, next_cursor = self._search.search(self._user(user_id).uk, query, limit=limit, cursor=cursor)
        page = object.__new__(IdPage)  # the frozen dataclass __init__ (object.__setattr__) costs ~0.3 µs
        page.__dict__.update(items=ids_text(ids), next_cursor=next_cursor)
        return page

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
        return self._state_of(uk, raw, snapshot, {})

    def _doc_states(self, uk: bytes, doc_ids: list[bytes], snapshot: object) -> list[Any]:
        """``_doc_state`` of many docs: their records in one batched engine read (``get_many``)."""
        get_many = getattr(self._db, "get_many", None)
        keys = [schema.message_key(uk, d) for d in doc_ids]
        if get_many is not None:
            raws = get_many(keys, snapshot=snapshot)
        else:
            raws = [self._db.get(k, snapshot=snapshot) for k in keys]
        names: dict[int, str] = {}
        return [None if raw is None else self._state_of(uk, raw, snapshot, names) for raw in raws]

    def _state_of(self, uk: bytes, raw: bytes, snapshot: object, names: dict[int, str]) -> Any:
        n, sm = decode_message_head(raw)
        name = SYSTEM_FOLDERS.get(n) or names.get(n)
        if name is None:  # a user folder: in:NAME is its current name (as of the query's snapshot)
            frec = self._db.get(schema.folder_key(uk, n), snapshot=snapshot)
            name = names[n] = loads(frec)["n"] if frec is not None else folder_id_str(n)
        return DocState(name, summary_is_read(sm))


def _indexed_document(parsed: mime.ParsedMessage) -> Any:
    """What search indexes of a message: one definition (``documents.message_document``) for delivery, the
    import's workers and reindex (identical results)."""
    return message_document(parsed)
