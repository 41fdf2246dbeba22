"""Blob files: large values stored outside the LSM tree (docs/format.md, "Blob file").

::

    header (16 bytes): magic "lsmmBLB\\x01", u32 format_version = 1, u32 reserved = 0
    records:           u32 value_length, u32 checksum(value), value
    footer (32 bytes): u64 record_count, u64 value_bytes, u32 reserved = 0,
                       u32 footer_checksum (of the 20 bytes before it), magic "lsmmBLB\\x02"

An SSTable entry of kind BLOB holds a **blob reference** ``varint file_number || varint record_offset ||
varint value_length`` instead of the value, where ``record_offset`` is the offset of the record's
``value_length`` field. Compaction then moves the ~10-byte reference, not the value.

Records are contiguous, so a complete file is exactly ``16 + 8 * record_count + value_bytes + 32`` bytes;
:meth:`BlobFileReader.open` checks that as well as both magics and the footer checksum.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from .coding import checksum, get_varint, put_varint
from .errors import Corruption, InvalidArgument
from .fs import ReadableFile, WritableFile

HEADER_MAGIC = b"lsmmBLB\x01"
FOOTER_MAGIC = b"lsmmBLB\x02"
FORMAT_VERSION = 1

HEADER_SIZE = 16
FOOTER_SIZE = 32
#: u32 value_length + u32 checksum before each value.
RECORD_HEADER_SIZE = 8

#: Values are at most 2**32 - 1 bytes: the record stores the length as u32.
MAX_VALUE_SIZE = (1 << 32) - 1

#: The writer hands the file ~1 MiB at a time: with 4 KiB+ values that is one write syscall per ~250
#: values instead of one per value, and the buffer stays small next to a 32 MiB memtable.
WRITE_CHUNK = 1 << 20

_header = struct.Struct("<8sII")
_record_header = struct.Struct("<II")
_footer_body = struct.Struct("<QQI")  # record_count, value_bytes, reserved (the 20 checksummed bytes)
_footer_tail = struct.Struct("<I8s")  # footer_checksum, magic


def blob_file_name(file_number: int) -> str:
    return f"{file_number:06d}.blob"


def encode_blob_ref(file_number: int, record_offset: int, value_length: int) -> bytes:
    """The value of a BLOB entry pointing at a record."""
    out = bytearray()
    put_varint(out, file_number)
    put_varint(out, record_offset)
    put_varint(out, value_length)
    return bytes(out)


def decode_blob_ref(ref: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """Split a blob reference into ``(file_number, record_offset, value_length)``.

    Raises ``Corruption`` on a malformed varint, missing fields, trailing bytes, or an offset that cannot
    be a record's (inside the header).
    """
    try:
        file_number, pos = get_varint(ref, 0)
        record_offset, pos = get_varint(ref, pos)
        value_length, pos = get_varint(ref, pos)
    except Corruption:
        raise Corruption(f"malformed blob reference {bytes(ref)[:32].hex()}") from None
    if pos != len(ref):
        raise Corruption(f"blob reference has {len(ref) - pos} trailing bytes")
    if record_offset < HEADER_SIZE or value_length > MAX_VALUE_SIZE:
        raise Corruption(f"blob reference to offset {record_offset}, length {value_length} is impossible")
    return file_number, record_offset, value_length


class BlobFileWriter:
    """Writes one blob file. Not thread-safe (one flush or compaction owns it).

    The file must be new and empty. Records are buffered and appended in ~1 MiB chunks;
    :meth:`finish` appends the rest and the footer. The writer never syncs or closes the file: the caller
    syncs it before the manifest refers to it (a blob file without a footer is never referenced and is
    removed at open).
    """

    def __init__(self, file: WritableFile, file_number: int) -> None:
        if file.size() != 0:
            raise InvalidArgument(f"blob file {blob_file_name(file_number)} is not empty")
        self.file = file
        self.file_number = file_number
        self._buf = bytearray(_header.pack(HEADER_MAGIC, FORMAT_VERSION, 0))
        self._size = HEADER_SIZE  # bytes written or buffered
        self._record_count = 0
        self._value_bytes = 0
        self._finished = False

    @property
    def size(self) -> int:
        """Bytes in the file so far, counting what is still buffered (not the footer)."""
        return self._size

    @property
    def record_count(self) -> int:
        return self._record_count

    @property
    def value_bytes(self) -> int:
        return self._value_bytes

    def add(self, value: bytes | bytearray | memoryview) -> bytes:
        """Append a record holding ``value``; return its encoded blob reference."""
        if self._finished:
            raise InvalidArgument("blob file writer already finished")
        n = value.nbytes if isinstance(value, memoryview) else len(value)
        if n > MAX_VALUE_SIZE:
            raise InvalidArgument(f"value of {n} bytes is larger than a blob record holds")
        offset = self._size
        self._buf += _record_header.pack(n, checksum(value))
        if n >= WRITE_CHUNK:
            # A large value goes to the file directly rather than through a copy in the buffer.
            self._flush()
            self.file.append(value)
        else:
            self._buf += value
            if len(self._buf) >= WRITE_CHUNK:
                self._flush()
        self._size += RECORD_HEADER_SIZE + n
        self._record_count += 1
        self._value_bytes += n
        return encode_blob_ref(self.file_number, offset, n)

    def add_records(self, records: bytes | bytearray | memoryview, count: int, value_bytes: int) -> None:
        """Append ``count`` whole records holding ``value_bytes`` value bytes, framed by the caller
        exactly as :meth:`add` frames each (a flush's spill from native/compact.c); the caller computed
        their references from :attr:`size`. The bytes are written before this returns (``records`` may
        be a view of a buffer the caller reuses)."""
        if self._finished:
            raise InvalidArgument("blob file writer already finished")
        self._flush()
        self.file.append(records)
        self._size += len(records)
        self._record_count += count
        self._value_bytes += value_bytes

    def _flush(self) -> None:
        if self._buf:
            self.file.append(self._buf)
            self._buf = bytearray()

    def finish(self) -> tuple[int, int, int]:
        """Append buffered records and the footer; return ``(record_count, value_bytes, file_size)``."""
        if self._finished:
            raise InvalidArgument("blob file writer already finished")
        body = _footer_body.pack(self._record_count, self._value_bytes, 0)
        self._buf += body
        self._buf += _footer_tail.pack(checksum(body), FOOTER_MAGIC)
        self._flush()
        self._finished = True
        self._size += FOOTER_SIZE
        return self._record_count, self._value_bytes, self._size


class BlobFileReader:
    """Reads values of one complete blob file. :meth:`get` is safe to call from many threads."""

    def __init__(
        self, file: ReadableFile, file_number: int, size: int, record_count: int, value_bytes: int
    ) -> None:
        self.file = file
        self.file_number = file_number
        self.name = getattr(file, "path", "") or blob_file_name(file_number)
        self._size = size
        self._records_end = size - FOOTER_SIZE
        self._record_count = record_count
        self._value_bytes = value_bytes

    @classmethod
    def open(cls, file: ReadableFile, file_number: int) -> BlobFileReader:
        """Check the header, the footer and the file size; raise ``Corruption`` if any is wrong. The
        reader owns ``file``: it is closed if opening fails."""
        try:
            return cls._open(file, file_number)
        except BaseException:
            file.close()
            raise

    @classmethod
    def _open(cls, file: ReadableFile, file_number: int) -> BlobFileReader:
        name = getattr(file, "path", "") or blob_file_name(file_number)
        size = file.size()
        if size < HEADER_SIZE + FOOTER_SIZE:
            raise Corruption(f"{name}: {size} bytes is too short for a blob file (no footer?)")
        head = file.read_at(0, HEADER_SIZE)
        if len(head) != HEADER_SIZE:
            raise Corruption(f"{name}: short read of the header")
        magic, version, reserved = _header.unpack(head)
        if magic != HEADER_MAGIC:
            raise Corruption(f"{name}: bad header magic {magic!r} at offset 0")
        if version != FORMAT_VERSION:
            raise Corruption(f"{name}: unsupported blob format version {version} at offset 8")
        if reserved != 0:
            raise Corruption(f"{name}: reserved header field is {reserved}, not 0, at offset 12")
        foot_at = size - FOOTER_SIZE
        foot = file.read_at(foot_at, FOOTER_SIZE)
        if len(foot) != FOOTER_SIZE:
            raise Corruption(f"{name}: short read of the footer at offset {foot_at}")
        record_count, value_bytes, reserved = _footer_body.unpack_from(foot, 0)
        cks, magic = _footer_tail.unpack_from(foot, _footer_body.size)
        if magic != FOOTER_MAGIC:
            raise Corruption(f"{name}: bad footer magic {magic!r} at offset {foot_at + 24} (unfinished?)")
        if cks != checksum(foot[: _footer_body.size]):
            raise Corruption(f"{name}: footer checksum mismatch at offset {foot_at}")
        if reserved != 0:
            raise Corruption(f"{name}: reserved footer field is {reserved}, not 0, at offset {foot_at + 16}")
        expected = HEADER_SIZE + RECORD_HEADER_SIZE * record_count + value_bytes + FOOTER_SIZE
        if expected != size:
            raise Corruption(
                f"{name}: footer says {record_count} records of {value_bytes} bytes ({expected} bytes "
                f"of file) but the file has {size} bytes"
            )
        return cls(file, file_number, size, record_count, value_bytes)

    @property
    def record_count(self) -> int:
        return self._record_count

    @property
    def value_bytes(self) -> int:
        return self._value_bytes

    @property
    def file_size(self) -> int:
        return self._size

    def get(self, record_offset: int, value_length: int) -> bytes:
        """The value of the record at ``record_offset`` (from a blob reference), with one read.

        Raises ``Corruption`` if the reference points outside the records, or the stored length differs
        from ``value_length``, or the checksum does not match.
        """
        end = record_offset + RECORD_HEADER_SIZE + value_length
        if record_offset < HEADER_SIZE or end > self._records_end:
            raise Corruption(
                f"{self.name}: blob reference to offset {record_offset}, length {value_length} "
                f"lies outside the records (which end at {self._records_end})"
            )
        data = self.file.read_at(record_offset, RECORD_HEADER_SIZE + value_length)
        if len(data) != RECORD_HEADER_SIZE + value_length:
            raise Corruption(f"{self.name}: short read of the blob record at offset {record_offset}")
        stored_length, cks = _record_header.unpack_from(data, 0)
        if stored_length != value_length:
            raise Corruption(
                f"{self.name}: blob record at offset {record_offset} holds {stored_length} bytes, "
                f"the reference says {value_length}"
            )
        value = data[RECORD_HEADER_SIZE:]
        if checksum(value) != cks:
            raise Corruption(f"{self.name}: blob record checksum mismatch at offset {record_offset}")
        return value

    def records(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(record_offset, value)`` for every record in file order, checking each checksum.

        Raises ``Corruption`` if a record runs past the footer or fails its checksum, or if the records
        do not add up to the footer's count and byte total. Reads in ~1 MiB chunks.
        """
        pos = HEADER_SIZE
        end = self._records_end
        buf = b""
        buf_at = pos  # file offset of buf[0]
        count = 0
        value_bytes = 0
        while pos < end:
            if pos + RECORD_HEADER_SIZE > end:
                raise Corruption(f"{self.name}: blob record header at offset {pos} runs into the footer")
            if pos + RECORD_HEADER_SIZE > buf_at + len(buf):
                buf, buf_at = self._read_span(pos, WRITE_CHUNK), pos
            n, cks = _record_header.unpack_from(buf, pos - buf_at)
            rec_end = pos + RECORD_HEADER_SIZE + n
            if rec_end > end:
                raise Corruption(
                    f"{self.name}: blob record at offset {pos} of {n} bytes runs past the records' end {end}"
                )
            if rec_end > buf_at + len(buf):
                buf, buf_at = self._read_span(pos, max(rec_end - pos, WRITE_CHUNK)), pos
            start = pos + RECORD_HEADER_SIZE - buf_at
            value = buf[start : start + n]
            if checksum(value) != cks:
                raise Corruption(f"{self.name}: blob record checksum mismatch at offset {pos}")
            yield pos, value
            count += 1
            value_bytes += n
            pos = rec_end
        if count != self._record_count or value_bytes != self._value_bytes:
            raise Corruption(
                f"{self.name}: records add up to {count} values of {value_bytes} bytes, the footer says "
                f"{self._record_count} of {self._value_bytes}"
            )

    def _read_span(self, offset: int, n: int) -> bytes:
        n = min(n, self._records_end - offset)
        data = self.file.read_at(offset, n)
        if len(data) != n:
            raise Corruption(f"{self.name}: short read at offset {offset}")
        return data

    def verify(self) -> None:
        """Check every record's checksum and that the records match the footer; ``Corruption`` if not."""
        for _ in self.records():
            pass

    def close(self) -> None:
        self.file.close()
