"""A run of data blocks framed as an SSTable stores them, in one C call (native/blockframe.c).

Each raw block becomes ``stored || compression byte || u32 checksum`` (docs/format.md; ``stored`` as
:func:`~lsmmail.engine.block.compress_block` chooses it), the framed blocks back to back: what
:class:`~lsmmail.engine.flush_table.BlockTableWriter` appends with one write, with each block's stored
size for the index. Two twins with identical output:

* :class:`NativeFramer`: native/blockframe.c with the GIL released, LZ4 and XXH3 taken from the lz4 and
  xxhash packages' extension modules (the very code ``lz4.block.compress`` and ``xxhash`` run), checked
  once against the twin at import (:data:`READY` is False if that fails; callers then use the twin).
* :func:`frame_blocks_py`: ``compress_block`` and ``checksum`` per block.

Why: per block the Python path took the GIL four times (compress, frame, checksum, one ``pwrite`` each).
A flush writes ~1,900 blocks per 32 MiB memtable while the writer thread holds the GIL most of the time,
so a flush's wall time stretched to 3-5x its CPU time (65-80 ms of CPU, 200-400 ms of wall under the
engine bench's overwrite) and a second memtable often filled while the first was still being flushed:
the memtables' share of peak RSS is one memtable per flush that falls behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .. import native_lib
from .block import compress_block
from .coding import checksum, u32

_ESPACE, _EINVAL = -2, -3


class RawBlocks(Sequence[bytes]):
    """Data blocks laid out back to back in a C buffer (block i ends at ``ends[i]``), as
    ``NativeMemTable.flush_blocks`` produces them: :class:`NativeFramer` frames them from the buffer
    itself, with no copy into Python objects. Valid only until the producer's next run (the buffer is
    reused); indexing copies a block out."""

    __slots__ = ("buf", "ends")

    def __init__(self, buf: object, ends: list[int]) -> None:
        self.buf = buf
        self.ends = ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> bytes:  # type: ignore[override]
        if not -len(self.ends) <= i < len(self.ends):
            raise IndexError(i)
        i %= len(self.ends)
        a = self.ends[i - 1] if i else 0
        return native_lib._ffi.buffer(self.buf, self.ends[i])[a:]


def frame_blocks_py(blocks: Sequence[bytes | memoryview], compress: bool) -> tuple[bytes, list[int]]:
    """The framed blocks back to back, and each block's stored size (without its 5-byte trailer)."""
    out = bytearray()
    sizes = []
    for raw in blocks:
        stored, compression = compress_block(raw, compress)
        framed = bytearray(stored)
        framed.append(compression)
        framed += u32.pack(checksum(framed))
        out += framed
        sizes.append(len(stored))
    return bytes(out), sizes


#: Raw bytes of blocks framed per C call by :meth:`NativeFramer.pieces`: the framer's buffer (and, for
#: blocks given as separate objects, the joined input) stays ~256 KiB instead of a whole MiB-sized run
#: (compaction of the bench's 400 MB: peak RSS 62 MiB with whole runs, against 58 per block before).
#: Four C calls per MiB cost nothing measurable.
PIECE = 256 * 1024


class NativeFramer:
    """native/blockframe.c with an output buffer reused from call to call (one per table writer, so
    one per flush or compaction thread at a time: not thread-safe)."""

    def __init__(self) -> None:
        self._cap = 0
        self._buf = None

    def frame(self, blocks: Sequence[bytes] | Sequence[memoryview],
              compress: bool) -> tuple[memoryview, list[int]]:
        """As :func:`frame_blocks_py`, in one C call; the framed bytes are a view of this framer's
        buffer, valid until its next call (the caller writes them at once)."""
        return self._frame(blocks, 0, len(blocks), compress)

    def pieces(self, blocks: Sequence[bytes] | Sequence[memoryview],
               compress: bool) -> Iterator[tuple[memoryview, list[int]]]:
        """:meth:`frame` over consecutive pieces of about :data:`PIECE` raw bytes (at least one block
        each); each piece's view is valid until the next is asked for."""
        n = len(blocks)
        if isinstance(blocks, RawBlocks):
            ends = blocks.ends
            i = 0
            while i < n:
                base = ends[i - 1] if i else 0
                k = i + 1
                while k < n and ends[k] - base <= PIECE:
                    k += 1
                yield self._frame(blocks, i, k, compress)
                i = k
            return
        i = 0
        while i < n:
            size = len(blocks[i])
            k = i + 1
            while k < n and size + len(blocks[k]) <= PIECE:
                size += len(blocks[k])
                k += 1
            yield self._frame(blocks, i, k, compress)
            i = k

    def _frame(self, blocks: Sequence[bytes] | Sequence[memoryview], i: int, k: int,
               compress: bool) -> tuple[memoryview, list[int]]:
        """Blocks ``i:k`` framed."""
        ffi, lib = native_lib._ffi, native_lib._lib
        n = k - i
        if isinstance(blocks, RawBlocks):
            base = blocks.ends[i - 1] if i else 0
            src = blocks.buf + base
            ends = [e - base for e in blocks.ends[i:k]]
        else:
            part = blocks[i:k]
            src = ffi.from_buffer(part[0] if n == 1 else b"".join(part))
            ends = []
            total = 0
            for b in part:
                total += len(b)
                ends.append(total)
        ends_c = ffi.new("uint64_t[]", ends)
        bound = int(lib.lsm_frame_bound(ends_c, n))
        if bound > self._cap:
            self._cap = max(bound, 1 << 16)
            self._buf = native_lib._new("uint8_t[]", self._cap)
        stored = ffi.new("uint64_t[]", n)
        got = lib.lsm_frame_blocks(src, ends_c, n, int(compress), self._buf, self._cap, stored)
        if got < 0:
            raise ValueError(f"lsm_frame_blocks failed ({got})")
        return memoryview(ffi.buffer(self._buf, got)), ffi.unpack(stored, n)


def _setup() -> bool:
    """Hand the codecs to C and check the kernel against the twin; False (and the twin is used) on any
    doubt: no extension, symbols not exported, a state larger than blockframe.c holds, other bytes."""
    if not native_lib.BUILT:
        return False
    try:
        import ctypes

        import lz4.block._block as lz4_ext  # type: ignore[import-not-found]
        import xxhash._xxhash as xxh_ext  # type: ignore[import-not-found]

        lz4_so = ctypes.CDLL(lz4_ext.__file__)
        state_size = int(lz4_so.LZ4_sizeofState())
        xxh3 = ctypes.CDLL(xxh_ext.__file__).XXH3_64bits
        addrs = [ctypes.cast(f, ctypes.c_void_p).value
                 for f in (lz4_so.LZ4_resetStream, lz4_so.LZ4_compress_fast_continue, xxh3)]
    except (ImportError, OSError, AttributeError):
        return False
    if not all(addrs):
        return False
    ffi, lib = native_lib._ffi, native_lib._lib
    if lib.lsm_frame_set_codecs(*(ffi.cast("void *", a) for a in addrs), state_size) != 0:
        return False
    # Compressible, incompressible (stored raw), barely compressible (the 7/8 rule), one byte.
    half = bytes(range(256)) * 8
    sample = [half * 4, bytes((i * 7919 + (i >> 3) * 31) & 0xFF for i in range(5000)),
              bytes(range(200)) + b"x" * 30, b"\x00"]
    try:
        for compress in (True, False):
            framed, sizes = NativeFramer().frame(sample, compress)
            if (bytes(framed), sizes) != frame_blocks_py(sample, compress):
                raise ValueError("differs from the twin")
    except ValueError:
        lib.lsm_frame_set_codecs(ffi.NULL, ffi.NULL, ffi.NULL, 0)
        return False
    return True


#: Whether :class:`NativeFramer` may be used (the C extension is loaded, not forced off by
#: ``LSMMAIL_PURE=1``, and its self-test passed).
READY = _setup() and native_lib.AVAILABLE
