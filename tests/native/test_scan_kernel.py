"""The C scan kernel (native/scan.c via ``engine.scan_native.native_scan``) against its pure twin
(``iterators.visible_entries(merge_entries(...))`` over the memtables' and tables' own iterators) and
against a model of what a snapshot shows; and its block decoder on malformed blocks against the strict
Python decoder."""

from __future__ import annotations

from itertools import islice

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native_lib
from lsmmail.engine.block import BlockBuilder, decode_data_block_spans_py
from lsmmail.engine.cache import BlockCache
from lsmmail.engine.errors import Corruption
from lsmmail.engine.fs import MemFileSystem
from lsmmail.engine.iterators import concat, merge_entries, prime_sources, visible_entries
from lsmmail.engine.keys import KIND_BLOB, KIND_DELETE, KIND_PUT, pack_internal
from lsmmail.engine.sstable import TableBuilder, TableOptions, TableReader

pytestmark = pytest.mark.skipif(not native_lib.BUILT, reason="the C extension is not built")

if native_lib.BUILT:
    from lsmmail.engine import scan_native
    from lsmmail.engine.memtable_native import NativeMemTable

Version = tuple[bytes, int, int, bytes]  # (user key, seq, kind, value)

KEYS = [b"a", b"ab", b"abc", b"b", b"b\x00", b"c", b"c\xff", b"d"] + [b"k%02d" % i for i in range(16)]
BOUNDS = st.one_of(st.none(), st.sampled_from(KEYS + [b"0", b"k", b"k07x", b"zz"]))


def read_blob(ref: bytes) -> bytes:
    return b"blob:" + ref


def model(versions: list[Version], tombs: list[tuple[int, bytes, bytes]], snap: int, start: bytes | None,
          end: bytes | None, reverse: bool) -> list[tuple[bytes, bytes]]:
    newest: dict[bytes, Version] = {}
    for v in versions:
        if v[1] <= snap and (v[0] not in newest or v[1] > newest[v[0]][1]):
            newest[v[0]] = v
    out = []
    for uk in sorted(newest, reverse=reverse):
        _, seq, kind, value = newest[uk]
        if (start is not None and uk < start) or (end is not None and uk >= end) or kind == KIND_DELETE:
            continue
        if any(s <= snap and s > seq and a <= uk < b for s, a, b in tombs):
            continue
        out.append((uk, read_blob(value) if kind == KIND_BLOB else value))
    return out


def build_table(fs: MemFileSystem, number: int, versions: list[Version], opts: TableOptions,
                cache: BlockCache | None, verify: bool = True) -> TableReader:
    path = f"/db/{number:06d}.sst"
    f = fs.create(path)
    b = TableBuilder(f, opts)
    for uk, seq, kind, value in sorted(versions, key=lambda v: (v[0], -v[1])):
        b.add(pack_internal(uk, seq, kind), value)
    b.finish()
    f.close()
    return TableReader.open(fs.open_read(path), number, cache=cache, verify_checksums=verify)


value_st = st.one_of(st.binary(max_size=6), st.binary(min_size=30, max_size=200),
                     st.integers(1, 40).map(lambda n: b"re: lunch " * n))
version_st = st.tuples(st.sampled_from(KEYS), st.sampled_from([KIND_PUT, KIND_PUT, KIND_DELETE, KIND_BLOB]),
                       value_st, st.integers(0, 5))


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[Version], list[list[int]], int]:
    """Versions with distinct sequence numbers, each assigned to one of 6 places: 0-1 memtables, 2-3 L0
    tables, 4 a level of tables (split at key boundaries), 5 a second level."""
    raw = draw(st.lists(version_st, max_size=120))
    versions = []
    places: list[list[int]] = [[] for _ in range(6)]
    for seq, (uk, kind, value, place) in enumerate(raw, start=1):
        if kind == KIND_BLOB and place < 2:
            kind = KIND_PUT  # memtables hold no blob references
        versions.append((uk, seq, kind, b"" if kind == KIND_DELETE else value))
        places[place].append(seq - 1)
    return versions, places, draw(st.integers(1, 5))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.data())
def test_kernel_matches_twin_and_model(layout: tuple[list[Version], list[list[int]], int],
                                       data: st.DataObject) -> None:
    versions, places, split = layout
    opts = TableOptions(block_size=data.draw(st.sampled_from([1, 64, 300, 4096])),
                        restart_interval=data.draw(st.integers(1, 16)), compression=data.draw(st.booleans()))
    cache = data.draw(st.sampled_from([None, BlockCache(2048), BlockCache(1 << 20)]))
    fs = MemFileSystem()
    fs.makedirs("/db")
    mems = []
    for p in (0, 1):
        m = NativeMemTable(p)
        for i in places[p]:
            uk, seq, kind, value = versions[i]
            m.add(seq, kind, uk, value)
        mems.append(m)
    number = 0
    l0: list[TableReader] = []
    for p in (2, 3):
        if places[p]:
            number += 1
            l0.append(build_table(fs, number, [versions[i] for i in places[p]], opts, cache))
    levels: list[list[TableReader]] = []
    for p in (4, 5):
        # Cut the level's user keys into runs of ``split`` keys: one table each, disjoint and ascending.
        ukeys = sorted({versions[i][0] for i in places[p]})
        tables = []
        for c in range(0, len(ukeys), split):
            chunk = set(ukeys[c : c + split])
            number += 1
            tables.append(build_table(fs, number, [versions[i] for i in places[p] if versions[i][0] in chunk],
                                      opts, cache))
        if tables:
            levels.append(tables)
    tombs = data.draw(st.lists(st.tuples(st.integers(0, len(versions) + 2), st.sampled_from(KEYS),
                                         st.sampled_from(KEYS + [b"zz"])).filter(lambda t: t[1] < t[2]),
                               max_size=3))
    for _ in range(4):
        snap = data.draw(st.integers(0, len(versions) + 1))
        start, end = data.draw(BOUNDS), data.draw(BOUNDS)
        reverse = data.draw(st.booleans())
        limit = data.draw(st.sampled_from([None, 1, 3, 50]))
        want = model(versions, tombs, snap, start, end, reverse)
        if start is not None and end is not None and start >= end:
            want = []
        else:
            if reverse:
                pure_src = [m.entries_reverse(start, end) for m in mems]
                pure_src += [t.entries_reverse(start, end) for t in l0]
                pure_src += [concat(t.entries_reverse(start, end) for t in reversed(lv)) for lv in levels]
            else:
                pure_src = [m.entries(start, end) for m in mems]
                pure_src += [t.entries(start, end) for t in l0]
                pure_src += [concat(t.entries(start, end) for t in lv) for lv in levels]
            pure = list(visible_entries(merge_entries(prime_sources(pure_src), reverse), snap, reverse, tombs,
                                        read_blob))
            assert pure == want
        got_it = scan_native.native_scan(mems, [[t] for t in l0] + levels, lambda t: t, start, end,  # type: ignore[list-item, arg-type, return-value]
                                         reverse, snap, tombs, read_blob)
        assert list(islice(got_it, limit)) == want[:limit]


def test_kernel_pages_large_values_and_interleaved_scans() -> None:
    """Values larger than the page buffer grow it; two scans interleaved on one thread (sharing the
    per-thread page buffers) each stay exact."""
    m = NativeMemTable(1)
    big = {b"k%03d" % i: bytes([i]) * (300_000 if i % 7 == 0 else 700) for i in range(60)}
    for seq, (k, v) in enumerate(big.items(), start=1):
        m.add(seq, KIND_PUT, k, v)
    want = sorted(big.items())
    a = scan_native.native_scan([m], [], lambda t: t, None, None, False, 100, [], read_blob)
    b = scan_native.native_scan([m], [], lambda t: t, None, None, True, 100, [], read_blob)
    got_a, got_b = [], []
    for x, y in zip(a, b, strict=True):
        got_a.append(x)
        got_b.append(y)
    assert got_a == want
    assert got_b == want[::-1]


def _set_block(raw: bytes) -> int:
    lib, ffi = native_lib._lib, native_lib._ffi
    ctx = ffi.gc(lib.lsm_scan_new(1, 0, 1 << 55, ffi.NULL, 0, ffi.NULL, 0), lib.lsm_scan_free)
    return int(lib.lsm_scan_set_block(ctx, 0, raw, len(raw)))


def _data_block(n: int, ri: int) -> bytes:
    b = BlockBuilder(ri)
    for i in range(n):
        b.add(pack_internal(b"key%03d" % i, 100 - i, KIND_PUT), b"v" * (i % 5))
    return b.finish()


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 20), st.integers(1, 4), st.data())
def test_set_block_rejects_what_the_strict_decoder_rejects(n: int, ri: int, data: st.DataObject) -> None:
    raw = bytearray(_data_block(n, ri))
    how = data.draw(st.sampled_from(["flip", "truncate", "garbage"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        raw = bytearray(data.draw(st.binary(max_size=64)))
    try:
        entries = len(decode_data_block_spans_py(bytes(raw))[0])
    except Corruption:
        entries = -1
    assert _set_block(bytes(raw)) == entries


class FlippedFile:
    """A readable file with one byte changed (so a stored block fails its checksum)."""

    def __init__(self, inner, at: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.at = inner, at

    def read_at(self, offset: int, n: int) -> bytes:
        data = bytearray(self.inner.read_at(offset, n))
        if offset <= self.at < offset + len(data):
            data[self.at - offset] ^= 0x5A
        return bytes(data)

    def size(self) -> int:
        return int(self.inner.size())

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("reverse", [False, True])
def test_corrupt_block_raises_and_is_not_cached(reverse: bool) -> None:
    fs = MemFileSystem()
    fs.makedirs("/db")
    versions = [(b"k%04d" % i, i + 1, KIND_PUT, b"value %d " % i * 20) for i in range(400)]
    good = build_table(fs, 1, versions, TableOptions(block_size=1024), None)
    offsets = good._offsets
    bad_block = len(offsets) // 2
    cache = BlockCache(1 << 20)
    t = TableReader.open(FlippedFile(fs.open_read("/db/000001.sst"), offsets[bad_block] + 3), 1, cache=cache)
    with pytest.raises(Corruption, match="000001.sst"):
        list(scan_native.native_scan([], [[t]], lambda x: x, None, None, reverse, 1 << 40, [], read_blob))
    assert cache.get((1, offsets[bad_block])) is None
    # A scan that stays clear of the bad block is exact.
    keys = good.index_user_keys
    lo, hi = (keys[bad_block] + b"\x00", None) if not reverse else (None, keys[bad_block - 1])
    got = list(scan_native.native_scan([], [[t]], lambda x: x, lo, hi, reverse, 1 << 40, [], read_blob))
    want = [(k, v) for k, _, _, v in versions if (lo is None or k >= lo) and (hi is None or k < hi)]
    assert got == (want[::-1] if reverse else want)
