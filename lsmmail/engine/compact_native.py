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

from collections.abc import Iterator, Sequence

from .. import native
from ..native_lib import split_at
from .blob import HEADER_SIZE, RECORD_HEADER_SIZE, decode_blob_ref, encode_blob_ref
from .block import BlockBuilder, decode_data_block_py
from .errors import Corruption
from .iterators import merge_entries
from .keys import KIND_BLOB, KIND_PUT

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
                        garbage: Garbage | None = None, spill_min: int = 0) -> Iterator[CompactRun]:
    """The Python twin of :func:`compact_blocks_native` (same chunks' concatenation, not the same
    chunking; the same ``garbage`` once exhausted)."""
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

    def take(self, max_put: int) -> CompactRun:
        """The blocks in the buffers as a chunk (the caller resets them)."""
        ffi, o = _ffi, self.o
        nb, ne = o.nb, o.ne
        bends = ffi.unpack(o.block_end, nb)
        kends = ffi.unpack(o.key_end, ne)
        blocks = split_at(ffi.buffer(o.buf, bends[-1])[:], bends)
        ukeys = split_at(ffi.buffer(o.keys, kends[-1])[:], kends)
        return (blocks, ffi.unpack(o.block_nent, nb), ukeys, ffi.unpack(o.trailers, ne),
                ffi.unpack(o.block_vbytes, nb), max_put, ffi.unpack(o.block_nblobs, nb),
                ffi.unpack(o.blobs, o.nblobs) if o.nblobs else [],
                ffi.unpack(o.relocs, 4 * o.nrelocs) if o.nrelocs else [],
                ffi.buffer(o.spill, o.spos)[:] if o.spos else b"")


def compact_blocks_native(runs: Sequence[Iterator[bytes]], snapshots: list[int], bottommost: bool,
                          block_size: int, restart_interval: int, tombs: Sequence[Tomb] = (),
                          relocate: frozenset[int] = frozenset(), reloc_number: int = 0,
                          garbage: Garbage | None = None, spill_min: int = 0) -> Iterator[CompactRun]:
    """native/compact.c over the same inputs: see the module docstring. ``garbage`` is complete once the
    generator is exhausted."""
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
        if nb < 0:
            raise MemoryError("compactor buffers")
        reason = state[0]
        if reason == 0:
            feed(int(state[1]))
            if nb < max_blocks // 2:
                continue  # keep filling the buffers: one chunk per ~half buffer, not per input block
        if nb:
            yield out.take(int(state[3]))
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
