"""Reading flushed segments: per-user doc tables and deletion sets (loaded lazily), posting blocks by
point get, and the decoded-postings cache over them (valid until the next flush, merge or rebuild).
"""

from __future__ import annotations

import threading
from typing import Any

from . import postings as P
from .mem_segment import _MemSegment
from .tokenizer import MAX_TOKEN_BYTES

#: Budget of the decoded-postings cache, in doc references summed over entries. A reference costs 8 bytes
#: in the ascending list plus, once a query probes the entry, ~40 bytes in its frozenset (the doc ids
#: themselves are shared with the doc tables), so 500k references are ~25 MB at most: every posting list
#: of the hot terms of hundreds of typical mailboxes (the bench mailbox's 160 queries use ~40k).
_DOCS_CACHE_BUDGET = 500_000
#: Bound of the parsed-query cache (query text -> plan): search boxes repeat queries (paging repeats
#: the same text for every page); 4,096 plans of ~1 KB are ~4 MB.
_PLAN_CACHE_ENTRIES = 4_096

#: A posting key set: the (field, term) pairs whose doc sets are united (one leaf of a query).
Keys = tuple[tuple[str, str], ...]


class TermDocs:
    """The flushed docs of a posting key set: ``asc`` (doc ids, ascending, no duplicates, over every
    flushed segment of the user; deleted docs included: queries filter them with the live deleted set)
    and, built on first use, ``members`` (the same ids as a frozenset, for membership probes)."""

    __slots__ = ("asc", "_members")

    def __init__(self, asc: list[bytes]) -> None:
        self.asc = asc
        self._members: frozenset[bytes] | None = None

    def members(self) -> frozenset[bytes]:
        m = self._members
        if m is None:
            m = self._members = frozenset(self.asc)
        return m


_EMPTY = TermDocs([])


class SegmentReads:
    """Mixin of SearchIndex: segment reads and their caches. SearchIndex.__init__ sets the attributes
    above the line and calls :meth:`_init_read_caches`."""

    db: Any
    #: Optional ``(user_key, [doc_id], snapshot) -> [DocState | None]``: ``state_lookup`` of many docs at
    #: once (the mail layer sets it; one batched engine read instead of one per doc). None: per doc.
    state_lookup_many: Any = None
    _lock: threading.RLock
    _mem: _MemSegment
    _tables: dict[bytes, dict[int, list[bytes]]]  # per user, loaded lazily
    _deleted: dict[bytes, set[bytes]]  # per user, loaded lazily
    # ----
    _docs_cache: dict[tuple[bytes, Keys], TermDocs]
    _docs_size: int
    _plans: dict[str, Any]

    def _init_read_caches(self) -> None:
        #: (user, key set) -> its flushed docs. Segments are immutable, so an entry stays valid until the
        #: next flush, merge or rebuild, which call _drop_caches; deletions never touch it (queries subtract
        #: the live deleted set). Evicted oldest-first past _DOCS_CACHE_BUDGET references.
        self._docs_cache = {}
        self._docs_size = 0
        #: query text -> evaluator plan (parse result and the fast path's key sets); see evaluator.plan_for.
        self._plans = {}

    def _drop_caches(self) -> None:
        self._docs_cache.clear()
        self._docs_size = 0

    def _blocks(
        self, user: bytes, field: str, term: str, snap: Any = None
    ) -> list[tuple[int, list[bytes], bytes]]:
        """``(segment, doc table, block)`` of (field, term) in each of ``user``'s flushed segments.

        One point get per segment rather than a prefix scan: gets are bloom-filtered (an absent term costs
        ~2 µs per segment) and measured ~4 µs against ~10-70 µs for a scan (docs/search.md); the segment
        count stays at most ``max_segments``. Callers hold the index lock, so the segment set cannot change
        under them (flush and merge take it too): reading without a snapshot is consistent.
        """
        prefix = P.term_prefix(user, field, term)
        tables = self._tables_for(user)
        keys = [prefix + P.encode_u64(seg) for seg in tables]
        get_many = getattr(self.db, "get_many", None)  # one read state for every segment's get
        if get_many is not None:
            values = get_many(keys, snapshot=snap)
        else:
            values = [self.db.get(k, snapshot=snap) for k in keys]
        found = zip(tables.items(), values, strict=True)
        return [(seg, table, v) for (seg, table), v in found if v is not None]

    def _flushed_docs(self, user: bytes, keys: Keys) -> TermDocs:
        """The flushed docs having any of ``keys`` (cached; see :class:`TermDocs`). Caller holds the lock.
        ``Corruption`` if a posting block is malformed."""
        ck = (user, keys)
        got = self._docs_cache.get(ck)
        if got is not None:
            return got
        docs: list[bytes] = []
        runs = 0
        for field, term in keys:
            if len(term) * 4 > MAX_TOKEN_BYTES and len(term.encode("utf-8")) > MAX_TOKEN_BYTES:
                continue  # never indexed (too long)
            for _, table, value in self._blocks(user, field, term):
                ords = P.decode_ordinals(value, len(table))
                docs += map(table.__getitem__, ords)
                runs += 1
        if runs > 1:
            # Segments usually hold disjoint id ranges in order, so this is a merge of sorted runs
            # (timsort: near-linear); several keys may share docs, hence the set.
            docs = sorted(set(docs)) if len(keys) > 1 else sorted(docs)
        return self._cache_put(ck, TermDocs(docs) if docs else _EMPTY)

    def _cache_put(self, ck: tuple[bytes, Keys], got: TermDocs) -> TermDocs:
        self._docs_size += len(got.asc) + 1
        cache = self._docs_cache
        while cache and self._docs_size > _DOCS_CACHE_BUDGET:
            old = cache.pop(next(iter(cache)))
            self._docs_size -= len(old.asc) + 1
        cache[ck] = got
        return got

    def _all_flushed(self, user: bytes) -> TermDocs:
        """Every doc of ``user``'s flushed segments (deleted ones included), cached like a posting list
        under the empty key set: the walk of queries without a positive word (``-spam``, ``is:unread``)."""
        ck: tuple[bytes, Keys] = (user, ())
        got = self._docs_cache.get(ck)
        if got is None:
            docs = [d for t in self._tables_for(user).values() for d in t]
            docs.sort()  # tables usually hold consecutive id ranges: sorted runs, near-linear
            got = self._cache_put(ck, TermDocs(docs) if docs else _EMPTY)
        return got

    def _tables_for(self, user: bytes) -> dict[int, list[bytes]]:
        tables = self._tables.get(user)
        if tables is None:
            tables = {}
            for key, value in self.db.scan(prefix=P.segment_user_prefix(user) + P.DOC_TABLE):
                _, rest = P.split_user_key(key, 1)
                _, _, seg = P.parse_segment_key(rest)
                tables[seg] = P.decode_doc_table(value)
            self._tables[user] = tables
        return tables

    def _deleted_for(self, user: bytes) -> set[bytes]:
        deleted = self._deleted.get(user)
        if deleted is None:
            prefix = P.TAG_SMALL + P.DELETED + P.user_prefix(user)
            deleted = {key[len(prefix) :] for key, _ in self.db.scan(prefix=prefix)}
            self._deleted[user] = deleted
        return deleted
