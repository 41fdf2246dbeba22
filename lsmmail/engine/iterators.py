"""Iterators: merging sorted runs of versions, and turning versions into what a reader sees.

Every source (a memtable, an SSTable, a level of SSTables) yields entries ``(user_key, seq, kind, value)``
in **internal order** (user key ascending, seq descending), or for a reverse scan in the exact reverse of
it (user key descending, seq ascending). :func:`merge_entries` merges such runs; :func:`visible_entries`
keeps, for each user key, the newest version a snapshot may see and drops deleted keys.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from itertools import chain

from .keys import KIND_BLOB, KIND_DELETE

Entry = tuple[bytes, int, int, bytes]
RangeTombstone = tuple[int, bytes, bytes]


def _order(e: Entry) -> tuple[bytes, int]:
    return e[0], -e[1]


def merge_entries(sources: list[Iterator[Entry]], reverse: bool = False) -> Iterator[Entry]:
    """Merge runs that are each in internal order (or each in reverse internal order)."""
    if not sources:
        return iter(())
    if len(sources) == 1:
        return sources[0]
    return heapq.merge(*sources, key=_order, reverse=reverse)


def concat(runs: Iterable[Iterator[Entry]]) -> Iterator[Entry]:
    """Chain runs whose key ranges are disjoint and already in order (the files of one level)."""
    return chain.from_iterable(runs)


def covering_tombstone_seq(tombs: list[RangeTombstone], key: bytes, snapshot_seq: int) -> int:
    """The largest sequence of a range tombstone that covers ``key`` and is visible at ``snapshot_seq``
    (0 if none)."""
    best = 0
    for seq, start, end in tombs:
        if seq <= snapshot_seq and start <= key < end and seq > best:
            best = seq
    return best


def visible_entries(
    merged: Iterator[Entry],
    snapshot_seq: int,
    reverse: bool,
    tombs: list[RangeTombstone],
    read_blob: Callable[[bytes], bytes],
) -> Iterator[tuple[bytes, bytes]]:
    """User-visible ``(key, value)`` pairs at ``snapshot_seq``, from a merged run of versions."""
    tombs = [t for t in tombs if t[0] <= snapshot_seq]
    if not reverse:
        last = None
        for uk, seq, kind, value in merged:
            if seq > snapshot_seq or uk == last:
                continue
            last = uk
            if kind == KIND_DELETE:
                continue
            if tombs and covering_tombstone_seq(tombs, uk, snapshot_seq) > seq:
                continue
            yield uk, (read_blob(value) if kind == KIND_BLOB else value)
        return
    # Reverse: the versions of a key arrive oldest first, so the last visible one wins.
    pending: Entry | None = None
    for e in merged:
        if e[1] > snapshot_seq:
            continue
        if pending is not None and e[0] != pending[0]:
            out = _emit(pending, tombs, snapshot_seq, read_blob)
            if out is not None:
                yield out
        pending = e
    if pending is not None:
        out = _emit(pending, tombs, snapshot_seq, read_blob)
        if out is not None:
            yield out


def _emit(
    e: Entry, tombs: list[RangeTombstone], snapshot_seq: int, read_blob: Callable[[bytes], bytes]
) -> tuple[bytes, bytes] | None:
    uk, seq, kind, value = e
    if kind == KIND_DELETE:
        return None
    if tombs and covering_tombstone_seq(tombs, uk, snapshot_seq) > seq:
        return None
    return uk, (read_blob(value) if kind == KIND_BLOB else value)
