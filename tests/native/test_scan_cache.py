"""The scan kernel reading table blocks itself through the C block cache (``lsm_scan_set_table``: tables on
OS files) against the model of what a snapshot shows, with no cache, a cache too small to keep a block
(each is evicted while the scan still reads it) and a large one, shared by interleaved scans; and a
corrupt block: reported as Corruption naming the table and offset, after every entry before it, never
cached, again on the next scan."""

from __future__ import annotations

import tempfile
from itertools import islice

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scan_kernel import BOUNDS, Version, layouts, model, read_blob

from lsmmail import native_lib, native_pointget
from lsmmail.engine.errors import Corruption
from lsmmail.engine.fs import OsFileSystem
from lsmmail.engine.keys import KIND_PUT, pack_internal
from lsmmail.engine.sstable import TableBuilder, TableOptions, TableReader

pytestmark = pytest.mark.skipif(not (native_lib.BUILT and native_pointget.READY),
                                reason="the C extension (or its codecs) is not available")

if native_lib.BUILT:
    from lsmmail.engine import scan_native
    from lsmmail.engine.cache import NativeBlockCache
    from lsmmail.engine.memtable_native import NativeMemTable


def build_table(fs: OsFileSystem, d: str, number: int, versions: list[Version], opts: TableOptions,
                cache: NativeBlockCache | None) -> TableReader:
    path = f"{d}/{number:06d}.sst"
    f = fs.create(path)
    b = TableBuilder(f, opts)
    for uk, seq, kind, value in sorted(versions, key=lambda v: (v[0], -v[1])):
        b.add(pack_internal(uk, seq, kind), value)
    b.finish()
    f.close()
    return TableReader.open(fs.open_read(path), number, cache=cache)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.data())
def test_table_mode_matches_model(layout: tuple[list[Version], list[list[int]], int],
                                  data: st.DataObject) -> None:
    versions, places, split = layout
    opts = TableOptions(block_size=data.draw(st.sampled_from([1, 64, 300, 4096])),
                        restart_interval=data.draw(st.integers(1, 16)), compression=data.draw(st.booleans()))
    size = data.draw(st.sampled_from([0, 200, 1 << 20]))
    cache = NativeBlockCache(size, shards=data.draw(st.sampled_from([1, 3]))) if size else None
    fs = OsFileSystem()
    with tempfile.TemporaryDirectory() as d:
        mems = []
        for p in (0, 1):
            m = NativeMemTable(p)
            for i in places[p]:
                uk, seq, kind, value = versions[i]
                m.add(seq, kind, uk, value)
            mems.append(m)
        number = 0
        sources: list[list[TableReader]] = []
        for p in (2, 3):
            if places[p]:
                number += 1
                sources.append([build_table(fs, d, number, [versions[i] for i in places[p]], opts, cache)])
        for p in (4, 5):
            ukeys = sorted({versions[i][0] for i in places[p]})
            tables = []
            for c in range(0, len(ukeys), split):
                chunk = set(ukeys[c : c + split])
                number += 1
                tables.append(build_table(fs, d, number, [versions[i] for i in places[p]
                                                          if versions[i][0] in chunk], opts, cache))
            if tables:
                sources.append(tables)
        tombs = data.draw(st.lists(st.tuples(st.integers(0, len(versions) + 2), st.sampled_from([b"a", b"c"]),
                                             st.sampled_from([b"b", b"k05", b"zz"])), max_size=2))
        scans = []
        for _ in range(3):
            snap = data.draw(st.integers(0, len(versions) + 1))
            start, end = data.draw(BOUNDS), data.draw(BOUNDS)
            reverse = data.draw(st.booleans())
            want = [] if start is not None and end is not None and start >= end else model(
                versions, tombs, snap, start, end, reverse)
            it = scan_native.native_scan(mems, sources, lambda t: t, start, end, reverse, snap,  # type: ignore[arg-type, return-value]
                                         tombs, read_blob, None, cache)
            scans.append((it, want, data.draw(st.sampled_from([None, 1, 3, 50]))))
        # Interleaved: each scan takes an entry in turn, so all hold blocks of the one cache at once.
        got: list[list[tuple[bytes, bytes]]] = [[] for _ in scans]
        live = list(range(len(scans)))
        while live:
            for i in list(live):
                it, want, limit = scans[i]
                if limit is not None and len(got[i]) >= limit:
                    live.remove(i)
                    continue
                nxt = next(it, None)
                if nxt is None:
                    live.remove(i)
                else:
                    got[i].append(nxt)
        for (_, want, limit), g in zip(scans, got, strict=True):
            assert g == want[:limit]
        del scans
        if cache is not None:
            assert cache.usage <= size
        for src in sources:
            for t in src:
                t.close()


def test_cache_survives_its_owner_while_a_scan_holds_blocks() -> None:
    fs = OsFileSystem()
    versions = [(b"k%04d" % i, i + 1, KIND_PUT, b"value %d " % i * 20) for i in range(300)]
    with tempfile.TemporaryDirectory() as d:
        cache = NativeBlockCache(1 << 20)
        t = build_table(fs, d, 1, versions, TableOptions(block_size=512), cache)
        it = scan_native.native_scan([], [[t]], lambda x: x, None, None, False, 1 << 40, [], read_blob,
                                     None, cache)
        first = list(islice(it, 5))
        t._cache = None
        del cache  # the scan's kernel keeps the C cache alive (lsm_bc_ref) while it holds its blocks
        rest = list(it)
        assert first + rest == [(k, v) for k, _, _, v in versions]
        t.close()


@pytest.mark.parametrize("reverse", [False, True])
def test_corrupt_block_in_table_mode(reverse: bool) -> None:
    fs = OsFileSystem()
    versions = [(b"k%04d" % i, i + 1, KIND_PUT, b"value %d " % i * 20) for i in range(400)]
    with tempfile.TemporaryDirectory() as d:
        good = build_table(fs, d, 1, versions, TableOptions(block_size=1024), None)
        offsets, keys = good._offsets, good.index_user_keys
        good.close()
        bad = len(offsets) // 2
        path = f"{d}/000001.sst"
        with open(path, "r+b") as f:
            f.seek(offsets[bad] + 3)
            b = f.read(1)
            f.seek(offsets[bad] + 3)
            f.write(bytes([b[0] ^ 0x5A]))
        cache = NativeBlockCache(1 << 20)
        t = TableReader.open(fs.open_read(path), 1, cache=cache)
        for _ in range(2):
            got = []
            with pytest.raises(Corruption, match=f"000001.sst: .* at offset {offsets[bad]}"):
                for kv in scan_native.native_scan([], [[t]], lambda x: x, None, None, reverse, 1 << 40, [],
                                                  read_blob, None, cache):
                    got.append(kv)
            # Every entry before the bad block came out first (in reverse all but the last: its key's
            # newer versions could still be in the next block back, so it waits for that block).
            before = [(k, v) for k, _, _, v in versions if (k > keys[bad] if reverse else k <= keys[bad - 1])]
            if reverse:
                assert got == before[::-1][: len(got)] and len(got) == len(before) - 1
            else:
                assert got == before
            assert cache.get((1, offsets[bad])) is None
        lo, hi = (keys[bad] + b"\x00", None) if not reverse else (None, keys[bad - 1])
        got = list(scan_native.native_scan([], [[t]], lambda x: x, lo, hi, reverse, 1 << 40, [], read_blob,
                                           None, cache))
        want = [(k, v) for k, _, _, v in versions if (lo is None or k >= lo) and (hi is None or k < hi)]
        assert got == (want[::-1] if reverse else want)
        t.close()
