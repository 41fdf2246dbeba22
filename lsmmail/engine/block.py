"""Blocks, the unit of SSTable I/O (docs/format.md, "SSTable": block trailer, data and index blocks).

A block's *raw payload* is a run of prefix-compressed entries followed by the restart array::

    entry: varint shared, varint non_shared, varint value_length, key_delta, value
    u32 restart_offset x num_restarts, u32 num_restarts

On disk the payload may be stored LZ4-compressed (``compress_block`` / ``decompress_block``); the
checksummed trailer around it is written and checked by :mod:`lsmmail.engine.sstable`.

The per-entry loops live in a few plain functions with bytes in and lists out -- ``BlockBuilder.add``,
:func:`decode_block`, :func:`split_internal_keys` -- so that a C twin can mirror them exactly.
Every decoder raises :class:`Corruption` (and nothing else) on malformed input.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import lz4.block

from .coding import get_varint, put_varint, u32
from .errors import Corruption, InvalidArgument
from .keys import KIND_BLOB

COMPRESSION_NONE = 0
COMPRESSION_LZ4 = 1

#: ``u8 compression`` + ``u32 checksum`` after every stored payload.
BLOCK_TRAILER_SIZE = 5

#: A block's offsets are u32, so its raw payload must stay below 4 GiB.
MAX_BLOCK_SIZE = 0xFFFFFFFF

#: LZ4 cannot expand data by more than ~255x (a match length byte of 255 covers 255 output bytes), so a
#: declared uncompressed length beyond this bound is corrupt; checking it first avoids allocating
#: gigabytes for a flipped length prefix when checksums are not verified.
_LZ4_MAX_RATIO = 256

#: Approximate Python memory per decoded entry beyond its key and value bytes: two ``bytes`` object
#: headers (33 B each), an ``int`` for the sequence (28-36 B) and four list slots (32 B), rounded up.
#: Used so the block cache's byte budget tracks real memory, not just payload bytes.
ENTRY_OVERHEAD = 128


def _shared_prefix_len(a: bytes, b: bytes) -> int:
    """Length of the common prefix of ``a`` and ``b``.

    XOR of the two prefixes read as big-endian integers: the highest set bit marks the first
    differing byte. This runs in C at memory speed instead of a Python loop per byte.
    """
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - ((x.bit_length() + 7) >> 3)


class BlockBuilder:
    """Builds one data, index or properties block.

    Keys must be added in the order the block is to hold them (the builder does not check; the table
    builder does). Every ``restart_interval``-th entry (starting with the first) stores its key whole
    and is listed in the restart array.
    """

    __slots__ = ("_buf", "_restarts", "_interval", "_counter", "_last_key", "_count")

    def __init__(self, restart_interval: int = 16) -> None:
        if restart_interval < 1:
            raise InvalidArgument("restart_interval must be at least 1")
        self._interval = restart_interval
        self._buf = bytearray()
        self._restarts: list[int] = []
        self._counter = 0
        self._last_key = b""
        self._count = 0

    def add(self, key: bytes, value: bytes | bytearray | memoryview) -> None:
        buf = self._buf
        if self._counter == 0:
            self._restarts.append(len(buf))
            shared = 0
        else:
            shared = _shared_prefix_len(self._last_key, key)
        self._counter += 1
        if self._counter == self._interval:
            self._counter = 0
        non_shared = len(key) - shared
        vlen = len(value)
        # Varints under 128 are one byte: the common case, appended without a call.
        if shared < 0x80:
            buf.append(shared)
        else:
            put_varint(buf, shared)
        if non_shared < 0x80:
            buf.append(non_shared)
        else:
            put_varint(buf, non_shared)
        if vlen < 0x80:
            buf.append(vlen)
        else:
            put_varint(buf, vlen)
        buf += key[shared:] if shared else key
        buf += value
        self._last_key = key
        self._count += 1

    def estimated_size(self) -> int:
        """Exact size in bytes that :meth:`finish` would return now."""
        return len(self._buf) + 4 * len(self._restarts) + 4

    @property
    def empty(self) -> bool:
        return self._count == 0

    @property
    def count(self) -> int:
        return self._count

    @property
    def last_key(self) -> bytes:
        """The key added last (``b""`` while empty)."""
        return self._last_key

    def finish(self) -> bytes:
        """The raw payload: entries, restart array, restart count. The builder is left unchanged."""
        out = bytearray(self._buf)
        n = len(self._restarts)
        out += struct.pack(f"<{n}I", *self._restarts)
        out += u32.pack(n)
        if len(out) > MAX_BLOCK_SIZE:
            raise InvalidArgument("block larger than 4 GiB")
        return bytes(out)


def decode_block_py(payload: bytes) -> tuple[list[bytes], list[bytes]]:
    """All keys and values of a raw block payload, in order. ``Corruption`` as for
    :func:`decode_block_spans_py`."""
    keys, offs, lens = decode_block_spans_py(payload)
    return keys, [payload[a : a + b] for a, b in zip(offs, lens, strict=True)]


def decode_block_spans_py(payload: bytes) -> tuple[list[bytes], list[int], list[int]]:
    """All keys of a raw block payload, in order, with each value's offset and length in ``payload``.

    Checks every length against the buffer, that the restart array lists exactly the entries that
    start at a restart point, in increasing order, that the first entry is one, and that restart
    entries share nothing with the previous key. Raises ``Corruption`` on any violation.
    """
    n = len(payload)
    if n < 4:
        raise Corruption(f"block of {n} bytes is too short for its restart count")
    (num_restarts,) = u32.unpack_from(payload, n - 4)
    limit = n - 4 - 4 * num_restarts
    if limit < 0:
        raise Corruption(f"block restart count {num_restarts} runs past the block")
    if num_restarts == 0:
        if limit != 0:
            raise Corruption("non-empty block without restart points")
        return [], [], []
    restarts = struct.unpack_from(f"<{num_restarts}I", payload, limit)
    if restarts[0] != 0:
        raise Corruption("first restart point is not at offset 0")
    keys: list[bytes] = []
    offs: list[int] = []
    lens: list[int] = []
    prev = b""
    pos = 0
    ri = 0
    next_restart = 0
    while pos < limit:
        if pos == next_restart:
            ri += 1
            next_restart = restarts[ri] if ri < num_restarts else limit
            at_restart = True
        elif pos > next_restart:
            raise Corruption(f"restart point {next_restart} is not at an entry start")
        else:
            at_restart = False
        shared = payload[pos]
        if shared < 0x80:
            pos += 1
        else:
            shared, pos = get_varint(payload, pos)
        non_shared = payload[pos] if pos < limit else -1
        if 0 <= non_shared < 0x80:
            pos += 1
        else:
            non_shared, pos = get_varint(payload, pos)
        vlen = payload[pos] if pos < limit else -1
        if 0 <= vlen < 0x80:
            pos += 1
        else:
            vlen, pos = get_varint(payload, pos)
        key_end = pos + non_shared
        value_end = key_end + vlen
        if value_end > limit:
            raise Corruption(f"block entry at offset {pos} runs past the entries")
        if shared:
            if at_restart or shared > len(prev):
                raise Corruption(f"block entry shares {shared} bytes it cannot share")
            prev = prev[:shared] + payload[pos:key_end]
        else:
            prev = payload[pos:key_end]
        keys.append(prev)
        offs.append(key_end)
        lens.append(vlen)
        pos = value_end
    if ri != num_restarts:
        raise Corruption("restart array lists offsets that are not entry starts")
    return keys, offs, lens


def split_internal_keys(keys: list[bytes]) -> tuple[list[bytes], list[int], list[int]]:
    """Split internal keys into parallel lists ``(user_keys, seqs, kinds)``.

    Raises ``Corruption`` if a key is shorter than 9 bytes (a user key of at least 1 byte plus the
    8-byte trailer) or a kind is not one an SSTable holds (0 DELETE, 1 PUT, 2 BLOB).
    """
    if not keys:
        return [], [], []
    if min(map(len, keys)) < 9:
        raise Corruption("internal key shorter than 9 bytes in data block")
    from_bytes = int.from_bytes
    trailers = [from_bytes(k[-8:], "little") for k in keys]
    kinds = [t & 0xFF for t in trailers]
    if max(kinds) > KIND_BLOB:
        raise Corruption(f"unknown entry kind {max(kinds)} in data block")
    return [k[:-8] for k in keys], [t >> 8 for t in trailers], kinds


def decode_data_block_py(payload: bytes) -> tuple[list[bytes], list[int], list[int], list[bytes]]:
    """Decode a data block into parallel lists ``(user_keys, seqs, kinds, values)``.

    ``Corruption`` as for :func:`decode_block` and :func:`split_internal_keys`.
    """
    keys, values = decode_block_py(payload)
    user_keys, seqs, kinds = split_internal_keys(keys)
    return user_keys, seqs, kinds, values


def decode_data_block_spans_py(
    payload: bytes,
) -> tuple[list[bytes], list[int], list[int], list[int], list[int]]:
    """Decode a data block into parallel lists ``(user_keys, seqs, kinds, value_offsets, value_lengths)``;
    value ``i`` is ``payload[value_offsets[i] : value_offsets[i] + value_lengths[i]]``.

    ``Corruption`` exactly when :func:`decode_data_block_py` raises it.
    """
    keys, offs, lens = decode_block_spans_py(payload)
    user_keys, seqs, kinds = split_internal_keys(keys)
    return user_keys, seqs, kinds, offs, lens


class DataBlock:
    """A decoded data block: parallel lists, built once and then shared read-only (block cache).

    Entries are in internal order: user keys ascending, and for one user key the sequence numbers
    descending, so the first entry of a user key is its newest version.

    Values are never copied out ahead of use: the block keeps its raw ``payload`` and each value's
    offset and length, and :meth:`value` slices one when a reader uses it. Copying all 16 one-KiB
    values of a block was ~4 us of an ~11 us decode, and a seek + next 50 yields a few values of its
    first and last blocks. (An earlier version built a ``values`` list the second time a scan read a
    block and indexed it from then on: in the bench's mostly-cold seek + next 50 that list cost more
    than it saved -- 16 copies to build, 16 more objects to free at eviction; in-process A/B without
    it: forward 155 -> 149 us, reverse 186 -> 173 us, a fully cached scan no slower.) Immutable, so
    readers on several threads share one without locking.
    """

    __slots__ = ("user_keys", "seqs", "kinds", "payload", "value_offsets", "value_lengths", "charge")

    def __init__(self, payload: bytes) -> None:
        # With the C kernels, seqs / value offsets / value lengths are ``array('Q')`` and kinds ``bytes``
        # (native.decode_data_block_compact_native: fewer objects to build and to free at eviction);
        # on the pure engine, lists. Both index to the same ints.
        self.user_keys, self.seqs, self.kinds, self.value_offsets, self.value_lengths = (
            _decode_compact(payload)
        )
        #: The raw payload the values are sliced from.
        self.payload = payload
        #: Bytes this block accounts for in the block cache.
        self.charge = len(payload) + ENTRY_OVERHEAD * len(self.user_keys)

    def value(self, i: int) -> bytes:
        """The value of entry ``i``."""
        a = self.value_offsets[i]
        return self.payload[a : a + self.value_lengths[i]]

    @property
    def values(self) -> list[bytes]:
        """Every value, in entry order (a new list of copies on each call)."""
        p = self.payload
        return [p[a : a + b] for a, b in zip(self.value_offsets, self.value_lengths, strict=True)]

    def __len__(self) -> int:
        return len(self.user_keys)

    def seek(self, user_key: bytes) -> int:
        """Index of the first entry whose user key is >= ``user_key`` (``len(self)`` if none)."""
        return bisect_left(self.user_keys, user_key)

    def seek_reverse(self, user_key: bytes) -> int:
        """Index of the last entry whose user key is < ``user_key`` (-1 if none)."""
        return bisect_left(self.user_keys, user_key) - 1

    def find(self, user_key: bytes, snapshot_seq: int) -> int:
        """Index of the newest entry for ``user_key`` with sequence <= ``snapshot_seq``.

        Returns -1 if no block after this one can hold such an entry either (a larger user key follows),
        and -2 if the entries from ``user_key`` on, if any, are all versions of it too new for the
        snapshot: the next block may hold older ones.
        """
        keys = self.user_keys
        seqs = self.seqs
        i = bisect_left(keys, user_key)
        n = len(keys)
        while i < n:
            if keys[i] != user_key:
                return -1
            if seqs[i] <= snapshot_seq:
                return i
            i += 1
        return -2


def compress_block(raw: bytes, allow: bool) -> tuple[bytes, int]:
    """Choose the stored form of ``raw``: ``(stored_payload, compression_byte)``.

    LZ4 (``u32 uncompressed_length || LZ4 block``) is used only if ``allow`` and the stored form is at
    most 7/8 of the raw size (saves >= 12.5%, docs/format.md); otherwise the raw bytes are stored.
    """
    if allow and raw:
        packed = lz4.block.compress(raw, store_size=True)
        if len(packed) * 8 <= len(raw) * 7:
            return packed, COMPRESSION_LZ4
    return raw, COMPRESSION_NONE


def decompress_block(stored: bytes, compression: int) -> bytes:
    """The raw payload of a stored block. Raises ``Corruption`` on an unknown compression byte, a
    declared length that LZ4 cannot produce, or LZ4 data that does not decode to exactly that length."""
    if compression == COMPRESSION_NONE:
        return stored
    if compression != COMPRESSION_LZ4:
        raise Corruption(f"unknown block compression {compression}")
    if len(stored) < 5:
        raise Corruption("LZ4 block too short")
    (size,) = u32.unpack_from(stored, 0)
    if size == 0 or size > _LZ4_MAX_RATIO * (len(stored) - 4):
        raise Corruption(f"LZ4 block declares an impossible length {size}")
    try:
        raw = lz4.block.decompress(memoryview(stored)[4:], uncompressed_size=size)
    except Exception as e:  # the lz4 binding raises LZ4BlockError, ValueError or MemoryError
        raise Corruption(f"LZ4 block does not decode: {e}") from None
    if len(raw) != size:
        raise Corruption("LZ4 block decodes to the wrong length")
    return raw


# Dispatch to the C kernels when the extension is built (and LSMMAIL_PURE is not set). The pure
# functions above stay importable as the twins the differential tests hold the kernels against.
from .. import native as _native  # noqa: E402

decode_block = _native.decode_block_native if _native.lib is not None else decode_block_py
decode_data_block = _native.decode_data_block_native if _native.lib is not None else decode_data_block_py
decode_data_block_spans = (
    _native.decode_data_block_spans_native if _native.lib is not None else decode_data_block_spans_py
)
_decode_compact: Callable[[bytes], tuple[Any, Any, Any, Any, Any]] = (
    _native.decode_data_block_compact_native if _native.lib is not None else decode_data_block_spans_py
)
