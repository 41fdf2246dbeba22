"""``DB.get``'s one-call path (``lsm_get_state`` over a cached read state, ``point_reads._ReadState``)
against the full path (``DB._get_full``: key check, read state, ``_lookup`` source by source, range
tombstones) and a dict model: on random histories with flushes, compactions, deletes, range deletes and
blob values, on the in-memory file system (tables C cannot read: the full path answers) and on OS files;
with immutable memtables in the read state; with values larger than the thread's buffer; and for bad keys
and a closed DB. Also: the cached read state never keeps a flushed memtable or a replaced version alive.
"""

from __future__ import annotations

import gc
import tempfile
import weakref

import pytest
from _helpers import HISTORY_KEYS, MEM_DIR, apply_entries, apply_step, history_entries, tiny_options, to_batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.engine import point_reads
from lsmmail.engine.db import DB
from lsmmail.engine.errors import DBClosed, InvalidArgument
from lsmmail.engine.fs import OsFileSystem
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL, MAX_KEY_SIZE

pytestmark = pytest.mark.skipif(point_reads._get_state is None,
                                reason="the C point-read path is not available")

KEYS = HISTORY_KEYS
PROBES = KEYS + [b"0", b"aa", b"missing", b"zz"]
entries = history_entries
ops = st.one_of(
    st.tuples(st.just("write"), st.lists(entries, min_size=1, max_size=6)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("compact"), st.none()),
)


def _check(db: DB, model: dict[bytes, bytes]) -> None:
    for k in PROBES:
        got = db.get(k)
        assert got == model.get(k)
        assert got == db._get_full(k, None)


def _run(db: DB, history: list) -> None:  # type: ignore[type-arg]
    model: dict[bytes, bytes] = {}
    for op, arg in history:
        assert apply_step(db, model, op, arg)
        _check(db, model)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=25))
def test_get_matches_full_path_and_model(history: list) -> None:  # type: ignore[type-arg]
    db = DB.open(MEM_DIR, tiny_options())
    try:
        _run(db, history)
    finally:
        db.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=5, max_size=25))
def test_get_matches_full_path_on_os_files(history: list) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as d:
        db = DB.open(d, tiny_options(fs=OsFileSystem()))
        try:
            _run(db, history)
        finally:
            db.close()


def test_get_with_immutable_memtables_in_the_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Memtables switched by hand (no flush runs without background work until a write needs room), so
    # the read state holds two immutable memtables, each with versions, deletes and a range tombstone.
    db = DB.open(str(tmp_path), tiny_options(fs=OsFileSystem(), memtable_size=1 << 20))
    try:
        model: dict[bytes, bytes] = {}
        rounds = [
            [(KIND_PUT, b"a", b"1"), (KIND_PUT, b"b", b"1"), (KIND_PUT, b"c", b"x" * 50)],
            [(KIND_DELETE, b"a", b""), (KIND_RANGE_DEL, b"b", b"b\x00"), (KIND_PUT, b"d", b"2")],
            [(KIND_PUT, b"b", b"3"), (KIND_PUT, b"k01", b"y" * 60)],
        ]
        for i, r in enumerate(rounds):
            db.write(to_batch(r))
            apply_entries(model, r)
            if i < 2:
                with db._mu:
                    db._switch_memtable()
            _check(db, model)
        assert len(db._imms) == 2
        db.flush()
        assert not db._imms
        _check(db, model)
    finally:
        db.close()


def test_values_larger_than_the_buffer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    big = bytes(range(256)) * 1100  # 281,600 bytes: past the 64 KiB the thread's buffer starts with
    db = DB.open(str(tmp_path), tiny_options(fs=OsFileSystem(), min_blob_size=None, memtable_size=1 << 20))
    try:
        db.put(b"big", big)
        assert db.get(b"big") == big  # from the memtable
        db.flush()
        assert db.get(b"big") == big  # from a table
        db.put(b"big2", big[::-1])
        assert db.get(b"big2") == big[::-1]
    finally:
        db.close()


def test_bad_keys_and_closed_db() -> None:
    db = DB.open(MEM_DIR, tiny_options())
    db.put(b"k", b"v")
    assert db.get(bytearray(b"k")) == b"v"
    assert db.get(memoryview(b"k")) == b"v"
    for bad in (b"", b"x" * (MAX_KEY_SIZE + 1)):
        with pytest.raises(InvalidArgument):
            db.get(bad)
    with pytest.raises(InvalidArgument):
        db.get("k")  # type: ignore[arg-type]
    db.close()
    with pytest.raises(DBClosed):
        db.get(b"k")


def test_read_state_keeps_no_flushed_memtable_or_old_version_alive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = DB.open(str(tmp_path), tiny_options(fs=OsFileSystem(), memtable_size=1 << 20))
    try:
        db.put(b"a", b"1")
        assert db.get(b"a") == b"1"
        mem, version = weakref.ref(db._mem), weakref.ref(db._current)
        view = db._view
        assert view is not None and view.rs is not None and view.rs.mem_ref() is mem()
        del view  # the view holds the memtable and version itself; the test drops its reference
        db.flush()
        db.compact_range()
        gc.collect()
        assert mem() is None
        assert version() is None
        assert db.get(b"a") == b"1"
    finally:
        db.close()


def test_lock_free_gets_see_every_acknowledged_write_across_switches_and_flushes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Gets read the published ReadView without ``_mu``: while one thread writes (a 64 KiB memtable, so
    memtable switches, flushes and compactions run all along) and overwrites, readers on other threads
    must find every key whose write returned, with a version at least as new as the last acknowledged
    one -- never None, never an older value (a view published before its data, or a flush that dropped a
    memtable before its table was in the view, would show here)."""
    import threading

    from lsmmail.engine.options import Options

    db = DB.open(str(tmp_path / "db"), Options(memtable_size=64 * 1024, block_cache_size=256 * 1024))
    n = 3000
    acked = [-1] * 64  # per key slot: the last round whose write returned
    done = [0]
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        for i in range(n):
            slot = i % 64
            db.put(b"key%02d" % slot, b"%06d" % (i // 64) + b"v" * 200)
            acked[slot] = i // 64
            done[0] = i + 1
        stop.set()

    def reader(seed: int) -> None:
        import random

        rnd = random.Random(seed)
        while not stop.is_set() and not errors:
            # Mostly the keys written last: those a stale view (one from before a memtable switch) lacks.
            slot = (done[0] - 1 - rnd.randrange(3)) % 64 if rnd.random() < 0.8 else rnd.randrange(64)
            want = acked[slot]
            if want < 0:
                continue
            got = db.get(b"key%02d" % slot)
            if got is None or int(got[:6]) < want:
                errors.append(f"key{slot:02d}: got {got[:6] if got else None!r}, acknowledged round {want}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    writer()
    for t in threads:
        t.join()
    stats = db.stats()
    db.close()
    assert not errors, errors[:3]
    assert done[0] == n
    assert stats["flushes"] >= 5  # the race the test is about really ran
