"""Tests of blob files (docs/format.md, "Blob file")."""

from __future__ import annotations

import os
import random
import struct
import threading
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.blob import (
    WRITE_CHUNK,
    BlobFileReader,
    BlobFileWriter,
    decode_blob_ref,
    encode_blob_ref,
)
from lsmmail.engine.errors import Corruption, InvalidArgument
from lsmmail.engine.fs import FaultInjectingFileSystem, MemFileSystem, OsFileSystem

GOLDEN = Path(__file__).parents[1] / "golden" / "v1.blob"


def _cks(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data) & 0xFFFFFFFF


def _write(
    values: list[bytes], file_number: int = 7
) -> tuple[MemFileSystem, list[bytes], tuple[int, int, int]]:
    fs = MemFileSystem()
    fs.makedirs("/db")
    w = BlobFileWriter(fs.create(f"/db/{file_number:06d}.blob"), file_number)
    refs = [w.add(v) for v in values]
    result = w.finish()
    return fs, refs, result


def _open(fs: MemFileSystem, file_number: int = 7) -> BlobFileReader:
    return BlobFileReader.open(fs.open_read(f"/db/{file_number:06d}.blob"), file_number)


def _spec_parse(data: bytes) -> list[tuple[int, bytes]]:
    """Independent walker written from the spec: ``[(record_offset, value)]``; asserts every field."""
    assert data[:8] == b"lsmmBLB\x01"
    assert struct.unpack_from("<II", data, 8) == (1, 0)
    count, total, reserved, cks = struct.unpack_from("<QQII", data, len(data) - 32)
    assert data[-8:] == b"lsmmBLB\x02"
    assert reserved == 0 and cks == _cks(data[-32:-12])
    out = []
    pos = 16
    while pos < len(data) - 32:
        n, c = struct.unpack_from("<II", data, pos)
        value = data[pos + 8 : pos + 8 + n]
        assert c == _cks(value)
        out.append((pos, value))
        pos += 8 + n
    assert pos == len(data) - 32
    assert (count, total) == (len(out), sum(len(v) for _, v in out))
    return out


_values = st.lists(
    st.one_of(st.binary(max_size=64), st.integers(0, 20000).map(lambda n: random.Random(n).randbytes(n))),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(values=_values, file_number=st.integers(1, 2**40))
def test_round_trip(values: list[bytes], file_number: int) -> None:
    fs, refs, (count, value_bytes, size) = _write(values, file_number)
    data = fs.read_file(f"/db/{file_number:06d}.blob")
    assert (count, value_bytes, size) == (len(values), sum(map(len, values)), len(data))
    parsed = _spec_parse(data)
    assert [v for _, v in parsed] == values
    r = _open(fs, file_number)
    assert (r.record_count, r.value_bytes) == (count, value_bytes)
    for ref, (offset, value) in zip(refs, parsed, strict=True):
        assert ref == encode_blob_ref(file_number, offset, len(value))
        fn, off, n = decode_blob_ref(ref)
        assert (fn, off, n) == (file_number, offset, len(value))
        assert r.get(off, n) == value
    assert list(r.records()) == parsed
    r.verify()
    r.close()


def test_empty_blob_file() -> None:
    fs, refs, result = _write([])
    assert refs == [] and result == (0, 0, 48)
    r = _open(fs)
    assert list(r.records()) == []
    r.verify()


def test_values_larger_than_the_write_chunk() -> None:
    big = random.Random(1).randbytes(WRITE_CHUNK + 3)
    values = [b"a", big, b"b", big[:WRITE_CHUNK - 1]]
    fs, refs, _ = _write(values)
    r = _open(fs)
    assert [r.get(*decode_blob_ref(ref)[1:]) for ref in refs] == values
    assert [v for _, v in r.records()] == values
    r.verify()


def test_writes_go_out_in_chunks_of_about_a_mebibyte() -> None:
    fs = FaultInjectingFileSystem(MemFileSystem())
    fs.makedirs("/db")
    w = BlobFileWriter(fs.create("/db/000001.blob"), 1)
    before = fs.counts["write"]
    for i in range(600):
        w.add(bytes([i % 256]) * 4096)
    _, _, size = w.finish()
    appends = fs.counts["write"] - before
    assert size == 16 + 600 * (8 + 4096) + 32
    # ~2.4 MiB in 1 MiB chunks: 2 full chunks plus the rest with the footer.
    assert appends == size // WRITE_CHUNK + 1


def test_writer_refuses_misuse() -> None:
    fs = MemFileSystem()
    fs.makedirs("/db")
    f = fs.create("/db/000001.blob")
    f.append(b"x")
    with pytest.raises(InvalidArgument):
        BlobFileWriter(f, 1)
    w = BlobFileWriter(fs.create("/db/000002.blob"), 2)
    w.add(b"v")
    w.finish()
    with pytest.raises(InvalidArgument):
        w.add(b"more")
    with pytest.raises(InvalidArgument):
        w.finish()


def test_concurrent_gets() -> None:
    values = [random.Random(i).randbytes(i * 37 % 9000) for i in range(200)]
    fs, refs, _ = _write(values)
    r = _open(fs)
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        order = list(range(len(values)))
        random.Random(seed).shuffle(order)
        try:
            for _ in range(3):
                for i in order:
                    _, off, n = decode_blob_ref(refs[i])
                    assert r.get(off, n) == values[i]
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------------------------------
# Corruption


def test_every_byte_flip_is_caught_and_never_returns_a_wrong_value() -> None:
    values = [b"", b"hello", bytes(range(40)), b"x" * 9]
    fs, refs, _ = _write(values)
    data = fs.read_file("/db/000007.blob")
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= mask
            f = fs.create("/db/000007.blob")
            f.append(bytes(bad))
            try:
                r = _open(fs)
            except Corruption:
                continue
            for ref, value in zip(refs, values, strict=True):
                _, off, n = decode_blob_ref(ref)
                try:
                    assert r.get(off, n) == value, f"flip at {pos} returned a wrong value"
                except Corruption:
                    pass
            with pytest.raises(Corruption):
                r.verify()


def test_truncated_or_extended_files_fail_to_open() -> None:
    fs, _, _ = _write([b"one", b"two" * 100, b"three"])
    data = fs.read_file("/db/000007.blob")
    for cut in range(len(data)):
        fs.create("/db/000007.blob").append(data[:cut])
        with pytest.raises(Corruption):
            _open(fs)
    for extra in (b"\x00", b"\x00" * 8, data[-32:]):
        fs.create("/db/000007.blob").append(data + extra)
        with pytest.raises(Corruption):
            _open(fs)


def test_footer_counts_that_disagree_with_the_records_fail_verify() -> None:
    """A well-formed footer whose count and byte total still add up to the file size, but are wrong."""
    fs, _, (count, total, _) = _write([b"a" * 20, b"b" * 30])
    data = fs.read_file("/db/000007.blob")
    body = struct.pack("<QQI", count + 1, total - 8, 0)
    forged = data[:-32] + body + struct.pack("<I", _cks(body)) + b"lsmmBLB\x02"
    fs.create("/db/000007.blob").append(forged)
    r = _open(fs)
    with pytest.raises(Corruption, match="footer says"):
        r.verify()


def test_bad_references_raise_corruption_naming_the_file() -> None:
    fs, refs, _ = _write([b"first value", b"second", b"third"])
    r = _open(fs)
    _, off, n = decode_blob_ref(refs[1])
    size = r.file_size
    bad = [(off, n + 1), (off, n - 1), (off + 1, n), (0, n), (8, 0), (size - 32, 0), (off, 1 << 40)]
    for bad_off, bad_n in bad:
        with pytest.raises(Corruption, match=r"000007\.blob"):
            r.get(bad_off, bad_n)
    assert r.get(off, n) == b"second"


@pytest.mark.parametrize(
    "ref",
    [
        b"",
        b"\x07",
        b"\x07\x10",
        b"\x07\x10\x05\x00",  # trailing byte
        b"\x07\x80",  # varint cut short
        b"\xff" * 11 + b"\x10\x05",  # over-long varint
        b"\x07\x0f\x05",  # offset inside the header
    ],
)
def test_malformed_references(ref: bytes) -> None:
    with pytest.raises(Corruption):
        decode_blob_ref(ref)


def test_os_file_system_round_trip(tmp_path: Path) -> None:
    fs = OsFileSystem()
    path = str(tmp_path / "000003.blob")
    f = fs.create(path)
    w = BlobFileWriter(f, 3)
    values = [b"a" * 5000, b"", b"b" * 70000]
    refs = [w.add(v) for v in values]
    _, _, size = w.finish()
    f.sync()
    f.close()
    assert os.path.getsize(path) == size
    r = BlobFileReader.open(fs.open_read(path), 3)
    assert [r.get(*decode_blob_ref(ref)[1:]) for ref in refs] == values
    r.verify()
    r.close()
    # Corrupt one value byte on disk: verify and get both notice, and the message names the path.
    with open(path, "r+b") as fh:
        fh.seek(16 + 8 + 100)
        fh.write(b"X")
    r = BlobFileReader.open(fs.open_read(path), 3)
    with pytest.raises(Corruption, match="000003.blob.*offset 16"):
        r.get(*decode_blob_ref(refs[0])[1:])
    with pytest.raises(Corruption):
        r.verify()
    r.close()


# --------------------------------------------------------------------------------------------------
# Golden file


def test_golden_v1_blob() -> None:
    values = [b"", b"small", bytes(range(256)) * 20, bytes(4096), b"end"]
    fs, refs, result = _write(values, file_number=7)
    data = fs.read_file("/db/000007.blob")
    assert result == (5, 9224, 9312)
    assert [decode_blob_ref(r) for r in refs] == [
        (7, 16, 0),
        (7, 24, 5),
        (7, 37, 5120),
        (7, 5165, 4096),
        (7, 9269, 3),
    ]
    assert refs[3] == b"\x07\xad\x28\x80\x20"
    assert data[:16] == b"lsmmBLB\x01\x01\x00\x00\x00\x00\x00\x00\x00"
    if os.environ.get("LSMMAIL_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(data)
    assert GOLDEN.exists(), "missing golden file; run with LSMMAIL_REGEN_GOLDEN=1 to create it"
    golden = GOLDEN.read_bytes()
    assert golden == data, "blob format v1 changed: that needs a new format version"
    assert [v for _, v in _spec_parse(golden)] == values
