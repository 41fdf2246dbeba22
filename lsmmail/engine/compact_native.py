"""The per-entry loop of a compaction over whole data blocks: merge, drop hidden versions, cut new blocks.

:func:`compact_blocks` takes the input runs as iterators of raw (decompressed, checksum-verified) data
block payloads, each run in internal order, and yields :data:`CompactRun` chunks of newly encoded data
blocks for :meth:`lsmmail.engine.compaction.OutputSink.add_compacted`. Two twins with identical output:

* :func:`compact_blocks_native` (native/compact.c): one C call per input block or output chunk; no
  Python per entry (``TableBuilder.add``, the heap merge, ``TableReader.entries`` and ``drop_hidden``
  were ~42% of the engine's GIL time under fillrandom/overwrite).
* :func:`compact_blocks_pure`: today's Python path, ``drop_hidden`` over ``merge_entries`` with blocks cut
  by :class:`~lsmmail.engine.block.BlockBuilder` exactly as ``TableBuilder`` cuts them.

The rules are :func:`lsmmail.engine.compaction.drop_hidden`'s *without* range tombstones and without blob
relocation: the caller takes this path only when there is no range tombstone, no blob file to relocate,
no input referencing a blob file, and checks the largest PUT value reported against ``min_blob_size``.
A malformed input block raises ``Corruption``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .. import native
from ..native_lib import split_at
from .block import BlockBuilder, decode_data_block_py
from .errors import Corruption
from .iterators import merge_entries

#: (data blocks, entries per block, user keys, trailers, value bytes per block, largest PUT value so far).
CompactRun = tuple[list[bytes], list[int], list[bytes], list[int], list[int], int]

_lib = native._lib
_ffi = native._ffi

#: Output chunk: 1 MiB of blocks per C call (~64 blocks of 16 KiB), enough that the crossing is noise.
_CHUNK_BYTES = 1 << 20


def _entries_of(blocks: Iterator[bytes]) -> Iterator[tuple[bytes, int, int, bytes]]:
    for raw in blocks:
        uks, seqs, kinds, values = decode_data_block_py(raw)
        yield from zip(uks, seqs, kinds, values, strict=True)


def compact_blocks_pure(runs: Sequence[Iterator[bytes]], snapshots: list[int], bottommost: bool,
                        block_size: int, restart_interval: int) -> Iterator[CompactRun]:
    """The Python twin of :func:`compact_blocks_native` (same chunks' concatenation, not the same
    chunking)."""
    from .compaction import drop_hidden  # compaction imports this module

    builder = BlockBuilder(restart_interval)
    blocks: list[bytes] = []
    nents: list[int] = []
    ukeys: list[bytes] = []
    trailers: list[int] = []
    vbytes: list[int] = []
    nv = 0
    max_put = 0
    n = 0
    merged = merge_entries([_entries_of(r) for r in runs])
    for uk, seq, kind, value in drop_hidden(merged, snapshots, bottommost, [], lambda e: None):
        trailer = seq << 8 | kind
        builder.add(uk + trailer.to_bytes(8, "little"), value)
        ukeys.append(uk)
        trailers.append(trailer)
        nv += len(value)
        if kind == 1 and len(value) > max_put:
            max_put = len(value)
        n += 1
        if builder.estimated_size() >= block_size:
            blocks.append(builder.finish())
            nents.append(n)
            vbytes.append(nv)
            n = nv = 0
            builder = BlockBuilder(restart_interval)
    if n:
        blocks.append(builder.finish())
        nents.append(n)
        vbytes.append(nv)
    if blocks:
        yield blocks, nents, ukeys, trailers, vbytes, max_put


def compact_blocks_native(runs: Sequence[Iterator[bytes]], snapshots: list[int], bottommost: bool,
                          block_size: int, restart_interval: int) -> Iterator[CompactRun]:
    """native/compact.c over the same inputs: see the module docstring."""
    lib, ffi = _lib, _ffi
    snaps = ffi.new("uint64_t[]", snapshots) if snapshots else ffi.NULL
    m = lib.lsm_cmp_new(len(runs), snaps, len(snapshots), int(bottommost), block_size, restart_interval)
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
    keycap = cap // 4
    max_keys = cap // 16
    new = native._new
    buf = new("uint8_t[]", cap)
    block_end = new("uint64_t[]", max_blocks)
    block_nent = new("uint64_t[]", max_blocks)
    block_vb = new("uint64_t[]", max_blocks)
    keys = new("uint8_t[]", keycap)
    key_end = new("uint64_t[]", max_keys)
    trs = new("uint64_t[]", max_keys)
    state = ffi.new("uint64_t[8]")  # [4..7]: output already in the buffers (lsm_cmp_step)
    while True:
        nb = lib.lsm_cmp_step(m, buf, cap, block_end, block_nent, block_vb, max_blocks, keys, keycap,
                              key_end, trs, max_keys, state)
        if nb == -1:
            raise Corruption("compaction input: malformed data block")
        if nb < 0:
            raise MemoryError("compactor buffers")
        reason = state[0]
        if reason == 0:
            feed(int(state[1]))
            if nb < max_blocks // 2:
                continue  # keep filling the buffers: one chunk per ~half buffer, not per input block
        if nb:
            bends = ffi.unpack(block_end, nb)
            nents = ffi.unpack(block_nent, nb)
            ne = int(state[7])
            kends = ffi.unpack(key_end, ne)
            data = ffi.buffer(buf, bends[-1])[:]
            kdata = ffi.buffer(keys, kends[-1])[:]
            blocks = split_at(data, bends)
            ukeys = split_at(kdata, kends)
            yield blocks, nents, ukeys, ffi.unpack(trs, ne), ffi.unpack(block_vb, nb), int(state[3])
            state[4] = state[5] = state[6] = state[7] = 0
        if reason == 1:
            if nb == 0 and state[1]:
                cap *= 2
                keycap *= 2
                max_keys *= 2
                max_blocks *= 2
                buf = new("uint8_t[]", cap)
                block_end = new("uint64_t[]", max_blocks)
                block_nent = new("uint64_t[]", max_blocks)
                block_vb = new("uint64_t[]", max_blocks)
                keys = new("uint8_t[]", keycap)
                key_end = new("uint64_t[]", max_keys)
                trs = new("uint64_t[]", max_keys)
        elif reason == 2:
            return


compact_blocks = compact_blocks_native if native.AVAILABLE else compact_blocks_pure
