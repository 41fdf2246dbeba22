"""Group commit through the DB: the C queue (native/commit.c, used on the real file system) and its pure
twin (the Python queue, used on every other file system or with ``NATIVE_COMMIT`` off) give the same
database; failures on the C path poison the DB like on the Python path.

Oracle: a model dict built from each thread's own ordered writes (threads write disjoint keys).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path

import pytest

from lsmmail import native
from lsmmail.engine import write_path
from lsmmail.engine.batch import WriteBatch
from lsmmail.engine.commit_queue import NativeWriteQueue
from lsmmail.engine.db import DB
from lsmmail.engine.errors import IOFailure, ReadOnlyError
from lsmmail.engine.fs import FaultInjectingFileSystem, MemFileSystem, OsFileSystem
from lsmmail.engine.options import Options

THREADS = 6
OPS = 150

needs_native = pytest.mark.skipif(not native.AVAILABLE, reason="the C extension is not built or forced off")


def _thread_ops(t: int) -> list[tuple[str, bytes, bytes, bool]]:
    """Thread ``t``'s writes: puts, overwrites, deletes, batches and range deletes over its own keys."""
    ops = []
    for i in range(OPS):
        k = b"t%d-%04d" % (t, (i * 7) % 60)
        sync = i % 3 == 0
        if i % 17 == 16:
            ops.append(("range", k, k + b"\xff", sync))
        elif i % 5 == 4:
            ops.append(("delete", k, b"", sync))
        elif i % 11 == 10:
            ops.append(("batch", k, b"b%d" % i * 30, sync))
        else:
            ops.append(("put", k, b"v%d-%d" % (t, i) * (1 + i % 40), sync))
    return ops


def _apply(model: dict[bytes, bytes], op: tuple[str, bytes, bytes, bool]) -> None:
    kind, k, v, _ = op
    if kind == "put":
        model[k] = v
    elif kind == "delete":
        model.pop(k, None)
    elif kind == "batch":
        model[k] = v
        model[k + b"x"] = v
    else:
        for key in [key for key in model if k <= key < v]:
            del model[key]


def _run(db: DB, t: int) -> None:
    for kind, k, v, sync in _thread_ops(t):
        if kind == "put":
            db.put(k, v, sync=sync)
        elif kind == "delete":
            db.delete(k, sync=sync)
        elif kind == "batch":
            b = WriteBatch()
            b.put(k, v)
            b.put(k + b"x", v)
            db.write(b, sync=sync)
        else:
            db.delete_range(k, v, sync=sync)


def _model() -> dict[bytes, bytes]:
    model: dict[bytes, bytes] = {}
    for t in range(THREADS):
        for op in _thread_ops(t):
            _apply(model, op)
    return model


@pytest.mark.parametrize(("native_commit", "yield_us"), [pytest.param(True, 500, marks=needs_native),
                                                         pytest.param(True, 0, marks=needs_native),
                                                         (False, 500)])
def test_concurrent_writers_same_result_on_both_queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       native_commit: bool, yield_us: int) -> None:
    """Writers that yield while they wait (``group_commit_yield_us``, the default) or sleep at once (0)
    end with the same contents as the model, on the C queue and on the Python one."""
    monkeypatch.setattr(write_path, "NATIVE_COMMIT", native_commit)
    d = str(tmp_path / "db")
    # Small memtables: the leaders switch WALs and memtables while followers wait.
    db = DB.open(d, Options(memtable_size=32 * 1024, group_commit_yield_us=yield_us))
    assert isinstance(db._writers, NativeWriteQueue) is native_commit
    try:
        threads = [threading.Thread(target=_run, args=(db, t)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        model = _model()
        assert dict(db.scan()) == model
        st = db._stats
        writes = sum(len(_thread_ops(t)) for t in range(THREADS))
        assert st["grouped_writes"] == writes
        assert st["group_commits"] <= writes
        db.flush()
        assert dict(db.scan()) == model
    finally:
        db.close()
    with DB.open(d) as db:
        assert dict(db.scan()) == model
        db.verify()


def _sized_ops() -> list[tuple[bool, bytes, bytes]]:
    """Synced puts and deletes whose key and value lengths cross the 1- and 2-byte varint limits."""
    ops = []
    for i, (kn, vn) in enumerate((k, v) for k in (1, 127, 128, 300, 16384)
                                 for v in (0, 1, 127, 128, 16383, 16384, 70_000)):
        key = bytes([i % 250 + 1]) * kn
        ops.append((True, key, bytes([i % 7]) * vn))
        if i % 3 == 0:
            ops.append((False, key, b""))
    return ops


@needs_native
def test_synced_single_writes_count_like_the_python_queue(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Synced puts and deletes take the C slot encoding (lsm_cq_join_kv) on the C queue: the same user
    and WAL bytes as the Python queue's batches, the same database after a reopen."""
    results = []
    for native_commit in (True, False):
        monkeypatch.setattr(write_path, "NATIVE_COMMIT", native_commit)
        d = str(tmp_path / f"db{native_commit}")
        with DB.open(d) as db:
            assert isinstance(db._writers, NativeWriteQueue) is native_commit
            for is_put, key, value in _sized_ops():
                if is_put:
                    db.put(key, value, sync=True)
                else:
                    db.delete(key, sync=True)
            st = db._stats
            counts = tuple(st[k] for k in ("user_bytes_written", "wal_bytes_written", "wal_syncs",
                                           "grouped_writes"))
        with DB.open(d) as db:
            results.append((counts, dict(db.scan())))
    assert results[0] == results[1]
    assert results[0][0][2] == len(_sized_ops())


def test_queue_choice_follows_the_file_system(tmp_path: Path) -> None:
    for fs, native_queue in ((MemFileSystem(), False), (FaultInjectingFileSystem(OsFileSystem()), False),
                             (OsFileSystem(), native.AVAILABLE)):
        d = str(tmp_path / type(fs).__name__) if not isinstance(fs, MemFileSystem) else "/db"
        with DB.open(d, Options(fs=fs)) as db:
            assert isinstance(db._writers, NativeWriteQueue) is native_queue
            assert isinstance(db._writers, deque) is not native_queue
            db.put(b"k", b"v", sync=True)
            assert db.get(b"k") == b"v"


@needs_native
def test_failed_fdatasync_on_the_c_path_refuses_writes(tmp_path: Path) -> None:
    d = str(tmp_path / "db")
    db = DB.open(d)
    try:
        assert isinstance(db._writers, NativeWriteQueue)
        db.put(b"a", b"1", sync=True)
        db.put(b"b", b"2")
        # The WAL's descriptor now names /dev/null: the write succeeds, fdatasync fails (EINVAL).
        assert db._log is not None
        fd = db._log.file.fileno()  # type: ignore[attr-defined]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
        with pytest.raises(IOFailure) as info:
            db.put(b"c", b"3", sync=True)
        assert info.value.errno == 22
        with pytest.raises(ReadOnlyError):
            db.put(b"d", b"4")
        with pytest.raises(ReadOnlyError):
            db.delete(b"a", sync=True)
        # Reads go on; the failed write was not acknowledged and is not visible.
        assert db.get(b"a") == b"1" and db.get(b"b") == b"2" and db.get(b"c") is None
    finally:
        db.close()
    with DB.open(d) as db:
        assert db.get(b"a") == b"1"
        db.put(b"e", b"5", sync=True)
        assert db.get(b"e") == b"5"


def _eight_synced_puts(db: DB, *, together: bool) -> list[BaseException]:
    """Eight threads each put ``k<i>`` = ``v`` with ``sync=True`` (started at one barrier if
    ``together``); the IOFailure or ReadOnlyError each one got."""
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(i: int) -> None:
        if together:
            start.wait()
        try:
            db.put(b"k%d" % i, b"v", sync=True)
        except (IOFailure, ReadOnlyError) as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


@needs_native
def test_failed_write_fails_every_follower_of_the_group(tmp_path: Path) -> None:
    """Writers queued behind a failing leader get the same error; later writers get ReadOnlyError."""
    d = str(tmp_path / "db")
    db = DB.open(d)
    try:
        db.put(b"a", b"1", sync=True)
        assert db._log is not None
        fd = db._log.file.fileno()  # type: ignore[attr-defined]
        ro = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT)
        os.dup2(ro, fd)  # writes now fail with EBADF
        os.close(ro)
        errors = _eight_synced_puts(db, together=False)
        assert len(errors) == 8
        assert any(isinstance(e, IOFailure) and e.errno == 9 for e in errors)
        assert all(db.get(b"k%d" % i) is None for i in range(8))
    finally:
        db.close()
    with DB.open(d) as db:
        assert db.get(b"a") == b"1"


@needs_native
def test_group_failing_at_its_fdatasync_is_never_visible(tmp_path: Path) -> None:
    """Eight synced writers whose group's fdatasync fails (the WAL's descriptor names /dev/null: the write
    succeeds, fdatasync fails with EINVAL). The C commit has inserted their batches before the fdatasync,
    but no read may see them: every writer fails; gets, a scan and a snapshot show the older values of
    the keys they overwrote and none of the new keys; the DB refuses writes; reopened, it is consistent."""
    d = str(tmp_path / "db")
    db = DB.open(d)
    try:
        db.put(b"a", b"1", sync=True)
        for i in range(0, 8, 2):
            db.put(b"k%d" % i, b"old", sync=True)
        assert db._log is not None
        fd = db._log.file.fileno()  # type: ignore[attr-defined]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
        errors = _eight_synced_puts(db, together=True)
        assert len(errors) == 8
        assert any(isinstance(e, IOFailure) and e.errno == 22 for e in errors)
        # The failed group's batches are in the memtable, under unpublished sequence numbers.
        assert any(v == b"v" for _, _, _, v in db._mem.entries(None, None))  # type: ignore[attr-defined]
        old = {b"k%d" % i: b"old" for i in range(0, 8, 2)}
        assert {b"k%d" % i: db.get(b"k%d" % i) for i in range(8)} == {
            b"k%d" % i: old.get(b"k%d" % i) for i in range(8)}
        assert dict(db.scan()) == {b"a": b"1", **old}
        snap = db.snapshot()
        try:
            assert db.get(b"k0", snapshot=snap) == b"old" and db.get(b"k1", snapshot=snap) is None
        finally:
            snap.release()
        with pytest.raises(ReadOnlyError):
            db.put(b"z", b"9")
    finally:
        db.close()
    with DB.open(d) as db:
        assert db.get(b"a") == b"1" and db.get(b"k2") == b"old"
        db.verify()
        db.put(b"e", b"5", sync=True)
        assert db.get(b"e") == b"5"


@needs_native
def test_close_waits_for_queued_native_writers(tmp_path: Path) -> None:
    d = str(tmp_path / "db")
    db = DB.open(d)

    def writer() -> None:
        for i in range(300):
            try:
                db.put(b"k%04d" % i, b"v" * 100, sync=i % 10 == 0)
            except Exception:  # noqa: BLE001 - DBClosed once close() started
                break

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for th in threads:
        th.start()
    db.close()
    for th in threads:
        th.join()
    assert len(db._writers) == 0
    with DB.open(d) as db2:
        db2.verify()


@needs_native
def test_failed_unsynced_write_in_the_solo_lane_refuses_writes(tmp_path: Path) -> None:
    d = str(tmp_path / "db")
    db = DB.open(d)
    try:
        q = db._writers
        assert isinstance(q, NativeWriteQueue)
        db.put(b"a", b"1")
        assert not q.section.locked() and len(q) == 0
        assert db._log is not None
        fd = db._log.file.fileno()  # type: ignore[attr-defined]
        ro = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT)
        os.dup2(ro, fd)
        os.close(ro)
        with pytest.raises(IOFailure) as info:
            db.put(b"b", b"2")  # unsynced, no one queued: the solo lane
        assert info.value.errno == 9
        with pytest.raises(ReadOnlyError):
            db.put(b"c", b"3")
        with pytest.raises(ReadOnlyError):
            db.put(b"c", b"3", sync=True)
        assert db.get(b"a") == b"1" and db.get(b"b") is None
    finally:
        db.close()
    with DB.open(d) as db:
        assert db.get(b"a") == b"1"


def _single_ops(db: DB) -> None:
    """Single puts and deletes the C kv lane takes (short and 200-byte keys, empty to 20 KB values) and
    ones it leaves to the general path (bytearray arguments, synced writes), with batches between."""
    for i in range(400):
        k = b"k%03d" % (i % 150) if i % 7 else b"K" * 200 + b"%d" % (i % 9)
        if i % 13 == 12:
            db.delete(k)
        elif i % 29 == 28:
            db.delete(bytearray(k))
        elif i % 31 == 30:
            db.put(bytearray(k), b"ba%d" % i)
        elif i % 17 == 16:
            db.put(k, b"s%d" % i, sync=True)
        elif i % 19 == 18:
            b = WriteBatch()
            b.put(k, b"b%d" % i)
            b.delete(k + b"x")
            db.write(b)
        else:
            db.put(k, b"v%d" % i * (i % 5) if i % 11 else bytes(20_000))


@pytest.mark.parametrize("memtable_size", [1 << 20, 16 * 1024])
@needs_native
def test_single_writes_same_log_and_db_on_both_queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      memtable_size: int) -> None:
    """The C kv lane (one call per unsynced single put or delete) against the Python queue: the same WAL
    bytes, statistics, memtable and database, after a reopen too. With small memtables the lane steps
    aside whenever the memtable is full and the general path switches it."""
    results = []
    for native_commit in (True, False):
        monkeypatch.setattr(write_path, "NATIVE_COMMIT", native_commit)
        d = str(tmp_path / f"db{native_commit}")
        db = DB.open(d, Options(memtable_size=memtable_size, background_work=False))
        assert db._kv_lane is native_commit
        try:
            _single_ops(db)
            assert db._log is not None
            log_path = os.path.join(d, f"{db._mem.log_number:06d}.log")
            with open(log_path, "rb") as f:
                wal = f.read(db._log.size)
            keys = ("user_bytes_written", "wal_bytes_written", "group_commits", "grouped_writes", "flushes")
            st = {k: db._stats[k] for k in keys}
            mem = (db._mem.approximate_size, db._mem.num_entries, db._mem.largest_seq, db._last_seq)
            results.append((wal, st, mem, dict(db.scan())))
        finally:
            db.close()
        with DB.open(d) as db:
            assert dict(db.scan()) == results[-1][3]
    assert results[0] == results[1]
    assert len(results[0][3]) > 100
