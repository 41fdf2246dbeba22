"""The log format shared by the write-ahead log and the manifest (docs/format.md, "Log format").

A log is a sequence of 32 KiB blocks. A logical record is cut into physical fragments so that no fragment
crosses a block boundary; each fragment carries its own checksum::

    u32 checksum   checksum(type_byte || payload)
    u16 length     payload length
    u8  type       1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST
    payload[length]

Writing: :class:`LogWriter` frames a record and hands all of its fragments to the file in **one**
``append`` call, so a record is one ``write(2)``; the group-commit leader can frame several records with
:meth:`LogWriter.encode_record` and append them together.

Reading: :func:`read_log` / :class:`LogReader` return the records in order and the offset where the good
data ends. Reading stops without error at a **torn tail** (a fragment cut short by the end of the file, or a
bad fragment — bad checksum, type, length, zero bytes — after which the file holds no good fragment).
A bad fragment *followed later by any good fragment* is **corruption in the middle** and raises
:class:`~lsmmail.engine.errors.Corruption`: acknowledged data after it would otherwise be dropped silently.
A fragment with a good checksum that is out of sequence (a MIDDLE or LAST with no FIRST before it, a FULL or
FIRST while a record is unfinished) is always corruption: no torn write can produce one.

Finding "a good fragment later in the file" means trying every byte offset after the bad fragment (its own
length field cannot be trusted), block by block: a good fragment never crosses a block boundary. A candidate
needs a type byte of 1-4, a length inside its block and a matching 32-bit checksum, so on random or zero
bytes a false match has odds of about 2**-32 per candidate offset.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import xxhash

from .coding import checksum
from .errors import Corruption, ReadOnlyError
from .fs import ReadableFile, WritableFile

#: 32 KiB blocks, as in LevelDB: a reader resynchronises at block starts, and at most 6 bytes per block
#: (0.02%) are lost to padding.
BLOCK_SIZE = 32768

#: checksum (4) + length (2) + type (1).
HEADER_SIZE = 7

FULL = 1
FIRST = 2
MIDDLE = 3
LAST = 4

_header = struct.Struct("<IHB")
_xxh3_64 = xxhash.xxh3_64  # coding.checksum, streamed
_FULL_BYTE = bytes((FULL,))
_TYPE_BYTES = {k: bytes((k,)) for k in (FULL, FIRST, MIDDLE, LAST)}
_TYPE_NAMES = {FULL: "FULL", FIRST: "FIRST", MIDDLE: "MIDDLE", LAST: "LAST"}

#: A possible fragment type byte; used to find candidate headers quickly when scanning past a bad fragment
#: (a zero-filled tail has none, so scanning it costs one C-level search).
_TYPE_BYTE = re.compile(rb"[\x01-\x04]")

#: The reader fetches this many bytes per ``read_at`` (32 blocks): few syscalls, bounded memory.
_READ_CHUNK = 32 * BLOCK_SIZE

#: The WAL grows its file in zero-filled chunks of this size ahead of the data (docs/format.md,
#: "Preallocated WAL tail"): an fdatasync that finds the size already on disk skips the journal commit
#: (134 -> 90 us on ext4 here). Each chunk costs one fallocate and one slower sync, i.e. once per ~1,000
#: synced 1 KiB puts, and wastes at most 1 MiB per live log.
WAL_PREALLOCATE = 1 << 20


# --------------------------------------------------------------------------------------------------
# Writing


class LogWriter:
    """Appends records to a log file.

    ``initial_offset`` is the current length of the file when continuing an existing log (after the
    recovery truncated any torn tail at the offset :func:`read_log` returned); the position inside the
    current block follows from it. Not thread-safe: the DB calls it under its write lock.

    If an ``append`` fails, the file may hold part of a record and the writer no longer knows its block
    position, so every later call raises :class:`ReadOnlyError` (the DB must reopen, and recovery then
    reads what truly reached the file).

    ``block_size`` exists only so tests can exercise block boundaries with tiny blocks; files on disk
    always use :data:`BLOCK_SIZE`.

    With ``preallocate`` > 0 (the WAL: :data:`WAL_PREALLOCATE`) the file is extended with zeros in chunks
    of that many bytes before an append would run past its end, so it reads as its records followed by
    a zero tail. If extending fails (ENOSPC, a file system without allocation), the writer stops
    preallocating and goes on appending: the optimisation is lost, nothing else (an append that then
    fails poisons the writer as usual). :meth:`seal` cuts the tail off before the log stops being the
    newest.
    """

    def __init__(self, file: WritableFile, initial_offset: int = 0, *, block_size: int = BLOCK_SIZE,
                 preallocate: int = 0) -> None:
        if block_size < HEADER_SIZE + 1 or block_size - HEADER_SIZE > 0xFFFF:
            raise ValueError(f"log block size {block_size} out of range")
        if initial_offset < 0:
            raise ValueError(f"negative log offset {initial_offset}")
        if preallocate < 0:
            raise ValueError(f"negative preallocation chunk {preallocate}")
        self.file = file
        self._block_size = block_size
        self._size = initial_offset
        self._block_offset = initial_offset % block_size
        self._failed = False
        self._chunk = preallocate
        self._allocated = initial_offset  # the file is known to be at least this long

    @property
    def size(self) -> int:
        """Length of the log in bytes once everything framed so far has been appended."""
        return self._size

    def encode_record(self, payload: bytes | bytearray | memoryview) -> bytes:
        """Frame ``payload`` as fragments (plus any block padding before them) and return the bytes.

        This advances the writer's position: the caller must append the returned bytes, in order, before
        framing the next record (``add_record`` and ``add_records`` do both).
        """
        self._check_usable()
        bs = self._block_size
        n = len(payload)
        block_offset = self._block_offset
        if n + HEADER_SIZE <= bs - block_offset and type(payload) is bytes:
            # One FULL fragment in the current block (a single put: ~1 KiB in a 32 KiB block): the
            # loop below, without its view, slices and bytearray (~0.7 -> ~0.3 us per record).
            out = _header.pack(checksum(_FULL_BYTE + payload), n, FULL) + payload
            self._block_offset = block_offset + HEADER_SIZE + n
            self._size += HEADER_SIZE + n
            return out
        view = memoryview(payload).cast("B")
        left = len(view)
        pos = 0
        # Pieces joined once at the end, each fragment's checksum streamed over its type byte and its
        # slice of the view: a 1 MiB batch (32 fragments) was copied three times more (type byte + chunk
        # for the checksum, into a bytearray, out of it), ~8% of a batched fill's GIL time.
        parts: list[bytes | memoryview] = []
        total = 0
        begin = True
        while True:
            room = bs - block_offset
            if room < HEADER_SIZE:
                # Too small for a header: zero-fill and start the next block (the reader skips it).
                parts.append(bytes(room))
                total += room
                block_offset = 0
                room = bs
            n = min(left, room - HEADER_SIZE)
            end = n == left
            if begin:
                kind = FULL if end else FIRST
            else:
                kind = LAST if end else MIDDLE
            chunk = view[pos : pos + n]
            h = _xxh3_64(_TYPE_BYTES[kind])
            h.update(chunk)
            parts.append(_header.pack(h.intdigest() & 0xFFFFFFFF, n, kind))
            parts.append(chunk)
            total += HEADER_SIZE + n
            block_offset += HEADER_SIZE + n
            pos += n
            left -= n
            begin = False
            if end:
                break
        self._block_offset = block_offset
        self._size += total
        return b"".join(parts)

    def append_encoded(self, framed: bytes | bytearray | memoryview) -> None:
        """Append bytes returned by :meth:`encode_record` (one or several records, concatenated)."""
        self.reserve()
        try:
            self.file.append(framed)
        except BaseException:
            self._failed = True
            raise

    def reserve(self, extra: int = 0) -> None:
        """Before appending what :meth:`encode_record` framed (or, with ``extra``, up to that many bytes
        framed elsewhere): check the writer is usable and extend a preallocated file so the data lands
        inside it. A caller that writes the bytes itself (the C commit) calls this first, then
        :meth:`advance` by what it framed, or :meth:`fail` if its write or sync failed."""
        self._check_usable()
        if self._size + extra > self._allocated and self._chunk:
            self._grow(extra)

    @property
    def block_offset(self) -> int:
        """Where the next fragment starts inside its block."""
        return self._block_offset

    def advance(self, n: int) -> None:
        """Account ``n`` bytes of records framed and appended by the caller from :attr:`block_offset`."""
        self._size += n
        self._block_offset = (self._block_offset + n) % self._block_size

    def fail(self) -> None:
        """Record that an append or sync made outside :meth:`append_encoded` failed: later calls raise
        ``ReadOnlyError``."""
        self._failed = True

    def _grow(self, extra: int = 0) -> None:
        """Extend the file with zeros to the next chunk boundary past ``_size + extra`` (before
        appending)."""
        target = ((self._size + extra) // self._chunk + 1) * self._chunk
        try:
            self.file.preallocate(target)
        except OSError:
            # Only a lost optimisation: nothing was written, and zeros past the data read as its end.
            self._chunk = 0
            return
        self._allocated = target

    def add_record(self, payload: bytes | bytearray | memoryview) -> None:
        """Append one record with a single ``file.append`` call (one write syscall)."""
        self.append_encoded(self.encode_record(payload))

    def add_records(self, payloads: list[bytes]) -> None:
        """Append several records with a single ``file.append`` call (group commit)."""
        framed = b"".join([self.encode_record(p) for p in payloads])
        self.append_encoded(framed)

    def sync(self) -> None:
        """Make everything appended so far durable (``fdatasync``). A failure poisons the writer."""
        self._check_usable()
        try:
            self.file.sync()
        except BaseException:
            self._failed = True
            raise

    def seal(self) -> None:
        """Cut a preallocated tail off (the file ends at its last record) and sync: called before this log
        stops being the newest, so that an older log never ends in zeros. A failure poisons the writer."""
        self._check_usable()
        try:
            if self._allocated > self._size:
                self.file.truncate(self._size)
                self._allocated = self._size
            self.file.sync()
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        self.file.close()

    def _check_usable(self) -> None:
        if self._failed:
            raise ReadOnlyError("an earlier write or sync of this log failed; reopen the database")


# --------------------------------------------------------------------------------------------------
# Reading


class LogReader:
    """Streams the records of a log, from a :class:`ReadableFile` or from ``bytes``.

    Iterating yields each record's payload (``bytes``) in order. When iteration ends normally,
    :attr:`end_offset` is the offset just past the last complete record: a writer continuing the log must
    first truncate the file there. Iteration raises :class:`Corruption` (naming ``name`` and the offset of
    the bad fragment) on corruption in the middle; records yielded before that are good, but a caller that
    needs all-or-nothing should use :func:`read_log`.
    """

    def __init__(
        self,
        source: ReadableFile | bytes | bytearray | memoryview,
        *,
        name: str = "",
        block_size: int = BLOCK_SIZE,
    ) -> None:
        self._source = source
        self._name = name or getattr(source, "path", "") or "<log>"
        self._block_size = block_size
        self.end_offset = 0

    # -- block source
    def _blocks(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, block)`` pairs; only the last block may be shorter than the block size."""
        bs = self._block_size
        src = self._source
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
            for off in range(0, len(data), bs):
                yield off, data[off : off + bs]
            return
        chunk = max(bs, (_READ_CHUNK // bs) * bs)
        off = 0
        while True:
            data = src.read_at(off, chunk)
            for i in range(0, len(data), bs):
                yield off + i, data[i : i + bs]
            if len(data) < chunk:
                return
            off += len(data)

    # -- scanning past a bad fragment
    def _good_fragment_at_or_after(self, block: bytes, start: int) -> int | None:
        """Offset in ``block`` of the first complete fragment with a good checksum at or after ``start``."""
        n = len(block)
        for m in _TYPE_BYTE.finditer(block, start + HEADER_SIZE - 1):
            t = m.start()
            i = t - (HEADER_SIZE - 1)
            length = block[i + 4] | (block[i + 5] << 8)
            end = t + 1 + length
            if end > n:
                continue
            if checksum(block[t:end]) == _header.unpack_from(block, i)[0]:
                return i
        return None

    def _stop(
        self, blocks: Iterator[tuple[int, bytes]], bstart: int, block: bytes, off: int, why: str
    ) -> None:
        """Reading stopped at ``bstart + off``: raise Corruption if any good fragment follows, else return."""
        found = self._good_fragment_at_or_after(block, off + 1)
        where = None if found is None else bstart + found
        if where is None:
            for b2start, b2 in blocks:
                found = self._good_fragment_at_or_after(b2, 0)
                if found is not None:
                    where = b2start + found
                    break
        if where is not None:
            raise Corruption(
                f"{self._name}: corrupt log fragment at offset {bstart + off} ({why}), "
                f"followed by a good fragment at offset {where}"
            )

    # -- the record loop
    def __iter__(self) -> Iterator[bytes]:
        bs = self._block_size
        name = self._name
        blocks = self._blocks()
        pending: bytearray | None = None  # the record being assembled from FIRST/MIDDLE fragments
        pending_start = 0
        self.end_offset = 0
        for bstart, block in blocks:
            n = len(block)
            off = 0
            while bs - off >= HEADER_SIZE:
                if off == n:
                    break  # end of file at a fragment boundary
                if n - off < HEADER_SIZE:
                    self._stop(blocks, bstart, block, off, "header cut short by end of file")
                    return
                cks, length, kind = _header.unpack_from(block, off)
                end = off + HEADER_SIZE + length
                if kind not in _TYPE_NAMES:
                    why = "zero bytes" if kind == 0 and cks == 0 and length == 0 else f"unknown type {kind}"
                    self._stop(blocks, bstart, block, off, why)
                    return
                if end > bs:
                    self._stop(blocks, bstart, block, off, f"length {length} crosses the block end")
                    return
                if end > n:
                    self._stop(blocks, bstart, block, off, "fragment cut short by end of file")
                    return
                if checksum(block[off + HEADER_SIZE - 1 : end]) != cks:
                    self._stop(blocks, bstart, block, off, "checksum mismatch")
                    return
                payload = block[off + HEADER_SIZE : end]
                pos = bstart + off
                if kind == FULL or kind == FIRST:
                    if pending is not None:
                        raise Corruption(
                            f"{name}: log record at offset {pending_start} is unfinished, "
                            f"but a {_TYPE_NAMES[kind]} fragment follows at offset {pos}"
                        )
                    if kind == FULL:
                        self.end_offset = bstart + end
                        yield payload
                    else:
                        pending = bytearray(payload)
                        pending_start = pos
                else:
                    if pending is None:
                        raise Corruption(
                            f"{name}: {_TYPE_NAMES[kind]} log fragment at offset {pos} has no FIRST before it"
                        )
                    pending += payload
                    if kind == LAST:
                        record = bytes(pending)
                        pending = None
                        self.end_offset = bstart + end
                        yield record
                off = end
            # Fewer than HEADER_SIZE bytes left in the block: zero padding, skipped (or end of file).
            if n < bs:
                break
        # End of file. An unfinished record (FIRST/MIDDLE fragments at the tail) is a torn tail.


def read_log(
    data: bytes | bytearray | memoryview, *, name: str = "", block_size: int = BLOCK_SIZE
) -> tuple[list[bytes], int]:
    """Read a whole log: return ``(records, end_offset)``.

    ``end_offset`` is the offset just past the last complete record; anything after it is a torn tail
    that the caller truncates before appending. Raises :class:`Corruption` (naming ``name`` and the
    offset) on corruption in the middle; never returns part of a corrupt log as if it were whole.
    """
    reader = LogReader(data, name=name, block_size=block_size)
    records = list(reader)
    return records, reader.end_offset
