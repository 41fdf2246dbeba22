"""Tests of the log format (lsmmail.engine.wal) against docs/format.md, "Log format".

The oracle for framing is an independent fragment walker written here from the spec (struct + xxhash
directly); the oracle for reading is the list of records the writer was given.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.engine.batch import encode_batch
from lsmmail.engine.errors import Corruption, ReadOnlyError
from lsmmail.engine.fs import FaultInjectingFileSystem, MemFileSystem, OsFileSystem
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL
from lsmmail.engine.wal import BLOCK_SIZE, LogReader, LogWriter, read_log

GOLDEN = Path(__file__).parents[1] / "golden" / "v1.log"
HDR = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _cks(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data) & 0xFFFFFFFF


def _payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _fragments(data: bytes, bs: int) -> list[tuple[int, int, bytes]]:
    """Independent spec walker: ``[(offset, type, payload)]``; asserts padding and checksums are right."""
    out = []
    pos = 0
    while pos < len(data):
        room = bs - pos % bs
        if room < HDR:
            assert data[pos : pos + room] == bytes(len(data[pos : pos + room])), "padding must be zeros"
            pos += room
            continue
        cks, length, kind = struct.unpack_from("<IHB", data, pos)
        assert kind in (FULL, FIRST, MIDDLE, LAST)
        assert pos % bs + HDR + length <= bs, "a fragment never crosses a block boundary"
        payload = data[pos + HDR : pos + HDR + length]
        assert len(payload) == length
        assert cks == _cks(bytes((kind,)) + payload)
        out.append((pos, kind, payload))
        pos += HDR + length
    return out


def _write(records: list[bytes], bs: int = BLOCK_SIZE) -> tuple[bytes, list[tuple[int, int]]]:
    """Write ``records`` to a fresh in-memory log; return its bytes and each record's (start, end)."""
    fs = MemFileSystem()
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/000001.log"), block_size=bs)
    extents = []
    for r in records:
        start = w.size
        w.add_record(r)
        extents.append((start, w.size))
    data = fs.read_file("/db/000001.log")
    assert len(data) == w.size
    return data, extents


def _check_framing(records: list[bytes], data: bytes, bs: int) -> None:
    frags = _fragments(data, bs)
    joined: list[bytes] = []
    cur: bytearray | None = None
    for pos, kind, payload in frags:
        if kind == FULL:
            assert cur is None
            joined.append(payload)
        elif kind == FIRST:
            assert cur is None
            # FIRST only when the record does not fit in the rest of the block.
            assert pos % bs + HDR + len(payload) == bs
            cur = bytearray(payload)
        else:
            assert cur is not None
            cur += payload
            if kind == MIDDLE:
                assert pos % bs == 0 and len(payload) == bs - HDR
            else:
                assert pos % bs == 0
                joined.append(bytes(cur))
                cur = None
    assert cur is None
    assert joined == records


def _record_of_byte(extents: list[tuple[int, int]], bs: int, pos: int) -> int | None:
    """Index of the record whose fragments hold byte ``pos``, or None for block padding."""
    for i, (start, end) in enumerate(extents):
        if start <= pos < end:
            room = bs - start % bs
            if room < HDR and pos < start + room:
                return None
            return i
    raise AssertionError(pos)


# Record sizes that hit the interesting cases at the real block size: exactly filling a block, leaving
# 0-8 bytes (padding or a zero-length FIRST), empty, multi-block.
_SIZES = st.one_of(
    st.integers(0, 64),
    st.integers(0, 8).map(lambda k: BLOCK_SIZE - HDR - k),
    st.integers(0, 3 * BLOCK_SIZE),
    st.sampled_from([0, 1, BLOCK_SIZE - HDR, BLOCK_SIZE, 2 * (BLOCK_SIZE - HDR), 2 * BLOCK_SIZE - HDR]),
)


# Records for tiny-block logs: short ones, and longer ones that span several tiny blocks.
_RECORD = st.one_of(st.binary(max_size=40), st.integers(0, 300).map(lambda n: _payload(n, n)))
# For the exhaustive (every offset) tests: logs of at most a few KiB.
_SHORT_RECORD = st.one_of(st.binary(max_size=40), st.integers(0, 150).map(lambda n: _payload(n, n)))


# --------------------------------------------------------------------------------------------------
# Framing


def test_empty_record_is_one_full_fragment() -> None:
    data, _ = _write([b""])
    assert data == struct.pack("<IHB", _cks(b"\x01"), 0, FULL)


def test_header_layout_is_checksum_length_type() -> None:
    data, _ = _write([b"abc"])
    assert data == struct.pack("<I", _cks(b"\x01abc")) + b"\x03\x00" + b"\x01" + b"abc"


@pytest.mark.parametrize("left", range(0, 16))
def test_block_tail_padding_and_zero_length_first(left: int) -> None:
    """Record 1 leaves ``left`` bytes in block 0; record 2 (5 bytes) must be framed per the spec."""
    r1 = _payload(left, BLOCK_SIZE - HDR - left)
    r2 = b"hello"
    data, extents = _write([r1, r2])
    assert extents[0] == (0, BLOCK_SIZE - left)
    frags = _fragments(data, BLOCK_SIZE)
    kinds = [(pos, kind, len(p)) for pos, kind, p in frags]
    if left < HDR:
        # Fewer than 7 bytes left: zero padding, then a FULL at the next block.
        assert data[BLOCK_SIZE - left : BLOCK_SIZE] == bytes(left)
        assert kinds == [(0, FULL, len(r1)), (BLOCK_SIZE, FULL, 5)]
    elif left - HDR >= 5:
        assert kinds == [(0, FULL, len(r1)), (BLOCK_SIZE - left, FULL, 5)]
    else:
        # A header fits but not the whole record: FIRST with what fits (possibly 0 bytes), LAST after.
        n = left - HDR
        assert kinds == [(0, FULL, len(r1)), (BLOCK_SIZE - left, FIRST, n), (BLOCK_SIZE, LAST, 5 - n)]
    assert read_log(data) == ([r1, r2], len(data))


def test_multi_block_record_uses_first_middle_last() -> None:
    rec = _payload(1, 3 * BLOCK_SIZE)
    data, _ = _write([rec])
    kinds = [kind for _, kind, _ in _fragments(data, BLOCK_SIZE)]
    assert kinds == [FIRST, MIDDLE, MIDDLE, LAST]
    assert read_log(data) == ([rec], len(data))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(_SIZES, max_size=6), seed=st.integers(0, 2**32))
def test_round_trip_real_block_size(sizes: list[int], seed: int) -> None:
    records = [_payload(seed + i, n) for i, n in enumerate(sizes)]
    data, _ = _write(records)
    _check_framing(records, data, BLOCK_SIZE)
    assert read_log(data) == (records, len(data))


@settings(max_examples=300, deadline=None)
@given(
    bs=st.sampled_from([8, 9, 13, 16, 32, 64]),
    records=st.lists(_RECORD, max_size=10),
    split=st.integers(0, 10),
)
def test_round_trip_small_blocks_and_continuing_a_log(bs: int, records: list[bytes], split: int) -> None:
    """Tiny blocks put every boundary case in reach; a second writer continues at ``initial_offset``."""
    fs = MemFileSystem()
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/1.log"), block_size=bs)
    for r in records[:split]:
        w.add_record(r)
    w.close()
    w2 = LogWriter(fs.open_append("/db/1.log"), initial_offset=fs.file_size("/db/1.log"), block_size=bs)
    for r in records[split:]:
        w2.add_record(r)
    data = fs.read_file("/db/1.log")
    assert w2.size == len(data)
    _check_framing(records, data, bs)
    assert read_log(data, block_size=bs) == (records, len(data))


def test_encode_record_then_one_append_for_a_group() -> None:
    fs = FaultInjectingFileSystem(MemFileSystem())
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/1.log"))
    records = [_payload(i, n) for i, n in enumerate([10, BLOCK_SIZE, 0, 3 * BLOCK_SIZE + 5, 1])]
    before = fs.counts["write"]
    w.append_encoded(b"".join(w.encode_record(r) for r in records[:3]))
    w.add_records(records[3:])
    assert fs.counts["write"] - before == 2
    data = fs.read_file("/db/1.log")
    assert w.size == len(data)
    assert read_log(data) == (records, len(data))


def test_each_record_is_one_append_even_across_blocks() -> None:
    fs = FaultInjectingFileSystem(MemFileSystem())
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/1.log"))
    for i, n in enumerate([0, 100, 5 * BLOCK_SIZE, BLOCK_SIZE - 3, 7]):
        before = fs.counts["write"]
        w.add_record(_payload(i, n))
        assert fs.counts["write"] - before == 1


def test_failed_append_poisons_the_writer() -> None:
    fs = FaultInjectingFileSystem(MemFileSystem())
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/1.log"))
    w.add_record(b"ok")
    fs.fail_at(1, kinds=("write",))
    with pytest.raises(OSError):
        w.add_record(b"lost")
    fs.heal()
    with pytest.raises(ReadOnlyError):
        w.add_record(b"after")
    with pytest.raises(ReadOnlyError):
        w.sync()


def test_failed_sync_poisons_the_writer() -> None:
    fs = FaultInjectingFileSystem(MemFileSystem())
    fs.makedirs("/db")
    w = LogWriter(fs.create("/db/1.log"))
    w.add_record(b"ok")
    fs.fail_at(1, kinds=("sync",))
    with pytest.raises(OSError):
        w.sync()
    fs.heal()
    with pytest.raises(ReadOnlyError):
        w.add_record(b"after")


# --------------------------------------------------------------------------------------------------
# Torn tails


def _assert_prefix(got: list[bytes], records: list[bytes]) -> None:
    assert got == records[: len(got)], "records read must be a byte-exact prefix of those written"


@settings(max_examples=200, deadline=None)
@given(bs=st.sampled_from([13, 16, 32, 64]), records=st.lists(_SHORT_RECORD, min_size=1, max_size=6))
def test_truncation_at_every_offset_small_blocks(bs: int, records: list[bytes]) -> None:
    data, extents = _write(records, bs)
    for cut in range(len(data) + 1):
        got, end = read_log(data[:cut], block_size=bs)
        whole = [i for i, (_, e) in enumerate(extents) if e <= cut]
        assert got == records[: len(whole)]
        assert end == (extents[len(whole) - 1][1] if whole else 0)


def test_truncation_real_block_size() -> None:
    sizes = [10, BLOCK_SIZE - HDR - 3, 0, 2 * BLOCK_SIZE + 100, 500, BLOCK_SIZE, 20]
    records = [_payload(i, n) for i, n in enumerate(sizes)]
    data, extents = _write(records)
    cuts = set(range(0, len(data) + 1, 997))
    for start, end in extents:
        for d in range(-9, 10):
            cuts.update((start + d, end + d))
    for k in range(1, len(data) // BLOCK_SIZE + 1):
        cuts.update(range(k * BLOCK_SIZE - 9, k * BLOCK_SIZE + 9))
    for cut in sorted(c for c in cuts if 0 <= c <= len(data)):
        got, end = read_log(data[:cut])
        n = sum(1 for _, e in extents if e <= cut)
        assert got == records[:n]
        assert end == (extents[n - 1][1] if n else 0)


@pytest.mark.parametrize("zeros", [1, 6, 7, 100, BLOCK_SIZE, 3 * BLOCK_SIZE + 11])
def test_zero_filled_tail_reads_as_end_of_data(zeros: int) -> None:
    records = [_payload(i, n) for i, n in enumerate([5, 40000, 0, 17])]
    data, _ = _write(records)
    assert read_log(data + bytes(zeros)) == (records, len(data))


def test_garbage_tail_is_a_torn_tail() -> None:
    records = [_payload(i, n) for i, n in enumerate([5, 40000, 17])]
    data, _ = _write(records)
    for seed in range(20):
        tail = random.Random(seed).randbytes(random.Random(seed).randint(1, 3 * BLOCK_SIZE))
        assert read_log(data + tail) == (records, len(data))


def test_unfinished_record_at_end_of_file_is_torn() -> None:
    data, extents = _write([b"a", _payload(0, 2 * BLOCK_SIZE)])
    # Keep FIRST and MIDDLE fragments only: the file ends exactly at a block boundary.
    assert read_log(data[: 2 * BLOCK_SIZE]) == ([b"a"], extents[0][1])


def test_reopen_truncate_and_continue_after_torn_tail() -> None:
    fs = MemFileSystem()
    fs.makedirs("/db")
    records = [_payload(i, n) for i, n in enumerate([100, BLOCK_SIZE + 50, 30])]
    w = LogWriter(fs.create("/db/1.log"))
    for r in records:
        w.add_record(r)
    f = fs.create("/db/2.log")
    torn = fs.read_file("/db/1.log")[:-10]
    f.append(torn)
    got, end = read_log(torn)
    assert got == records[:2]
    f.truncate(end)
    w2 = LogWriter(f, initial_offset=end)
    w2.add_record(b"new")
    assert read_log(fs.read_file("/db/2.log")) == (records[:2] + [b"new"], w2.size)


# --------------------------------------------------------------------------------------------------
# Corruption


@settings(max_examples=200, deadline=None)
@given(
    bs=st.sampled_from([13, 16, 32, 64]),
    records=st.lists(_SHORT_RECORD, min_size=2, max_size=6),
    mask=st.sampled_from([0x01, 0x80, 0xFF, 0x10]),
)
def test_byte_flip_anywhere_small_blocks(bs: int, records: list[bytes], mask: int) -> None:
    """A flip never yields a wrong record; a flip in any record but the last raises Corruption."""
    data, extents = _write(records, bs)
    last = len(records) - 1
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= mask
        owner = _record_of_byte(extents, bs, pos)
        try:
            got, _ = read_log(bytes(bad), block_size=bs)
        except Corruption:
            continue
        assert owner is None or owner == last, f"flip at {pos} in record {owner} went unnoticed"
        _assert_prefix(got, records)
        if owner == last:
            assert got == records[:last]


def test_flip_in_an_early_record_real_block_size_raises() -> None:
    records = [_payload(i, n) for i, n in enumerate([50, 70000, 20, 30])]
    data, extents = _write(records)
    for pos in [0, 4, 5, 6, 7, 30, extents[1][0] + 3, extents[1][0] + 40000, extents[2][0] + 10]:
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(Corruption):
            read_log(bytes(bad))


def test_flip_in_the_last_record_is_a_torn_tail() -> None:
    records = [_payload(i, n) for i, n in enumerate([50, 70000, 30])]
    data, extents = _write(records)
    for pos in range(extents[2][0], extents[2][1]):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert read_log(bytes(bad)) == (records[:2], extents[1][1])


def test_zeroed_middle_followed_by_good_data_is_corruption() -> None:
    records = [_payload(i, 100) for i in range(5)]
    data, extents = _write(records)
    bad = bytearray(data)
    s, e = extents[1]
    bad[s:e] = bytes(e - s)
    with pytest.raises(Corruption):
        read_log(bytes(bad))


def test_corruption_names_the_file_and_offset() -> None:
    records = [b"a" * 10, b"b" * 10, b"c" * 10]
    data, extents = _write(records)
    bad = bytearray(data)
    bad[extents[1][0] + HDR] ^= 1
    with pytest.raises(Corruption, match=rf"000042\.log.*offset {extents[1][0]}\b"):
        read_log(bytes(bad), name="000042.log")


def _frag(kind: int, payload: bytes) -> bytes:
    return struct.pack("<IHB", _cks(bytes((kind,)) + payload), len(payload), kind) + payload


@pytest.mark.parametrize(
    "frags",
    [
        [(LAST, b"orphan")],
        [(FULL, b"a"), (MIDDLE, b"orphan")],
        [(FIRST, b"x"), (FULL, b"y")],
        [(FIRST, b"x"), (FIRST, b"y"), (LAST, b"z")],
        [(FULL, b"a"), (FIRST, b"x"), (MIDDLE, b"y"), (FULL, b"b")],
    ],
)
def test_good_fragments_out_of_sequence_are_corruption(frags: list[tuple[int, bytes]]) -> None:
    # All fit in one block, so no padding is involved.
    with pytest.raises(Corruption):
        read_log(b"".join(_frag(k, p) for k, p in frags))


def test_corrupt_chunk_far_before_good_data_via_file_reader() -> None:
    """LogReader reads ~1 MiB at a time; the scan for good data must cross chunk boundaries."""
    fs = MemFileSystem()
    fs.makedirs("/db")
    records = [_payload(i, 30000) for i in range(45)]  # ~1.35 MB: two read chunks
    w = LogWriter(fs.create("/db/1.log"))
    ends = []
    for r in records:
        w.add_record(r)
        ends.append(w.size)
    data = fs.read_file("/db/1.log")
    assert list(LogReader(fs.open_read("/db/1.log"))) == records
    # Zero record 33's payload (in the second chunk) and everything after it but record 44.
    f = fs.create("/db/2.log")
    bad = bytearray(data)
    start = ends[32] + 1000
    bad[start : ends[43]] = bytes(ends[43] - start)
    f.append(bytes(bad))
    with pytest.raises(Corruption):
        list(LogReader(fs.open_read("/db/2.log")))
    # Damage only the last record: a torn tail, the other 44 come back.
    f = fs.create("/db/3.log")
    f.append(data[:-100] + bytes(100))
    reader = LogReader(fs.open_read("/db/3.log"))
    assert list(reader) == records[:-1]
    assert reader.end_offset == ends[43]


def test_os_file_system_round_trip(tmp_path: Path) -> None:
    fs = OsFileSystem()
    path = str(tmp_path / "000001.log")
    records = [_payload(i, n) for i, n in enumerate([0, 10, 2 * BLOCK_SIZE, 5])]
    w = LogWriter(fs.create(path))
    for r in records:
        w.add_record(r)
    w.sync()
    w.close()
    reader = LogReader(fs.open_read(path))
    assert list(reader) == records
    assert reader.end_offset == os.path.getsize(path)


# --------------------------------------------------------------------------------------------------
# Golden file: pins format v1 byte for byte


def _golden_records() -> list[bytes]:
    batch = encode_batch(
        1000,
        [(KIND_PUT, b"alice", b"hello"), (KIND_DELETE, b"bob", b""), (KIND_RANGE_DEL, b"m", b"n")],
    )
    multi = bytes(range(256)) * 300  # 76,800 bytes: FIRST, MIDDLE, LAST
    records = [batch, b"", multi, b"after the big one"]
    used = sum(len(r) + HDR for r in records) + HDR * 2  # multi takes 3 headers
    fill = BLOCK_SIZE - used % BLOCK_SIZE - HDR - 3  # leaves 3 bytes: zero padding
    records += [b"f" * fill, b"last record"]
    return records


def test_golden_v1_log() -> None:
    records = _golden_records()
    data, extents = _write(records)
    assert extents[4][1] % BLOCK_SIZE == BLOCK_SIZE - 3, "golden log must exercise block padding"
    if os.environ.get("LSMMAIL_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(data)
    assert GOLDEN.exists(), "missing golden file; run with LSMMAIL_REGEN_GOLDEN=1 to create it"
    golden = GOLDEN.read_bytes()
    assert golden == data, "log format v1 changed: that needs a new format version"
    assert read_log(golden) == (records, len(golden))
    _check_framing(records, golden, BLOCK_SIZE)
