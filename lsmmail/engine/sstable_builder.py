"""Writing one SSTable entry by entry: :class:`TableBuilder` and its :class:`TableOptions`.

The builder takes internal keys in strictly increasing internal order and writes the v1 layout of
:mod:`lsmmail.engine.sstable_format` (``InvalidArgument`` on a malformed or out-of-order key). With the
C kernels a data block is gathered as two lists and encoded by one call (``native.encode_block_native``);
on the pure-Python engine (``LSMMAIL_PURE=1``) by :class:`lsmmail.engine.block.BlockBuilder`. Both cut
blocks at the same entries and write the same bytes. :class:`lsmmail.engine.sstable.TableReader` reads
the result; both names here are also importable from :mod:`lsmmail.engine.sstable`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import native as _native
from .block import BlockBuilder, _shared_prefix_len, compress_block
from .bloom import BloomBuilder
from .coding import checksum, u32
from .errors import InvalidArgument
from .fs import WritableFile
from .keys import KIND_BLOB, KIND_DELETE, MAX_KEY_SIZE
from .sstable_format import TableProperties, _trailer_of, encode_footer, encode_handle, encode_properties

#: The C block encoder, or None on the pure-Python engine (which builds blocks with BlockBuilder).
_encode_block = _native.encode_block_native if _native.lib is not None else None


@dataclass
class TableOptions:
    #: Raw size at which a data block is cut (docs/format.md: 16 KiB).
    block_size: int = 16 * 1024
    #: Entries between restart points in data blocks.
    restart_interval: int = 16
    #: Bloom filter bits per distinct user key; 0 writes a filter that matches every key.
    bloom_bits_per_key: int = 10
    #: Store data and properties blocks LZ4-compressed when that saves >= 12.5%.
    compression: bool = True

    def validate(self) -> None:
        if self.block_size < 1:
            raise InvalidArgument("block_size must be positive")
        if self.restart_interval < 1:
            raise InvalidArgument("restart_interval must be at least 1")
        if not isinstance(self.bloom_bits_per_key, int) or self.bloom_bits_per_key < 0:
            raise InvalidArgument("bloom_bits_per_key must be an integer >= 0")


def _varint_len(x: int) -> int:
    """Bytes in the varint encoding of ``x >= 0`` (7 bits a byte)."""
    return max(1, (x.bit_length() + 6) // 7)


class TableFileWriter:
    """What every writer of a v1 table shares (TableBuilder here, BlockTableWriter in flush_table.py):
    appending a checksummed block, and the tail after the data blocks (filter, properties, index,
    footer; docs/format.md). Subclasses set ``_file``, ``_offset``, ``_opts``, ``_bloom``, ``_index`` and
    ``_props``."""

    _file: WritableFile
    _offset: int
    _opts: TableOptions
    _bloom: BloomBuilder
    _index: BlockBuilder
    _props: TableProperties

    def _write_block(self, raw: bytes, compress: bool) -> tuple[int, int]:
        stored, compression = compress_block(raw, compress)
        out = bytearray(stored)
        out.append(compression)
        out += u32.pack(checksum(out))
        offset = self._offset
        self._file.append(out)
        self._offset += len(out)
        return offset, len(stored)

    def _write_tail(self, blob_files: Iterable[int], smallest: bytes, largest: bytes) -> TableProperties:
        """Write filter, properties, index and footer; return the properties (with size and key range)."""
        props = self._props
        props.blob_files = sorted(set(blob_files))
        filter_h = self._write_block(self._bloom.finish(), False)
        props_h = self._write_block(encode_properties(props), self._opts.compression)
        index_h = self._write_block(self._index.finish(), False)
        footer = encode_footer(filter_h, props_h, index_h)
        self._file.append(footer)
        self._offset += len(footer)
        props.file_size = self._offset
        props.smallest_key = smallest
        props.largest_key = largest
        return props


class TableBuilder(TableFileWriter):
    """Writes one SSTable to ``file`` (fresh from ``fs.create``).

    Call :meth:`add` with internal keys in strictly increasing internal order, then :meth:`finish`.
    Whole blocks are appended as they fill; :meth:`finish` writes filter, properties, index and footer
    but neither syncs nor closes the file (the caller decides durability). ``OSError`` from the file
    propagates; the table is then unusable and the caller removes it.
    """

    def __init__(self, file: WritableFile, opts: TableOptions | None = None) -> None:
        self._opts = opts if opts is not None else TableOptions()
        self._opts.validate()
        self._file = file
        self._offset = 0
        self._block = BlockBuilder(self._opts.restart_interval)
        # With the C kernels the open data block is two lists, encoded by one call when it is cut (was:
        # BlockBuilder.add per entry, ~1 us of Python). _block_ub / _block_lb bound its entry bytes.
        self._encode = _encode_block
        self._bkeys: list[bytes] = []
        self._bvalues: list[bytes] = []
        self._block_ub = 0
        self._block_lb = 0
        #: Exact entry bytes of the open native block once its first size check fell short, else -1.
        self._block_exact = -1
        self._index = BlockBuilder(1)
        self._bloom = BloomBuilder(self._opts.bloom_bits_per_key)
        self._last_user_key: bytes | None = None
        self._last_trailer = 0
        self._props = TableProperties()
        self._finished = False
        self.smallest_key = b""
        self.largest_key = b""

    @property
    def num_entries(self) -> int:
        return self._props.num_entries

    def estimated_file_size(self) -> int:
        """Bytes written so far plus the open data block (before compression).

        With the C kernels the open block counts with a lower bound of its size (each entry as if its
        key shared all but one byte with the one before), exact as of its last size check: that keeps
        the estimate non-decreasing as entries are added, as the exact size is, without computing
        shared prefixes in Python. It trails the exact size by less than one block."""
        if self._encode is not None:
            return self._offset + (self._block_lb + self._restart_bytes() if self._bkeys else 0)
        return self._offset + (0 if self._block.empty else self._block.estimated_size())

    def _restart_bytes(self) -> int:
        """Size of the open native block's restart array and count."""
        ri = self._opts.restart_interval
        return 4 * ((len(self._bkeys) + ri - 1) // ri) + 4

    def add(self, ikey: bytes, value: bytes) -> None:
        """Append one entry. ``InvalidArgument`` if the key is malformed, of kind RANGE_DEL or other
        non-table kind, or not strictly after the previous key in internal order."""
        if self._finished:
            raise InvalidArgument("TableBuilder.add after finish")
        n = len(ikey)
        if not 9 <= n <= MAX_KEY_SIZE + 8:
            raise InvalidArgument(f"internal key of {n} bytes (user key must be 1..{MAX_KEY_SIZE} bytes)")
        trailer = _trailer_of(ikey)
        kind = trailer & 0xFF
        if kind > KIND_BLOB:
            raise InvalidArgument(f"kind {kind} cannot be stored in an SSTable")
        user_key = ikey[:-8]
        last = self._last_user_key
        props = self._props
        if last is None:
            self.smallest_key = bytes(ikey)
            props.smallest_seq = props.largest_seq = trailer >> 8
            self._bloom.add_key(user_key)
        elif user_key != last:
            if user_key < last:
                raise InvalidArgument("internal keys out of order (user key decreased)")
            self._bloom.add_key(user_key)
        elif trailer >= self._last_trailer:
            raise InvalidArgument("internal keys out of order (same user key, trailer not decreasing)")
        self._last_user_key = user_key
        self._last_trailer = trailer
        seq = trailer >> 8
        if seq < props.smallest_seq:
            props.smallest_seq = seq
        if seq > props.largest_seq:
            props.largest_seq = seq
        props.num_entries += 1
        if kind == KIND_DELETE:
            props.num_deletions += 1
        props.raw_key_bytes += n
        props.raw_value_bytes += len(value)
        if self._encode is not None:
            self._add_native(ikey, value, n)
            return
        block = self._block
        block.add(ikey, value)
        if block.estimated_size() >= self._opts.block_size:
            self._flush_data_block()

    def _add_native(self, ikey: bytes, value: bytes, n: int) -> None:
        """Append to the open native block; cut it where BlockBuilder would (docs/format.md: right after
        the entry that brings the raw size, restart array included, to block_size or more).

        Exact sizes need each key's shared prefix, so keep an upper bound instead (the two key varints
        sized for ``shared = 0``); only when the bound reaches block_size encode the block and look at
        its exact size. With values that dominate the entry (1 KiB) that encoding is nearly always the
        block written. If it is still short, the rest of the block is sized exactly, entry by entry
        (``_block_exact``): re-encoding whenever the loose bound crosses again cost ~18% per entry with
        10-byte values under 30-byte shared key prefixes, where the bound is ~2.5x the real size.
        """
        bkeys = self._bkeys
        bkeys.append(ikey)
        self._bvalues.append(value)
        vlen = len(value)
        exact = self._block_exact
        if exact >= 0:
            ri = self._opts.restart_interval
            shared = 0 if (len(bkeys) - 1) % ri == 0 else _shared_prefix_len(bkeys[-2], ikey)
            ns = n - shared
            exact += ns + vlen + (1 if shared < 0x80 else _varint_len(shared))
            exact += (1 if ns < 0x80 else _varint_len(ns)) + (1 if vlen < 0x80 else _varint_len(vlen))
            self._block_exact = self._block_lb = exact
            if exact + self._restart_bytes() >= self._opts.block_size:
                self._flush_native_block(self._encode(bkeys, self._bvalues, ri))
            return
        # Varint sizes inline for keys < 128 B and values < 16 KiB (the function call was ~4% of a
        # flush's samples with 1 KiB values). Keys are distinct and increasing, so at least one key
        # byte is never shared: the lower bound counts one key byte and one-byte key varints.
        vl = 1 if vlen < 0x80 else 2 if vlen < 0x4000 else _varint_len(vlen)
        self._block_ub += n + vlen + vl + (2 if n < 0x80 else 2 * _varint_len(n))
        self._block_lb += vlen + vl + 3
        if self._block_ub + self._restart_bytes() < self._opts.block_size:
            return
        raw = self._encode(self._bkeys, self._bvalues, self._opts.restart_interval)
        if len(raw) >= self._opts.block_size:
            self._flush_native_block(raw)
            return
        self._block_exact = self._block_lb = len(raw) - self._restart_bytes()

    def _flush_native_block(self, raw: bytes) -> None:
        last_key = bytes(self._bkeys[-1])
        self.largest_key = last_key
        offset, size = self._write_block(raw, self._opts.compression)
        self._index.add(last_key, encode_handle(offset, size))
        self._props.num_data_blocks += 1
        self._bkeys = []
        self._bvalues = []
        self._block_ub = self._block_lb = 0
        self._block_exact = -1

    def _flush_data_block(self) -> None:
        block = self._block
        self.largest_key = bytes(block.last_key)
        offset, size = self._write_block(block.finish(), self._opts.compression)
        self._index.add(block.last_key, encode_handle(offset, size))
        self._props.num_data_blocks += 1
        self._block = BlockBuilder(self._opts.restart_interval)

    def finish(self, blob_files: Iterable[int] = ()) -> TableProperties:
        """Write the rest of the table; return its properties (with file size and key range)."""
        if self._finished:
            raise InvalidArgument("TableBuilder.finish called twice")
        if self._bkeys:
            self._flush_native_block(self._encode(self._bkeys, self._bvalues, self._opts.restart_interval))
        if not self._block.empty:
            self._flush_data_block()
        self._finished = True
        return self._write_tail(blob_files, self.smallest_key, self.largest_key)
