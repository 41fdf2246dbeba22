"""A range scan's merge in C (native/scan.c): block iteration, k-way merge and visibility in one kernel,
a page of visible entries per call.

:func:`native_scan` yields what ``visible_entries(merge_entries(sources))`` (:mod:`iterators`, the pure
twin, still used under ``LSMMAIL_PURE=1``) yields for the same sources: for each user key in range the
newest version at or below the snapshot, unless it is a DELETE or a range tombstone visible at the
snapshot covers it with a larger sequence; BLOB values are read through ``read_blob``.

Memtables are walked in place in C (their skiplist nodes never move). A table source (one L0 table, or
the tables of one level, in key order) holds one raw data block at a time: when it runs out, the kernel
returns with the source's number and this module reads the next block -- through the block cache, where
it is kept as its raw payload, the form point reads cache too (a block cached decoded by the pure path
serves its ``payload``) -- and hands it over. So a block becomes no Python object beyond its bytes, and
only the returned entries become ``bytes`` objects: one copy of a page out of C, then one slice per key
and value, made lazily as the caller iterates.

Failure modes: a malformed block raises ``Corruption`` naming the table and offset (and the block is
dropped from the cache, so a later read goes back to the file); read errors are ``OSError`` (the caller
translates them); ``MemoryError`` if the kernel cannot allocate.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from struct import unpack_from
from typing import Any

from .. import native_lib
from .. import native_pointget as _pointget
from .errors import Corruption, DBClosed, IOFailure, LsmError
from .keys import KIND_BLOB
from .sstable import TableReader
from .version import FileMeta

_lib = native_lib._lib  # the kernel even under LSMMAIL_PURE=1 (differential tests); DB.scan checks AVAILABLE
_ffi = native_lib._ffi

#: Entries per kernel call at most. A call also ends whenever a source needs its next block (every ~15
#: entries of 1 KiB values per source), so this bounds only scans over small values. (First pages of 16
#: or 25, so a seek + 50 copies no entry it does not take, measured no faster: 67-69 vs 69 us fwd.)
_PAGE = 256

#: Entries a page holds before it may end at a block boundary (``lsm_scan_set_page_min``): a folder page
#: (the mail store lists 50; the bench's seek + 50 too) comes out of one kernel call instead of ~4, at the
#: price, for a caller that takes fewer from an open range, of the blocks that hold the first 50.
_PAGE_MIN = 50

#: Initial page buffer (grown when one entry does not fit): 256 entries of ~1 KiB.
_BUF = 256 * 1024

#: The struct format of a page: "<klen>s<vlen>s" per entry, at most 44 characters (scan.c).
_FMT_CAP = 44 * _PAGE

_LSM_SCAN_END = 1
_LSM_SCAN_NEED = 2
_ECORRUPT, _ESPACE = -1, -2
_SCAN_EIO = -4  # scan.h LSM_SCAN_EIO


class _Scratch(threading.local):
    """Per-thread output arrays: a page is copied out to ``bytes`` before any other scan on the thread
    can run, so scans (even interleaved generators) share them. Saves ~3 us of allocation per scan."""

    def __init__(self) -> None:
        self.cap = _BUF
        self.buf = native_lib._new("uint8_t[]", _BUF)
        self.offs = native_lib._new("uint64_t[]", 2 * _PAGE + 1)
        self.kinds = native_lib._new("uint8_t[]", _PAGE)
        self.state = native_lib._new("uint64_t[]", 7)
        self.err = native_lib._new("uint64_t[]", 3)
        self.fmt = native_lib._new("char[]", _FMT_CAP)
        self.view = _ffi.buffer(self.buf, _BUF)  # what struct.unpack_from cuts the page out of


_scratch: _Scratch | None = _Scratch() if _lib is not None else None


class _TableSource:
    """Where one table source stands: its files (key order), the current file and block. Tables are
    opened when the scan reaches them: a scan from a key to the open end has every later file of a
    level in range, and opening (looking up) them all up front costs O(files) per scan. (No difference
    measured on the bench's 8-file L1: 78.0 vs 78.7 us forward, 95.9 vs 94.4 reverse.)"""

    __slots__ = ("files", "open", "tables", "fi", "bi", "hold", "tmode")

    def __init__(self, files: list[FileMeta], open_table: Callable[[FileMeta], TableReader]) -> None:
        self.files = files
        self.open = open_table
        self.tables: list[TableReader | None] = [None] * len(files)
        self.fi = 0
        self.bi = 0
        self.hold: Any = None  # the cffi view of the block the kernel points into (keeps it alive)
        #: The kernel reads this table's blocks itself (lsm_scan_set_table): Python sees the source
        #: again only past the table's last block in scan order.
        self.tmode = False

    def table(self, fi: int) -> TableReader:
        t = self.tables[fi]
        if t is None:
            t = self.tables[fi] = self.open(self.files[fi])
        return t


def _load(ctx: Any, j: int, src: _TableSource, cache: Any, err: Any) -> None:
    """Hand source ``j`` its current block: for a table on an OS file, the table itself (the kernel reads
    the block and the ones after it through the C block cache ``cache``, or uncached when it is NULL);
    else the block's raw payload read here (``TableReader.raw_block``)."""
    t = src.table(src.fi)
    fd = _pointget.table_fd(t)
    if fd >= 0:
        lay = _pointget.table_layout(t)
        rc = _lib.lsm_scan_set_table(ctx, j, cache, t.file_number, fd, t._verify, lay.offs, lay.sizes, lay.n,
                                     src.bi, err)
        src.hold = None
        if rc < 0:
            raise _block_error(t, rc, int(err[0]), int(err[1]))
        src.tmode = True
        return
    src.tmode = False
    raw = t.raw_block(src.bi)
    view = _ffi.from_buffer(raw)
    rc = _lib.lsm_scan_set_block(ctx, j, view, len(raw))
    if rc < 0:
        offset = t._offsets[src.bi]
        if t._cache is not None:
            t._cache.erase((t.file_number, offset))
        if rc == _ECORRUPT:
            raise t._corrupt("bad data block (malformed block in a scan)", offset)
        raise MemoryError("scan kernel cannot allocate")
    src.hold = view


def _block_error(t: TableReader, rc: int, why: int, offset: int) -> Exception:
    """The exception for a table-mode block the kernel could not read (``rc``): ``Corruption`` naming the
    table and offset, ``OSError`` for a read error, ``MemoryError``."""
    if rc == _ECORRUPT:
        what = "bad data block (malformed block in a scan)" if why == 6 else _pointget.POINT_WHY.get(
            why, "malformed block")
        return t._corrupt(what, offset)
    if rc in (_SCAN_EIO, _pointget._EIO):
        return OSError(why, os.strerror(why))
    if rc == _ESPACE:
        return MemoryError("scan kernel cannot allocate")
    return RuntimeError(f"scan kernel block read returned {rc}")


def _position(src: _TableSource, start: bytes | None, end: bytes | None, reverse: bool) -> bool:
    """Put ``src`` at its first block in scan order; False if it has none."""
    n = len(src.files)
    if not reverse:
        for fi in range(n):
            idx = src.table(fi).index_user_keys
            bi = 0 if start is None else bisect_left(idx, start)
            if bi < len(idx):
                src.fi, src.bi = fi, bi
                return True
        return False
    for fi in range(n - 1, -1, -1):
        idx = src.table(fi).index_user_keys
        if idx:
            src.fi = fi
            src.bi = len(idx) - 1 if end is None else min(bisect_left(idx, end), len(idx) - 1)
            return True
    return False


def _step(src: _TableSource, start: bytes | None, reverse: bool) -> bool:
    """Move ``src`` to its next block in scan order; False if the range has no more there."""
    if not reverse:
        src.bi += 1
        while src.bi >= src.table(src.fi).num_data_blocks:
            src.fi += 1
            if src.fi >= len(src.files):
                return False
            src.bi = 0
        return True
    while True:
        if src.bi > 0:
            # Block bi - 1 ends below start: nothing there or before it is in range.
            if start is not None and src.table(src.fi).index_user_keys[src.bi - 1] < start:
                return False
            src.bi -= 1
            return True
        src.fi -= 1
        if src.fi < 0:
            return False
        src.bi = src.table(src.fi).num_data_blocks


def _pages(
    mems: list[Any],
    table_sources: list[list[FileMeta]],
    open_table: Callable[[FileMeta], TableReader],
    start: bytes | None,
    end: bytes | None,
    reverse: bool,
    snapshot_seq: int,
    tombs: list[tuple[int, bytes, bytes]],
    read_blob: Callable[[bytes], bytes],
    pin: object = None,
    cache: Any = None,
    view: tuple[Any, list[TableReader]] | None = None,
    owner: Any = None,
) -> Iterator[Iterable[tuple[bytes, bytes]]]:
    """The pages of :func:`native_scan`: iterables of the visible ``(key, value)`` pairs of
    ``start <= key < end`` at ``snapshot_seq``, in key order or reverse. ``mems`` are native
    memtables (``NativeMemTable``); each item of ``table_sources`` is one L0 table or the in-range
    tables of one level, in key order (opened with ``open_table``). List sources newest first. A
    generator: nothing is opened or read until the first ``next``, so errors surface there; read errors
    are raised as ``IOFailure``. ``pin`` (the read state's version) is held until the generator is
    done, keeping the files it reads alive."""
    _pin = pin  # noqa: F841
    try:
        lib, ffi = _lib, _ffi
        nsrc = len(mems) + (len(table_sources) if view is None else view[0].nsources)
        ctx = lib.lsm_scan_new(nsrc, reverse, snapshot_seq, ffi.NULL if start is None else start,
                               0 if start is None else len(start), ffi.NULL if end is None else end,
                               0 if end is None else len(end))
        if ctx == ffi.NULL:
            raise MemoryError("scan kernel cannot allocate")
        # The kernel holds block-cache entries until it is freed, so the cache must outlive it: the
        # destructor keeps the cache object alive.
        cptr = ffi.NULL if cache is None else cache.ptr
        ctx = ffi.gc(ctx, lambda p, _c=cache, _v=view: lib.lsm_scan_free(p))
        lib.lsm_scan_set_page_min(ctx, _PAGE_MIN)
        for seq, ts, te in tombs:
            if lib.lsm_scan_add_tombstone(ctx, seq, ts, len(ts), te, len(te)) < 0:
                raise MemoryError("scan kernel cannot allocate")
        for j, m in enumerate(mems):
            lib.lsm_scan_set_mem(ctx, j, m._m)
        sc = _scratch
        assert sc is not None
        state, err = sc.state, sc.err
        srcs: list[_TableSource | None] = [None] * len(mems)
        if view is not None:
            rc = lib.lsm_scan_set_view(ctx, len(mems), view[0].view, err)
            if rc < 0:
                raise _block_error(view[1][err[2]], rc, int(err[0]), int(err[1]))
        for files in table_sources:
            j = len(srcs)
            src = _TableSource(files, open_table)
            srcs.append(src)
            if _position(src, start, end, reverse):
                _load(ctx, j, src, cptr, err)
            else:
                lib.lsm_scan_set_done(ctx, j)
        while True:
            if owner is not None and owner._closed:
                # The view's file descriptors were closed with the DB (and their numbers may be reused).
                raise DBClosed("the database was closed under an open scan")
            n = lib.lsm_scan_next(ctx, _PAGE, sc.buf, sc.cap, sc.offs, sc.kinds, sc.fmt, _FMT_CAP, state)
            if n < 0:
                if n == _ESPACE:
                    raise MemoryError("scan kernel cannot allocate")
                j = int(state[1])
                bad = srcs[j] if j < len(srcs) else None
                t = bad.table(bad.fi) if bad is not None else view[1][state[6]]  # type: ignore[index]
                raise _block_error(t, int(n), int(state[2]), int(state[5]))
            # Read the whole state now: another scan on this thread may reuse it while this one yields.
            status, j, need, blobs = state[0], int(state[1]), int(state[2]), state[3]
            if n:
                # Every key and value as bytes in one call: the kernel wrote the struct format that cuts
                # the page (a slice per piece in Python was ~0.2 us each).
                pieces = unpack_from(ffi.buffer(sc.fmt, state[4])[:], sc.view)
                if blobs:
                    kinds = ffi.unpack(sc.kinds, n)
                    yield [(pieces[2 * i], read_blob(pieces[2 * i + 1]) if kinds[i] == KIND_BLOB
                            else pieces[2 * i + 1]) for i in range(n)]
                else:
                    it = iter(pieces)
                    yield zip(it, it, strict=True)  # the same iterator: key, value
            if status == _LSM_SCAN_END:
                return
            if status == _LSM_SCAN_NEED:
                src = srcs[j]
                if src is None:
                    raise Corruption("scan kernel asked a memtable for a block")  # pragma: no cover
                if src.tmode:  # the kernel went through this table's blocks: on to the next table
                    src.bi = 0 if reverse else src.table(src.fi).num_data_blocks - 1
                if _step(src, start, reverse):
                    _load(ctx, j, src, cptr, err)
                else:
                    src.hold = None
                    lib.lsm_scan_set_done(ctx, j)
            elif n == 0 and need:
                # Not even one entry fit: grow the page buffer (for this thread) and go on.
                sc.cap = max(2 * sc.cap, need)
                sc.buf = native_lib._new("uint8_t[]", sc.cap)
                sc.view = ffi.buffer(sc.buf, sc.cap)
    except LsmError:
        raise
    except OSError as e:
        # Table files let read errors through as plain OSError.
        raise IOFailure(e.errno, f"read failed: {e}") from e


def native_scan(
    mems: list[Any],
    table_sources: list[list[FileMeta]],
    open_table: Callable[[FileMeta], TableReader],
    start: bytes | None,
    end: bytes | None,
    reverse: bool,
    snapshot_seq: int,
    tombs: list[tuple[int, bytes, bytes]],
    read_blob: Callable[[bytes], bytes],
    pin: object = None,
    cache: Any = None,
) -> Iterator[tuple[bytes, bytes]]:
    """Visible ``(key, value)`` pairs of ``start <= key < end`` at ``snapshot_seq``, in key order or
    reverse: :func:`_pages` flattened by ``chain``, so taking an entry runs no Python frame (a page's
    generator resumes only when the page is used up, and reads the next block only then)."""
    return chain.from_iterable(_pages(mems, table_sources, open_table, start, end, reverse, snapshot_seq,
                                      tombs, read_blob, pin, cache))


def native_scan_view(
    mems: list[Any],
    probe: Any,
    tables: list[TableReader],
    start: bytes | None,
    end: bytes | None,
    reverse: bool,
    snapshot_seq: int,
    tombs: list[tuple[int, bytes, bytes]],
    read_blob: Callable[[bytes], bytes],
    pin: object = None,
    owner: Any = None,
) -> Iterator[tuple[bytes, bytes]]:
    """:func:`native_scan` over a whole version's tables as ``probe`` (``native_pointget.VersionProbe``,
    every table on an OS file: ``probe.all_os``; ``tables`` its readers by position) lays them out: the
    kernel positions each source (binary search over a level's tables and a table's index) and moves
    between a level's tables by itself (``lsm_scan_set_view``), so a seek costs Python no work per source,
    and reads blocks through the block cache the probe names. ``probe`` is kept alive by the scan. With
    ``owner`` (the DB), a page asked for after ``owner`` closed raises ``DBClosed`` (the probe's file
    descriptors are closed then)."""
    return chain.from_iterable(_pages(mems, [], lambda f: f, start, end, reverse, snapshot_seq,  # type: ignore[arg-type, return-value]
                                      tombs, read_blob, pin, None, (probe, tables), owner))
