"""The DB's API contract: locking, closing, argument checks, the context manager, checkpoint, verify,
stats, range-tombstone dropping, and snapshot isolation while compaction runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import MEM_DIR, db_state, tiny_options

from lsmmail.engine.batch import WriteBatch
from lsmmail.engine.db import DB
from lsmmail.engine.errors import Corruption, DBClosed, InvalidArgument, Locked, LsmError
from lsmmail.engine.fs import MemFileSystem, OsFileSystem

REPO = Path(__file__).resolve().parents[2]


def os_opts(**over: object):  # noqa: ANN201
    return tiny_options(OsFileSystem(), **over)


def fill(db: DB, n: int, tag: bytes = b"v") -> dict[bytes, bytes]:
    model = {}
    for i in range(n):
        k = b"key%04d" % i
        v = tag + b"%d" % i * (1 if i % 4 else 20)  # every fourth value goes to a blob file
        db.put(k, v)
        model[k] = v
    return model


# -- locking


def test_second_open_in_same_process_is_locked(tmp_path: Path) -> None:
    db = DB.open(str(tmp_path), os_opts())
    with pytest.raises(Locked):
        DB.open(str(tmp_path), os_opts())
    db.close()
    DB.open(str(tmp_path), os_opts()).close()  # the lock went with the close


def test_second_open_in_same_process_is_locked_memfs() -> None:
    fs = MemFileSystem()
    db = DB.open(MEM_DIR, tiny_options(fs))
    with pytest.raises(Locked):
        DB.open(MEM_DIR, tiny_options(fs))
    db.close()
    DB.open(MEM_DIR, tiny_options(fs)).close()


def test_open_from_another_process_is_locked(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from lsmmail.engine.db import DB\n"
        "from lsmmail.engine.errors import Locked\n"
        "try:\n"
        "    DB.open(sys.argv[1])\n"
        "except Locked:\n"
        "    print('locked')\n"
        "else:\n"
        "    print('opened')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with DB.open(str(tmp_path), os_opts()) as db:
        db.put(b"k", b"v")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.stdout.strip() == "locked", out.stderr
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "opened", out.stderr


# -- closing


def test_closed_db_raises_dbclosed() -> None:
    fs = MemFileSystem()
    db = DB.open(MEM_DIR, tiny_options(fs))
    db.put(b"a", b"1")
    batch = WriteBatch()
    batch.put(b"b", b"2")
    db.close()
    db.close()  # idempotent
    for call in (lambda: db.get(b"a"), lambda: db.put(b"a", b"2"), lambda: db.delete(b"a"),
                 lambda: db.delete_range(b"a", b"b"), lambda: list(db.scan()), lambda: db.snapshot(),
                 lambda: db.verify(), lambda: db.write(batch)):
        with pytest.raises(DBClosed):
            call()


def test_context_manager_closes_and_releases(tmp_path: Path) -> None:
    with DB.open(str(tmp_path), os_opts()) as db:
        db.put(b"a", b"1")
    with pytest.raises(DBClosed):
        db.get(b"a")
    with DB.open(str(tmp_path), os_opts()) as db2:
        assert db2.get(b"a") == b"1"


def test_create_if_missing_and_error_if_exists(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        DB.open(str(tmp_path / "none"), os_opts(create_if_missing=False))
    DB.open(str(tmp_path / "db"), os_opts()).close()
    with pytest.raises(InvalidArgument):
        DB.open(str(tmp_path / "db"), os_opts(error_if_exists=True))
    with pytest.raises(InvalidArgument):
        DB.open(str(tmp_path / "bad"), os_opts(memtable_size=0))


# -- arguments


@pytest.mark.parametrize("bad", ["str", 1, None, b"", b"x" * 65536, 1.5, ["a"]])
def test_bad_keys_are_invalid_argument(bad: object) -> None:
    with DB.open(MEM_DIR, tiny_options()) as db:
        for call in (lambda: db.put(bad, b"v"), lambda: db.get(bad), lambda: db.delete(bad),  # type: ignore
                     lambda: db.delete_range(bad, b"z"), lambda: db.delete_range(b"a", bad)):  # type: ignore
            with pytest.raises(InvalidArgument):
                call()
        assert db_state(db) == {}


def test_other_invalid_arguments() -> None:
    with DB.open(MEM_DIR, tiny_options()) as db:
        with pytest.raises(InvalidArgument):
            db.put(b"k", "not bytes")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            db.delete_range(b"b", b"a")
        with pytest.raises(InvalidArgument):
            db.delete_range(b"b", b"b")
        with pytest.raises(InvalidArgument):
            db.write([(1, b"k", b"v")])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            list(db.scan(start="a"))  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            list(db.scan(prefix=1))  # type: ignore[arg-type]
        assert issubclass(InvalidArgument, ValueError)
        # bytearray and memoryview keys are accepted (copied).
        db.put(bytearray(b"ba"), memoryview(b"mv"))
        assert db.get(b"ba") == b"mv"


def test_snapshot_of_other_db_or_released_is_invalid() -> None:
    with DB.open(MEM_DIR, tiny_options()) as a, DB.open("/other", tiny_options(a.options.fs)) as b:
        s = a.snapshot()
        with pytest.raises(InvalidArgument):
            b.get(b"k", snapshot=s)
        s.release()
        s.release()  # idempotent
        with pytest.raises(InvalidArgument):
            a.get(b"k", snapshot=s)
        with a.snapshot() as s2:
            a.put(b"k", b"new")
            assert a.get(b"k", snapshot=s2) is None
        assert a.stats()["live_snapshots"] == 0


# -- checkpoint, verify, stats


def test_checkpoint_is_a_consistent_independent_copy(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "cp"
    with DB.open(str(src), os_opts()) as db:
        model = fill(db, 120)
        db.delete_range(b"key0010", b"key0020")
        for i in range(10, 20):
            model.pop(b"key%04d" % i)
        db.compact_range()
        db.put(b"key0001", b"in the memtable only")  # checkpoint flushes it first
        model[b"key0001"] = b"in the memtable only"
        db.checkpoint(str(dest))
        # Later writes reach the source, not the copy.
        db.put(b"key0002", b"after")
        db.delete(b"key0003")
        db.compact_range()
        with pytest.raises(InvalidArgument):
            db.checkpoint(str(dest))  # not empty
        with DB.open(str(dest), os_opts()) as cp:
            assert db_state(cp) == model
            cp.verify()
            cp.put(b"key0004", b"copy only")
        assert db.get(b"key0004") == model[b"key0004"]
        assert db.get(b"key0002") == b"after"


def test_checkpoint_on_memfs_copies_files() -> None:
    fs = MemFileSystem()
    with DB.open(MEM_DIR, tiny_options(fs)) as db:
        model = fill(db, 60)
        db.checkpoint("/cp")
    with DB.open("/cp", tiny_options(fs)) as cp:
        assert db_state(cp) == model


def test_verify_passes_then_reports_corruption(tmp_path: Path) -> None:
    with DB.open(str(tmp_path), os_opts()) as db:
        fill(db, 100)
        db.flush()
        db.verify()
        sst = sorted(p for p in tmp_path.iterdir() if p.suffix == ".sst")[0]
        data = bytearray(sst.read_bytes())
        data[len(data) // 3] ^= 0x40
        sst.write_bytes(bytes(data))
        with pytest.raises(Corruption):
            db.verify()


def test_stats_keys() -> None:
    with DB.open(MEM_DIR, tiny_options()) as db:
        fill(db, 300)
        db.compact_range()
        st = db.stats()
    for key in ("levels", "sst_files", "sst_bytes", "blob_files", "blob_bytes", "blob_garbage_bytes",
                "range_tombstones", "memtable_bytes", "immutable_memtables", "last_sequence",
                "live_snapshots", "write_amplification", "stall_slowdowns", "stall_stops",
                "stall_memtable", "group_commits", "grouped_writes", "wal_syncs", "flushes", "compactions",
                "user_bytes_written", "wal_bytes_written", "block_cache"):
        assert key in st, key
    assert len(st["levels"]) == 4
    assert all(set(lv) >= {"level", "files", "bytes"} for lv in st["levels"])
    assert st["sst_files"] == sum(lv["files"] for lv in st["levels"]) > 0
    assert st["last_sequence"] == 300
    assert st["flushes"] > 0 and st["compactions"] > 0
    # Flushes and compactions rewrite data: amplification above 1 (tiny memtables, many levels).
    assert st["write_amplification"] > 1.0
    for key in ("stall_slowdowns", "stall_stops", "stall_memtable"):
        assert isinstance(st[key], int) and st[key] >= 0


def test_range_tombstones_dropped_by_compact_range_without_snapshots() -> None:
    with DB.open(MEM_DIR, tiny_options()) as db:
        model = fill(db, 80)
        db.compact_range()
        snap = db.snapshot()
        db.delete_range(b"key0010", b"key0030")
        db.delete_range(b"key0050", b"key0060")
        db.flush()
        assert db.stats()["range_tombstones"] == 2
        db.compact_range()
        # A snapshot older than the tombstones may still need what they hide.
        assert db.stats()["range_tombstones"] == 2
        assert db.get(b"key0015", snapshot=snap) == model[b"key0015"]
        assert dict(db.scan(snapshot=snap)) == model
        assert db.get(b"key0015") is None
        snap.release()
        db.compact_range()
        assert db.stats()["range_tombstones"] == 0
        for i in list(range(10, 30)) + list(range(50, 60)):
            model.pop(b"key%04d" % i)
        assert db_state(db) == model
    with DB.open(MEM_DIR, tiny_options(db.options.fs)) as db:
        assert db.stats()["range_tombstones"] == 0
        assert db_state(db) == model


def test_snapshot_isolation_while_compaction_runs() -> None:
    with DB.open(MEM_DIR, tiny_options(background=True)) as db:
        old = fill(db, 150, b"old")
        with db.snapshot() as snap:
            for rnd in range(3):
                new = fill(db, 150, b"new%d" % rnd)
                for i in range(0, 150, 7):
                    db.delete(b"key%04d" % i)
                    new.pop(b"key%04d" % i)
                db.delete_range(b"key0100", b"key0120")
                for i in range(100, 120):
                    new.pop(b"key%04d" % i, None)
                # Reads through the snapshot while the background threads flush and compact.
                assert dict(db.scan(snapshot=snap)) == old
                assert list(db.scan(snapshot=snap, reverse=True)) == sorted(old.items(), reverse=True)
                assert db.get(b"key0007", snapshot=snap) == old[b"key0007"]
            db.compact_range()
            assert db.stats()["compactions"] > 0
            assert dict(db.scan(snapshot=snap)) == old
            assert db_state(db) == new
        db.compact_range()
        assert db_state(db) == new


def test_iterator_keeps_its_version_across_compaction() -> None:
    with DB.open(MEM_DIR, tiny_options()) as db:
        model = fill(db, 200)
        db.flush()
        it = db.scan()
        first = [next(it) for _ in range(5)]
        fill(db, 200, b"other")
        db.compact_range()  # replaces and deletes the files the iterator reads
        rest = list(it)
        assert first + rest == sorted(model.items())


def test_errors_are_lsm_errors() -> None:
    for cls in (Corruption, DBClosed, InvalidArgument, Locked):
        assert issubclass(cls, LsmError)
