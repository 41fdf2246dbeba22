"""The native kernels with their pure-Python twins: the one import for every binding.

``lsmmail._native`` is a cffi API-mode extension built from ``native/*.c`` at install time (setup.py).

* ``lib`` / ``ffi``: the extension, or ``None`` when it is missing or ``LSMMAIL_PURE=1`` is set.
  A missing extension is reported once with ``warnings.warn`` (the engine still works, slower).
* Every C call releases the GIL (cffi's default for API mode), so flushes and compactions that use these
  kernels on a background thread let Python threads run.

Each kernel has a C version ``<name>_native`` (callable when ``BUILT``, even under LSMMAIL_PURE=1) and a twin
with the same contract; tests in ``tests/native`` require equal results, or the same ``Corruption``, on
random and adversarial inputs. Twins that are engine functions (the engine dispatches, see its modules):

* ``decode_block_native`` / ``decode_data_block_native`` / ``decode_data_block_spans_native`` /
  ``encode_block_native`` -- ``engine.block.decode_block`` / ``decode_data_block`` /
  ``decode_data_block_spans`` / ``BlockBuilder``
* ``bloom_build_native`` / ``bloom_may_contain_native`` / ``bloom_probe_native``
  -- ``engine.bloom.BloomBuilder.finish`` / ``bloom_may_contain``
* ``frame_records_native`` -- ``engine.wal.LogWriter.encode_record`` (one call frames many records)

Twins that live here, with a dispatch name (``<name>`` = native if loaded, else pure):
``encode_varints``, ``decode_varints``, ``block_seek``, ``block_get``, ``merge_runs``, ``frame_records``.

The bindings live in modules by kernel family, all re-exported here: loading the extension and the
shared cffi helpers in :mod:`lsmmail.native_lib`; blocks and tables (seek, get, decode, encode, table
find) in :mod:`lsmmail.native_block`; varints, bloom, merge and WAL framing in this module, with the
dispatch names.
"""

from __future__ import annotations

import heapq
import math
import struct
import warnings
from collections.abc import Sequence

import xxhash

from .engine.errors import Corruption, InvalidArgument

# Re-exported: the bindings of each kernel family and the loader's names are imported from here.
from .native_block import (  # noqa: F401
    _KEY_STRUCTS,
    _MAX_KEY_STRUCTS,
    GET_NEXT,
    GET_STOP,
    BlockSeek,
    TableIndex,
    _user_keys,
    block_get_native,
    block_get_pure,
    block_seek_native,
    block_seek_pure,
    decode_block_native,
    decode_data_block_compact_native,
    decode_data_block_native,
    decode_data_block_spans_native,
    encode_block_native,
    table_find_native,
    table_find_pure,
)
from .native_lib import (  # noqa: F401
    _ECORRUPT,
    _EINVAL,
    _ESPACE,
    AVAILABLE,
    BUILT,
    PURE_FORCED,
    _check,
    _cumulative,
    _ffi,
    _import_error,
    _lib,
    _u32,
    ffi,
    lib,
)

if BUILT:
    from .native_lib import _new

_xxh3 = xxhash.xxh3_64_intdigest

if not BUILT and not PURE_FORCED:
    warnings.warn(
        f"lsmmail's C extension is not available ({_import_error}); running on the pure-Python twins "
        "(correct, slower). Reinstall with a C compiler to build it, or set LSMMAIL_PURE=1 to silence this.",
        RuntimeWarning,
        stacklevel=2,
    )


# --------------------------------------------------------------------------------------------- varints


def encode_varints_pure(values: Sequence[int]) -> bytes:
    out = bytearray()
    for v in values:
        if not 0 <= v < 1 << 64:
            raise InvalidArgument("varint value out of range")
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def decode_varints_pure(buf: bytes | bytearray | memoryview, max_n: int = -1) -> tuple[list[int], int]:
    """Decode up to ``max_n`` varints (all when -1) from the start of ``buf``.

    Returns ``(values, bytes_consumed)``. A varint that runs past the buffer, past 10 bytes, or beyond
    64 bits (a 10th byte above 1) raises ``Corruption``.
    """
    out: list[int] = []
    pos, end = 0, len(buf)
    limit = end if max_n < 0 else max_n
    while len(out) < limit and pos < end:
        result = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise Corruption("malformed varint")
            b = buf[pos]
            pos += 1
            if shift == 63 and b > 1:
                raise Corruption("malformed varint")
            result |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        out.append(result)
    return out, pos


def encode_varints_native(values: Sequence[int]) -> bytes:
    n = len(values)
    try:
        vals = _ffi.new("uint64_t[]", values) if n else _ffi.NULL
    except OverflowError as exc:
        raise InvalidArgument("varint value out of range") from exc
    cap = 10 * n
    out = _new("uint8_t[]", cap or 1)
    size = _check(_lib.lsm_varint_encode(vals, n, out, cap), "varint")
    return _ffi.buffer(out, size)[:]


def decode_varints_native(buf: bytes | bytearray | memoryview, max_n: int = -1) -> tuple[list[int], int]:
    n = len(buf) if max_n < 0 else min(max_n, len(buf))
    out = _new("uint64_t[]", n or 1)
    consumed = _ffi.new("size_t *")
    got = _check(_lib.lsm_varint_decode(_ffi.from_buffer(buf), len(buf), out, n, consumed), "varint")
    return _ffi.unpack(out, got), consumed[0]


# --------------------------------------------------------------------------------------------- bloom


def bloom_build_native(hashes: Sequence[int], bits_per_key: int) -> bytes:
    """The filter block for keys with these XXH3-64 ``hashes``; twin: ``engine.bloom.BloomBuilder.finish``."""
    if bits_per_key <= 0:
        return bytes((0,))
    k = min(30, max(1, int(bits_per_key * math.log(2) + 0.5)))
    m = max(64, bits_per_key * len(hashes))
    nbytes = (m + 7) >> 3
    bits = _ffi.new("uint8_t[]", nbytes + 1)  # zeroed: build only sets bits
    bits[nbytes] = k
    if hashes:
        _lib.lsm_bloom_build(_ffi.new("uint64_t[]", hashes), len(hashes), bits, nbytes, k)
    return _ffi.buffer(bits)[:]


def bloom_may_contain_native(filt: bytes, h: int) -> bool:
    """Twin: ``engine.bloom.bloom_may_contain(filt, key)`` with ``h = XXH3-64(key)``."""
    return bool(_lib.lsm_bloom_may_contain(filt, len(filt), h))


def bloom_probe_native(filt: bytes, hashes: Sequence[int]) -> list[bool]:
    """``bloom_may_contain_native`` for many hashes in one call (a multi-get, a batch of lookups)."""
    n = len(hashes)
    out = _new("uint8_t[]", n or 1)
    if n:
        _lib.lsm_bloom_probe(filt, len(filt), _ffi.new("uint64_t[]", hashes), n, out)
    return [b == 1 for b in _ffi.buffer(out, n)[:]]


# --------------------------------------------------------------------------------------------- merge


Run = tuple[Sequence[bytes], Sequence[int]]


def merge_runs_pure(runs: Sequence[Run]) -> tuple[list[int], bytes]:
    """Merge runs of versions; return ``(order, new_user_key)``.

    Each run is ``(user_keys, seqs)`` in internal order (user key ascending, seq descending), e.g. the
    ``user_keys``/``seqs`` lists of a decoded data block or of a whole table. ``order`` lists indices into
    the runs laid end to end (run 0 first); equal ``(user_key, seq)`` pairs come out in run order, so list
    the newest source first. ``new_user_key[j]`` is 1 where ``order[j]``'s user key differs from the one
    before it: where compaction's per-key decisions (newest visible version, snapshots) restart.
    """
    streams = []
    base = 0
    for r, (keys, seqs) in enumerate(runs):
        if len(keys) != len(seqs):
            raise InvalidArgument("run keys and seqs differ in length")
        streams.append([(k, -s, r, base + i) for i, (k, s) in enumerate(zip(keys, seqs, strict=True))])
        base += len(keys)
    order: list[int] = []
    flags = bytearray()
    prev: bytes | None = None
    for ukey, _, _, idx in heapq.merge(*streams):
        order.append(idx)
        flags.append(ukey != prev)
        prev = ukey
    return order, bytes(flags)


def merge_runs_native(runs: Sequence[Run]) -> tuple[list[int], bytes]:
    flat: list[bytes] = []
    seqs: list[int] = []
    run_end = []
    for keys, sq in runs:
        if len(keys) != len(sq):
            raise InvalidArgument("run keys and seqs differ in length")
        flat.extend(keys)
        seqs.extend(sq)
        run_end.append(len(flat))
    n = len(flat)
    order = _new("uint64_t[]", n or 1)
    flags = _new("uint8_t[]", n or 1)
    try:
        seq_arr = _ffi.new("uint64_t[]", seqs) if n else _ffi.NULL
    except OverflowError as exc:
        raise InvalidArgument("sequence number out of range") from exc
    got = _check(
        _lib.lsm_merge_runs(
            b"".join(flat),
            _ffi.new("uint64_t[]", _cumulative(flat)) if n else _ffi.NULL,
            seq_arr,
            _ffi.new("uint64_t[]", run_end) if runs else _ffi.NULL,
            len(runs),
            order,
            flags,
        ),
        "merge",
    )
    return _ffi.unpack(order, got), _ffi.buffer(flags, got)[:]


# --------------------------------------------------------------------------------------------- WAL

LOG_BLOCK = 32768
LOG_HEADER = 7


def frame_records_pure(payloads: Sequence[bytes], block_offset: int) -> bytes:
    """Log bytes for ``payloads`` appended to a log whose size mod 32768 is ``block_offset``.

    Each record becomes FULL or FIRST/MIDDLE.../LAST fragments with checksums (docs/format.md).
    The new block offset is ``(block_offset + len(result)) % 32768``.
    """
    if not 0 <= block_offset < LOG_BLOCK:
        raise InvalidArgument("block_offset out of range")
    out = bytearray()
    for payload in payloads:
        mv = memoryview(payload)
        left = len(mv)
        begin = True
        while True:
            leftover = LOG_BLOCK - block_offset
            if leftover < LOG_HEADER:
                out += bytes(leftover)
                block_offset = 0
            frag = min(left, LOG_BLOCK - block_offset - LOG_HEADER)
            end = frag == left
            typ = (1 if end else 2) if begin else (4 if end else 3)
            start = len(out)
            out += b"\0\0\0\0"
            out += struct.pack("<HB", frag, typ)
            out += mv[:frag]
            _u32.pack_into(out, start, _xxh3(memoryview(out)[start + 6 :]) & 0xFFFFFFFF)
            mv = mv[frag:]
            left -= frag
            block_offset += LOG_HEADER + frag
            begin = False
            if left == 0:
                break
    return bytes(out)


def frame_records_native(payloads: Sequence[bytes], block_offset: int) -> bytes:
    if not 0 <= block_offset < LOG_BLOCK:
        raise InvalidArgument("block_offset out of range")
    nrec = len(payloads)
    cat = b"".join(payloads)
    # At most one fragment per started block plus one per record; each adds a header and maybe padding.
    max_frags = len(cat) // (LOG_BLOCK - LOG_HEADER) + 2 * nrec + 1
    cap = len(cat) + max_frags * (2 * LOG_HEADER)
    out = _new("uint8_t[]", cap)
    starts = _new("uint64_t[]", max_frags)
    nf = _ffi.new("uint64_t *")
    ends = _ffi.new("uint64_t[]", _cumulative(payloads)) if nrec else _ffi.NULL
    size = _check(_lib.lsm_wal_frame(cat, ends, nrec, block_offset, out, cap, starts, max_frags, nf), "frame")
    buf = bytearray(_ffi.buffer(out, size))
    mv = memoryview(buf)
    for p in _ffi.unpack(starts, nf[0]):
        length = buf[p + 4] | (buf[p + 5] << 8)
        _u32.pack_into(buf, p, _xxh3(mv[p + 6 : p + 7 + length]) & 0xFFFFFFFF)
    mv.release()
    return bytes(buf)


# --------------------------------------------------------------------------------------------- dispatch
# Kernels whose twin lives here get a dispatch name. Kernels whose twin is an engine function (block
# decode/encode, bloom, WAL framing) are dispatched by the engine: ``if native.lib is not None`` at the
# top of the twin, calling the ``*_native`` function here.

if AVAILABLE:
    encode_varints = encode_varints_native
    decode_varints = decode_varints_native
    block_seek = block_seek_native
    block_get = block_get_native
    merge_runs = merge_runs_native
    frame_records = frame_records_native
else:
    encode_varints = encode_varints_pure
    decode_varints = decode_varints_pure
    block_seek = block_seek_pure
    block_get = block_get_pure
    merge_runs = merge_runs_pure
    frame_records = frame_records_pure
