"""The engine's native fast paths against its pure-Python behaviour, through the public table API."""

from __future__ import annotations

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.cache import BlockCache
from lsmmail.engine.fs import MemFileSystem, ReadableFile
from lsmmail.engine.iterators import merge_entries
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, pack_internal
from lsmmail.engine.sstable import TableBuilder, TableOptions, TableReader

Entry = tuple[bytes, int, int, bytes]


class CountingFile:
    def __init__(self, inner: ReadableFile) -> None:
        self.inner = inner
        self.reads = 0

    def read_at(self, offset: int, n: int) -> bytes:
        self.reads += 1
        return self.inner.read_at(offset, n)

    def size(self) -> int:
        return self.inner.size()

    def close(self) -> None:
        self.inner.close()


def _entries() -> list[Entry]:
    seen: dict[tuple[bytes, int], Entry] = {}
    for i in range(3000):
        kind = KIND_PUT if i % 5 else KIND_DELETE
        uk = b"k%04d" % (i % 700)
        seen[(uk, i)] = (uk, i, kind, b"" if kind == KIND_DELETE else b"v%d" % i)
    return sorted(seen.values(), key=lambda e: (e[0], -e[1]))


def _model_get(entries: list[Entry], key: bytes, snap: int) -> tuple[int, int, bytes] | None:
    for uk, seq, kind, value in entries:
        if uk == key and seq <= snap:
            return seq, kind, value
    return None


def test_point_reads_and_scans_share_cached_blocks() -> None:
    # Point reads may cache a block's raw payload (C lookup) and scans its decoded form; each must read
    # what the other cached, and every answer must match the model, across many versions per key.
    entries = _entries()
    fs = MemFileSystem()
    fs.makedirs("/db")
    out = fs.create("/db/000001.sst")
    builder = TableBuilder(out, TableOptions(block_size=512))
    for uk, seq, kind, value in entries:
        builder.add(pack_internal(uk, seq, kind), value)
    builder.finish()
    out.close()
    f = CountingFile(fs.open_read("/db/000001.sst"))
    reader = TableReader.open(f, 1, cache=BlockCache(1 << 22))
    rnd = random.Random(7)
    for _round in range(3):
        for _ in range(400):
            key = b"k%04d" % rnd.randrange(720)
            snap = rnd.randrange(3100)
            assert reader.get(key, snap) == _model_get(entries, key, snap)
        start = b"k%04d" % rnd.randrange(700)
        assert list(reader.entries(start)) == [e for e in entries if e[0] >= start]
        assert list(reader.entries_reverse(None, start)) == [e for e in entries if e[0] < start][::-1]
    before = f.reads
    assert list(reader.entries()) == entries
    assert reader.get(b"k0001", 3100) == _model_get(entries, b"k0001", 3100)
    assert f.reads == before  # everything came from the cache, in whichever form it was put there


run_st = st.lists(st.tuples(st.binary(max_size=3), st.integers(0, 6)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(run_st, min_size=1, max_size=6), st.booleans())
def test_two_way_merge_tree_matches_heapq(runs: list[list[tuple[bytes, int]]], reverse: bool) -> None:
    # Sources in (reverse) internal order, tagged with their source number so ties are observable.
    sources = []
    for r, run in enumerate(runs):
        es = sorted({(k, s): (k, s, r, b"") for k, s in run}.values(), key=lambda e: (e[0], -e[1]))
        sources.append(es[::-1] if reverse else es)
    got = list(merge_entries([iter(s) for s in sources], reverse))
    expect = list(heapq.merge(*sources, key=lambda e: (e[0], -e[1]), reverse=reverse))
    assert got == expect


@st.composite
def _table_inputs(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], TableOptions]:
    prefix = draw(st.binary(max_size=draw(st.sampled_from([0, 8, 200]))))
    users = sorted(set(draw(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=120))))
    entries = []
    seq = 10**6
    for u in users:
        for _ in range(draw(st.integers(1, 3))):
            value = draw(st.binary(max_size=draw(st.sampled_from([0, 10, 300, 5000]))))
            kind = draw(st.sampled_from([KIND_PUT, KIND_DELETE]))
            entries.append((pack_internal(prefix + u, seq, kind), value))
            seq -= 1
    opts = TableOptions(block_size=draw(st.sampled_from([1, 64, 256, 4096, 16384])),
                        restart_interval=draw(st.sampled_from([1, 2, 16])),
                        compression=draw(st.booleans()))
    return entries, opts


def _build(entries: list[tuple[bytes, bytes]], opts: TableOptions, native: bool) -> bytes:
    fs = MemFileSystem()
    fs.makedirs("/t")
    f = fs.create("/t/x.sst")
    b = TableBuilder(f, opts)
    if not native:
        b._encode = None  # the pure BlockBuilder path, as with LSMMAIL_PURE=1
    for k, v in entries:
        b.add(k, v)
    b.finish()
    return fs.read_file("/t/x.sst")


@settings(max_examples=150, deadline=None)
@given(_table_inputs())
def test_native_table_building_is_byte_identical_to_pure(
    inputs: tuple[list[tuple[bytes, bytes]], TableOptions],
) -> None:
    """Blocks must be cut at exactly the same entries either way (format v1 is frozen)."""
    entries, opts = inputs
    assert _build(entries, opts, native=True) == _build(entries, opts, native=False)
