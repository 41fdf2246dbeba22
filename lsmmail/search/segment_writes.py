"""Writing segments: flush of the memory segment (one segment per user, one atomic batch) and merges of
a user's smallest segments (see the module docstring of index.py and docs/search.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..engine.batch import WriteBatch
from . import postings as P
from ._segment_build import put_segment_fwd
from .mem_segment import _MemSegment
from .postings import ANY
from .segment_reads import SegmentReads


class SegmentWrites(SegmentReads):
    """Mixin of SearchIndex: flush and merge. SearchIndex.__init__ sets the attributes below."""

    max_segments: int
    merge_fanin: int
    flush_sync: bool
    _next_seg: int
    _combined: bool

    def flush(self) -> None:
        """Persist the memory segment as one segment per user in one atomic batch, then merge if needed."""
        with self._lock:
            if not self._mem.docs:
                return
            seg = self._next_seg
            batch = WriteBatch()
            written: dict[bytes, list[bytes]] = {}
            for user, docs in self._mem.docs.items():
                ids = sorted(docs)
                batch.put(P.doc_table_key(user, seg), P.encode_doc_table(ids))
                head, tail = P.segment_user_prefix(user), b"\x00" + P.encode_u64(seg)
                # record i is the doc of ordinal i; keys == P.block_key(...)
                put_segment_fwd(batch, [docs[d][0] for d in ids], head, tail)
                fwd = P.forward_key(user, b"")  # forward_key(user, d) == fwd + d: one prefix per user
                delete = batch.delete
                for d in ids:
                    delete(fwd + d)
                written[user] = ids
            batch.put(P.META_NEXT_SEGMENT, P.encode_u64(seg + 1))
            if self._combined:
                batch.put(P.META_FORMAT, P.encode_u64(P.INDEX_FORMAT))
            self.db.write(batch, sync=self.flush_sync)
            self._drop_caches()
            self._next_seg = seg + 1
            self._mem = _MemSegment()
            for user, ids in written.items():
                if user in self._tables:
                    self._tables[user][seg] = ids
            for user in written:
                self.maybe_merge(user)

    def maybe_merge(self, user_key: bytes) -> bool:
        """Merge the smallest segments of ``user_key`` while it has more than ``max_segments``."""
        merged = False
        with self._lock:
            while len(self._tables_for(user_key)) > self.max_segments:
                tables = self._tables_for(user_key)
                victims = sorted(tables, key=lambda s: (len(tables[s]), s))[: self.merge_fanin]
                self.merge(user_key, victims)
                merged = True
        return merged

    def merge(self, user_key: bytes, segments: Iterable[int] | None = None) -> None:
        """Rewrite ``segments`` (default: all) of one user as one segment without unindexed docs."""
        with self._lock:
            tables = self._tables_for(user_key)
            victims = set(tables if segments is None else segments)
            if not victims or not victims <= set(tables):
                return
            deleted = self._deleted_for(user_key)
            old_docs = [d for s in victims for d in tables[s]]
            new_ids = sorted(d for d in old_docs if d not in deleted)
            ordinal = {d: i for i, d in enumerate(new_ids)}
            seg = self._next_seg
            batch = WriteBatch()
            acc: dict[tuple[str, str], list[tuple[int, list[int]]]] = {}
            for key, value in self.db.scan(prefix=P.segment_user_prefix(user_key)):
                _, rest = P.split_user_key(key, 1)
                field, term, s = P.parse_segment_key(rest)
                if s not in victims:
                    continue
                batch.delete(key)
                if field == "#":
                    continue
                table = tables[s]
                for o, positions in P.decode_block(value, len(table)):
                    n = ordinal.get(table[o])
                    if n is not None:
                        acc.setdefault((field, term), []).append((n, positions))
            if new_ids:
                batch.put(P.doc_table_key(user_key, seg), P.encode_doc_table(new_ids))
                for (field, term), entries in acc.items():
                    entries.sort()
                    if field == ANY:
                        block = P.encode_ordinals([n for n, _ in entries])
                    else:
                        block = P.encode_block(entries)
                    batch.put(P.block_key(user_key, field, term, seg), block)
            # Deletion markers are needed only while some segment still holds the doc.
            remaining = {d for s, ids in tables.items() if s not in victims for d in ids}
            remaining.update(self._mem.docs.get(user_key, {}))
            purged = {d for d in deleted if d not in remaining}
            for d in purged:
                batch.delete(P.deleted_key(user_key, d))
            batch.put(P.META_NEXT_SEGMENT, P.encode_u64(seg + 1))
            self.db.write(batch, sync=self.flush_sync)
            self._drop_caches()
            self._next_seg = seg + 1
            for s in victims:
                del tables[s]
            if new_ids:
                tables[seg] = new_ids
            deleted -= purged
