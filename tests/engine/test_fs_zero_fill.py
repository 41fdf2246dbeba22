"""The real file system's preallocated tail (fs._OsWritable): ``preallocate`` fallocates it, and after a
small append to a file being synced the tail just ahead of the data is written as zeros (ZERO_AHEAD at a
time), so the next small appends land on written blocks and their fdatasync converts no extent. Whatever
the sequence of appends, syncs, preallocations and truncations, the file reads as its data followed by
zeros up to its length; on a file system that reports extents (FIEMAP: ext4, XFS) the blocks the next
small append will use are not *unwritten*, while large appends, and appends with no sync since the last
zero-ahead, leave the fallocated tail alone.

Oracles: a model of the bytes (data, then zeros up to the preallocated length); the kernel's extent map.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine import fs as fsmod
from lsmmail.engine.fs import OsFileSystem

_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_FLAG_SYNC = 0x1
_FIEMAP_EXTENT_UNWRITTEN = 0x800
_HEAD = struct.Struct("=QQIIII")  # fm_start, fm_length, fm_flags, fm_mapped_extents, fm_extent_count, pad
_EXTENT = struct.Struct("=QQQQQI12x")  # logical, physical, length, 2 reserved, flags, 3 reserved
_MAX_EXTENTS = 64


def _unwritten_ranges(path: Path) -> list[tuple[int, int]] | None:
    """``(offset, length)`` of every unwritten extent, or None where FIEMAP is not supported."""
    buf = bytearray(_HEAD.size + _EXTENT.size * _MAX_EXTENTS)
    _HEAD.pack_into(buf, 0, 0, 2**64 - 1, _FIEMAP_FLAG_SYNC, 0, _MAX_EXTENTS, 0)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, _FS_IOC_FIEMAP, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    mapped = _HEAD.unpack_from(buf)[3]
    out = []
    for i in range(mapped):
        logical, _, length, _, _, flags = _EXTENT.unpack_from(buf, _HEAD.size + i * _EXTENT.size)
        if flags & _FIEMAP_EXTENT_UNWRITTEN:
            out.append((logical, length))
    return out


def _append(f: object, chunk: bytes, native: bool, synced: bool = False) -> None:
    """Through ``append`` (then ``sync`` if ``synced``), or as the C commit does: a pwrite at ``size()``
    (then an fdatasync if ``synced``), then ``advance``."""
    if native:
        os.pwrite(f.fileno(), chunk, f.size())  # type: ignore[attr-defined]
        if synced:
            os.fdatasync(f.fileno())  # type: ignore[attr-defined]
        f.advance(len(chunk), synced)  # type: ignore[attr-defined]
    else:
        f.append(chunk)  # type: ignore[attr-defined]
        if synced:
            f.sync()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _zero_writer(c_loop: bool) -> Iterator[None]:
    """Zero-aheads through the C loop (``lsm_write_zero_pages``, what runs when the extension is there)
    or through its Python twin."""
    saved = fsmod._native
    if c_loop and saved is None:
        pytest.skip("the C extension is not available")
    fsmod._native = saved if c_loop else None
    try:
        yield
    finally:
        fsmod._native = saved


_OPS = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 3 * fsmod.ZERO_AHEAD_MAX_APPEND), st.booleans()),
    st.tuples(st.just("sync"), st.just(0), st.booleans()),
    st.tuples(st.just("preallocate"), st.integers(0, 3 * fsmod.ZERO_AHEAD), st.booleans()),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.booleans()),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(_OPS, max_size=12), st.booleans() if fsmod._native is not None else st.just(False))
def test_file_reads_as_data_then_zeros(tmp_path_factory: object, ops: list[tuple[str, int, bool]],
                                       c_loop: bool) -> None:
    """Zero-aheads written by the C loop or by its Python twin."""
    with _zero_writer(c_loop):
        _data_then_zeros(tmp_path_factory, ops)


def _data_then_zeros(tmp_path_factory: object, ops: list[tuple[str, int, bool]]) -> None:
    path = tmp_path_factory.mktemp("zf") / "f"  # type: ignore[attr-defined]
    f = OsFileSystem().create(str(path))
    data = bytearray()
    length = 0  # the model: data, then zeros up to length
    for i, (op, n, native) in enumerate(ops):
        if op == "append":
            chunk = bytes([i % 250 + 1]) * n
            _append(f, chunk, native)
            data += chunk
            length = max(length, len(data))
        elif op == "sync":
            if native:
                f.advance(0, True)  # type: ignore[attr-defined]  # as the C commit reports a sync
            else:
                f.sync()
        elif op == "preallocate":
            f.preallocate(len(data) + n)
            length = max(length, len(data) + n)
        else:
            cut = min(n, len(data))
            f.truncate(cut)
            del data[cut:]
            length = cut
        assert f.size() == len(data)
    f.sync()
    f.close()
    assert path.read_bytes() == bytes(data) + bytes(length - len(data))


@pytest.mark.parametrize("c_loop", [True, False])
def test_small_appends_write_zeros_ahead(tmp_path: Path, c_loop: bool) -> None:
    path = tmp_path / "small"
    f = OsFileSystem().create(str(path))
    f.preallocate(1 << 20)
    with _zero_writer(c_loop):
        for i in range(40):
            _append(f, bytes([i + 1]) * 1400, native=i % 2 == 0, synced=True)
    size = f.size()
    f.sync()
    f.close()
    assert path.read_bytes()[size:] == bytes((1 << 20) - size)
    unwritten = _unwritten_ranges(path)
    if unwritten is not None:  # ext4 / XFS
        # The next append of the same size lands on written blocks only ...
        assert all(off >= size + 1400 for off, _ in unwritten), (size, unwritten)
        # ... and the zeros ahead are bounded: the rest of the chunk is still only allocated.
        assert any(off + n == 1 << 20 for off, n in unwritten), unwritten
        assert all(off <= size + fsmod.ZERO_AHEAD for off, _ in unwritten), unwritten


def test_unsynced_appends_leave_the_tail_fallocated_until_a_sync(tmp_path: Path) -> None:
    """Appends nobody syncs gain nothing from zeros: none are written ahead of them. After a sync, the next
    small append writes them again."""
    path = tmp_path / "unsynced"
    f = OsFileSystem().create(str(path))
    f.preallocate(1 << 20)
    for i in range(40):
        _append(f, bytes([i + 1]) * 1400, native=i % 2 == 0)
    size = f.size()
    unwritten = _unwritten_ranges(path)
    if unwritten is not None:
        # Unwritten from the block after the data to the end: nothing was written ahead.
        assert sum(n for _, n in unwritten) >= (1 << 20) - size - 4096, unwritten
    f.sync()
    _append(f, b"x" * 1400, native=True)
    size = f.size()
    f.sync()
    f.close()
    assert path.read_bytes()[size:] == bytes((1 << 20) - size)
    unwritten = _unwritten_ranges(path)
    if unwritten is not None:
        assert all(off >= size + 1400 for off, _ in unwritten), (size, unwritten)


def test_large_appends_leave_the_tail_fallocated(tmp_path: Path) -> None:
    path = tmp_path / "large"
    f = OsFileSystem().create(str(path))
    f.preallocate(1 << 20)
    big = 2 * fsmod.ZERO_AHEAD_MAX_APPEND
    for i in range(3):
        _append(f, bytes([i + 1]) * big, native=i == 1)
    f.sync()
    f.close()
    assert path.read_bytes() == b"".join(bytes([i + 1]) * big for i in range(3)) + bytes((1 << 20) - 3 * big)
    unwritten = _unwritten_ranges(path)
    if unwritten is not None:
        # Unwritten from the block after the data to the end: nothing was written ahead.
        assert sum(n for _, n in unwritten) >= (1 << 20) - 3 * big - 4096, unwritten


def test_files_without_preallocation_are_never_zero_filled(tmp_path: Path) -> None:
    """SSTables and blob files (no preallocate): small appends write exactly their bytes."""
    path = tmp_path / "plain"
    f = OsFileSystem().create(str(path))
    for i in range(10):
        _append(f, bytes([i + 1]) * 700, native=i % 2 == 1)
    f.sync()
    f.close()
    assert path.stat().st_size == 7000


def _write_bytes() -> int | None:
    """This process's ``write_bytes`` (bytes it dirtied in the page cache), or None without /proc."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def test_appends_after_a_zero_ahead_dirty_only_their_pages(tmp_path: Path) -> None:
    """The zeros are written page by page: written in one call they sit in large page-cache folios, and
    each later small append dirtied (and its fdatasync wrote) a whole folio, 16-36 KiB for 1,400 bytes."""
    f = OsFileSystem().create(str(tmp_path / "pages"))
    f.preallocate(1 << 20)
    f.sync()  # a file being synced: the next small append writes zeros ahead
    _append(f, b"a" * 1400, native=True)  # the zero-ahead
    f.sync()
    before = _write_bytes()
    for _ in range(40):
        _append(f, b"b" * 1400, native=True)
        f.sync()
    after = _write_bytes()
    f.close()
    if before is not None and after is not None:
        assert after - before <= 40 * 8192, after - before
