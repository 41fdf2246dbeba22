"""A point read's cache-missing block load in one native call (``native/pointget.c``), with its pure twin.

``block_load_get_native(fd, read_at, offset, size, verify, user_key, snapshot_seq, want_raw)`` reads the
stored block ``(offset, size)`` (``size`` counts the payload, not the 5-byte trailer), verifies its
checksum, decompresses it and looks ``user_key`` up in it, in one crossing with the GIL released
(``pread`` from ``fd`` when it is >= 0, else the bytes ``read_at(offset, size + 5)`` returns).
``block_load_get_pure`` is the same in Python (``read_at``, ``coding.checksum``,
``block.decompress_block``, ``native_block.block_get_pure``). Both return ``(raw, result)``: the raw
payload (``bytes``, for the block cache; None unless ``want_raw``) and ``(seq, kind, value)`` or
``GET_STOP`` / ``GET_NEXT`` (``native_block.block_get``'s contract). A short read, a checksum mismatch,
an unknown compression byte, LZ4 data that does not decode to its declared length or a malformed block
raise ``Corruption`` on both sides; a read error raises ``OSError``.

The C side links no library: ``LZ4_decompress_safe`` and ``XXH3_64bits`` are taken from the lz4 and
xxhash packages' extension modules (which carry those libraries) and handed to C once, at import, after
a self-test on a block with a known checksum and LZ4 payload. ``READY`` is False if that failed (a
build of those packages that does not export the symbols): callers then use the twin.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Callable

from .engine.errors import Corruption
from .native_block import GET_NEXT, GET_STOP, block_get_pure
from .native_lib import _ECORRUPT, _EINVAL, _ESPACE, BUILT, _ffi, _lib, _u32

_EIO = -4  # pointget.h LSM_EIO
#: pointget.c's reasons for LSM_ECORRUPT (out[2]), worded as the twin words them.
_WHY = {
    1: "short read of the block",
    2: "block checksum mismatch",
    3: "unknown block compression",
    4: "LZ4 block declares an impossible length",
    5: "LZ4 block does not decode to its declared length",
}

Result = tuple[int, int, bytes] | int


def _codec_addresses() -> tuple[int, int] | None:
    """Addresses of ``LZ4_decompress_safe`` and ``XXH3_64bits`` in the lz4 / xxhash extension modules."""
    try:
        import lz4.block._block as lz4_ext  # type: ignore[import-not-found]
        import xxhash._xxhash as xxh_ext  # type: ignore[import-not-found]

        lz4_addr = ctypes.cast(ctypes.CDLL(lz4_ext.__file__).LZ4_decompress_safe, ctypes.c_void_p).value
        xxh_addr = ctypes.cast(ctypes.CDLL(xxh_ext.__file__).XXH3_64bits, ctypes.c_void_p).value
    except (ImportError, OSError, AttributeError):
        return None
    if not lz4_addr or not xxh_addr:
        return None
    return lz4_addr, xxh_addr


def _self_test() -> bool:
    """One LZ4 block with a known checksum, and one stored raw, through the C load: proves both
    function pointers (and that they agree with the Python codecs)."""
    import lz4.block

    from .engine.coding import checksum

    raw = bytes(range(256)) * 64
    for payload in (lz4.block.compress(raw, store_size=True) + b"\x01", raw + b"\x00"):
        stored = payload + _u32.pack(checksum(payload))
        try:
            got, _ = block_load_get_native(-1, lambda o, n, b=stored: b[o : o + n], 0, len(payload) - 1,
                                           True, None, 0, True)
        except Exception:  # noqa: BLE001 - any failure means "do not use the C load"
            return False
        if got != raw:
            return False
    return True


class _Scratch:
    """Per-thread buffers of the C load: the stored block, the raw payload, the key being rebuilt
    (``lsm_block_get`` needs ``keycap >= len(raw)``) and the eight result words. Grown on demand."""

    __slots__ = ("iocap", "io", "rawcap", "raw", "keybuf", "out")

    def __init__(self, iocap: int, rawcap: int) -> None:
        self.iocap, self.rawcap = iocap, rawcap
        self.io = _ffi.new("uint8_t[]", iocap)
        self.raw = _ffi.new("uint8_t[]", rawcap)
        self.keybuf = _ffi.new("uint8_t[]", rawcap)
        self.out = _ffi.new("uint64_t[8]")


_tls = threading.local()
#: 64 KiB covers a 16 KiB block stored uncompressed or LZ4'd at up to ~4x; larger blocks grow it.
_INITIAL_CAP = 1 << 16


def block_load_get_native(fd: int, read_at: Callable[[int, int], bytes] | None, offset: int, size: int,
                          verify: bool, user_key: bytes | None, snapshot_seq: int,
                          want_raw: bool) -> tuple[bytes | None, Result]:
    """See the module docstring. With ``user_key`` None only the load runs (result ``GET_NEXT``)."""
    if snapshot_seq >> 56:
        raise OverflowError("snapshot sequence above 2**56 - 1")
    s: _Scratch | None = getattr(_tls, "s", None)
    if s is None:
        s = _tls.s = _Scratch(_INITIAL_CAP, _INITIAL_CAP)
    stored: bytes | object = _ffi.NULL
    if fd < 0:
        assert read_at is not None
        n = size + 5
        stored = read_at(offset, n)
        if len(stored) != n:  # type: ignore[arg-type]
            raise Corruption(f"short read of a {n}-byte block")
    while True:
        out = s.out
        if user_key is None:
            rc = _lib.lsm_block_load(fd, offset, stored, size, verify, s.io, s.iocap, s.raw, s.rawcap, out)
        else:
            rc = _lib.lsm_block_load_get(fd, offset, stored, size, verify, s.io, s.iocap, s.raw, s.rawcap,
                                         user_key, len(user_key), snapshot_seq, s.keybuf, s.rawcap, out)
        if rc >= 0:
            break
        if rc == _ESPACE:
            need = max(int(out[1]), size + 5)
            s = _tls.s = _Scratch(max(need, s.iocap), max(need, s.rawcap))
            continue
        if rc == _ECORRUPT:
            raise Corruption(_WHY.get(int(out[2]), "malformed block"))
        if rc == _EIO:
            err = int(out[1])
            raise OSError(err, os.strerror(err))
        if rc == _EINVAL:
            raise RuntimeError("native block load used before its codecs were set")
        raise AssertionError(f"lsm_block_load returned {rc}")  # pragma: no cover
    buf = s.raw if out[0] else s.io
    raw = _ffi.buffer(buf, rc)[:] if want_raw else None
    if user_key is None:
        return raw, GET_NEXT
    r = int(out[3])
    if r == 1:
        vo = int(out[6])
        value = raw[vo : vo + out[7]] if raw is not None else _ffi.buffer(buf + vo, out[7])[:]
        return raw, (int(out[4]), int(out[5]), value)
    if r == 2:
        return raw, GET_STOP
    if r == 0:
        return raw, GET_NEXT
    raise Corruption("malformed block")


def block_load_get_pure(fd: int, read_at: Callable[[int, int], bytes], offset: int, size: int,
                        verify: bool, user_key: bytes | None, snapshot_seq: int,
                        want_raw: bool) -> tuple[bytes | None, Result]:
    """The twin of :func:`block_load_get_native` (``fd`` is ignored: it reads with ``read_at``)."""
    from .engine.block import decompress_block
    from .engine.coding import checksum

    n = size + 5
    buf = read_at(offset, n)
    if len(buf) != n:
        raise Corruption(f"short read of a {n}-byte block")
    if verify:
        (stored,) = _u32.unpack_from(buf, size + 1)
        if checksum(memoryview(buf)[: size + 1]) != stored:
            raise Corruption("block checksum mismatch")
    raw = bytes(decompress_block(memoryview(buf)[:size], buf[size]))
    if user_key is None:
        return (raw if want_raw else None), GET_NEXT
    return (raw if want_raw else None), block_get_pure(raw, user_key, snapshot_seq)


READY = False
if BUILT:
    _addrs = _codec_addresses()
    if _addrs is not None:
        _lib.lsm_pointget_set_codecs(_ffi.cast("void *", _addrs[0]), _ffi.cast("void *", _addrs[1]))
        READY = _self_test()
        if not READY:
            _lib.lsm_pointget_set_codecs(_ffi.NULL, _ffi.NULL)


#: One table as :class:`VersionProbe` takes it: bloom filter, index (``native_block.TableIndex``, or
#: ``(index_user_keys, index_seqs)`` for the twin), smallest and largest user key; optionally followed by
#: what ``lsm_point_get_cached`` reads its blocks with: the fd to pread (-1: the caller reads), the table
#: number (block cache key) and the :class:`BlockLayout` of its data blocks.
ProbeTable = tuple


class BlockLayout:
    """A table's data block offsets and stored sizes as C arrays (``lsm_probe_table.boff/bsize``, and a
    scan source's blocks), built once per table reader."""

    __slots__ = ("offs", "sizes", "n", "__weakref__")

    def __init__(self, offsets: list[int], sizes: list[int]) -> None:
        self.n = len(offsets)
        self.offs = _ffi.new("uint64_t[]", offsets or [0])
        self.sizes = _ffi.new("uint64_t[]", sizes or [0])


class VersionProbe:
    """A version's tables laid out for ``lsm_version_find``: built once per version, then each point read
    finds the next table (and data block) to read in one C call.

    ``groups`` lists ``(sorted, tables)`` in probe order: L0 first (``sorted`` False: overlapping, newest
    first), then one group per deeper level (``sorted`` True: disjoint, in key order). ``find`` returns
    ``(table_position, block)`` of the first table from ``start`` (a position in the flattened list)
    whose bloom filter and index do not rule the key out, or ``(-1, 0)``. Twin:
    :func:`version_find_pure`. The probe holds every buffer its C array points into.
    """

    __slots__ = ("arr", "group_end", "group_sorted", "ngroups", "total", "_keep", "view", "nsources",
                 "all_os")

    def __init__(self, groups: list[tuple[bool, list[ProbeTable]]]) -> None:
        flat = [(srt, pt) for srt, tables in groups for pt in tables]
        self.total = len(flat)
        self.ngroups = len(groups)
        self.arr = _ffi.new("lsm_probe_table[]", max(self.total, 1))
        ends, acc = [], 0
        for _, tables in groups:
            acc += len(tables)
            ends.append(acc)
        self.group_end = _ffi.new("uint32_t[]", ends or [0])
        self.group_sorted = _ffi.new("uint8_t[]", [int(srt) for srt, _ in groups] or [0])
        keep: list[object] = []
        for i, (_, pt) in enumerate(flat):
            filt, index, lo, hi = pt[:4]
            e = self.arr[i]
            fb, lb, hb = _ffi.from_buffer(filt), _ffi.from_buffer(lo), _ffi.from_buffer(hi)
            keep += (fb, lb, hb, index)
            e.filter, e.flen, e.lo, e.lolen, e.hi, e.hilen = fb, len(filt), lb, len(lo), hb, len(hi)
            if len(pt) > 4:
                e.fd, e.table, layout = pt[4], pt[5], pt[6]
                keep.append(layout)
                e.boff, e.bsize = layout.offs, layout.sizes
            else:
                e.fd = -1
            ix = index
            e.n = ix.n  # type: ignore[attr-defined]
            if ix.n:  # type: ignore[attr-defined]
                kb = _ffi.from_buffer(ix.keys)  # type: ignore[attr-defined]
                keep.append(kb)
                e.ikeys, e.iends, e.iseqs = kb, ix.ends, ix.seqs  # type: ignore[attr-defined]
        self._keep = keep
        #: Scan sources of the version (``lsm_scan_set_view``): one per L0 table, one per deeper level;
        #: and whether C can read every table itself (all on OS files, with their block layouts).
        self.nsources = sum(1 if srt else len(tables) for srt, tables in groups)
        self.all_os = all(len(pt) > 4 and pt[4] >= 0 for _, pt in flat)
        #: What ``lsm_get`` takes: these arrays, plus the block cache and checksum flag (``set_reads``).
        self.view = _ffi.new("lsm_read_view *")
        v = self.view
        v.t, v.group_end, v.group_sorted, v.ngroups, v.cache = self.arr, self.group_end, self.group_sorted, \
            self.ngroups, _ffi.NULL

    def set_reads(self, cache: object, verify: bool) -> None:
        """The C block cache (a ``lsm_block_cache *``, or NULL) and whether to verify block checksums,
        for ``lsm_get``. The caller keeps the cache alive as long as this probe."""
        self.view.cache = cache
        self.view.verify = int(verify)

    def find(self, user_key: bytes, snapshot_seq: int, start: int = 0) -> tuple[int, int]:
        out = _ffi.new("uint64_t[1]")
        ti = _lib.lsm_version_find(self.arr, self.group_end, self.group_sorted, self.ngroups, start, user_key,
                                   len(user_key), snapshot_seq, out)
        if ti < 0:
            raise RuntimeError("lsm_version_find used before its codecs were set")
        return (-1, 0) if ti >= self.total else (ti, int(out[0]))


def version_find_pure(groups: list[tuple[bool, list[tuple[bytes, list[bytes], list[int], bytes, bytes]]]],
                      user_key: bytes, snapshot_seq: int, start: int = 0) -> tuple[int, int]:
    """The twin of :meth:`VersionProbe.find`, on tables given as ``(filter, index_user_keys, index_seqs,
    smallest, largest)``."""
    from bisect import bisect_left

    from .native_block import table_find_pure

    base = 0
    for srt, tables in groups:
        n = len(tables)
        if srt:
            if start > base:
                base += n
                continue
            j = bisect_left([t[4] for t in tables], user_key)
            cands = range(j, min(j + 1, n))
        else:
            cands = range(max(start - base, 0), n)
        for j in cands:
            filt, keys, seqs, lo, hi = tables[j]
            if not lo <= user_key <= hi:
                continue
            bi = table_find_pure(filt, user_key, keys, seqs, snapshot_seq)
            if 0 <= bi < len(keys):
                return base + j, bi
        base += n
    return -1, 0


#: ``lsm_point_get``'s answer when a memtable holds the key.
MEM_HIT = -10


class PointScratch:
    """Per-thread buffers of ``lsm_get`` / ``lsm_point_get``: ``sc`` (an ``lsm_get_scratch``: the value
    buffer, 64 KiB or as large as the largest value read, and the result words ``out``, a view of
    ``sc.out``), ``value`` (for ``lsm_point_get``) and the memtable pointer array (grown when a read state
    has more memtables than it holds)."""

    __slots__ = ("out", "value", "mems", "cap", "vbuf", "vcap", "sc", "cvbuf")

    def __init__(self, cap: int = 8, vcap: int = 1 << 16) -> None:
        self.sc = _ffi.new("lsm_get_scratch *")
        self.out = self.sc.out
        self.value = _ffi.new("uint8_t **")
        self.mems = _ffi.new("struct lsm_memtable *[]", cap)
        self.cap = cap
        self.vbuf = _ffi.new("uint8_t[]", vcap)
        self.vcap = vcap
        self.sc.vbuf, self.sc.vcap = self.vbuf, vcap
        #: ``vbuf`` as ``char *``: ``ffi.buffer`` of it is ~4x faster than of ``sc.value`` (a struct field).
        self.cvbuf = _ffi.cast("char *", self.vbuf)


def point_scratch(cap: int = 0, vcap: int = 0) -> PointScratch:
    """This thread's :class:`PointScratch`, holding at least ``cap`` memtable pointers and a value
    buffer of at least ``vcap`` bytes."""
    s: PointScratch | None = getattr(_tls, "p", None)
    if s is None or s.cap < cap or s.vcap < vcap:
        s = _tls.p = PointScratch(max(cap, 8, s.cap if s else 0), max(vcap, 1 << 16, s.vcap if s else 0))
    return s


#: Why ``lsm_point_get_cached`` reports a table's block corrupt (out[2]): the load's reasons, and 6 for a
#: block ``lsm_block_get`` found malformed (worded as ``TableReader._block_get`` words it).
POINT_WHY = {**_WHY, 6: "bad data block (malformed block)"}


_layouts: weakref.WeakKeyDictionary[object, BlockLayout] = weakref.WeakKeyDictionary()


def table_layout(t: object) -> BlockLayout:
    """The :class:`BlockLayout` of table reader ``t`` (``sstable.TableReader``), built on first use."""
    lay = _layouts.get(t)
    if lay is None:
        lay = _layouts[t] = BlockLayout(t._offsets, t._sizes)  # type: ignore[attr-defined]
    return lay


def table_fd(t: object) -> int:
    """The OS file descriptor C may pread ``t``'s blocks from, or -1 (not an OS file, or closed)."""
    return t._file._fd if t._os_file else -1  # type: ignore[attr-defined]
