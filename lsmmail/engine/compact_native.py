"""The per-entry loop of a compaction over whole data blocks: merge, drop hidden versions, account for blob
references, cut new blocks.

:func:`compact_blocks` takes the input runs as iterators of raw (decompressed, checksum-verified) data
block payloads, each run in internal order, and yields :data:`CompactRun` chunks of newly encoded data
blocks for :meth:`lsmmail.engine.compaction.OutputSink.add_compacted`. Two twins with identical output:

* :func:`compact_blocks_native` (native/compact.c): one C call per input block or output chunk, with the
  GIL released; no Python per entry (``TableBuilder.add``, the heap merge, ``TableReader.entries`` and
  ``drop_hidden`` were ~42% of the engine's GIL time under fillrandom/overwrite).
* :func:`compact_blocks_pure`: ``drop_hidden`` over ``merge_entries`` with blocks cut by
  :class:`~lsmmail.engine.block.BlockBuilder` exactly as ``TableBuilder`` cuts them.

The rules are :func:`lsmmail.engine.compaction.drop_hidden`'s (snapshots, range tombstones, bottommost
deletions) and :class:`~lsmmail.engine.compaction.OutputSink`'s for blob references: every reference is
decoded (``Corruption`` if malformed, or if a field does not fit 64 bits); a dropped one adds
``[1, value length]`` to ``garbage[its blob file]``; a kept one names its blob file in its block's list
(the table's ``blob_files``); a kept one into a file of ``relocate`` adds the same garbage and is rewritten
to point at the next record of blob file ``reloc_number`` (offsets follow from the value lengths:
records are contiguous, the first at offset 16), and the chunk lists it for the caller to copy there.
A kept PUT value of at least ``spill_min`` bytes (0: none) moves to that blob file the same way (the entry
becomes a BLOB reference; the chunk carries the value): ``OutputSink.add``'s rule for large values, so a
flush of large values can run here too. A malformed input block raises ``Corruption``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .. import native
from ..native_lib import split_at
from .blob import HEADER_SIZE, RECORD_HEADER_SIZE, decode_blob_ref, encode_blob_ref
from .blob import _record_header as RECORD_HEADER
from .block import BlockBuilder, decode_data_block_py
from .block_frame import RawBlocks
from .coding import checksum
from .errors import Corruption, InvalidArgument
from .iterators import merge_entries
from .keys import KIND_BLOB, KIND_PUT

if TYPE_CHECKING:
    from .memtable_native import NativeMemTable

#: (data blocks, entries per block, user keys, trailers, value bytes per block, largest PUT value so far,
#: distinct blob files referenced per block (a count per block), those blob file numbers (flat),
#: records for the blob file (flat, 4 per entry in entry order: old file, old offset, value length, offset
#: of the record in the blob file for a relocated reference; offset in ``spill``, 0, value length, offset
#: of the record for a spilled PUT value), spill (the spilled values, concatenated)).
CompactRun = tuple[list[bytes], list[int], list[bytes], list[int], list[int], int, list[int], list[int],
                   list[int], bytes]
#: Blob file number -> [references, value bytes] that became garbage (OutputFiles.garbage's shape).
Garbage = dict[int, list[int]]
#: (sequence, start, end) as in version.RangeTombstone.
Tomb = tuple[int, bytes, bytes]

_lib = native._lib
_ffi = native._ffi

#: Output chunk: 1 MiB of blocks per C call (~64 blocks of 16 KiB), enough that the crossing is noise.
_CHUNK_BYTES = 1 << 20
_U64 = 1 << 64


def _entries_of(blocks: Iterator[bytes]) -> Iterator[tuple[bytes, int, int, bytes]]:
    for raw in blocks:
        uks, seqs, kinds, values = decode_data_block_py(raw)
        yield from zip(uks, seqs, kinds, values, strict=True)


def blob_ref_fields(ref: bytes) -> tuple[int, int, int]:
    """``decode_blob_ref`` that also rejects a field of 2**64 or more (``Corruption``), as the C twin."""
    number, offset, length = decode_blob_ref(ref)
    if number >= _U64 or offset >= _U64:
        raise Corruption(f"blob reference {ref[:32].hex()} does not fit 64 bits")
    return number, offset, length


def _add_garbage(garbage: Garbage, number: int, length: int) -> None:
    g = garbage.setdefault(number, [0, 0])
    g[0] += 1
    g[1] += length


def compact_blocks_pure(runs: Sequence[Iterator[bytes]], snapshots: list[int], bottommost: bool,
                        block_size: int, restart_interval: int, tombs: Sequence[Tomb] = (),
                        relocate: frozenset[int] = frozenset(), reloc_number: int = 0,
                        garbage: Garbage | None = None, spill_min: int = 0,
                        views: bool = False) -> Iterator[CompactRun]:
    """The Python twin of :func:`compact_blocks_native` (same chunks' concatenation, not the same
    chunking; the same ``garbage`` once exhausted). ``views`` is accepted and ignored (chunks are
    always copies)."""
    from .compaction import drop_hidden  # compaction imports this module

    g: Garbage = {} if garbage is None else garbage

    def on_drop(e: tuple[bytes, int, int, bytes]) -> None:
        if e[2] == KIND_BLOB:
            number, _, length = blob_ref_fields(e[3])
            _add_garbage(g, number, length)

    builder = BlockBuilder(restart_interval)
    blocks: list[bytes] = []
    nents: list[int] = []
    ukeys: list[bytes] = []
    trailers: list[int] = []
    vbytes: list[int] = []
    nblobs: list[int] = []
    bnums: list[int] = []
    relocs: list[int] = []
    spill = bytearray()
    block_blobs: list[int] = []
    nv = 0
    max_put = 0
    n = 0
    reloc_off = HEADER_SIZE
    merged = merge_entries([_entries_of(r) for r in runs])
    for uk, seq, kind, value in drop_hidden(merged, snapshots, bottommost, list(tombs), on_drop):
        if kind == KIND_PUT and spill_min and len(value) >= spill_min:
            length = len(value)
            relocs += (len(spill), 0, length, reloc_off)
            spill += value
            kind = KIND_BLOB
            value = encode_blob_ref(reloc_number, reloc_off, length)
            reloc_off += RECORD_HEADER_SIZE + length
            if reloc_number not in block_blobs:
                block_blobs.append(reloc_number)
        elif kind == KIND_BLOB:
            number, offset, length = blob_ref_fields(value)
            if number in relocate:
                _add_garbage(g, number, length)
                relocs += (number, offset, length, reloc_off)
                value = encode_blob_ref(reloc_number, reloc_off, length)
                reloc_off += RECORD_HEADER_SIZE + length
                number = reloc_number
            if number not in block_blobs:
                block_blobs.append(number)
        trailer = seq << 8 | kind
        builder.add(uk + trailer.to_bytes(8, "little"), value)
        ukeys.append(uk)
        trailers.append(trailer)
        nv += len(value)
        if kind == KIND_PUT and len(value) > max_put:
            max_put = len(value)
        n += 1
        if builder.estimated_size() >= block_size:
            blocks.append(builder.finish())
            nents.append(n)
            vbytes.append(nv)
            nblobs.append(len(block_blobs))
            bnums += block_blobs
            block_blobs = []
            n = nv = 0
            builder = BlockBuilder(restart_interval)
    if n:
        blocks.append(builder.finish())
        nents.append(n)
        vbytes.append(nv)
        nblobs.append(len(block_blobs))
        bnums += block_blobs
    if blocks:
        yield blocks, nents, ukeys, trailers, vbytes, max_put, nblobs, bnums, relocs, bytes(spill)


class _Out:
    """The output buffers of one native compactor (an ``lsm_cmp_out`` and the arrays it points at)."""

    def __init__(self, cap: int, max_blocks: int, keycap: int, max_keys: int, spillcap: int) -> None:
        new = native._new
        self.o = o = _ffi.new("lsm_cmp_out *")
        # Keep every array alive as long as the struct that points at it.
        self.arrays = (
            new("uint8_t[]", cap), new("uint64_t[]", max_blocks), new("uint64_t[]", max_blocks),
            new("uint64_t[]", max_blocks), new("uint64_t[]", max_blocks), new("uint8_t[]", keycap),
            new("uint64_t[]", max_keys), new("uint64_t[]", max_keys), new("uint64_t[]", max_keys),
            new("uint64_t[]", 4 * max_keys), new("uint8_t[]", spillcap))
        (o.buf, o.block_end, o.block_nent, o.block_vbytes, o.block_nblobs, o.keys, o.key_end, o.trailers,
         o.blobs, o.relocs, o.spill) = self.arrays
        o.cap, o.max_blocks, o.keycap, o.max_keys, o.spillcap = cap, max_blocks, keycap, max_keys, spillcap
        self.reset()

    def reset(self) -> None:
        o = self.o
        o.pos = o.nb = o.kpos = o.ne = o.nblobs = o.nrelocs = o.spos = 0

    def take(self, max_put: int, spill_view: bool = False) -> CompactRun:
        """The blocks in the buffers as a chunk (the caller resets them). ``spill_view``: the blocks (a
        ``RawBlocks``) and the spill (a memoryview) are views of the buffers, valid until the caller
        resets them, not copies."""
        ffi, o = _ffi, self.o
        nb, ne = o.nb, o.ne
        bends = ffi.unpack(o.block_end, nb)
        kends = ffi.unpack(o.key_end, ne)
        if spill_view:
            # Framed straight from the buffer by the table writer (block_frame.RawBlocks): no copy.
            blocks: Sequence[bytes] = RawBlocks(o.buf, bends)
        else:
            blocks = split_at(ffi.buffer(o.buf, bends[-1])[:], bends)
        ukeys = split_at(ffi.buffer(o.keys, kends[-1])[:], kends)
        return (blocks, ffi.unpack(o.block_nent, nb), ukeys, ffi.unpack(o.trailers, ne),
                ffi.unpack(o.block_vbytes, nb), max_put, ffi.unpack(o.block_nblobs, nb),
                ffi.unpack(o.blobs, o.nblobs) if o.nblobs else [],
                ffi.unpack(o.relocs, 4 * o.nrelocs) if o.nrelocs else [],
                (memoryview(ffi.buffer(o.spill, o.spos)) if spill_view else ffi.buffer(o.spill, o.spos)[:])
                if o.spos else b"")


def compact_blocks_native(runs: Sequence[Iterator[bytes]], snapshots: list[int], bottommost: bool,
                          block_size: int, restart_interval: int, tombs: Sequence[Tomb] = (),
                          relocate: frozenset[int] = frozenset(), reloc_number: int = 0,
                          garbage: Garbage | None = None, spill_min: int = 0,
                          views: bool = False) -> Iterator[CompactRun]:
    """native/compact.c over the same inputs: see the module docstring. ``garbage`` is complete once the
    generator is exhausted. ``views``: each chunk's blocks and spill are views of the kernel's buffers,
    valid only until the next chunk is asked for (for a consumer that writes each chunk at once, as
    ``OutputSink.add_compacted``): no copy of each MiB of output blocks into Python objects."""
    lib, ffi = _lib, _ffi
    snaps = ffi.new("uint64_t[]", snapshots) if snapshots else ffi.NULL
    tseqs = tkeys = tends = ffi.NULL
    if tombs:
        tseqs = ffi.new("uint64_t[]", [t[0] for t in tombs])
        parts = [k for _, start, end in tombs for k in (start, end)]
        tkeys = ffi.new("uint8_t[]", b"".join(parts))
        ends, total = [], 0
        for k in parts:
            total += len(k)
            ends.append(total)
        tends = ffi.new("uint64_t[]", ends)
    rel = ffi.new("uint64_t[]", sorted(relocate)) if relocate else ffi.NULL
    m = lib.lsm_cmp_new(len(runs), snaps, len(snapshots), int(bottommost), block_size, restart_interval,
                        tseqs, tkeys, tends, len(tombs), rel, len(relocate), reloc_number, spill_min)
    if m == ffi.NULL:
        raise MemoryError("compactor")
    m = ffi.gc(m, lib.lsm_cmp_free)
    # Keep each run's current block alive while C reads it.
    held: list[bytes | None] = [None] * len(runs)

    def feed(j: int) -> None:
        while True:
            blk = next(runs[j], None)
            held[j] = blk
            if blk is None:
                rc = lib.lsm_cmp_feed(m, j, ffi.NULL, 0)
            else:
                rc = lib.lsm_cmp_feed(m, j, ffi.from_buffer(blk), len(blk))
            if rc < 0:
                raise Corruption(f"compaction input run {j}: malformed data block")
            if rc == 0:
                return
            # 1: the block held no entry; the run's next block goes in its place.

    for j in range(len(runs)):
        feed(j)
    yield from _drive(m, feed, block_size, spill_min, garbage, views)


def _drive(m: object, feed: Callable[[int], None], block_size: int, spill_min: int,
           garbage: Garbage | None, spill_view: bool = False) -> Iterator[CompactRun]:
    """Step compactor ``m`` (every run fed once already) to the end: ``feed(j)`` gives run j its next
    input when the kernel asks; yields the output chunks (``spill_view``: see ``_Out.take``); fills
    ``garbage`` at the end."""
    lib, ffi = _lib, _ffi
    cap = max(_CHUNK_BYTES, 4 * block_size)
    max_blocks = cap // 64 + 16
    # Spilled values come with their block: a 16 KiB block of ~30-byte references may carry ~10 MiB.
    spillcap = 4 * cap if spill_min else 0
    out = _Out(cap, max_blocks, cap // 4, cap // 16, spillcap)
    state = ffi.new("uint64_t[4]")
    while True:
        nb = lib.lsm_cmp_step(m, out.o, state)
        if nb == -1:
            raise Corruption("compaction input: malformed data block or blob reference")
        if nb == -3:
            raise InvalidArgument("compaction input: entries out of order or of an unknown kind")
        if nb < 0:
            raise MemoryError("compactor buffers")
        reason = state[0]
        if reason == 0:
            feed(int(state[1]))
            if nb < max_blocks // 2:
                continue  # keep filling the buffers: one chunk per ~half buffer, not per input block
        if nb:
            yield out.take(int(state[3]), spill_view)
            out.reset()
        if reason == 1:
            if nb == 0 and state[1]:
                cap *= 2
                max_blocks *= 2
                spillcap *= 2
                out = _Out(cap, max_blocks, cap // 4, cap // 16, spillcap)
        elif reason == 2:
            if garbage is not None:
                _collect_garbage(m, garbage)
            return


#: Entries per ``lsm_mem_flush_scan`` call of :func:`flush_spilling_native` and the initial size of its
#: buffer: 4 MiB holds ~100-200 mail messages' records (values of ~20 KB); the buffer grows when one
#: entry is larger.
_FLAT_ENTRIES = 4096
_FLAT_BYTES = 4 << 20


def can_frame_spill() -> bool:
    """Whether native/compact.c can frame spilled values as blob records itself: it needs the xxhash
    package's ``XXH3_64bits`` (handed over on first call, and checked once against
    ``coding.checksum``; any doubt: False, and the caller takes unframed spills)."""
    global _FRAMING
    if _FRAMING is None:
        _FRAMING = _setup_framing()
    return _FRAMING


_FRAMING: bool | None = None


def _setup_framing() -> bool:
    if not native.BUILT:
        return False
    try:
        import ctypes

        import xxhash._xxhash as xxh_ext  # type: ignore[import-not-found]

        addr = ctypes.cast(ctypes.CDLL(xxh_ext.__file__).XXH3_64bits, ctypes.c_void_p).value
    except (ImportError, OSError, AttributeError):
        return False
    if not addr:
        return False
    _lib.lsm_cmp_set_hash(_ffi.cast("void *", addr))
    # One PUT of 300 bytes through a compactor that spills values of 100+ bytes: its record must be
    # BlobFileWriter.add's.
    value = bytes(range(256)) + b"lsmmail" * 6 + b"!!"
    ikey = b"k" + (5 << 8 | KIND_PUT).to_bytes(8, "little")
    buf = _ffi.new("uint8_t[]", ikey + value)
    ends = _ffi.new("uint64_t[]", [len(ikey), len(ikey) + len(value)])
    m = _ffi.gc(_lib.lsm_cmp_new(1, _ffi.NULL, 0, 0, 4096, 16, _ffi.NULL, _ffi.NULL, _ffi.NULL, 0, _ffi.NULL,
                                 0, 7, 100), _lib.lsm_cmp_free)
    if m == _ffi.NULL or _lib.lsm_cmp_frame_spill(m) != 0:
        return False
    if _lib.lsm_cmp_feed_flat(m, 0, buf, len(ikey) + len(value), ends, 1) != 0:
        return False
    fed = [False]

    def feed(j: int) -> None:
        fed[0] = True
        _lib.lsm_cmp_feed(m, j, _ffi.NULL, 0)

    chunks = list(_drive(m, feed, 4096, 100, None))
    if len(chunks) != 1 or not fed[0]:
        return False
    spill = bytes(chunks[0][9])
    return spill == RECORD_HEADER.pack(len(value), checksum(value)) + value and chunks[0][8] == [
        0, 0, len(value), HEADER_SIZE]


def flush_spilling_native(mem: NativeMemTable, block_size: int, restart_interval: int, blob_number: int,
                          spill_min: int, framed: bool = False) -> Iterator[CompactRun]:
    """The data blocks of a flush of ``mem`` with no live snapshot and no range tombstone (each key's
    newest version) in which PUT values of at least ``spill_min`` bytes move to blob file
    ``blob_number`` (the chunks carry them, as a compaction's spilled values, for
    ``OutputSink.add_compacted``): the same table and blob file, byte for byte, as
    ``OutputSink.add_run`` over ``mem.flush_runs()`` (its twin; tests/engine/test_compaction_blocks.py).

    Why: a memtable of mail holds message bodies of ~20 KB beside ~10 small keys per message, and the
    per-entry path (``TableBuilder.add`` and blob decisions in Python) cost the flush thread ~70 µs of
    GIL per imported message. Here the memtable's entries go straight from ``lsm_mem_flush_scan``'s
    buffer into the compaction kernel (no Python object per entry on the way in).

    ``framed`` (only when :func:`can_frame_spill`): each chunk's spill is a memoryview, valid until the
    next chunk is asked for, of whole blob records for ``OutputSink.add_compacted(..., framed=True)``
    to append as they are: no Python per large value, and no copy of it while holding the GIL."""
    lib, ffi = _lib, _ffi
    m = lib.lsm_cmp_new(1, ffi.NULL, 0, 0, block_size, restart_interval, ffi.NULL, ffi.NULL, ffi.NULL, 0,
                        ffi.NULL, 0, blob_number, spill_min)
    if m == ffi.NULL:
        raise MemoryError("compactor")
    m = ffi.gc(m, lib.lsm_cmp_free)
    if framed and lib.lsm_cmp_frame_spill(m) != 0:
        raise InvalidArgument("framed spill without the checksum function (see can_frame_spill)")
    handle = mem._m  # noqa: SLF001 - the C memtable's handle, read-only here (the memtable is immutable)
    cap = _FLAT_BYTES
    # One buffer, refilled: the kernel asks for more only after its last entry was copied into a block
    # or the spill buffer.
    buf = native._new("uint8_t[]", cap)
    ends = native._new("uint64_t[]", 2 * _FLAT_ENTRIES)
    last = ffi.new("void **")
    scan_state = ffi.new("uint64_t[2]")
    after = [ffi.NULL, False]  # last node taken, memtable exhausted

    def feed(j: int) -> None:
        nonlocal buf, cap
        while True:
            if after[1]:
                lib.lsm_cmp_feed(m, j, ffi.NULL, 0)
                return
            n = lib.lsm_mem_flush_scan(handle, after[0], _FLAT_ENTRIES, buf, cap, ends, last, scan_state)
            if n == 0 and scan_state[1]:
                cap = max(2 * cap, int(scan_state[1]))
                buf = native._new("uint8_t[]", cap)
                continue
            if scan_state[0]:
                after[1] = True
            if n == 0:
                continue
            after[0] = last[0]
            rc = lib.lsm_cmp_feed_flat(m, j, buf, cap, ends, n)
            if rc < 0:
                raise InvalidArgument("memtable flush: malformed entry")
            if rc == 0:
                return

    feed(0)
    yield from _drive(m, feed, block_size, spill_min, None, framed)


def _collect_garbage(m: object, garbage: Garbage) -> None:
    n = 64
    while True:
        nums, counts, nbytes = (native._new("uint64_t[]", n) for _ in range(3))
        total = _lib.lsm_cmp_garbage(m, nums, counts, nbytes, n)
        if total <= n:
            break
        n = total
    for i in range(total):
        _add_garbage_n(garbage, nums[i], counts[i], nbytes[i])


def _add_garbage_n(garbage: Garbage, number: int, count: int, nbytes: int) -> None:
    g = garbage.setdefault(number, [0, 0])
    g[0] += count
    g[1] += nbytes


compact_blocks = compact_blocks_native if native.AVAILABLE else compact_blocks_pure
