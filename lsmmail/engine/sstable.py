"""Sorted tables, format v1 (docs/format.md, "SSTable").

``data blocks | filter block | properties block | index block | footer (52 bytes)``; every block is
``payload || u8 compression || u32 checksum(payload || compression)``.

:class:`TableBuilder` writes a table from internal keys in internal order; :class:`TableReader` serves
point reads (bloom filter first, then one data block) and lazy forward/reverse range scans. A reader is
immutable after :meth:`TableReader.open` and safe to share between threads: iterators keep their state
in their own frames and data blocks come from ``ReadableFile.read_at`` or the thread-safe block cache.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .. import native as _native
from .block import (
    BLOCK_TRAILER_SIZE,
    COMPRESSION_NONE,
    BlockBuilder,
    DataBlock,
    _shared_prefix_len,
    compress_block,
    decode_block,
    decompress_block,
    split_internal_keys,
)
from .bloom import BloomBuilder, bloom_may_contain
from .cache import BlockCache
from .coding import checksum, get_varint, hash64, put_varint, u32
from .errors import Corruption, InvalidArgument
from .fs import ReadableFile, WritableFile
from .keys import KIND_BLOB, KIND_DELETE, MAX_KEY_SIZE

#: The C point lookup in a raw block, or None on the pure-Python engine (which decodes blocks instead:
#: the pure twin of the kernel walks the block in Python and is slower than decoding it).
_block_get = _native.block_get_native if _native.lib is not None else None
#: The C block encoder, or None on the pure-Python engine (which builds blocks with BlockBuilder).
_encode_block = _native.encode_block_native if _native.lib is not None else None
_GET_STOP = _native.GET_STOP
#: The C bloom probe (on a precomputed hash: a get hashes its key once for every table it probes) and
#: index search of a point lookup (``native.table_find_native``), or None on the pure-Python engine.
_table_find = getattr(_native.lib, "lsm_table_find", None) if _native.lib is not None else None

#: Block-cache charge of a raw payload beyond its bytes (the ``bytes`` header and the cache's map slot).
RAW_BLOCK_OVERHEAD = 128

FORMAT_VERSION = 1
MAGIC = b"lsmmSST\x01"
FOOTER_SIZE = 52
#: filter, properties, index handles (u64 offset, u32 size each), format version, footer checksum.
_FOOTER = struct.Struct("<QIQIQIII")
_FOOTER_CHECKED = 40  # the footer checksum covers the 40 bytes before it

#: Property names in the order they are stored (sorted bytewise, as the block format requires).
_PROP_NAMES = (
    b"blob_files",
    b"largest_seq",
    b"num_data_blocks",
    b"num_deletions",
    b"num_entries",
    b"raw_key_bytes",
    b"raw_value_bytes",
    b"smallest_seq",
)


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


@dataclass
class TableProperties:
    num_entries: int = 0
    num_data_blocks: int = 0
    num_deletions: int = 0
    raw_key_bytes: int = 0
    raw_value_bytes: int = 0
    smallest_seq: int = 0
    largest_seq: int = 0
    blob_files: list[int] = field(default_factory=list)
    #: Not stored in the properties block: the builder knows them; a reader takes the file size from
    #: the file, the largest key from the index and the smallest from the first data block.
    file_size: int = 0
    smallest_key: bytes = b""
    largest_key: bytes = b""


def encode_properties(props: TableProperties) -> bytes:
    """The raw properties block: sorted names, varint values, restart interval 1."""
    blob = bytearray()
    for number in sorted(set(props.blob_files)):
        put_varint(blob, number)
    values = {b"blob_files": bytes(blob)}
    for name in _PROP_NAMES[1:]:
        out = bytearray()
        put_varint(out, getattr(props, name.decode()))
        values[name] = bytes(out)
    builder = BlockBuilder(1)
    for name in _PROP_NAMES:
        builder.add(name, values[name])
    return builder.finish()


def _whole_varint(data: bytes, what: str) -> int:
    value, pos = get_varint(data, 0)
    if pos != len(data):
        raise Corruption(f"{what} is not exactly one varint")
    return value


def decode_properties(raw: bytes) -> TableProperties:
    """Parse a raw properties block; ``Corruption`` if a name is missing, unknown or repeated."""
    names, values = decode_block(raw)
    if tuple(names) != _PROP_NAMES:
        raise Corruption(f"properties block holds names {names!r}, expected the v1 set")
    props = TableProperties()
    blob_files: list[int] = []
    data, pos = values[0], 0
    while pos < len(data):
        number, pos = get_varint(data, pos)
        blob_files.append(number)
    props.blob_files = blob_files
    for name, value in zip(_PROP_NAMES[1:], values[1:], strict=True):
        text = name.decode()
        setattr(props, text, _whole_varint(value, f"property {text}"))
    return props


def encode_footer(filter_h: tuple[int, int], props_h: tuple[int, int], index_h: tuple[int, int]) -> bytes:
    head = _FOOTER.pack(*filter_h, *props_h, *index_h, FORMAT_VERSION, 0)[:_FOOTER_CHECKED]
    return head + u32.pack(checksum(head)) + MAGIC


def encode_handle(offset: int, size: int) -> bytes:
    out = bytearray()
    put_varint(out, offset)
    put_varint(out, size)
    return bytes(out)


def _varint_len(x: int) -> int:
    """Bytes in the varint encoding of ``x >= 0`` (7 bits a byte)."""
    return max(1, (x.bit_length() + 6) // 7)


def _trailer_of(ikey: bytes) -> int:
    return int.from_bytes(ikey[-8:], "little")


class TableBuilder:
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

    def _write_block(self, raw: bytes, compress: bool) -> tuple[int, int]:
        stored, compression = compress_block(raw, compress)
        out = bytearray(stored)
        out.append(compression)
        out += u32.pack(checksum(out))
        offset = self._offset
        self._file.append(out)
        self._offset += len(out)
        return offset, len(stored)

    def finish(self, blob_files: Iterable[int] = ()) -> TableProperties:
        """Write the rest of the table; return its properties (with file size and key range)."""
        if self._finished:
            raise InvalidArgument("TableBuilder.finish called twice")
        if self._bkeys:
            self._flush_native_block(self._encode(self._bkeys, self._bvalues, self._opts.restart_interval))
        if not self._block.empty:
            self._flush_data_block()
        self._finished = True
        props = self._props
        props.blob_files = sorted(set(blob_files))
        filter_h = self._write_block(self._bloom.finish(), False)
        props_h = self._write_block(encode_properties(props), self._opts.compression)
        index_h = self._write_block(self._index.finish(), False)
        footer = encode_footer(filter_h, props_h, index_h)
        self._file.append(footer)
        self._offset += len(footer)
        props.file_size = self._offset
        props.smallest_key = self.smallest_key
        props.largest_key = self.largest_key
        return props


class TableReader:
    """Reads one SSTable. Construct with :meth:`open`."""

    def __init__(
        self,
        file: ReadableFile,
        file_number: int,
        cache: BlockCache | None,
        verify_checksums: bool,
    ) -> None:
        self._file = file
        self.file_number = file_number
        self._name = f"{file_number:06d}.sst"
        self._cache = cache if cache is not None and cache.capacity > 0 else None
        self._verify = verify_checksums
        self._filter = b""
        self._filter_offset = 0
        self._index_ikeys: list[bytes] = []
        self._index_user_keys: list[bytes] = []
        self._index_seqs: list[int] = []
        self._offsets: list[int] = []
        self._sizes: list[int] = []
        #: The index in C layout for ``_table_find`` (None on the pure-Python engine).
        self._tindex: _native.TableIndex | None = None
        self.properties = TableProperties()

    # ---------------------------------------------------------------------------------------- open

    @classmethod
    def open(
        cls,
        file: ReadableFile,
        file_number: int,
        cache: BlockCache | None = None,
        verify_checksums: bool = True,
    ) -> TableReader:
        """Read and check the footer, filter, properties and index. The checksums of these blocks are
        always verified; ``verify_checksums`` governs data blocks. ``Corruption`` names the file and the
        offset of the first problem found. The reader owns ``file``: it is closed if opening fails."""
        try:
            reader = cls(file, file_number, cache, verify_checksums)
            reader._load()
        except BaseException:
            file.close()
            raise
        return reader

    def _corrupt(self, what: str, offset: int) -> Corruption:
        return Corruption(f"{self._name}: {what} at offset {offset}")

    def _load(self) -> None:
        size = self._file.size()
        if size < FOOTER_SIZE:
            raise self._corrupt(f"file of {size} bytes is shorter than the footer", 0)
        footer_at = size - FOOTER_SIZE
        footer = self._file.read_at(footer_at, FOOTER_SIZE)
        if len(footer) != FOOTER_SIZE:
            raise self._corrupt("short read of the footer", footer_at)
        if footer[-8:] != MAGIC:
            raise self._corrupt("bad magic (not an lsmmail table)", footer_at + 44)
        f_off, f_size, p_off, p_size, i_off, i_size, version, stored = _FOOTER.unpack_from(footer)
        if checksum(footer[:_FOOTER_CHECKED]) != stored:
            raise self._corrupt("footer checksum mismatch", footer_at)
        if version != FORMAT_VERSION:
            raise self._corrupt(f"unsupported table format version {version}", footer_at + 36)
        # The layout is fixed: filter, properties and index follow each other right up to the footer.
        t = BLOCK_TRAILER_SIZE
        if (f_off + f_size + t, p_off + p_size + t, i_off + i_size + t) != (p_off, i_off, footer_at):
            raise self._corrupt("footer block handles do not tile the file", footer_at)
        self._filter_offset = f_off
        self._filter = self._read_block(f_off, f_size, True)
        try:
            props = decode_properties(self._read_block(p_off, p_size, True))
        except Corruption as e:
            raise self._corrupt(f"bad properties block ({e})", p_off) from None
        self._load_index(self._read_block(i_off, i_size, True), i_off)
        if props.num_data_blocks != len(self._offsets):
            raise self._corrupt(
                f"properties say {props.num_data_blocks} data blocks, index has {len(self._offsets)}", p_off
            )
        if (props.num_entries == 0) != (props.num_data_blocks == 0):
            raise self._corrupt("entry count and data block count disagree", p_off)
        props.file_size = size
        if self._offsets:
            props.largest_key = self._index_ikeys[-1]
            first = self._data_block(0)
            if not len(first):
                raise self._corrupt("empty data block", 0)
            props.smallest_key = first.user_keys[0] + ((first.seqs[0] << 8) | first.kinds[0]).to_bytes(
                8, "little"
            )
        self.properties = props

    def _load_index(self, raw: bytes, index_at: int) -> None:
        try:
            ikeys, handles = decode_block(raw)
            if ikeys and min(map(len, ikeys)) < 9:
                raise Corruption("internal key shorter than 9 bytes")
        except Corruption as e:
            raise self._corrupt(f"bad index block ({e})", index_at) from None
        expect = 0
        prev_user: bytes | None = None
        prev_trailer = 0
        for ikey, handle in zip(ikeys, handles, strict=True):
            try:
                offset, pos = get_varint(handle, 0)
                size, pos = get_varint(handle, pos)
            except Corruption:
                raise self._corrupt("bad block handle in index", index_at) from None
            if pos != len(handle) or offset != expect:
                raise self._corrupt("index block handles do not tile the data blocks", index_at)
            expect = offset + size + BLOCK_TRAILER_SIZE
            user_key, trailer = ikey[:-8], _trailer_of(ikey)
            if prev_user is not None and (
                user_key < prev_user or (user_key == prev_user and trailer >= prev_trailer)
            ):
                raise self._corrupt("index keys out of order", index_at)
            prev_user, prev_trailer = user_key, trailer
            self._index_ikeys.append(ikey)
            self._index_user_keys.append(user_key)
            self._index_seqs.append(trailer >> 8)
            self._offsets.append(offset)
            self._sizes.append(size)
        if expect != self._filter_offset:
            raise self._corrupt("data blocks do not end where the filter block starts", expect)
        if _table_find is not None:
            self._tindex = _native.TableIndex(self._index_user_keys, self._index_seqs)

    # -------------------------------------------------------------------------------------- blocks

    def _read_block(self, offset: int, size: int, verify: bool) -> bytes:
        """The raw (decompressed) payload of the stored block at ``offset``."""
        n = size + BLOCK_TRAILER_SIZE
        buf = self._file.read_at(offset, n)
        if len(buf) != n:
            raise self._corrupt(f"short read of a {n}-byte block", offset)
        if verify:
            (stored,) = u32.unpack_from(buf, size + 1)
            if checksum(memoryview(buf)[: size + 1]) != stored:
                raise self._corrupt("block checksum mismatch", offset)
        compression = buf[size]
        if compression == COMPRESSION_NONE:
            return buf[:size]
        try:
            # A view, not ``buf[:size]``: the stored bytes are only read by LZ4, so copying them (~10 KiB)
            # first was wasted.
            return decompress_block(memoryview(buf)[:size], compression)
        except Corruption as e:
            raise self._corrupt(str(e), offset) from None

    def _data_block(self, i: int, fill_cache: bool = True) -> DataBlock:
        offset = self._offsets[i]
        cache = self._cache
        raw = None
        if cache is not None:
            obj = cache.get((self.file_number, offset))
            if obj is not None:
                if type(obj) is not bytes:
                    return obj  # type: ignore[return-value]
                raw = obj  # cached by a point read: decode it now, and cache the decoded form instead
        if raw is None:
            raw = self._read_block(offset, self._sizes[i], self._verify)
        try:
            block = DataBlock(raw)
        except Corruption as e:
            raise self._corrupt(f"bad data block ({e})", offset) from None
        if cache is not None and fill_cache:
            cache.put((self.file_number, offset), block, block.charge)
        return block

    # --------------------------------------------------------------------------------------- reads

    @property
    def num_data_blocks(self) -> int:
        return len(self._offsets)

    @property
    def index_user_keys(self) -> list[bytes]:
        """The user key of each data block's last entry, ascending (read-only)."""
        return self._index_user_keys

    def may_contain(self, user_key: bytes) -> bool:
        """False only if the table certainly holds no entry for ``user_key`` (bloom filter)."""
        return bloom_may_contain(self._filter, user_key)

    def get(self, user_key: bytes, snapshot_seq: int, h: int = -1) -> tuple[int, int, bytes] | None:
        """``(seq, kind, value)`` of the newest entry for ``user_key`` with ``seq <= snapshot_seq``.

        ``h``, if given (>= 0), must be ``hash64(user_key)``: a caller probing several tables for one key
        hashes it once."""
        filt = self._filter
        ix = self._tindex
        if ix is not None:
            # Bloom probe and index search in one C call (native.table_find_native).
            if h < 0:
                h = hash64(user_key)
            bi = _table_find(filt, len(filt), h, ix.keys, ix.ends, ix.seqs, ix.n, user_key, len(user_key),
                             snapshot_seq)
            if bi < 0:
                return None
            n = ix.n
        else:
            if not bloom_may_contain(filt, user_key):
                return None
            index_keys = self._index_user_keys
            n = len(index_keys)
            bi = bisect_left(index_keys, user_key)
            # A block whose last entry is this user key at a sequence above the snapshot holds only
            # versions too new (they descend within the block): skip it without reading it.
            while bi < n and index_keys[bi] == user_key and self._index_seqs[bi] > snapshot_seq:
                bi += 1
        while bi < n:
            r = self._block_get(bi, user_key, snapshot_seq)
            if type(r) is tuple:
                return r
            if r == _GET_STOP:
                return None
            bi += 1
        return None

    def _block_get(self, bi: int, user_key: bytes, snapshot_seq: int) -> tuple[int, int, bytes] | int:
        """Look ``user_key`` up in data block ``bi`` (``DataBlock.find``'s -1/-2 when not there).

        With the C kernels, a block read for a point lookup is cached as its raw payload and searched
        in place (``native.block_get``, ~0.5 us) instead of being decoded into lists (~5 us for a
        16 KiB block, one ``bytes`` object per key and value): most point reads miss the cache, and
        they need one entry. A scan that meets the raw payload decodes it and caches the decoded form.
        """
        if _block_get is None:
            block = self._data_block(bi)
            i = block.find(user_key, snapshot_seq)
            return (block.seqs[i], block.kinds[i], block.value(i)) if i >= 0 else i
        offset = self._offsets[bi]
        cache = self._cache
        if cache is None:
            raw = self._read_block(offset, self._sizes[bi], self._verify)
        else:
            ckey = (self.file_number, offset)
            obj = cache.get(ckey)
            if obj is None:
                raw = self._read_block(offset, self._sizes[bi], self._verify)
                cache.put(ckey, raw, len(raw) + RAW_BLOCK_OVERHEAD)
            elif type(obj) is bytes:
                raw = obj
            else:
                block: DataBlock = obj  # type: ignore[assignment]
                i = block.find(user_key, snapshot_seq)
                return (block.seqs[i], block.kinds[i], block.value(i)) if i >= 0 else i
        try:
            return _block_get(raw, user_key, snapshot_seq)
        except Corruption as e:
            # Dropped from the cache: a later read goes back to the file and reports it again.
            if cache is not None:
                cache.erase((self.file_number, offset))
            raise self._corrupt(f"bad data block ({e})", offset) from None

    def entries(
        self, start: bytes | None = None, end: bytes | None = None, fill_cache: bool = True
    ) -> Iterator[tuple[bytes, int, int, bytes]]:
        """``(user_key, seq, kind, value)`` in internal order for ``start <= user_key < end``.

        Lazy: a data block is read when the scan reaches it. With ``fill_cache=False`` (compaction,
        which reads each block once) blocks not in the cache are not added to it, so a compaction does
        not evict the blocks readers are using.
        """
        if start is not None and end is not None and start >= end:
            return
        n = len(self._offsets)
        bi = 0 if start is None else bisect_left(self._index_user_keys, start)
        first = True
        while bi < n:
            block = self._data_block(bi, fill_cache)
            keys = block.user_keys
            lo = block.seek(start) if first and start is not None else 0
            first = False
            hi = len(keys) if end is None else bisect_left(keys, end, lo)
            seqs, kinds, raw = block.seqs, block.kinds, block.payload
            voffs, vlens = block.value_offsets, block.value_lengths
            for j in range(lo, hi):
                a = voffs[j]
                yield keys[j], seqs[j], kinds[j], raw[a : a + vlens[j]]
            if hi < len(keys):
                return
            bi += 1

    def entries_reverse(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, int, int, bytes]]:
        """Exactly ``reversed(list(entries(start, end)))``: user keys descending, and for one user key
        sequence numbers ascending. Lazy like :meth:`entries`."""
        if start is not None and end is not None and start >= end:
            return
        index_keys = self._index_user_keys
        n = len(index_keys)
        if n == 0:
            return
        # The first block whose last key is >= end holds the last entries below end (if any).
        bi = n - 1 if end is None else min(bisect_left(index_keys, end), n - 1)
        first = True
        while bi >= 0:
            block = self._data_block(bi)
            keys = block.user_keys
            hi = bisect_left(keys, end) if first and end is not None else len(keys)
            first = False
            lo = 0 if start is None else bisect_left(keys, start, 0, hi)
            seqs, kinds, raw = block.seqs, block.kinds, block.payload
            voffs, vlens = block.value_offsets, block.value_lengths
            for j in range(hi - 1, lo - 1, -1):
                a = voffs[j]
                yield keys[j], seqs[j], kinds[j], raw[a : a + vlens[j]]
            bi -= 1
            if lo > 0 or (start is not None and bi >= 0 and index_keys[bi] < start):
                return

    # ------------------------------------------------------------------------------------- checking

    def verify(self) -> None:
        """Read every data block from the file (not the cache), check every checksum, that keys are
        strictly increasing in internal order, that each block ends with its index key, that the
        filter matches every user key, and that the properties match the entries. ``Corruption``
        otherwise."""
        props = self.properties
        count = deletions = key_bytes = value_bytes = 0
        smallest_seq = largest_seq = None
        prev_user: bytes | None = None
        prev_trailer = 0
        for bi, offset in enumerate(self._offsets):
            raw = self._read_block(offset, self._sizes[bi], True)
            try:
                ikeys, values = decode_block(raw)
                user_keys, seqs, kinds = split_internal_keys(ikeys)
            except Corruption as e:
                raise self._corrupt(f"bad data block ({e})", offset) from None
            if not ikeys:
                raise self._corrupt("empty data block", offset)
            if ikeys[-1] != self._index_ikeys[bi]:
                raise self._corrupt("data block does not end with its index key", offset)
            for ikey, user_key, seq, kind, value in zip(ikeys, user_keys, seqs, kinds, values, strict=True):
                trailer = (seq << 8) | kind
                if prev_user is None or user_key != prev_user:
                    if prev_user is not None and user_key < prev_user:
                        raise self._corrupt("keys out of order", offset)
                    if not bloom_may_contain(self._filter, user_key):
                        raise self._corrupt("bloom filter misses a key of the table", self._filter_offset)
                elif trailer >= prev_trailer:
                    raise self._corrupt("keys out of order", offset)
                prev_user, prev_trailer = user_key, trailer
                count += 1
                deletions += kind == KIND_DELETE
                key_bytes += len(ikey)
                value_bytes += len(value)
                smallest_seq = seq if smallest_seq is None else min(smallest_seq, seq)
                largest_seq = seq if largest_seq is None else max(largest_seq, seq)
        actual = (count, deletions, key_bytes, value_bytes, smallest_seq or 0, largest_seq or 0)
        stated = (
            props.num_entries,
            props.num_deletions,
            props.raw_key_bytes,
            props.raw_value_bytes,
            props.smallest_seq,
            props.largest_seq,
        )
        if actual != stated:
            raise self._corrupt(f"properties {stated} do not match the entries {actual}", 0)

    def close(self) -> None:
        self._file.close()
