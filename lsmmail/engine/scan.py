"""Range scans: ``DB.scan`` and the sources it merges (memtables, L0 tables, the levels).

This is a mixin of :class:`lsmmail.engine.db.DB` (like :class:`~lsmmail.engine.maintenance.Maintenance`),
split out to keep each file about one concern; it uses the DB's state directly. A scan takes one read
state (sequence number, memtables, version) and merges every source's versions into what that state
shows (:mod:`lsmmail.engine.iterators`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

from .. import native_lib
from .cache import NativeBlockCache
from .errors import InvalidArgument, IOFailure, LsmError
from .iterators import concat, merge_entries, prime_sources, visible_entries
from .keys import check_key, prefix_end
from .memtable import MemTable
from .memtable_native import NativeMemTable
from .point_reads import _VERSION_PROBE as _VIEW_SCANS
from .scan_native import native_scan, native_scan_view
from .version import FileMeta, Version

if TYPE_CHECKING:
    from .db import Snapshot
    from .sstable import TableReader

#: How far past the seek position (in data blocks of the largest source) a scan's first memtable copy
#: reaches: 4 blocks of 16 entries of the level that holds ~55% of the bench's data cover ~2x a page of
#: 50; a scan that goes further just opens the rest of the memtable's range.
_MEMTABLE_CUT_BLOCKS = 4


def _memtable_entries(m: MemTable | NativeMemTable, start: bytes | None, end: bytes | None,
                      cut: bytes | None, reverse: bool) -> Iterator[tuple[bytes, int, int, bytes]]:
    """``m``'s versions in ``[start, end)`` in (reverse) internal order; with ``cut`` (strictly inside
    the range), read as two ranges split at ``cut``, the far one opened only when the near one is
    done (see ``DB._memtable_cut``)."""
    if cut is None:
        return m.entries_reverse(start, end) if reverse else m.entries(start, end)
    if reverse:
        return chain(m.entries_reverse(cut, end), _lazy(m.entries_reverse, start, cut))
    return chain(m.entries(start, cut), _lazy(m.entries, cut, end))


def _lazy(fn: Any, start: bytes | None, end: bytes | None) -> Iterator[tuple[bytes, int, int, bytes]]:
    yield from fn(start, end)


class Scans:
    """Mixin of DB: range scans."""

    #: Scans run the C kernel (scan_native) when the extension is loaded and every memtable in the scan
    #: is the C skiplist; False (per instance: tests, A/B runs) forces the pure-Python merge.
    _scan_kernel: bool = native_lib.AVAILABLE

    # State owned by DB (declared for type checkers).
    if TYPE_CHECKING:
        _mem: MemTable
        _cache: Any

        def _read_state(self, snapshot: Snapshot | None) -> tuple[int, MemTable, tuple[MemTable, ...],
                                                                    Version]: ...
        def _tombstones(self, mem: MemTable, imms: tuple[MemTable, ...],
                        v: Version) -> list[tuple[int, bytes, bytes]]: ...
        def _table(self, f: FileMeta) -> TableReader: ...
        def _read_blob(self, ref: bytes) -> bytes: ...
        def _probe_of(self, v: Version) -> tuple[Any, Any, list[TableReader]]: ...

    def scan(self, start: bytes | None = None, end: bytes | None = None, *, prefix: bytes | None = None,
             reverse: bool = False, snapshot: Snapshot | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` for ``start <= key < end`` (and starting with ``prefix``), in key
        order or, with ``reverse``, in reverse order. The iterator sees one consistent state (the
        snapshot, or the state when ``scan`` was called) however long it lives; files it reads are kept
        until it is exhausted or dropped."""
        if start is not None:
            start = check_key(start)
        if end is not None:
            end = check_key(end)
        if prefix is not None:
            if not isinstance(prefix, (bytes, bytearray, memoryview)):
                raise InvalidArgument("prefix must be bytes")
            prefix = bytes(prefix)
            if prefix:
                if start is None or start < prefix:
                    start = prefix
                pend = prefix_end(prefix)
                if pend is not None and (end is None or end > pend):
                    end = pend
        seq, mem, imms, version = self._read_state(snapshot)
        if start is not None and end is not None and start >= end:
            return iter(())
        # An empty memtable (usual right after a flush) is skipped: its iterator's locked SortedList probe
        # was ~1 us of a ~6 us scan setup. Safe for the active one: entries are added before ``seq``
        # is published, so one that is empty now holds nothing this scan may see.
        mems = [m for m in (mem, *imms) if len(m)]
        tombs = self._tombstones(mem, imms, version)
        if self._scan_kernel and all(type(m) is NativeMemTable for m in mems):
            cache = self._cache if isinstance(self._cache, NativeBlockCache) else None
            if _VIEW_SCANS:
                vp = self._probe_of(version)
                if vp[1].all_os:
                    # The kernel positions every table source and walks the levels' tables itself.
                    return native_scan_view(mems, vp[1], vp[2], start, end, reverse, seq, tombs,
                                            self._read_blob, version, self)
            table_sources: list[list[FileMeta]] = []
            for level, files in enumerate(version.levels):
                if not files:
                    continue
                chosen = version.files_in_range(level, start, end)
                if level == 0:
                    table_sources.extend([f] for f in chosen)
                elif chosen:
                    table_sources.append(chosen)
            # One generator (native_scan translates read errors itself): a layer less per entry.
            return native_scan(mems, table_sources, self._table, start, end, reverse, seq, tombs,
                               self._read_blob, version, cache)
        cut = self._memtable_cut(version, start, end, reverse) if mems else None
        sources: list[Iterator[tuple[bytes, int, int, bytes]]] = [
            _memtable_entries(m, start, end, cut, reverse) for m in mems
        ]
        for level, files in enumerate(version.levels):
            if not files:
                continue
            chosen = version.files_in_range(level, start, end)
            if level == 0:
                for f in chosen:
                    t = self._table(f)
                    sources.append(t.entries_reverse(start, end) if reverse else t.entries(start, end))
            elif chosen:
                sources.append(self._level_entries(chosen, start, end, reverse))
        return self._scan_iter(sources, reverse, seq, tombs, version)

    def _memtable_cut(self, version: Version, start: bytes | None, end: bytes | None,
                      reverse: bool) -> bytes | None:
        """A key a little way past the seek position, where a scan's memtable iterators are split.

        A memtable iterator copies up to 256 versions out of the C skiplist per call (~64 KiB with 1 KiB
        values), but a seek + next 50 takes only the memtable's share of 50 entries: splitting its range
        at this key makes the first copy just that stretch (the rest is read only if the scan gets
        there). The key is the index key ``_MEMTABLE_CUT_BLOCKS`` data blocks past the seek position in
        the table that holds it in the level >= 1 with the most bytes (the largest source, so the
        stretch holds a few blocks of that table's keys; a small level's blocks can span most of the
        key space). None (no split) for a scan from an open end, or when no such key lies strictly
        inside the scanned range.
        """
        key = end if reverse else start
        if key is None:
            return None
        # The largest level first; else any level with a table in range (a reverse seek below the
        # first file of L1 was ~12% of the bench's reverse seeks; L0 tables serve as well).
        files: list[FileMeta] = []
        for level in (version.largest_level, *range(len(version.levels))):
            files = version.files_in_range(level, start, end)
            if files:
                break
        else:
            return None
        index = self._table(files[-1] if reverse else files[0]).index_user_keys
        if not index:
            return None
        # Within the table nearest the seek position (a shorter stretch where it ends first: the rest
        # of the memtable's range is opened when the scan gets there).
        last = len(index) - 1
        i = min(bisect.bisect_left(index, key), last)
        cut = index[max(i - _MEMTABLE_CUT_BLOCKS, 0) if reverse else min(i + _MEMTABLE_CUT_BLOCKS, last)]
        if (start is not None and cut <= start) or (end is not None and cut >= end):
            return None
        return cut

    def _scan_iter(self, sources: list[Iterator[tuple[bytes, int, int, bytes]]], reverse: bool, seq: int,
                   tombs: list[tuple[int, bytes, bytes]], version: Version) -> Iterator[tuple[bytes, bytes]]:
        # Holding ``version`` here keeps its files alive for as long as the iterator lives.
        _pin = version  # noqa: F841
        try:
            # Primed here, not in ``scan``: reading the first entries may fail, and must fail lazily.
            merged = merge_entries(prime_sources(sources), reverse)
            yield from visible_entries(merged, seq, reverse, tombs, self._read_blob)
        except LsmError:
            raise
        except OSError as e:
            raise IOFailure(e.errno, f"read failed: {e}") from e

    def _level_entries(self, files: list[FileMeta], start: bytes | None, end: bytes | None,
                       reverse: bool) -> Iterator[tuple[bytes, int, int, bytes]]:
        if reverse:
            return concat(self._table(f).entries_reverse(start, end) for f in reversed(files))
        return concat(self._table(f).entries(start, end) for f in files)
