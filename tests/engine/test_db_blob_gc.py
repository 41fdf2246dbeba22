"""Blob garbage collection: disk space comes back after large values are overwritten and deleted.

Real files on disk (``dir_bytes`` sums the directory), so what is measured is what a user would see.
"""

from __future__ import annotations

from pathlib import Path

from _helpers import db_state, dir_bytes, tiny_options

from lsmmail.engine.db import DB
from lsmmail.engine.fs import OsFileSystem

VALUE = 4096  # the default min_blob_size: a mail body


def gc_options():  # noqa: ANN201
    # L0 may hold 20 files, so no compaction runs before the test's compact_range(): the garbage piles
    # up first, and then has to come back.
    return tiny_options(OsFileSystem(), memtable_size=64 * 1024, min_blob_size=1024,
                        target_file_size=16 * 1024, max_bytes_for_level_base=64 * 1024, block_size=1024,
                        l0_compaction_trigger=20, l0_slowdown_trigger=20, l0_stop_trigger=20)


def value(key: int, version: int) -> bytes:
    return (b"%d/%d|" % (key, version)).ljust(16, b".") * (VALUE // 16)


def blob_files(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.suffix == ".blob"}


def test_overwrites_and_deletes_give_disk_space_back(tmp_path: Path) -> None:
    with DB.open(str(tmp_path), gc_options()) as db:
        model: dict[bytes, bytes] = {}
        for version in range(6):
            for k in range(60):
                key = b"mail%03d" % k
                model[key] = value(k, version)
                db.put(key, model[key])
            db.flush()
        first_blobs = blob_files(tmp_path)
        for k in range(0, 60, 2):
            db.delete(b"mail%03d" % k)
            model.pop(b"mail%03d" % k)
        db.flush()
        before = dir_bytes(tmp_path)
        live = sum(len(k) + len(v) for k, v in model.items())
        assert before > 4 * live  # six versions of every value, half of them now deleted

        db.compact_range()
        db.compact_range()  # the second pass rewrites tables that still point at relocated blobs
        after = dir_bytes(tmp_path)
        st = db.stats()
        assert db_state(db) == model
        db.verify()
        # Back to the live data plus modest overhead (tables, manifest, an empty WAL).
        assert after < 1.5 * live + 64 * 1024, (before, after, live)
        assert st["blob_files_deleted"] > 0
        assert not (first_blobs & blob_files(tmp_path)), "blob files of overwritten values remain"
        assert st["blob_bytes"] - st["blob_garbage_bytes"] <= 1.2 * live

    with DB.open(str(tmp_path), gc_options()) as db:
        assert db_state(db) == model


def test_deleting_everything_frees_every_blob(tmp_path: Path) -> None:
    with DB.open(str(tmp_path), gc_options()) as db:
        for k in range(80):
            db.put(b"m%03d" % k, value(k, 0))
        db.flush()
        db.delete_range(b"m", b"n")
        db.compact_range()
        assert db_state(db) == {}
        assert blob_files(tmp_path) == set()
        assert db.stats()["blob_files"] == 0
        assert dir_bytes(tmp_path) < 16 * 1024


def test_snapshot_keeps_blobs_until_released(tmp_path: Path) -> None:
    with DB.open(str(tmp_path), gc_options()) as db:
        for k in range(30):
            db.put(b"m%03d" % k, value(k, 0))
        snap = db.snapshot()
        for k in range(30):
            db.put(b"m%03d" % k, value(k, 1))
        db.compact_range()
        # The snapshot still reads the old values: their blobs must still be there.
        assert all(db.get(b"m%03d" % k, snapshot=snap) == value(k, 0) for k in range(30))
        held = dir_bytes(tmp_path)
        snap.release()
        db.compact_range()
        db.compact_range()
        assert all(db.get(b"m%03d" % k) == value(k, 1) for k in range(30))
        assert dir_bytes(tmp_path) < held
