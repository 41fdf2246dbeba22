"""Reading flushed segments: per-user doc tables and deletion sets (loaded lazily), posting blocks by
point get, and the caches over them (valid until the next flush, merge or rebuild).
"""

from __future__ import annotations

import threading
from typing import Any

from . import postings as P
from .mem_segment import _MemSegment
from .tokenizer import MAX_TOKEN_BYTES

#: Bound of the flushed-term cache: 20,000 terms x a few hundred ids ~ tens of MB at most.
_SEG_CACHE_ENTRIES = 20_000
#: Budget of the decoded-ordinals cache, in cached ordinals summed over entries: 1M ordinals is ~10-40 MB
#: of Python lists (ints < 256 are shared), i.e. every term of ~2,000 typical mailboxes' worth of hot words.
_ORDS_CACHE_BUDGET = 1_000_000


class SegmentReads:
    """Mixin of SearchIndex: segment reads and their caches. SearchIndex.__init__ sets the attributes."""

    db: Any
    _lock: threading.RLock
    _mem: _MemSegment
    _tables: dict[bytes, dict[int, list[bytes]]]  # per user, loaded lazily
    _deleted: dict[bytes, set[bytes]]  # per user, loaded lazily
    _seg_docs: dict[tuple[bytes, str, str], frozenset[bytes]]
    _ords: dict[tuple[bytes, str, str], dict[int, list[int]]]
    _ords_size: int

    def _drop_caches(self) -> None:
        self._seg_docs.clear()
        self._ords.clear()
        self._ords_size = 0

    def _blocks(self, user: bytes, field: str, term: str, snap: Any) -> list[tuple[int, list[bytes], bytes]]:
        """``(segment, doc table, block)`` of (field, term) in each of ``user``'s flushed segments.

        One point get per segment rather than a prefix scan: gets are bloom-filtered (an absent term costs
        ~2 µs per segment) and measured ~4 µs against ~10-70 µs for a scan (docs/search.md); the segment
        count stays at most ``max_segments``.
        """
        prefix = P.term_prefix(user, field, term)
        out = []
        for seg, table in self._tables_for(user).items():
            value = self.db.get(prefix + P.encode_u64(seg), snapshot=snap)
            if value is not None:
                out.append((seg, table, value))
        return out

    def _seg_ords(self, user: bytes, field: str, term: str, snap: Any) -> dict[int, list[int]]:
        """``{segment: ascending ordinals}`` of (field, term) in ``user``'s flushed segments (cached)."""
        ck = (user, field, term)
        got = self._ords.get(ck)
        if got is not None:
            return got
        got = {}
        size = 0
        if len(term) * 4 <= MAX_TOKEN_BYTES or len(term.encode("utf-8")) <= MAX_TOKEN_BYTES:
            for seg, table, value in self._blocks(user, field, term, snap):
                ords = P.decode_ordinals(value, len(table))
                got[seg] = ords
                size += len(ords)
        self._ords_size += size + 1
        while self._ords and self._ords_size > _ORDS_CACHE_BUDGET:
            old = self._ords.pop(next(iter(self._ords)))
            self._ords_size -= sum(len(v) for v in old.values()) + 1
        self._ords[ck] = got
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
