"""Point reads through the C path (``PointReads._lookup_native``: memtables, range checks, bloom probes and
index searches in one ``lsm_point_get`` call, cache-missing blocks loaded in one call) against the
per-table Python path, on random histories over tiny options (memtables, several L0 tables, deeper
levels, blob references, range tombstones), with extra immutable memtables, at every sequence number
that matters, on the in-memory file system (``read_at``) and on the OS one (``pread`` in C).
"""

from __future__ import annotations

import tempfile

import pytest
from _helpers import HISTORY_KEYS, MEM_DIR, history_entries, tiny_options, to_batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native_pointget
from lsmmail.engine import point_reads
from lsmmail.engine.db import DB
from lsmmail.engine.errors import Corruption
from lsmmail.engine.fs import OsFileSystem
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT
from lsmmail.engine.memtable_native import NativeMemTable
from lsmmail.engine.sstable import TableReader

pytestmark = pytest.mark.skipif(not point_reads._VERSION_PROBE,
                                reason="the C point-read path is not available")

KEYS = HISTORY_KEYS
PROBES = KEYS + [b"", b"0", b"aa", b"missing", b"zz"]
entries = history_entries
ops = st.one_of(
    st.tuples(st.just("write"), st.lists(entries, min_size=1, max_size=6)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("compact"), st.none()),
)
puts = st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from([KIND_PUT, KIND_DELETE]),
                          st.binary(max_size=8)), max_size=8)


def _python_lookup(db: DB, key: bytes, seq: int, mem, imms, version):  # type: ignore[no-untyped-def]
    found = mem.get(key, seq)
    if found is None:
        for imm in reversed(imms):
            found = imm.get(key, seq)
            if found is not None:
                return found
        return db._get_from_version(version, key, seq)
    return found


def _memtable(seq: int, items: list[tuple[bytes, int, bytes]]) -> NativeMemTable:
    m = NativeMemTable(0)
    if items:
        m.add_batch(seq, [(kind, k, v if kind == KIND_PUT else b"") for k, kind, v in items])
    return m


def _check(db: DB, extra: list[list[tuple[bytes, int, bytes]]]) -> None:
    seq, mem, imms, version = db._read_state(None)
    # Extra immutable memtables (oldest first, as the DB holds them) above the DB's sequence numbers, then
    # the DB's own active memtable as the newest.
    tables, s = [], seq + 1
    for items in extra:
        tables.append(_memtable(s, items))
        s += len(items)
    imms = (*imms, *tables)
    for probe_seq in sorted({0, 1, seq // 2, seq, seq + 1, s - 1, s + 3}):
        for k in PROBES:
            if not k:
                continue
            assert db._lookup_native(k, probe_seq, mem, imms, version) == _python_lookup(
                db, k, probe_seq, mem, imms, version)


def _run(db: DB, history: list, extra: list) -> None:  # type: ignore[type-arg]
    for op, arg in history:
        if op == "write":
            db.write(to_batch(arg))
        elif op == "flush":
            db.flush()
        else:
            db.compact_range()
        _check(db, [])
    _check(db, extra)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=25), st.lists(puts, max_size=3))
def test_native_lookup_matches_python_lookup(history: list, extra: list) -> None:  # type: ignore[type-arg]
    db = DB.open(MEM_DIR, tiny_options())
    try:
        _run(db, history, extra)
    finally:
        db.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=5, max_size=25), st.lists(puts, max_size=2))
def test_native_lookup_on_os_files(history: list, extra: list) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as d:
        db = DB.open(d, tiny_options(fs=OsFileSystem()))
        try:
            _run(db, history, extra)
        finally:
            db.close()


def test_corrupt_data_block_raises_on_get(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A flipped byte in a data block other than the first (which opening the table reads): the C load
    # reports it (checksum) and never returns other data; the block is not cached, so a second read
    # reports it again, and keys of intact blocks still read.
    opts = {"block_size": 1024, "memtable_size": 1 << 20, "target_file_size": 1 << 20, "min_blob_size": None}
    db = DB.open(str(tmp_path), tiny_options(fs=OsFileSystem(), **opts))
    for i in range(200):
        db.put(b"k%03d" % i, b"v%03d" % i * 5)
    db.flush()
    db.close()
    sst = sorted(tmp_path.glob("*.sst"))[0]
    t = TableReader.open(OsFileSystem().open_read(str(sst)), 0)
    assert t.num_data_blocks >= 3
    offset, last_key, first_key = t._offsets[-1], t.index_user_keys[-1], t.index_user_keys[0]
    t.close()
    data = bytearray(sst.read_bytes())
    data[offset + 3] ^= 0x40
    sst.write_bytes(bytes(data))
    db = DB.open(str(tmp_path), tiny_options(fs=OsFileSystem(), **opts))
    try:
        for _ in range(2):
            with pytest.raises(Corruption):
                db.get(last_key)
        assert db.get(first_key) is not None
    finally:
        db.close()


def test_point_scratch_grows_for_many_memtables() -> None:
    db = DB.open(MEM_DIR, tiny_options())
    try:
        db.put(b"a", b"1")
        seq, mem, imms, version = db._read_state(None)
        many = tuple(_memtable(seq + 1 + i, [(b"k%02d" % i, KIND_PUT, b"x")]) for i in range(12))
        assert db._lookup_native(b"k03", seq + 20, mem, many, version) == (seq + 4, KIND_PUT, b"x")
        assert db._lookup_native(b"a", seq + 20, mem, many, version)[2] == b"1"
        assert native_pointget.point_scratch().cap >= 13
    finally:
        db.close()
