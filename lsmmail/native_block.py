"""Native bindings of the block and table kernels (``native/block.c`` and friends), with their pure twins.

* ``block_seek_native`` / ``block_seek_pure``: the first entry ``>=`` a target in a raw block
  (:class:`BlockSeek`), validating the whole block.
* ``block_get_native`` / ``block_get_pure``: a point lookup in a raw data block, returning
  ``(seq, kind, value)`` or :data:`GET_STOP` / :data:`GET_NEXT`.
* ``decode_block_native``, ``decode_data_block_native``, ``decode_data_block_spans_native``,
  ``decode_data_block_compact_native``, ``encode_block_native``: twins of ``engine.block``'s decoders
  and ``BlockBuilder``.
* :class:`TableIndex`, ``table_find_native`` / ``table_find_pure``: a table's bloom probe and index search
  for a point read.

Malformed blocks raise ``Corruption``, bad arguments ``InvalidArgument``, the same on both sides (the
differential tests in ``tests/native`` hold them to it). The ``*_native`` functions need the extension
(``native_lib.BUILT``). Import these names from :mod:`lsmmail.native`, which re-exports them and holds
the dispatch names (``block_seek``, ``block_get``).
"""

from __future__ import annotations

import struct
import threading
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import NamedTuple

from .engine.errors import Corruption, InvalidArgument
from .native_lib import _ESPACE, BUILT, _check, _cumulative, _ffi, _lib, _u32, _u64

if BUILT:
    from .native_lib import _new

class BlockSeek(NamedTuple):
    """Result of :func:`block_seek`: the first entry whose key is ``>=`` the target."""

    index: int  # its position; == count when every key is smaller
    key: bytes | None
    value: bytes | None
    count: int  # entries in the block


def _restarts_pure(blk: bytes | memoryview) -> tuple[int, int]:
    n = len(blk)
    if n < 4:
        raise Corruption("block shorter than its restart count")
    (nr,) = _u32.unpack_from(blk, n - 4)
    tail = 4 + 4 * nr
    if tail > n:
        raise Corruption("restart array runs past the block")
    data_end = n - tail
    if nr == 0 and data_end != 0:
        raise Corruption("block with entries has no restart point")
    prev = 0
    for i in range(nr):
        (r,) = _u32.unpack_from(blk, data_end + 4 * i)
        if (r != 0) if i == 0 else (r <= prev):
            raise Corruption("restart offsets out of order")
        if r >= data_end:
            raise Corruption("restart offset past the entries")
        prev = r
    return data_end, nr


def _varint_at(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    b = buf[pos] if pos < end else 0x80
    if b < 0x80:
        return b, pos + 1
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise Corruption("malformed varint in block")
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise Corruption("malformed varint in block")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _walk_pure(blk: bytes | memoryview):  # type: ignore[no-untyped-def]
    """Yield ``(key, value_offset, value_length)`` per entry, validating as block.c does."""
    data_end, nr = _restarts_pure(blk)
    restarts = [_u32.unpack_from(blk, data_end + 4 * i)[0] for i in range(nr)]
    pos = ri = 0
    key = b""
    while pos < data_end:
        is_restart = False
        if ri < nr:
            if restarts[ri] < pos:
                raise Corruption("restart offset inside an entry")
            is_restart = restarts[ri] == pos
        shared, pos = _varint_at(blk, pos, data_end)
        non_shared, pos = _varint_at(blk, pos, data_end)
        vlen, pos = _varint_at(blk, pos, data_end)
        if shared > len(key) or (is_restart and shared != 0):
            raise Corruption("bad shared prefix length in block")
        if non_shared > data_end - pos or vlen > data_end - pos - non_shared:
            raise Corruption("block entry runs past the entries")
        key = key[:shared] + bytes(blk[pos : pos + non_shared])
        pos += non_shared
        yield key, pos, vlen
        pos += vlen
        if is_restart:
            ri += 1
    if ri != nr:
        raise Corruption("restart offset inside an entry")


def _internal_order(key: bytes) -> tuple[bytes, int]:
    if len(key) < 8:
        raise Corruption("internal key shorter than its trailer")
    return key[:-8], -_u64.unpack_from(key, len(key) - 8)[0]


def block_seek_pure(blk: bytes, target: bytes, internal: bool = True) -> BlockSeek:
    """The first entry with key ``>= target`` (internal-key order, or bytewise when not ``internal``).

    The whole block is validated, exactly as :func:`decode_block` does.
    """
    if internal and len(target) < 8:
        raise InvalidArgument("internal key target shorter than 8 bytes")
    t = _internal_order(target) if internal else target
    hit: BlockSeek | None = None
    n = 0
    for key, vo, vl in _walk_pure(blk):
        if hit is None:
            if (_internal_order(key) if internal else key) >= t:
                hit = BlockSeek(n, key, blk[vo : vo + vl], 0)
        n += 1
    if hit is None:
        return BlockSeek(n, None, None, n)
    return hit._replace(count=n)


class _Scratch:
    """Output arrays for the block decoders, reused by one thread across calls (allocating six cffi
    arrays per 16 KiB block cost ~2 us of a ~8 us decode)."""

    __slots__ = ("max_n", "keycap", "keybuf", "key_end", "val_off", "val_len", "seq", "kind", "need")

    def __init__(self, max_n: int, keycap: int) -> None:
        self.max_n, self.keycap = max_n, keycap
        self.keybuf = _new("uint8_t[]", keycap)
        self.key_end = _new("uint64_t[]", max_n)
        self.val_off = _new("uint64_t[]", max_n)
        self.val_len = _new("uint64_t[]", max_n)
        self.seq = _new("uint64_t[]", max_n)
        self.kind = _new("uint8_t[]", max_n)
        self.need = _new("uint64_t[2]")


#: One scratch per thread: the GIL is released during the C call, so threads must not share one.
_tls = threading.local()


def _scratch(max_n: int, keycap: int) -> _Scratch:
    s: _Scratch | None = getattr(_tls, "s", None)
    if s is None or s.max_n < max_n or s.keycap < keycap:
        s = _Scratch(max(max_n, s.max_n if s else 0), max(keycap, s.keycap if s else 0))
        _tls.s = s
    return s


def _decode(blk: bytes, data: bool):  # type: ignore[no-untyped-def]
    n = len(blk)
    max_n = min(n // 3 + 1, 1024)  # an entry takes at least 3 bytes; most blocks hold < 1024
    keycap = 4 * n + 256  # prefix compression rarely expands keys by more than 4x
    for _ in range(2):  # the second round has the exact sizes the first one counted
        s = _scratch(max_n, keycap)
        # The scratch may be larger than asked: let C use all of it.
        if data:
            got = _lib.lsm_block_decode_data(
                blk, n, s.keybuf, s.keycap, s.key_end, s.seq, s.kind, s.val_off, s.val_len, s.max_n, s.need
            )
        else:
            got = _lib.lsm_block_decode(
                blk, n, s.keybuf, s.keycap, s.key_end, s.val_off, s.val_len, s.max_n, s.need
            )
        if got != _ESPACE:
            break
        max_n, keycap = s.need[0], s.need[1]
    count = _check(got, "block")
    if count == 0:
        return count, b"", [], [], [], None, None
    ends = _ffi.unpack(s.key_end, count)
    kb = _ffi.buffer(s.keybuf, ends[-1])[:]
    offs = _ffi.unpack(s.val_off, count)
    lens = _ffi.unpack(s.val_len, count)
    if not data:
        return count, kb, ends, offs, lens, None, None
    return count, kb, ends, offs, lens, _ffi.unpack(s.seq, count), list(_ffi.buffer(s.kind, count)[:])


def decode_block_native(blk: bytes) -> tuple[list[bytes], list[bytes]]:
    """``(keys, values)`` of a raw block payload. Twin: ``engine.block.decode_block`` (same outcome)."""
    count, kb, ends, offs, lens, _, _ = _decode(blk, False)
    if not count:
        return [], []
    vals = [blk[a : a + b] for a, b in zip(offs, lens, strict=True)]
    return [kb[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)], vals


def decode_data_block_spans_native(
    blk: bytes,
) -> tuple[list[bytes], list[int], list[int], list[int], list[int]]:
    """``(user_keys, seqs, kinds, value_offsets, value_lengths)`` of a data block: value ``i`` is
    ``blk[value_offsets[i] : value_offsets[i] + value_lengths[i]]``, sliced by the reader only when it
    is used (copying 16 one-KiB values out of a block was ~4 us of a ~11 us decode; a scan usually
    yields a few of them). Twin: ``engine.block.decode_data_block_spans`` (same outcome)."""
    count, kb, ends, offs, lens, seq, kind = _decode(blk, True)
    if not count:
        return [], [], [], [], []
    return _user_keys(kb, ends, count), seq, kind, offs, lens



def decode_data_block_compact_native(blk: bytes) -> tuple[list[bytes], array, bytes, array, array]:
    """:func:`decode_data_block_spans_native` with the per-entry numbers in compact containers: the
    sequences, value offsets and value lengths as ``array('Q')``, the kinds as ``bytes`` (each indexes
    to the same ints as the lists). A cached block then holds ~20 Python objects instead of ~70 for 16
    entries, which is what evicting it costs (~2.7 -> ~0.5 us measured, freeing blocks long out of the
    CPU cache); decoding skips three list builds. Same Corruption as the spans decode."""
    n = len(blk)
    max_n = min(n // 3 + 1, 1024)
    keycap = 4 * n + 256
    for _ in range(2):
        s = _scratch(max_n, keycap)
        got = _lib.lsm_block_decode_data(
            blk, n, s.keybuf, s.keycap, s.key_end, s.seq, s.kind, s.val_off, s.val_len, s.max_n, s.need
        )
        if got != _ESPACE:
            break
        max_n, keycap = s.need[0], s.need[1]
    count = _check(got, "block")
    seqs, offs, lens = array("Q"), array("Q"), array("Q")
    if count == 0:
        return [], seqs, b"", offs, lens
    ends = _ffi.unpack(s.key_end, count)
    buf = _ffi.buffer
    seqs.frombytes(buf(s.seq, 8 * count))
    offs.frombytes(buf(s.val_off, 8 * count))
    lens.frombytes(buf(s.val_len, 8 * count))
    return _user_keys(buf(s.keybuf, ends[-1])[:], ends, count), seqs, buf(s.kind, count)[:], offs, lens

#: ``struct.Struct`` per (internal key length, entry count) for blocks whose keys all have one length
#: (the common case: fixed-size keys). Bounded: cleared when it grows past this many shapes.
_KEY_STRUCTS: dict[tuple[int, int], struct.Struct] = {}
_MAX_KEY_STRUCTS = 256


def _user_keys(kb: bytes, ends: list[int], count: int) -> list[bytes]:
    """The user keys (internal keys without their 8-byte trailers) of ``kb``, where internal key ``i``
    ends at ``ends[i]``. Keys of one length are split by one ``Struct.unpack`` (~0.6 us for 16 keys,
    against ~2 us for a slice per key: ~15% of decoding a 16 KiB block)."""
    k = ends[0]
    if k > 8 and ends[-1] == k * count and ends == list(range(k, k * count + 1, k)):
        st = _KEY_STRUCTS.get((k, count))
        if st is None:
            if len(_KEY_STRUCTS) >= _MAX_KEY_STRUCTS:
                _KEY_STRUCTS.clear()
            st = _KEY_STRUCTS[(k, count)] = struct.Struct(f"{k - 8}s8x" * count)
        return list(st.unpack(kb))
    return [kb[a : b - 8] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def decode_data_block_native(blk: bytes) -> tuple[list[bytes], list[int], list[int], list[bytes]]:
    """``(user_keys, seqs, kinds, values)`` of a data block. Twin: ``engine.block.decode_data_block``."""
    ukeys, seq, kind, offs, lens = decode_data_block_spans_native(blk)
    return ukeys, seq, kind, [blk[a : a + b] for a, b in zip(offs, lens, strict=True)]


def block_seek_native(blk: bytes, target: bytes, internal: bool = True) -> BlockSeek:
    if internal and len(target) < 8:
        raise InvalidArgument("internal key target shorter than 8 bytes")
    n = len(blk)
    keyout = _new("uint8_t[]", n or 1)
    found = _ffi.new("uint64_t[5]")
    hit = _check(_lib.lsm_block_seek(blk, n, target, len(target), int(internal), keyout, n, found), "block")
    if not hit:
        return BlockSeek(found[0], None, None, found[4])
    vo = found[2]
    return BlockSeek(found[0], _ffi.buffer(keyout, found[1])[:], blk[vo : vo + found[3]], found[4])


_KIND_BLOB = 2  # engine.keys.KIND_BLOB (not imported: the engine imports this module)

#: What :func:`block_get` returns when no entry of the block answers the lookup.
GET_STOP = -1  # a larger user key follows: no later block can hold the key either
GET_NEXT = -2  # every entry from the key on is too new (or the block ended): try the next block


def _block_get_result(
    user_key: bytes, key: bytes | None, value: bytes | None
) -> tuple[int, int, bytes] | int:
    if key is None:
        return GET_NEXT
    n = len(user_key)
    if len(key) != n + 8 or key[:n] != user_key:
        if len(key) < 9:
            raise Corruption("internal key shorter than 9 bytes in data block")
        return GET_STOP
    trailer = int.from_bytes(key[n:], "little")
    kind = trailer & 0xFF
    if kind > _KIND_BLOB:
        raise Corruption(f"unknown entry kind {kind} in data block")
    assert value is not None
    return trailer >> 8, kind, value


def block_get_pure(blk: bytes, user_key: bytes, snapshot_seq: int) -> tuple[int, int, bytes] | int:
    """Point lookup in a raw data block without decoding it into lists.

    Returns ``(seq, kind, value)`` of the newest entry for ``user_key`` with ``seq <= snapshot_seq``, or
    :data:`GET_STOP` / :data:`GET_NEXT` (the contract of ``engine.block.DataBlock.find``'s -1 / -2).
    ``Corruption`` for a malformed block (validated as :func:`block_seek` does) or a malformed answer.
    """
    target = user_key + ((snapshot_seq << 8) | 0xFF).to_bytes(8, "little")
    hit = block_seek_pure(blk, target, True)
    return _block_get_result(user_key, hit.key, hit.value)


def block_get_native(blk: bytes, user_key: bytes, snapshot_seq: int) -> tuple[int, int, bytes] | int:
    if snapshot_seq >> 56:
        raise OverflowError("snapshot sequence above 2**56 - 1")  # as the twin's to_bytes(8) raises
    n = len(blk)
    s: _GetScratch | None = getattr(_tls, "g", None)
    if s is None or s.keycap < n:
        s = _tls.g = _GetScratch(max(n, 1 << 15))
    out = s.out
    rc = _lib.lsm_block_get(blk, n, user_key, len(user_key), snapshot_seq, s.keybuf, s.keycap, out)
    if rc == 1:
        vo = out[2]
        return out[0], out[1], blk[vo : vo + out[3]]
    if rc == 2:
        return GET_STOP
    if rc == 0:
        return GET_NEXT
    _check(rc, "block")
    raise AssertionError(f"lsm_block_get returned {rc}")  # pragma: no cover - ESPACE cannot happen


class _GetScratch:
    """Per-thread buffers of :func:`block_get_native`: the key being rebuilt (a key is never longer than
    its block, so ``keycap >= len(block)`` suffices) and the four result words. Allocating the 16 KiB key
    buffer per call was ~0.2 us of a ~1 us lookup."""

    __slots__ = ("keycap", "keybuf", "out")

    def __init__(self, keycap: int) -> None:
        self.keycap = keycap
        self.keybuf = _new("uint8_t[]", keycap)
        self.out = _new("uint64_t[4]")


class TableIndex:
    """A table's index block laid out for :func:`table_find_native`: the index user keys concatenated
    with their end offsets, and the sequence number of each block's last entry. Built once per table."""

    __slots__ = ("keys", "ends", "seqs", "n")

    def __init__(self, user_keys: Sequence[bytes], seqs: Sequence[int]) -> None:
        if len(user_keys) != len(seqs):
            raise InvalidArgument("index keys and seqs differ in length")
        self.n = len(user_keys)
        self.keys = b"".join(user_keys)
        self.ends = _ffi.new("uint64_t[]", _cumulative(user_keys)) if self.n else _ffi.NULL
        self.seqs = _ffi.new("uint64_t[]", list(seqs)) if self.n else _ffi.NULL


def table_find_pure(
    filt: bytes, user_key: bytes, index_user_keys: Sequence[bytes], index_seqs: Sequence[int],
    snapshot_seq: int,
) -> int:
    """-1 if the bloom filter rules ``user_key`` out; else the first data block that may hold a version of
    it visible at ``snapshot_seq``: the first index entry whose user key is ``>= user_key``, skipping
    entries that are ``user_key`` at a sequence above the snapshot (such a block holds only versions too
    new); ``len(index_user_keys)`` if none."""
    from .engine.bloom import bloom_may_contain_py  # the engine imports this module first

    if not bloom_may_contain_py(filt, user_key):
        return -1
    n = len(index_user_keys)
    bi = bisect_left(index_user_keys, user_key)
    while bi < n and index_user_keys[bi] == user_key and index_seqs[bi] > snapshot_seq:
        bi += 1
    return bi


def table_find_native(filt: bytes, h: int, index: TableIndex, user_key: bytes, snapshot_seq: int) -> int:
    """:func:`table_find_pure` in one C call, with ``h = XXH3-64(user_key)`` computed by the caller."""
    return int(_lib.lsm_table_find(filt, len(filt), h, index.keys, index.ends, index.seqs, index.n, user_key,
                                   len(user_key), snapshot_seq))


def encode_block_native(keys: Sequence[bytes], values: Sequence[bytes], restart_interval: int = 16) -> bytes:
    """The raw block payload of ``keys``/``values`` in order. Twin: ``engine.block.BlockBuilder`` (``add``
    each pair, then ``finish``): same bytes."""
    if restart_interval < 1 or len(keys) != len(values):
        raise InvalidArgument("bad block encode arguments")
    n = len(keys)
    kcat = b"".join(keys)
    vcat = b"".join(values)
    key_end = _ffi.new("uint64_t[]", _cumulative(keys))
    val_end = _ffi.new("uint64_t[]", _cumulative(values))
    cap = len(kcat) + len(vcat) + 30 * n + 4 * (n // restart_interval + 2)
    out = _new("uint8_t[]", cap)
    size = _check(
        _lib.lsm_block_encode(kcat, key_end, vcat, val_end, n, restart_interval, out, cap), "block encode"
    )
    return _ffi.buffer(out, size)[:]
