"""Reading flushed segments: per-user doc tables and deletion sets (loaded lazily), posting blocks by
point get, and the decoded-postings cache over them (valid until the next flush, merge or rebuild).
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from operator import itemgetter
from typing import Any

from ..engine.errors import Corruption
from . import postings as P
from ._postings_read import RankList, post_and, post_ranks
from .mem_segment import _MemSegment
from .tokenizer import MAX_TOKEN_BYTES

#: Budget of the decoded-postings cache, in doc references summed over entries. A reference costs 4 bytes
#: as a rank, plus 8 in the id list and ~40 in the frozenset that only the general and state paths build
#: (the doc ids themselves are shared with the doc tables), so 500k references are ~26 MB at most: every
#: posting list of the hot terms of hundreds of typical mailboxes (the bench mailbox's 160 queries use ~40k).
_DOCS_CACHE_BUDGET = 500_000
#: Bound of the parsed-query cache (query text -> plan): search boxes repeat queries (paging repeats
#: the same text for every page); 4,096 plans of ~1 KB are ~4 MB.
_PLAN_CACHE_ENTRIES = 4_096
#: Budget of the position-block cache (phrases), in block bytes: a phrase reads its tokens' blocks of
#: every text field in every segment (one engine get each, ~3-5 µs here even from the engine's block
#: cache: ~30% of a two-word phrase); 8 MB holds the blocks of a few hundred common terms.
_BLOCKS_CACHE_BYTES = 8 << 20
#: Bound of the memory-segment leaf-set cache (cleared at every delivery anyway): 4,096 sets of at most
#: the few hundred docs a memory segment holds between flushes.
_MEM_SETS_ENTRIES = 4_096

#: A posting key set: the (field, term) pairs whose doc sets are united (one leaf of a query).
Keys = tuple[tuple[str, str], ...]


class TermDocs(RankList):
    """The flushed docs of a posting key set, over every flushed segment of the user (deleted docs
    included: queries subtract the live deleted set): ``ranks`` (ascending ranks in the user's
    :class:`_Universe`: what the native AND walks), and, built on first use, ``asc`` (the doc ids,
    ascending) and ``members()`` (the ids as a frozenset, for membership probes of the general path)."""

    __slots__ = ("_ids", "_asc", "_members")

    def __init__(self, ranks: array, ids: list[bytes], asc: list[bytes] | None = None) -> None:
        super().__init__(ranks)
        self._ids = ids  # the universe's ids: rank -> doc id
        self._asc = asc
        self._members: frozenset[bytes] | None = None

    @property
    def asc(self) -> list[bytes]:
        a = self._asc
        if a is None:
            a = self._asc = list(map(self._ids.__getitem__, self.ranks))
        return a

    def members(self) -> frozenset[bytes]:
        m = self._members
        if m is None:
            m = self._members = frozenset(self.asc)
        return m


_EMPTY = TermDocs(array("I"), [], [])


class _Universe:
    """Every flushed doc of one user, ascending by id; a doc's *rank* is its index in ``ids``. Segments
    usually hold disjoint id ranges (each flush takes the docs delivered since the last), so a segment's
    ordinal ``o`` is rank ``base[seg] + o``; when merged segments overlap, ``maps[seg]`` maps ordinals to
    ranks one by one. Valid until the next flush, merge or rebuild (``_drop_caches``)."""

    __slots__ = ("ids", "base", "maps", "_deleted_key", "_deleted_ranks")

    def __init__(self, tables: dict[int, list[bytes]]) -> None:
        self.base: dict[int, int] = {}
        self.maps: dict[int, array] = {}
        spans = sorted((t[0], t[-1], seg) for seg, t in tables.items() if t)
        if all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False)):
            ids: list[bytes] = []
            for _, _, seg in spans:
                self.base[seg] = len(ids)
                ids += tables[seg]
        else:
            ids = sorted(d for t in tables.values() for d in t)
            rank = {d: i for i, d in enumerate(ids)}
            for _, _, seg in spans:
                self.maps[seg] = array("I", map(rank.__getitem__, tables[seg]))
        self.ids = ids
        self._deleted_key: tuple[int, int] | None = None
        self._deleted_ranks: RankList | None = None

    def ranks_of(self, seg: int, table_len: int, block: bytes) -> array:
        """The ranks of the docs of one posting block of segment ``seg``. ``Corruption`` if malformed."""
        base = self.base.get(seg)
        if base is not None:
            return post_ranks(block, table_len, base)
        m = self.maps.get(seg)
        if m is None:  # a segment with an empty doc table: any block of it is malformed
            P.decode_ordinals(block, table_len)
            raise Corruption("posting block of a segment without docs")
        return array("I", map(m.__getitem__, P.decode_ordinals(block, table_len)))

    def deleted_ranks(self, deleted: set[bytes]) -> RankList | None:
        """The ranks of the flushed docs in ``deleted`` (None if there are none). Cached per set and size:
        between two cache drops the deleted set only grows (merges shrink it, then drop the caches)."""
        if not deleted:
            return None
        key = (id(deleted), len(deleted))
        if key != self._deleted_key:
            ids = self.ids
            n = len(ids)
            found = []
            for d in deleted:
                i = bisect_left(ids, d)
                if i < n and ids[i] == d:
                    found.append(i)
            found.sort()
            self._deleted_ranks = RankList(array("I", found)) if found else None
            self._deleted_key = key
        return self._deleted_ranks


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
        #: user -> its flushed docs in rank order (_Universe); dropped with the decoded postings.
        self._universes: dict[bytes, _Universe] = {}
        #: (user, memory-segment key set) -> the memory segment's docs having any of the keys (a bare word
        #: is the union of six fields' dicts there: ~1 µs a leaf, ~0.1 µs from here). Cleared whenever the
        #: memory segment changes (_mem_changed: a commit, a flush, a rebuild).
        self._mem_sets: dict[tuple[bytes, Keys], frozenset[bytes]] = {}
        #: the same sets' docs newest first (a one-leaf query's memory hits are a slice of it)
        self._mem_desc: dict[tuple[bytes, Keys], list[bytes]] = {}
        #: (user, field, term) -> {segment: posting block}: what phrases read (see _BLOCKS_CACHE_BYTES);
        #: dropped with the decoded postings, evicted oldest first.
        self._blocks_cache: dict[tuple[bytes, str, str], dict[int, bytes]] = {}
        self._blocks_bytes = 0

    def _drop_caches(self) -> None:
        self._docs_cache.clear()
        self._docs_size = 0
        self._universes.clear()
        self._blocks_cache.clear()
        self._blocks_bytes = 0
        self._mem_changed()

    def _mem_changed(self) -> None:
        """The memory segment gained or lost a doc: forget the memory-segment leaf sets."""
        self._mem_sets.clear()
        self._mem_desc.clear()

    def _mem_newest(self, user: bytes, keys: Keys) -> list[bytes]:
        """:meth:`_mem_leaf` newest first (cached alike; callers must not change the list)."""
        ck = (user, keys)
        got = self._mem_desc.get(ck)
        if got is None:
            got = sorted(self._mem_leaf(user, keys), reverse=True)
            if len(self._mem_desc) >= _MEM_SETS_ENTRIES:
                self._mem_desc.clear()
            self._mem_desc[ck] = got
        return got

    def _mem_leaf(self, user: bytes, keys: Keys) -> frozenset[bytes]:
        """The memory segment's docs having any of ``keys`` (its (field, term) keys; cached, see above)."""
        ck = (user, keys)
        got = self._mem_sets.get(ck)
        if got is None:
            mem = self._mem.postings.get(user)
            if not keys:  # every held doc, also one without a single term
                got = frozenset(self._mem.docs.get(user, ()))
            elif not mem:
                got = frozenset()
            else:
                found = list(filter(None, map(mem.get, keys)))  # C loop: ~6 keys for a bare word
                got = frozenset(found[0]) if len(found) == 1 else frozenset().union(*found)
            if len(self._mem_sets) >= _MEM_SETS_ENTRIES:
                self._mem_sets.clear()
            self._mem_sets[ck] = got
        return got

    def _universe(self, user: bytes) -> _Universe:
        uni = self._universes.get(user)
        if uni is None:
            uni = self._universes[user] = _Universe(self._tables_for(user))
        return uni

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

    def _term_blocks(self, user: bytes, field: str, term: str) -> dict[int, bytes]:
        """``{segment: block}`` of (field, term) in ``user``'s flushed segments (cached; see
        ``_BLOCKS_CACHE_BYTES``). Caller holds the lock; the dict must not be changed."""
        ck = (user, field, term)
        got = self._blocks_cache.get(ck)
        if got is None:
            got = {seg: blk for seg, _, blk in self._blocks(user, field, term)}
            size = sum(map(len, got.values())) + 64
            cache = self._blocks_cache
            self._blocks_bytes += size
            while cache and self._blocks_bytes > _BLOCKS_CACHE_BYTES:
                old = cache.pop(next(iter(cache)))
                self._blocks_bytes -= sum(map(len, old.values())) + 64
            cache[ck] = got
        return got

    def _flushed_docs(self, user: bytes, keys: Keys) -> TermDocs:
        """The flushed docs having any of ``keys`` (cached; see :class:`TermDocs`). Caller holds the lock.
        ``Corruption`` if a posting block is malformed."""
        ck = (user, keys)
        got = self._docs_cache.get(ck)
        if got is not None:
            return got
        uni = self._universe(user)
        parts: list[array] = []
        for field, term in keys:
            if len(term) * 4 > MAX_TOKEN_BYTES and len(term.encode("utf-8")) > MAX_TOKEN_BYTES:
                continue  # never indexed (too long)
            for seg, table, value in self._blocks(user, field, term):
                parts.append(uni.ranks_of(seg, len(table), value))
        if not parts:
            return self._cache_put(ck, _EMPTY)
        if len(parts) == 1:
            ranks = parts[0]
        elif len(keys) == 1 and not uni.maps:
            # One key: one block per segment, and segments own disjoint rank ranges, so the blocks in
            # rank order concatenate to a sorted list.
            parts.sort(key=lambda a: a[0])
            ranks = parts[0]
            for a in parts[1:]:
                ranks += a
        else:  # several keys may share docs (or merged segments interleave): sort and deduplicate
            merged: set[int] = set()
            for a in parts:
                merged.update(a)
            ranks = array("I", sorted(merged))
        return self._cache_put(ck, TermDocs(ranks, uni.ids))

    def _cache_put(self, ck: tuple[bytes, Keys], got: TermDocs) -> TermDocs:
        self._docs_size += len(got.ranks) + 1
        cache = self._docs_cache
        while cache and self._docs_size > _DOCS_CACHE_BUDGET:
            old = cache.pop(next(iter(cache)))
            self._docs_size -= len(old.ranks) + 1
        cache[ck] = got
        return got

    def _all_flushed(self, user: bytes) -> TermDocs:
        """Every doc of ``user``'s flushed segments (deleted ones included), as a posting list: the walk of
        queries without a positive word (``-spam``, ``is:unread``) on the general iterator path."""
        ck: tuple[bytes, Keys] = (user, ())
        got = self._docs_cache.get(ck)
        if got is None:
            ids = self._universe(user).ids
            got = self._cache_put(ck, TermDocs(array("I", range(len(ids))), ids, ids) if ids else _EMPTY)
        return got

    def _rank_hits(
        self, user: bytes, pos: tuple[Keys, ...], neg: tuple[Keys, ...], deleted: set[bytes],
        want: int, after: bytes | None, lo: bytes | None,
    ) -> list[bytes]:
        """The newest ``want`` flushed docs with ``lo <= id < after`` (None: unbounded) having every ``pos``
        key set (every doc if ``pos`` is empty), no ``neg`` key set, and not in ``deleted``: one native
        walk over the cached rank lists (see ``_postings_read.post_and``). Caller holds the lock."""
        uni = self._universes.get(user) or self._universe(user)
        ids = uni.ids
        if not ids:
            return []
        cache = self._docs_cache  # hits inlined: this path is ~5 µs a query, a method call ~0.1
        lists = []
        for k in pos:
            td = cache.get((user, k)) or self._flushed_docs(user, k)
            if not td.ranks:
                return []
            lists.append(td)
        negs: list[RankList] = []
        for k in neg:
            td = cache.get((user, k)) or self._flushed_docs(user, k)
            if td.ranks:
                negs.append(td)
        if deleted:
            dr = uni.deleted_ranks(deleted)
            if dr is not None:
                negs.append(dr)
        hi = len(ids) if after is None else bisect_left(ids, after)
        lo_r = 0 if lo is None else bisect_left(ids, lo)
        ranks = post_and(lists, negs, lo_r, hi, want)
        if len(ranks) > 1:
            return list(itemgetter(*ranks)(ids))  # ~2x faster than a map over __getitem__ for a page
        return [ids[r] for r in ranks]

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
