"""Sorted tables, format v1 (docs/format.md, "SSTable"): reading one table.

``data blocks | filter block | properties block | index block | footer (52 bytes)``; every block is
``payload || u8 compression || u32 checksum(payload || compression)``.

:class:`TableReader` serves point reads (bloom filter first, then one data block) and lazy
forward/reverse range scans, and checks a whole table (:meth:`TableReader.verify`); malformed data is
reported as ``Corruption`` naming the file and offset. A reader is immutable after
:meth:`TableReader.open` and safe to share between threads: iterators keep their state in their own
frames and data blocks come from ``ReadableFile.read_at`` or the thread-safe block cache.

The table is written by :class:`TableBuilder` (:mod:`lsmmail.engine.sstable_builder`); the layout
shared by both is in :mod:`lsmmail.engine.sstable_format`. Their public names are re-exported here, so
``lsmmail.engine.sstable`` remains the one import for SSTables.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from .. import native as _native
from .. import native_pointget as _pointget
from .block import (
    BLOCK_TRAILER_SIZE,
    COMPRESSION_NONE,
    DataBlock,
    decode_block,
    decompress_block,
    split_internal_keys,
)
from .bloom import bloom_may_contain
from .cache import BlockCache
from .coding import checksum, get_varint, hash64, u32
from .errors import Corruption
from .fs import ReadableFile, _OsReadable
from .keys import KIND_DELETE
from .sstable_builder import TableBuilder, TableOptions
from .sstable_format import (
    _FOOTER,
    _FOOTER_CHECKED,
    FOOTER_SIZE,
    FORMAT_VERSION,
    MAGIC,
    TableProperties,
    _trailer_of,
    decode_properties,
    encode_footer,
    encode_handle,
    encode_properties,
)

__all__ = [
    "FOOTER_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "RAW_BLOCK_OVERHEAD",
    "TableBuilder",
    "TableOptions",
    "TableProperties",
    "TableReader",
    "decode_properties",
    "encode_footer",
    "encode_handle",
    "encode_properties",
]

#: The C point lookup in a raw block, or None on the pure-Python engine (which decodes blocks instead:
#: the pure twin of the kernel walks the block in Python and is slower than decoding it).
_block_get = _native.block_get_native if _native.lib is not None else None
_GET_STOP = _native.GET_STOP
#: The C bloom probe (on a precomputed hash: a get hashes its key once for every table it probes) and
#: index search of a point lookup (``native.table_find_native``), or None on the pure-Python engine.
_table_find = getattr(_native.lib, "lsm_table_find", None) if _native.lib is not None else None
#: A cache-missing block read for a point lookup in one C call (pread, checksum, LZ4, lookup:
#: ``native_pointget``), or None on the pure-Python engine or when its codecs are not available.
_load_get = _pointget.block_load_get_native if _native.lib is not None and _pointget.READY else None

#: Block-cache charge of a raw payload beyond its bytes (the ``bytes`` header and the cache's map slot).
RAW_BLOCK_OVERHEAD = 128


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
        #: The C load preads the file itself when it is an OS file (``_file._fd``, read per call: a
        #: closed file's -1 then fails as ``read_at`` would); other files go through ``read_at``.
        self._os_file = type(file) is _OsReadable
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

    @property
    def probe_parts(self) -> tuple[bytes, _native.TableIndex | None]:
        """The bloom filter and the C-layout index (None on the pure-Python engine), for a
        ``native_pointget.VersionProbe``."""
        return self._filter, self._tindex

    def get_from(self, user_key: bytes, snapshot_seq: int, bi: int) -> tuple[int, int, bytes] | None:
        """:meth:`get` from data block ``bi`` on, where the bloom probe and index search (done by the
        caller, ``VersionProbe.find``) said to start."""
        n = len(self._offsets)
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
            if _load_get is not None:
                return self._load_get(offset, bi, user_key, snapshot_seq, False)
            raw = self._read_block(offset, self._sizes[bi], self._verify)
        else:
            ckey = (self.file_number, offset)
            obj = cache.get(ckey)
            if obj is None:
                if _load_get is not None:
                    return self._load_get(offset, bi, user_key, snapshot_seq, True)
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

    def _load_get(self, offset: int, bi: int, user_key: bytes, snapshot_seq: int,
                  fill_cache: bool) -> tuple[int, int, bytes] | int:
        """A cache-missing ``_block_get`` in one C call (``native_pointget``): read, verify, decompress
        and search data block ``bi``; its raw payload is cached (as a point read caches it) only if the
        lookup found the block well formed."""
        f = self._file
        try:
            raw, r = _load_get(f._fd if self._os_file else -1, f.read_at, offset,  # type: ignore[attr-defined]
                               self._sizes[bi], self._verify, user_key, snapshot_seq, fill_cache)
        except Corruption as e:
            raise self._corrupt(str(e), offset) from None
        if fill_cache and self._cache is not None and raw is not None:
            self._cache.put((self.file_number, offset), raw, len(raw) + RAW_BLOCK_OVERHEAD)
        return r

    def raw_block(self, bi: int) -> bytes:
        """The raw (decompressed, verified) payload of data block ``bi``, for scans that iterate blocks in
        C: from the block cache (raw, or a decoded block's payload), else read, checksummed and
        decompressed (one C call when ``native_pointget`` is ready) and cached raw. ``Corruption`` for a
        bad stored block."""
        offset = self._offsets[bi]
        cache = self._cache
        if cache is not None:
            obj = cache.get((self.file_number, offset))
            if obj is not None:
                return obj if type(obj) is bytes else obj.payload  # type: ignore[attr-defined,return-value]
        if _load_get is not None:
            f = self._file
            try:
                raw, _ = _load_get(f._fd if self._os_file else -1, f.read_at, offset,  # type: ignore[attr-defined]
                                   self._sizes[bi], self._verify, None, 0, True)
            except Corruption as e:
                raise self._corrupt(str(e), offset) from None
            assert raw is not None
        else:
            raw = self._read_block(offset, self._sizes[bi], self._verify)
        if cache is not None:
            cache.put((self.file_number, offset), raw, len(raw) + RAW_BLOCK_OVERHEAD)
        return raw

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
