"""Writing a flush's L0 table from whole data blocks (native/memtable.c ``lsm_mem_flush_blocks``).

:class:`BlockTableWriter` lays out the same file as :class:`lsmmail.engine.sstable.TableBuilder` fed the
same entries one by one (tests/native/test_flush_table.py holds them byte-identical), but takes its data
blocks already encoded and cut: the per-entry ``TableBuilder.add`` (~2 us of Python per entry, half of a
flush's CPU with 1 KiB values) is replaced by one C call per run of blocks, and per entry only the bloom
filter's hash remains in Python. Used for flushes with no live snapshot and no range tombstone whose
values all stay in the table (none reaches ``min_blob_size``); every other flush takes the per-entry path.
Compactions write their blocks through it too (``OutputSink.add_compacted``). With the C extension each
~256 KiB of blocks is compressed, checksummed and laid out by one C call and written with one write
(block_frame.py): flush CPU per 32 MiB memtable of the bench's values 62-66 -> 48-50 ms.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import block_frame
from .block import BlockBuilder
from .block_frame import NativeFramer
from .bloom import BloomBuilder
from .fs import WritableFile
from .sstable import TableOptions, TableProperties, encode_handle
from .sstable_builder import TableFileWriter


class BlockTableWriter(TableFileWriter):
    """One SSTable from encoded data blocks, in order. :meth:`finish` neither syncs nor closes the file.
    ``OSError`` from the file propagates (the caller removes the table)."""

    def __init__(self, file: WritableFile, opts: TableOptions) -> None:
        self._file = file
        self._opts = opts
        self._offset = 0
        self._index = BlockBuilder(1)
        self._bloom = BloomBuilder(opts.bloom_bits_per_key)
        self._props = TableProperties()
        self._smallest_key = b""
        self._largest_key = b""
        self._last_bloom_key: bytes | None = None
        self._framer = NativeFramer() if block_frame.READY else None

    @property
    def num_entries(self) -> int:
        return self._props.num_entries

    @property
    def data_size(self) -> int:
        """Bytes written so far (stored data blocks with their trailers)."""
        return self._offset

    def add_blocks(self, blocks: list[bytes], last_ikeys: list[bytes], user_keys: list[bytes],
                   trailers: list[int], value_bytes: int, distinct: bool = True) -> None:
        """Append data blocks (raw payloads) whose entries have these user keys and trailers, in
        internal order; ``last_ikeys[b]`` is block b's last internal key, ``value_bytes`` the sum of the
        entries' value lengths. ``distinct=False`` when a user key may repeat (several versions, a
        compaction's output), within the call or from the previous one: the bloom filter takes each
        user key once, as ``TableBuilder`` does."""
        if not blocks:
            return
        props = self._props
        n = len(user_keys)
        if props.num_entries == 0:
            t = trailers[0]
            self._smallest_key = user_keys[0] + t.to_bytes(8, "little")
            props.smallest_seq = props.largest_seq = t >> 8
        # Sequence order is trailer order (the kind is the low byte).
        lo, hi = min(trailers) >> 8, max(trailers) >> 8
        if lo < props.smallest_seq:
            props.smallest_seq = lo
        if hi > props.largest_seq:
            props.largest_seq = hi
        props.num_entries += n
        props.num_deletions += sum(1 for t in trailers if not t & 0xFF)
        props.raw_key_bytes += sum(map(len, user_keys)) + 8 * n
        props.raw_value_bytes += value_bytes
        if distinct:
            for _ in map(self._bloom.add_key, user_keys):
                pass
        else:
            add_key = self._bloom.add_key
            last = self._last_bloom_key
            for uk in user_keys:
                if uk != last:
                    add_key(uk)
                    last = uk
            self._last_bloom_key = last
        compress = self._opts.compression
        index_add = self._index.add
        if self._framer is not None:
            # ~256 KiB of blocks per C call (compressed, checksummed, laid out) and per write.
            offset = self._offset
            b = 0
            for framed, sizes in self._framer.pieces(blocks, compress):
                self._file.append(framed)
                for size in sizes:
                    index_add(last_ikeys[b], encode_handle(offset, size))
                    offset += size + 5
                    b += 1
            if b != len(last_ikeys):
                raise ValueError(f"{b} blocks framed for {len(last_ikeys)} last keys")
            self._offset = offset
        else:
            for raw, last in zip(blocks, last_ikeys, strict=True):
                offset, size = self._write_block(raw, compress)
                index_add(last, encode_handle(offset, size))
        props.num_data_blocks += len(blocks)
        self._largest_key = last_ikeys[-1]

    def finish(self, blob_files: Iterable[int] = ()) -> TableProperties:
        """Write filter, properties, index and footer; return the properties (with size and key range).
        ``blob_files`` is for ``TableBuilder.finish``'s signature: this writer's tables reference none."""
        return self._write_tail(blob_files, self._smallest_key, self._largest_key)
