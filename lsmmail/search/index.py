"""SearchIndex: segment-buffered postings over the engine (design and crash argument in docs/search.md).

Delivery path
    :meth:`SearchIndex.index` tokenises the document and puts ONE key into the caller's batch: the doc's
    *forward record* (each field's token stream). After the batch commits, :meth:`committed` adds the
    record to the in-memory segment (grouped into postings only if a query needs them). Cost on
    the delivery path: one key of ~1-3 bytes per token, instead of one engine key per (term, message).

Flush
    When the in-memory segment holds :attr:`flush_postings` tokens (or on :meth:`flush`), it is written as
    one immutable segment per user in ONE atomic batch: a doc table (sorted doc ids; postings refer to docs
    by ordinal), one delta-encoded posting block per (field, term), the deletion of the flushed docs'
    forward records, and the new next-segment counter. Either all of it is durable or none of it is, so each
    doc is at every instant in exactly one of: a forward record (replayed into memory at open) or a segment.

Merge
    When a user has more than :attr:`max_segments` segments, the :attr:`merge_fanin` smallest are rewritten as
    one, dropping unindexed docs and their deletion markers, in one atomic batch.

Queries
    Leaves (words, phrases, ``has:``) are resolved to sets of doc ids from the memory segment plus one prefix
    scan per (field, term) over the flushed blocks; AND/OR/NOT are set operations; ``is:``/``in:`` ask
    ``state_lookup`` (the mail layer's truth) per candidate, newest first, stopping once the page is full;
    dates come from the UUIDv7 id. Unindexed docs are removed with the per-user deleted set.

Thread safety: every public method may be called from any thread; one lock serialises the index's own
state (queries, commits, flushes and merges). The engine provides the atomicity of each batch.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable
from typing import Any

from ..engine.batch import WriteBatch
from ..engine.errors import Corruption, InvalidArgument
from ..engine.keys import prefix_end
from . import postings as P
from .documents import DocState, IndexedDocument, StateLookup, _check_doc, _Pending, doc_time_ms
from .evaluator import evaluate, plan_for
from .mem_segment import _MemSegment, stream_weight
from .postings import ANY
from .segment_writes import SegmentWrites
from .tokenizer import analyze_raw

__all__ = [
    "ANY", "DocState", "IndexedDocument", "SearchIndex", "StateLookup", "analyse", "decode_cursor",
    "doc_time_ms", "encode_cursor",
]


def analyse(doc: IndexedDocument) -> tuple[bytes, int]:
    """``(forward record, weight)`` of ``doc``: what :meth:`SearchIndex.index_analysed` takes. A pure function
    of the document, so the mail import's worker processes run it and the index stores what they made."""
    streams = analyze_raw(doc)
    return P.encode_forward_raw(streams), stream_weight(streams)


def encode_cursor(doc_id: bytes) -> str:
    return "1" + base64.urlsafe_b64encode(doc_id).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> bytes:
    """The doc id a cursor resumes after. ``InvalidArgument`` (a ValueError) if it is not one of ours."""
    try:
        if not cursor.startswith("1"):
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor[1:] + "==")
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"not a search cursor: {cursor!r}") from None
    if len(raw) != P.DOC_ID_LEN or encode_cursor(raw) != cursor:
        raise InvalidArgument(f"not a search cursor: {cursor!r}")
    return raw


class SearchIndex(SegmentWrites):
    """The search index of every user of one ``lsmmail.DB`` (see the module docstring).

    ``state_lookup(user_key, doc_id, snapshot)`` returns the message's :class:`DocState`, or None when the
    message no longer exists. It is called only for queries with ``is:`` or ``in:``, for candidates in
    newest-first order, with the snapshot the query reads under.
    """

    def __init__(
        self,
        db: Any,
        state_lookup: StateLookup,
        *,
        flush_postings: int = 1_000_000,
        max_segments: int = 8,
        merge_fanin: int = 4,
        flush_sync: bool = False,
    ) -> None:
        if flush_postings < 1 or max_segments < 1 or merge_fanin < 2:
            raise InvalidArgument("flush_postings >= 1, max_segments >= 1 and merge_fanin >= 2 required")
        self.db = db
        self.state_lookup = state_lookup
        #: Counted in indexed tokens + specials (an upper bound of postings; ``_MemSegment.size``). 1M tokens
        #: ~ 1,550 corpus messages (645 tokens each) ~ 7 MB of token streams in memory. Larger segments
        #: mean fewer posting keys per message on the import path (a common term is one key per flush:
        #: 90k keys for 6 flushes of the 3,011-message bench import, ~2.5 µs of Python each) and fewer
        #: merges; the bound is the first query after an import, which groups every held doc into
        #: per-term dicts (~50 µs and ~20 KB per doc).
        self.flush_postings = flush_postings
        self.max_segments = max_segments
        self.merge_fanin = merge_fanin
        #: Flushes need no fsync of their own: the WAL is recovered as a prefix, so a lost flush batch
        #: leaves the forward records it would have deleted, and the next synced write makes it durable.
        self.flush_sync = flush_sync
        self._lock = threading.RLock()
        self._mem = _MemSegment()
        self._tables: dict[bytes, dict[int, list[bytes]]] = {}  # per user, loaded lazily
        self._deleted: dict[bytes, set[bytes]] = {}  # per user, loaded lazily
        self._init_read_caches()  # decoded postings and parsed queries (segment_reads.py)
        raw = db.get(P.META_NEXT_SEGMENT)
        self._next_seg = P.decode_u64(raw) if raw is not None else 1
        # Segments written before the any-field blocks existed lack them: then bare words take the
        # six-field path until `reindex` has rebuilt every user (mark_current()).
        if db.get(P.META_FORMAT) is not None:
            self._combined = True
        else:
            self._combined = next(iter(db.scan(prefix=P.TAG_SEGMENT)), None) is None
        for key, value in db.scan(prefix=P.TAG_SMALL + P.FORWARD):
            user, doc = P.split_user_key(key, 2)
            if len(doc) != P.DOC_ID_LEN:
                raise Corruption(f"forward record key with a bad doc id: {key[:40]!r}")
            # Decoded once here so a malformed record is reported as Corruption (the flush kernel checks
            # only the structure); a format-1 record is kept re-encoded in format 2, the form flushes read.
            fields = P.decode_forward_raw(value)
            if value[0] != P.FORWARD_STREAMS:
                value = P.encode_forward_raw(fields)
            self._mem.add(user, doc, value, stream_weight(fields))

    def mark_current(self) -> None:
        """Record that every user's segments carry the any-field blocks (after rebuilding every user)."""
        with self._lock:
            batch = WriteBatch()
            batch.put(P.META_FORMAT, P.encode_u64(P.INDEX_FORMAT))
            self.db.write(batch, sync=True)
            self._combined = True

    # ------------------------------------------------------------------ delivery path

    def index(self, batch: WriteBatch, user_key: bytes, doc_id: bytes, doc: IndexedDocument) -> _Pending:
        """Add ``doc``'s forward record to ``batch``; call :meth:`committed` with the result after commit.

        Doc ids are never reused: index a doc id once (re-indexing a doc id that is still in the memory
        segment replaces it; after :meth:`unindex` an id stays deleted).
        """
        return self.index_analysed(batch, user_key, doc_id, *analyse(doc))

    def index_analysed(
        self, batch: WriteBatch, user_key: bytes, doc_id: bytes, forward: bytes, weight: int
    ) -> _Pending:
        """:meth:`index` of a document already analysed elsewhere (the mail import's worker processes):
        ``forward`` must be ``encode_forward_raw(analyze_raw(doc))`` and ``weight`` ``stream_weight`` of
        those streams (:func:`analyse` gives both). The memory segment keeps the forward record as it is."""
        batch.put(P.forward_key(user_key, _check_doc(doc_id)), forward)
        return _Pending("index", user_key, doc_id, forward, weight)

    def unindex(self, batch: WriteBatch, user_key: bytes, doc_id: bytes) -> _Pending:
        """Make ``doc_id`` unfindable once ``batch`` commits (a deletion marker + forward-record delete)."""
        batch.put(P.deleted_key(user_key, _check_doc(doc_id)), b"")
        batch.delete(P.forward_key(user_key, doc_id))
        return _Pending("unindex", user_key, doc_id, None)

    def committed(self, pending: object) -> None:
        """The batch holding ``pending`` was written: update memory (and flush if the segment is full)."""
        if not isinstance(pending, _Pending):
            raise InvalidArgument("committed() takes what index() or unindex() returned")
        with self._lock:
            self._mem_changed()
            if pending.kind == "index":
                assert pending.forward is not None
                self._mem.add(pending.user, pending.doc, pending.forward, pending.weight)
            else:
                self._mem.remove(pending.user, pending.doc)
                deleted = self._deleted.get(pending.user)
                if deleted is not None:
                    deleted.add(pending.doc)
            if self._mem.size >= self.flush_postings:
                self.flush()

    # ------------------------------------------------------------------ segments

    def rebuild(self, user_key: bytes, docs: Iterable[tuple[bytes, IndexedDocument]]) -> None:
        """Drop every search key of ``user_key`` and index ``docs`` afresh (``lsmmail reindex``).

        Not atomic as a whole (a crash midway leaves a partial index: run it again); each step is. Callers
        must not deliver to this user meanwhile.
        """
        with self._lock:
            batch = WriteBatch()
            for prefix in (
                P.segment_user_prefix(user_key),
                P.TAG_SMALL + P.FORWARD + P.user_prefix(user_key),
                P.TAG_SMALL + P.DELETED + P.user_prefix(user_key),
            ):
                end = prefix_end(prefix)
                assert end is not None  # search prefixes start with a tag byte (S or s), never all 0xFF
                batch.delete_range(prefix, end)
            self.db.write(batch, sync=True)
            self._drop_caches()
            for doc in list(self._mem.docs.get(user_key, {})):
                self._mem.remove(user_key, doc)
            self._mem_changed()
            self._tables[user_key] = {}
            self._deleted[user_key] = set()
            batch = WriteBatch()
            pending: list[_Pending] = []
            for doc_id, doc in docs:
                pending.append(self.index(batch, user_key, doc_id, doc))
                if len(pending) >= 256:
                    self._write_pending(batch, pending)
                    batch, pending = WriteBatch(), []
            self._write_pending(batch, pending)
            self.flush()

    def _write_pending(self, batch: WriteBatch, pending: list[_Pending]) -> None:
        if pending:
            self.db.write(batch, sync=False)
            for p in pending:
                self.committed(p)

    def stats(self) -> dict[str, int]:
        """Memory-segment size and the loaded users' segment counts (for tests and ``lsmmail stats``)."""
        with self._lock:
            return {
                "mem_docs": sum(len(d) for d in self._mem.docs.values()),
                "mem_postings": self._mem.size,
                "next_segment": self._next_seg,
                "loaded_segments": sum(len(t) for t in self._tables.values()),
            }

    def segment_count(self, user_key: bytes) -> int:
        with self._lock:
            return len(self._tables_for(user_key))

    # ------------------------------------------------------------------ queries

    def search(
        self, user_key: bytes, query: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[bytes], str | None]:
        """Doc ids matching ``query``, newest first, at most ``limit``, and the cursor of the next page.

        Raises :class:`QuerySyntaxError` for a malformed query and ``InvalidArgument`` (a ValueError) for a
        bad ``limit`` or a cursor this index did not hand out. The cursor is None on the last page.
        """
        with self._lock:
            plan = plan_for(self, query)
            if not isinstance(limit, int) or limit < 1:
                raise InvalidArgument("limit must be a positive integer")
            after = decode_cursor(cursor) if cursor is not None else None
            hits = evaluate(self, user_key, plan, limit + 1, after)
        if len(hits) > limit:
            return hits[:limit], encode_cursor(hits[limit - 1])
        return hits, None
