"""Byte flips in every kind of file: WAL, SSTables, manifest, CURRENT, blob files.

A database is built on the real file system with data in each kind of file (tiny options: flushed L0
tables, compacted deeper levels, blob files, a manifest with several edits, a WAL holding unflushed
writes). For many (file, offset) positions, a copy of the directory gets one byte changed; then the copy is
opened and everything is read back: a get of every key, a scan both ways, ``verify()``.

Every read must either raise an engine error (``Corruption``, or another ``LsmError``) or return exactly
the right value. A wrong value, or any other exception (IndexError, struct.error, UnicodeDecodeError,
FileNotFoundError, ...), is a bug.

"Right" has one allowance, from docs/format.md: a bad record at the very end of the newest WAL is a torn
tail (a crash while appending it looks the same), so a flip in the WAL may cut it to a prefix of its
batches. Flips in tables and blob files must be detected (by ``verify()`` at the latest).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from _helpers import prefix_states, tiny_options

from lsmmail.engine.db import DB
from lsmmail.engine.errors import LsmError
from lsmmail.engine.fs import OsFileSystem
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT

ABSENT = [b"a", b"k0005x", b"zzz"]


def flip_options():  # noqa: ANN201
    # L0 files stay (trigger 8) beside the compacted levels; the WAL holds the last 8 writes.
    return tiny_options(OsFileSystem(), memtable_size=4096, l0_compaction_trigger=8,
                        l0_slowdown_trigger=12, l0_stop_trigger=20)


def build(dbdir: Path) -> tuple[dict[bytes, bytes], list[list[tuple[int, bytes, bytes]]]]:
    """Make the database; return (state of everything flushed, batches only in the WAL)."""
    model: dict[bytes, bytes] = {}
    with DB.open(str(dbdir), flip_options()) as db:
        for rnd in range(3):
            for i in range(40):
                k = b"k%04d" % ((i * 7 + rnd) % 50)
                v = (b"%d.%d;" % (rnd, i)) * (2 if i % 3 else 12)  # every third value is a blob
                db.put(k, v)
                model[k] = v
            db.delete(b"k0003")
            model.pop(b"k0003", None)
            db.flush()
            if rnd == 1:
                db.compact_range()
        wal: list[list[tuple[int, bytes, bytes]]] = []
        for i in range(8):
            k = b"k%04d" % (i * 3)
            entries = [(KIND_PUT, k, b"wal%d" % i * (1 + i % 3))] if i != 5 else [(KIND_DELETE, k, b"")]
            for kind, key, val in entries:
                if kind == KIND_PUT:
                    db.put(key, val)
                else:
                    db.delete(key)
            wal.append(entries)
        levels = [lv["files"] for lv in db.stats()["levels"]]
        assert levels[0] >= 1 and sum(levels[1:]) >= 1 and db.stats()["blob_files"] >= 1
    return model, wal


def positions(dbdir: Path, rng: random.Random, per_file: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for p in sorted(dbdir.iterdir()):
        size = p.stat().st_size
        if p.name == "LOCK" or size == 0:
            continue
        if size <= per_file:
            offs = list(range(size))
        else:
            # Headers and footers hold the magic, sizes and handles: take them all, then random ones.
            edge = list(range(min(16, size))) + list(range(max(0, size - 60), size))
            offs = sorted(set(edge) | set(rng.sample(range(size), min(size, max(0, per_file - len(edge))))))
        out += [(p.name, o) for o in offs]
    return out


def read_everything(copy: Path, keys: list[bytes]) -> tuple[dict[bytes, object], list[object], str | None]:
    """Open and read all; return (get results, scan results, name of the error class or None).

    A get result is the value or the exception. Exceptions that are not LsmError propagate."""
    gets: dict[bytes, object] = {}
    scans: list[object] = []
    try:
        db = DB.open(str(copy), flip_options())
    except LsmError as e:
        return gets, scans, type(e).__name__
    verify_error = None
    try:
        for k in keys:
            try:
                gets[k] = db.get(k)
            except LsmError as e:
                gets[k] = e
        for reverse in (False, True):
            try:
                scans.append(list(db.scan(reverse=reverse)))
            except LsmError as e:
                scans.append(e)
        try:
            db.verify()
        except LsmError as e:
            verify_error = type(e).__name__
    finally:
        db.close()
    return gets, scans, verify_error


def check_flip(src: Path, work: Path, name: str, offset: int, xor: int,
               states: list[dict[bytes, bytes]], keys: list[bytes]) -> None:
    copy = work / f"{name}-{offset}"
    shutil.copytree(src, copy)
    p = copy / name
    data = bytearray(p.read_bytes())
    data[offset] ^= xor
    p.write_bytes(bytes(data))
    where = f"{name} offset {offset} xor {xor:#04x}"
    try:
        gets, scans, error = read_everything(copy, keys)
    except Exception as e:  # noqa: BLE001 - anything but LsmError is the bug this test looks for
        raise AssertionError(f"{where}: {type(e).__name__} escaped: {e}") from e
    finally:
        shutil.rmtree(copy)
    # The WAL may lose a torn tail (any prefix of its batches); everything else must be exact.
    allowed = range(len(states)) if name.endswith(".log") else [len(states) - 1]
    good = []
    for k in allowed:
        st = states[k]
        gets_ok = all(isinstance(v, LsmError) or v == st.get(key) for key, v in gets.items())
        scans_ok = all(isinstance(s, LsmError) or s == sorted(st.items(), reverse=i == 1)
                       for i, s in enumerate(scans))
        if gets_ok and scans_ok:
            good.append(k)
    assert good, f"{where}: a read returned a wrong value"
    if name.endswith((".sst", ".blob")):
        assert error is not None, f"{where}: the flip went undetected (open, reads and verify() passed)"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    src = tmp_path_factory.mktemp("flipsrc") / "db"
    flushed, wal = build(src)
    return src, prefix_states(flushed, wal)


def run_flips(built, tmp_path: Path, seed: int, per_file: int) -> int:  # noqa: ANN001
    src, states = built
    final = states[-1]
    keys = sorted(set(final) | {k for st in states for k in st}) + ABSENT
    rng = random.Random(seed)
    pos = positions(src, rng, per_file)
    # Each flip opens a copy, which fsyncs: on tmpfs (where there is one) that costs nothing.
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    try:
        for name, off in pos:
            check_flip(src, work, name, off, rng.choice((0x01, 0x80, 0xFF, rng.randrange(1, 256))),
                       states, keys)
    finally:
        if work != tmp_path:
            shutil.rmtree(work, ignore_errors=True)
    return len(pos)


def test_byte_flips(built, tmp_path: Path) -> None:  # noqa: ANN001
    # ~90 positions per file (~1,100 flips, ~6 s); the slow variant flips every byte of every file.
    n = run_flips(built, tmp_path, seed=7, per_file=90)
    assert n >= 1000


@pytest.mark.slow
def test_byte_flips_long(built, tmp_path: Path) -> None:  # noqa: ANN001
    run_flips(built, tmp_path, seed=8, per_file=100_000)


def test_model_of_flip_test_is_right(built) -> None:  # noqa: ANN001
    """The untouched copy reads back exactly the final state (the oracle itself is right)."""
    src, states = built
    with DB.open(str(src), flip_options()) as db:
        assert dict(db.scan()) == states[-1]
        db.verify()
    assert states[0] != states[-1]  # the WAL holds writes that change the state
