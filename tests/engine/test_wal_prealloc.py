"""The preallocated WAL tail (docs/format.md, "Preallocated WAL tail"): the writer extends the log with
zeros in chunks ahead of its data; readers end the log at the zero tail and still report real corruption.

Oracles: the records the writer was given, and the case table in docs/format.md.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lsmmail.engine.db import DB
from lsmmail.engine.errors import Corruption, IOFailure, ReadOnlyError
from lsmmail.engine.fs import FaultInjectingFileSystem, MemFileSystem, OsFileSystem
from lsmmail.engine.options import Options
from lsmmail.engine.wal import WAL_PREALLOCATE, LogWriter, read_log

HDR = 7
REPO = Path(__file__).resolve().parents[2]


def _payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _write(records: list[bytes], *, bs: int, chunk: int) -> tuple[bytes, list[tuple[int, int]], int]:
    """Write ``records`` to a preallocated in-memory log: ``(file bytes, record extents, data end)``."""
    fs = MemFileSystem()
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/1.log"), block_size=bs, preallocate=chunk)
    extents = []
    for r in records:
        start = w.size
        w.add_record(r)
        extents.append((start, w.size))
    return fs.read_file("/db/1.log"), extents, w.size


_RECORD = st.one_of(st.binary(max_size=40), st.integers(0, 200).map(lambda n: _payload(n, n)))


# --------------------------------------------------------------------------------------------------
# Writing


@settings(max_examples=100, deadline=None)
@given(records=st.lists(_RECORD, max_size=12), bs=st.sampled_from([16, 64, 256]),
       chunk=st.sampled_from([1, 7, 64, 500]))
def test_file_is_records_then_zeros_to_a_chunk_boundary(records: list[bytes], bs: int, chunk: int) -> None:
    data, _, end = _write(records, bs=bs, chunk=chunk)
    if end:
        assert len(data) % chunk == 0 and len(data) >= end
    assert data[end:] == bytes(len(data) - end)
    got, good_end = read_log(data, block_size=bs)
    assert got == records
    assert good_end == end


def test_real_chunk_grows_once_per_megabyte_and_seal_cuts_the_tail() -> None:
    fs = FaultInjectingFileSystem(MemFileSystem())
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/1.log"), preallocate=WAL_PREALLOCATE)
    records = [_payload(i, 1000) for i in range(2500)]  # ~2.4 MiB of framed records
    for r in records:
        w.add_record(r)
    assert fs.counts["allocate"] == 3
    assert fs.file_size("/db/1.log") == 3 * WAL_PREALLOCATE
    w.seal()
    assert fs.file_size("/db/1.log") == w.size
    got, end = read_log(fs.read_file("/db/1.log"))
    assert got == records and end == w.size
    # Appending after a seal preallocates again from the new end.
    w.add_record(b"more")
    assert fs.file_size("/db/1.log") == 3 * WAL_PREALLOCATE


def test_failed_preallocation_only_stops_preallocating() -> None:
    fs = FaultInjectingFileSystem(MemFileSystem())
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/1.log"), preallocate=4096)
    fs.fail_at(1, kinds=("allocate",))
    w.add_record(b"a" * 100)
    assert fs.faults_injected == 1
    w.add_record(b"b" * 5000)
    w.sync()
    assert fs.counts["allocate"] == 1  # not retried
    data = fs.read_file("/db/1.log")
    assert len(data) == w.size
    assert read_log(data)[0] == [b"a" * 100, b"b" * 5000]


def test_failed_sync_and_failed_seal_poison_the_writer() -> None:
    for kind in ("sync", "truncate"):
        fs = FaultInjectingFileSystem(MemFileSystem())
        fs.makedirs("/db")
        w = LogWriter(fs.create("/db/1.log"), preallocate=4096)
        w.add_record(b"x" * 10)
        fs.fail_at(1, kinds=(kind,))
        with pytest.raises(OSError):
            if kind == "sync":
                w.sync()
            else:
                w.seal()
        fs.heal()
        with pytest.raises(ReadOnlyError):
            w.add_record(b"y")
        with pytest.raises(ReadOnlyError):
            w.sync()


def test_crash_model_keeps_a_synced_tail_and_drops_an_unsynced_one() -> None:
    fs = MemFileSystem()
    fs.makedirs("/db")
    f = fs.create("/db/1.log")
    fs.sync_dir("/db")
    w = LogWriter(f, preallocate=4096)
    w.add_record(b"durable")
    w.sync()
    w.add_record(b"lost")
    fs.crash()
    data = fs.read_file("/db/1.log")
    assert len(data) == 4096  # the allocation was synced with the first record
    assert read_log(data)[0] == [b"durable"]


# --------------------------------------------------------------------------------------------------
# Reading a preallocated log: the case table


@settings(max_examples=150, deadline=None)
@given(records=st.lists(_RECORD, min_size=1, max_size=8), bs=st.sampled_from([16, 64]),
       data=st.data())
def test_truncation_anywhere_reads_a_prefix(records: list[bytes], bs: int, data: st.DataObject) -> None:
    raw, extents, _ = _write(records, bs=bs, chunk=256)
    cut = data.draw(st.integers(0, len(raw)))
    got, _ = read_log(raw[:cut], block_size=bs)
    complete = sum(1 for _, e in extents if e <= cut)
    assert got == records[:complete]


@settings(max_examples=150, deadline=None)
@given(records=st.lists(_RECORD, min_size=1, max_size=8), bs=st.sampled_from([16, 64]),
       data=st.data())
def test_torn_last_record_followed_by_zeros_is_a_torn_tail(records: list[bytes], bs: int,
                                                            data: st.DataObject) -> None:
    """A crash during the last append: a prefix of its bytes reached the file, the rest is still zeros."""
    raw, extents, _ = _write(records, bs=bs, chunk=256)
    start, end = extents[-1]
    keep = data.draw(st.integers(start, end - 1))
    torn = raw[:keep] + bytes(len(raw) - keep)
    got, good_end = read_log(torn, block_size=bs)
    if not any(raw[keep:end]):
        # The bytes that did not reach the file were zeros anyway (e.g. a record of b"\x00" torn right
        # after its header): the file holds the whole record, and it must be read.
        assert got == records
        return
    assert got == records[:-1]
    assert good_end == (extents[-2][1] if len(records) > 1 else 0)


@settings(max_examples=150, deadline=None)
@given(records=st.lists(_RECORD, min_size=1, max_size=6), bs=st.sampled_from([16, 64]),
       data=st.data(), mask=st.sampled_from([0x01, 0x04, 0x80, 0xFF]))
def test_flips_in_the_zero_tail_read_as_end_of_data(records: list[bytes], bs: int, data: st.DataObject,
                                                    mask: int) -> None:
    raw, _, end = _write(records, bs=bs, chunk=512)
    assume(end < len(raw))  # the data can end exactly at a chunk boundary: no tail then
    flips = data.draw(st.lists(st.integers(end, len(raw) - 1), min_size=1, max_size=4))
    bad = bytearray(raw)
    for pos in flips:
        bad[pos] ^= mask
    got, good_end = read_log(bytes(bad), block_size=bs)
    assert got == records and good_end == end


@settings(max_examples=150, deadline=None)
@given(records=st.lists(_RECORD, min_size=2, max_size=6), bs=st.sampled_from([16, 64]),
       data=st.data())
def test_zeroed_header_before_good_records_is_corruption(records: list[bytes], bs: int,
                                                         data: st.DataObject) -> None:
    """Zeros where a record's first header should be, with good records after: never a clean end."""
    raw, extents, _ = _write(records, bs=bs, chunk=512)
    i = data.draw(st.integers(0, len(records) - 2))
    start, _ = extents[i]
    if bs - start % bs < HDR:
        start += bs - start % bs  # the header follows the block's zero padding
    bad = bytearray(raw)
    bad[start : start + HDR] = bytes(HDR)
    with pytest.raises(Corruption):
        read_log(bytes(bad), block_size=bs)


@settings(max_examples=100, deadline=None)
@given(records=st.lists(_RECORD, min_size=1, max_size=6), bs=st.sampled_from([16, 64]),
       data=st.data(), mask=st.sampled_from([0x01, 0x80, 0xFF]))
def test_a_flip_never_yields_wrong_records(records: list[bytes], bs: int, data: st.DataObject,
                                           mask: int) -> None:
    raw, extents, end = _write(records, bs=bs, chunk=512)
    pos = data.draw(st.integers(0, len(raw) - 1))
    bad = bytearray(raw)
    bad[pos] ^= mask
    try:
        got, _ = read_log(bytes(bad), block_size=bs)
    except Corruption:
        return
    assert got == records[: len(got)]
    # Only a flip in the last record (or in padding/tail) may go unreported.
    if pos < extents[-1][0]:
        assert got == records


# --------------------------------------------------------------------------------------------------
# The DB


def _tiny(fs: object | None = None) -> Options:
    kw = {"fs": fs} if fs is not None else {}
    return Options(memtable_size=16 * 1024, background_work=False, **kw)


class _KeepRemovedLogs(MemFileSystem):
    """The in-memory file system, keeping the last bytes of every WAL the DB removes."""

    def __init__(self) -> None:
        super().__init__()
        self.removed_logs: dict[str, bytes] = {}

    def remove(self, path: str) -> None:
        if path.endswith(".log"):
            self.removed_logs[path] = self.read_file(path)
        super().remove(path)


def test_db_older_logs_are_cut_and_the_newest_is_preallocated() -> None:
    fs = _KeepRemovedLogs()
    db = DB.open("/db", Options(fs=fs, memtable_size=64 * 1024, background_work=True))
    try:
        for i in range(300):
            db.put(b"k%05d" % i, bytes(1000), sync=i % 10 == 0)
        db.flush()
        db.put(b"last", b"write")
        newest = sorted(n for n in fs.listdir("/db") if n.endswith(".log"))[-1]
        size = fs.file_size("/db/" + newest)
        assert size == WAL_PREALLOCATE
    finally:
        db.close()
    assert len(fs.removed_logs) >= 4
    for name, raw in fs.removed_logs.items():
        records, end = read_log(raw)
        assert end == len(raw) and records, f"{name} kept a tail"
    with DB.open("/db", Options(fs=fs)) as db:
        assert all(db.get(b"k%05d" % i) == bytes(1000) for i in range(300))


def test_db_zero_tail_in_an_older_log_is_corruption() -> None:
    """Older logs are sealed before a newer one exists, so a tail there means something went wrong."""
    fs = MemFileSystem()
    db = DB.open("/db", _tiny(fs))
    db.put(b"a", b"1", sync=True)
    db.close()
    fs_logs = sorted(n for n in fs.listdir("/db") if n.endswith(".log"))
    old = fs_logs[-1]
    # A newer log appears beside the preallocated one (as if it had not been sealed).
    nxt = f"{int(old[:-4]) + 1:06d}.log"
    w = LogWriter(fs.create("/db/" + nxt))
    w.sync()
    with pytest.raises(Corruption, match="not the newest"):
        DB.open("/db", _tiny(fs))


def test_db_failed_sync_refuses_writes_with_a_preallocated_log(tmp_path: Path) -> None:
    fs = FaultInjectingFileSystem(OsFileSystem())
    d = str(tmp_path / "db")
    db = DB.open(d, Options(fs=fs))
    try:
        db.put(b"a", b"1", sync=True)
        fs.fail_at(1, kinds=("sync",))
        with pytest.raises(IOFailure):
            db.put(b"b", b"2", sync=True)
        fs.heal()
        with pytest.raises(ReadOnlyError):
            db.put(b"c", b"3", sync=True)
        assert db.get(b"a") == b"1"
    finally:
        db.close()
    with DB.open(d) as db:
        assert db.get(b"a") == b"1"
        assert db.get(b"c") is None


_KILL_CHILD = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from lsmmail.engine.db import DB
db = DB.open(sys.argv[1])
n = int(sys.argv[3])
for i in range(n):
    db.put(b"k%05d" % i, b"v%d" % i * 50, sync=i % 3 == 0)
    if i == n // 2:
        # A record cut short by the kill: half of its bytes, then the preallocated zeros.
        rec = db._log.encode_record(b"\\x01" * 300)
        db._log.file.append(rec[: len(rec) // 2])
        break
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_with_a_torn_record_in_the_preallocated_tail(tmp_path: Path) -> None:
    d = str(tmp_path / "db")
    n = 400
    proc = subprocess.run([sys.executable, "-c", _KILL_CHILD, d, str(REPO), str(n)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    logs = sorted(p for p in Path(d).iterdir() if p.suffix == ".log")
    raw = logs[-1].read_bytes()
    assert len(raw) % WAL_PREALLOCATE == 0 and raw.endswith(bytes(1000))
    with DB.open(d) as db:
        for i in range(n // 2 + 1):
            assert db.get(b"k%05d" % i) == b"v%d" % i * 50
        assert db.get(b"k%05d" % (n // 2 + 1)) is None
        db.put(b"after", b"kill", sync=True)
    with DB.open(d) as db:
        assert db.get(b"after") == b"kill"
