"""The read path on OS files, where C reads table blocks itself through the C block cache: ``DB.scan`` on
the kernel's version view (``native_scan_view``: sources positioned and levels walked in C) against the
pure-Python merge and a dict model; ``DB.get`` of values larger than the thread's value buffer; the cache
shared by gets and scans, emptied of nothing it should hold; and ``LSMMAIL_PURE``'s twin cache."""

from __future__ import annotations

import tempfile
from itertools import islice

import pytest
from _helpers import apply_step, tiny_options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scan_native import model_scan, ops, scans

from lsmmail.engine import point_reads
from lsmmail.engine import scan as scan_module
from lsmmail.engine.cache import BlockCache, NativeBlockCache, new_block_cache
from lsmmail.engine.db import DB
from lsmmail.engine.fs import OsFileSystem

needs_c = pytest.mark.skipif(not point_reads._VERSION_PROBE, reason="the C read path is not available")


@needs_c
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=8, max_size=50), st.lists(scans, min_size=1, max_size=5),
       st.sampled_from([0, 300, 1 << 20]))
def test_view_scans_on_os_files_match_pure_scans_and_model(history: list, queries: list,  # type: ignore[type-arg]
                                                           cache_size: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = DB.open(d, tiny_options(OsFileSystem(), memtable_size=400, max_immutable_memtables=1000,
                                     block_cache_size=cache_size))
        model: dict[bytes, bytes] = {}
        snaps = []
        inline = db._run_inline_work
        try:
            for op, arg in history:
                if op == "hold":
                    db._run_inline_work = (lambda: None) if arg else inline  # type: ignore[method-assign]
                elif not apply_step(db, model, op, arg):
                    snaps.append((db.snapshot(), dict(model)))
            for start, end, prefix, reverse, limit in queries:
                for snap, state in [(None, model)] + snaps:
                    want = model_scan(state, start, end, prefix, reverse)[:limit]
                    db._scan_kernel = True
                    got = list(islice(db.scan(start, end, prefix=prefix, reverse=reverse, snapshot=snap),
                                      limit))
                    db._scan_kernel = False
                    pure = list(islice(db.scan(start, end, prefix=prefix, reverse=reverse, snapshot=snap),
                                       limit))
                    assert got == want
                    assert pure == want
        finally:
            db._run_inline_work = inline  # type: ignore[method-assign]
            for s, _ in snaps:
                s.release()
            db.close()


@needs_c
def test_os_file_scans_run_the_view_kernel_and_share_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = scan_module.native_scan_view

    def spy(mems, probe, *rest):  # type: ignore[no-untyped-def]
        calls.append(probe.nsources)
        return real(mems, probe, *rest)

    monkeypatch.setattr(scan_module, "native_scan_view", spy)
    with tempfile.TemporaryDirectory() as d:
        db = DB.open(d, tiny_options(OsFileSystem(), memtable_size=4096, block_size=256, min_blob_size=None))
        try:
            for i in range(600):
                db.put(b"k%04d" % (i % 300), b"v%d" % i * 10)
            db.compact_range()
            for i in range(10):
                db.put(b"k%04d" % (i * 5), b"w%d" % i)
            assert isinstance(db._cache, NativeBlockCache)
            got = list(islice(db.scan(b"k0040"), 50))
            assert [k for k, _ in got] == [b"k%04d" % i for i in range(40, 90)]
            assert dict(got)[b"k0045"] == b"w9"
            assert calls and calls[-1] >= 1
            before = db._cache.stats
            assert before.entries > 0
            # A get of a key the scan read comes from the blocks the scan cached.
            assert db.get(b"k0060") == b"v%d" % 360 * 10
            after = db._cache.stats
            assert after.hits == before.hits + 1 and after.misses == before.misses
            got = list(db.scan(end=b"k0290", reverse=True))
            assert [k for k, _ in got] == [b"k%04d" % i for i in range(289, -1, -1)]
        finally:
            db.close()


@needs_c
def test_get_of_values_larger_than_the_value_buffer() -> None:
    big = {b"a": b"x" * 70_000, b"b": bytes(range(256)) * 1000, b"c": b"small"}
    with tempfile.TemporaryDirectory() as d:
        db = DB.open(d, tiny_options(OsFileSystem(), memtable_size=1 << 20, min_blob_size=None))
        try:
            for k, v in big.items():
                db.put(k, v)
            for k, v in big.items():  # from the memtable
                assert db.get(k) == v
            db.flush()
            for _ in range(2):  # from the tables (read, then cached)
                for k, v in big.items():
                    assert db.get(k) == v
        finally:
            db.close()


def test_new_block_cache_picks_the_twin_or_none() -> None:
    assert new_block_cache(0) is None
    c = new_block_cache(1 << 20)
    assert isinstance(c, NativeBlockCache if point_reads._lib is not None else BlockCache)


@needs_c
@pytest.mark.parametrize("reverse", [False, True])
def test_view_scan_reports_a_corrupt_block_every_time(tmp_path, reverse: bool) -> None:  # type: ignore[no-untyped-def]
    from lsmmail.engine.errors import Corruption
    from lsmmail.engine.sstable import TableReader

    opts = {"block_size": 1024, "memtable_size": 1 << 20, "target_file_size": 1 << 20, "min_blob_size": None}
    db = DB.open(str(tmp_path), tiny_options(OsFileSystem(), **opts))
    for i in range(200):
        db.put(b"k%03d" % i, b"v%03d" % i * 5)
    db.flush()
    db.close()
    sst = sorted(tmp_path.glob("*.sst"))[0]
    t = TableReader.open(OsFileSystem().open_read(str(sst)), 0)
    mid = t.num_data_blocks // 2
    offset = t._offsets[mid]
    t.close()
    data = bytearray(sst.read_bytes())
    data[offset + 3] ^= 0x40
    sst.write_bytes(bytes(data))
    db = DB.open(str(tmp_path), tiny_options(OsFileSystem(), **opts))
    try:
        for _ in range(2):
            got = []
            with pytest.raises(Corruption, match=f"{sst.name}: .* at offset {offset}"):
                for kv in db.scan(reverse=reverse):
                    got.append(kv)
            assert got and all(v == k.replace(b"k", b"v") * 5 for k, v in got)
        assert db.get(b"k000") == b"v000" * 5
    finally:
        db.close()


@needs_c
def test_a_view_scan_left_open_across_close_raises_db_closed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lsmmail.engine.errors import DBClosed

    db = DB.open(str(tmp_path), tiny_options(OsFileSystem(), block_size=256, min_blob_size=None))
    for i in range(300):
        db.put(b"k%04d" % i, b"v" * 50)
    db.compact_range()
    it = db.scan()
    assert next(it)[0] == b"k0000"
    db.close()
    with pytest.raises(DBClosed):
        list(it)


@pytest.mark.parametrize("os_files", [True, False])
def test_tables_deleted_by_compaction_leave_the_cache(tmp_path, os_files: bool) -> None:  # type: ignore[no-untyped-def]
    from lsmmail.engine.fs_mem import MemFileSystem

    fs = OsFileSystem() if os_files else MemFileSystem()
    db = DB.open(str(tmp_path / "db"), tiny_options(fs, memtable_size=2000, min_blob_size=None,
                                                    block_cache_size=1 << 20))
    try:
        for i in range(300):
            db.put(b"k%05d" % i, b"v%d" % i)
            if i % 60 == 59:
                db.flush()
        before = {f.number for f in db._current.files()}
        assert all(db.get(b"k%05d" % i) == b"v%d" % i for i in range(300))
        assert len(db._cache) > 0
        db.compact_range()
        assert not before & {f.number for f in db._current.files()}  # every table was rewritten
        assert len(db._cache) == 0  # nothing read since: the old tables' blocks are all gone
        assert all(db.get(b"k%05d" % i) == b"v%d" % i for i in range(300))
    finally:
        db.close()


@needs_c
def test_reads_alternating_raw_and_lz4_blocks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A block read from a file goes straight into its cache entry when the last one read was stored raw,
    and through a buffer otherwise (native/pointget.c, lsm_block_fetch): reads that alternate between
    raw blocks (random values) and LZ4 blocks (repetitive ones), with a cache too small to keep any,
    take both ways in both orders and return the model's values; a corrupt block of either kind is
    reported whichever kind was read before it."""
    import random

    from lsmmail.engine.errors import Corruption
    from lsmmail.engine.sstable import TableReader

    rnd = random.Random(7)
    model = {b"r%04d" % i: rnd.randbytes(200) for i in range(150)}
    model.update({b"z%04d" % i: b"%04d" % i * 50 for i in range(150)})
    opts = {"block_size": 1024, "memtable_size": 1 << 20, "target_file_size": 1 << 20, "min_blob_size": None,
            "block_cache_size": 300}
    db = DB.open(str(tmp_path), tiny_options(OsFileSystem(), **opts))
    for k, v in model.items():
        db.put(k, v)
    db.flush()
    db.close()
    [sst] = sorted(tmp_path.glob("*.sst"))
    data = bytearray(sst.read_bytes())
    t = TableReader.open(OsFileSystem().open_read(str(sst)), 0)
    kinds = {data[off + size] for off, size in zip(t._offsets, t._sizes, strict=True)}
    assert kinds == {0, 1}  # both raw and LZ4 blocks in the table
    raw_blocks = [i for i, (o, n) in enumerate(zip(t._offsets, t._sizes, strict=True)) if data[o + n] == 0]
    lz4_blocks = [i for i, (o, n) in enumerate(zip(t._offsets, t._sizes, strict=True)) if data[o + n] == 1]
    assert len(raw_blocks) >= 2 and len(lz4_blocks) >= 2
    raw_block, lz4_block = raw_blocks[1], lz4_blocks[0]  # to corrupt
    # A key of a block: its index key, the block's last user key. Two blocks of each kind stay good.
    block_key = {b: t.index_user_keys[b] for b in (raw_blocks[0], raw_block, lz4_block, lz4_blocks[1])}
    t.close()

    db = DB.open(str(tmp_path), tiny_options(OsFileSystem(), **opts))
    try:
        keys = list(model)
        order = [keys[i % 2 * 150 + i // 2] for i in range(300)]  # r, z, r, z, ...: the kind alternates
        order += rnd.sample(keys, len(keys))
        assert [db.get(k) for k in order] == [model[k] for k in order]
        assert list(db.scan()) == sorted(model.items())
        assert list(db.scan(reverse=True)) == sorted(model.items(), reverse=True)
    finally:
        db.close()

    for b in (raw_block, lz4_block):
        o = t._offsets[b]
        data[o + 1] ^= 0x40
    sst.write_bytes(bytes(data))
    db = DB.open(str(tmp_path), tiny_options(OsFileSystem(), **opts))
    try:
        for before in (block_key[raw_blocks[0]], block_key[lz4_blocks[1]]):
            for b in (raw_block, lz4_block):
                assert db.get(before) == model[before]  # sets the hint to that block's kind
                with pytest.raises(Corruption, match=f"{sst.name}: .* at offset {t._offsets[b]}"):
                    db.get(block_key[b])
    finally:
        db.close()
