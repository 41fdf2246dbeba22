"""Shared by the native memtable tests: building a batch from generated operations, and the check that
the C memtable agrees with its pure twin (lsmmail/engine/memtable.py) on everything a reader can see."""

from __future__ import annotations

from collections.abc import Iterable

from lsmmail.engine.batch import WriteBatch
from lsmmail.engine.compaction import drop_hidden
from lsmmail.engine.keys import pack_internal
from lsmmail.engine.memtable import MemTable
from lsmmail.engine.memtable_native import NativeMemTable


def batch_of(ops: list[tuple[str, bytes, bytes]]) -> WriteBatch:
    """A batch of ``("put", key, value)``, ``("del", key, _)`` and ``("range", start, end)`` operations (a
    range whose start does not sort before its end is left out)."""
    b = WriteBatch()
    for op, k, v in ops:
        if op == "put":
            b.put(k, v)
        elif op == "del":
            b.delete(k)
        elif k < v:
            b.delete_range(k, v)
    return b


def visibility_changes(b: MemTable, top: int) -> list[int]:
    """Every snapshot at which what ``b`` shows can change: each entry's sequence number and the one
    below it, 0, and past ``top`` (the newest sequence number)."""
    seqs = {s for _, s, _, _ in b.entries()}
    return sorted({0, top, top + 1, top + 5} | seqs | {s - 1 for s in seqs})


def assert_agree(a: NativeMemTable, b: MemTable, bounds: list[tuple[bytes | None, bytes | None]],
                 snaps: Iterable[int]) -> None:
    """``a`` and ``b`` hold the same versions: full and bounded scans both ways, a get of every key (and
    of each bound) at each of ``snaps``, range tombstones, flush runs, sizes."""
    want = list(b.entries())
    assert list(a.entries()) == want
    assert list(a.entries_reverse()) == list(b.entries_reverse())
    for lo, hi in bounds:
        assert list(a.entries(lo, hi)) == list(b.entries(lo, hi))
        assert list(a.entries_reverse(lo, hi)) == list(b.entries_reverse(lo, hi))
    keys = {k for k, _, _, _ in want} | {lo for lo, _ in bounds if lo is not None}
    snaps = list(snaps)
    for k in keys:
        for snap in snaps:
            assert a.get(k, snap) == b.get(k, snap)
    assert a.range_tombstones == b.range_tombstones
    # flush_runs = drop_hidden over the entries with no snapshot and no tombstone, as internal keys.
    flat = [(k, v) for ks, vs in a.flush_runs() for k, v in zip(ks, vs, strict=True)]
    assert flat == [(k, v) for ks, vs in b.flush_runs() for k, v in zip(ks, vs, strict=True)]
    kept = drop_hidden(want, [], False, [], lambda e: None)
    assert flat == [(pack_internal(k, s, kind), v) for k, s, kind, v in kept]
    assert (len(a), a.approximate_size, a.largest_seq) == (len(b), b.approximate_size, b.largest_seq)
