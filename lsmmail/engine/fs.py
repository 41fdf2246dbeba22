"""The file-system seam: every byte the engine reads or writes goes through a :class:`FileSystem`.

Three implementations:

* :class:`OsFileSystem` — the real one (``os.pwrite``/``os.pread``/``os.fdatasync``), used by default.
* :class:`MemFileSystem` — in memory, with a strict model of what survives **power loss**: file bytes
  survive only up to the last ``sync()`` of that file, and a directory entry (create, rename, remove)
  survives only after ``sync_dir()`` of its directory. :meth:`MemFileSystem.crash` drops everything else,
  as a power cut would. This is stricter than ext4 or XFS, so code correct here is correct there.
* :class:`FaultInjectingFileSystem` — wraps another file system and makes the N-th operation of a kind
  fail with a chosen errno, to test every failure path (EIO on write, ENOSPC, failed fsync, ...).

Paths are plain ``str``. The engine never calls ``os`` or ``open`` for its data directly.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import os
from typing import TYPE_CHECKING, Any, Protocol

from ..native_lib import lib as _native

if TYPE_CHECKING:
    from .fs_fault import OP_KINDS, FaultInjectingFileSystem, InjectedFault
    from .fs_mem import MemFileSystem

__all__ = [
    "OP_KINDS", "FaultInjectingFileSystem", "FileLock", "FileSystem", "InjectedFault", "MemFileSystem",
    "OsFileSystem", "ReadableFile", "WritableFile", "default_fs",
]


class WritableFile(Protocol):
    """A file opened for appending. ``append`` hands bytes to the OS (they survive a process crash);
    ``sync`` makes them durable (they survive power loss)."""

    def append(self, data: bytes | bytearray | memoryview) -> None: ...
    def sync(self) -> None: ...
    def truncate(self, size: int) -> None: ...
    def size(self) -> int:
        """The append position: bytes appended (after truncation), not counting a preallocated tail."""
        ...

    def preallocate(self, length: int) -> None:
        """Make the file at least ``length`` bytes long, zero-filled past the append position, with its
        blocks allocated; the append position does not move. Then an ``fdatasync`` after an append that
        stays inside the file finds its size already on disk (no journal commit for a size change). The
        new length is durable after the next ``sync``. Raises ``OSError`` (ENOSPC, ...); a file left
        partly extended still reads as its data followed by zeros."""
        ...

    def close(self) -> None: ...


class ReadableFile(Protocol):
    """A file opened for random reads; safe to use from many threads at once."""

    def read_at(self, offset: int, n: int) -> bytes: ...
    def size(self) -> int: ...
    def close(self) -> None: ...


class FileLock(Protocol):
    def release(self) -> None: ...


class FileSystem(Protocol):
    def create(self, path: str) -> WritableFile:
        """Create (or truncate) ``path`` and open it for appending."""
        ...

    def open_append(self, path: str) -> WritableFile:
        """Open an existing file for appending at its end."""
        ...

    def open_read(self, path: str) -> ReadableFile: ...
    def read_file(self, path: str) -> bytes: ...
    def exists(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def makedirs(self, path: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` with ``src`` (durable after ``sync_dir``)."""
        ...

    def link(self, src: str, dst: str) -> None:
        """Hard-link ``src`` as ``dst``; raises ``OSError`` where links are not possible."""
        ...

    def sync_dir(self, path: str) -> None: ...
    def file_size(self, path: str) -> int: ...
    def lock(self, path: str) -> FileLock:
        """Take an exclusive lock on ``path`` (created if missing); ``BlockingIOError`` if held."""
        ...


# --------------------------------------------------------------------------------------------------
# The real file system


#: After an append of at most this many bytes into a preallocated tail, the tail just ahead of the data
#: is written as zeros (ZERO_AHEAD bytes at a time). Why: on ext4 ``fallocate`` leaves *unwritten*
#: extents, and the first write into each such 4 KiB block makes the next ``fdatasync`` commit the
#: journal to convert it: 182 vs 113 us p50 for a 1,400-byte append + fdatasync here (2,000 interleaved
#: pairs), i.e. every ~3rd durable mark_read paid ~70 us, and every single delivery (~38 KB) paid it.
#: Blocks written as zeros first need no conversion at the appends' syncs; the zeros' own device write
#: and conversion go to the one sync after each zero-ahead. In-process A/B of durable single deliveries
#: (interleaved, same device): p50 889 / 782 / 733 us and mean 1,093 / 1,128 / 970 us with no zeros /
#: a 16 KiB / this 64 KiB limit. Bulk batches (MBs) convert many blocks per sync anyway: left alone.
ZERO_AHEAD_MAX_APPEND = 64 * 1024
#: 256 KiB: ~190 mark_read appends of 1.4 KB (or ~7 deliveries) between two zero-aheads, each 64 page
#: writes (~185 us here, loaded) and one sync that writes the zeros too. The writes run in C when the
#: extension is there (``lsm_write_zero_pages``: 64 pages in 167 vs 201 us, without the GIL), which then
#: starts their writeback, so the next sync finds them written or in flight (8 synced threads: +6%). With the
#: C loop and the next zero-ahead started earlier (below half of it left ahead of the data), 8 synced
#: threads made no measurable difference (6 interleaved pairs, seventh session): the rule stays.
ZERO_AHEAD = 256 * 1024
_PAGE = 4096
_ZERO_PAGE = memoryview(bytes(_PAGE))


class _OsWritable:
    __slots__ = ("_fd", "_size", "path", "_alloc", "_zeroed", "_synced")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._alloc = self._size  # the file's length, preallocated tail included
        self._zeroed = self._size  # below this offset every block holds written data or zeros
        self._synced = False  # a sync since the last zero-ahead (see _after_append)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        # pwrite at the append position, not O_APPEND (which would write past a preallocated tail); a
        # short write (rare: signal, quota) is continued, not lost.
        n = os.pwrite(self._fd, data, self._size)
        self._size += n
        if n < len(data):
            view = memoryview(data)[n:]
            while view:
                n = os.pwrite(self._fd, view, self._size)
                view = view[n:]
                self._size += n
        if self._alloc > self._zeroed:
            self._after_append(len(data))

    def sync(self) -> None:
        os.fdatasync(self._fd)
        self._synced = True

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self._size = self._alloc = size
        self._zeroed = min(self._zeroed, size)

    def size(self) -> int:
        return self._size

    def fileno(self) -> int:
        """The descriptor, for a caller that writes at :meth:`size` itself (the C group commit) and then
        reports the bytes with :meth:`advance`."""
        return self._fd

    def advance(self, n: int, synced: bool = False) -> None:
        """Account ``n`` bytes written at :meth:`size` by the caller; ``synced``: it also made them durable
        (fdatasync), as :meth:`sync` would have."""
        self._size += n
        if synced:
            self._synced = True
        if self._alloc > self._zeroed:
            self._after_append(n)

    def _after_append(self, n: int) -> None:
        """A small append into a preallocated tail: if the next one could reach unwritten blocks, write
        zeros ahead of the data (see ZERO_AHEAD_MAX_APPEND). Past the data only, never over it; a failed
        zero write only loses the optimisation (the tail still reads as zeros)."""
        start = max(self._zeroed, self._size)
        if n > ZERO_AHEAD_MAX_APPEND or start - self._size >= n or not self._synced:
            # Large appends convert many blocks per sync anyway; and zeros only pay off for a log that is
            # being synced: with no sync since the last zero-ahead, unsynced single puts would write
            # 64 zero pages per 256 KiB for nothing (~10% of a single-put loop's time, py-spy).
            self._zeroed = max(self._zeroed, self._size)
            return
        self._synced = False
        end = min(self._alloc, start + ZERO_AHEAD)
        if _native is not None:
            if start < end and _native.lsm_write_zero_pages(self._fd, start, end) < 0:
                self._alloc = self._zeroed = self._size  # give up until the next preallocation
            else:
                self._zeroed = max(self._zeroed, end)
            return
        try:
            # One page per pwrite: a larger write puts the zeros in large page-cache folios, and every
            # later small append into one dirties (and its fdatasync writes) the whole folio: 1,400-byte
            # appends then wrote 16-36 KiB each (write_bytes x60 of the data); page by page, 4-8 KiB.
            while start < end:
                n = os.pwrite(self._fd, _ZERO_PAGE[:min(_PAGE - start % _PAGE, end - start)], start)
                if n <= 0:
                    raise OSError(errno.EIO, "zero write made no progress", self.path)
                start += n
        except OSError:
            self._alloc = self._zeroed = self._size  # give up until the next preallocation
            return
        self._zeroed = end

    def preallocate(self, length: int) -> None:
        end = os.fstat(self._fd).st_size
        if length > end:
            os.posix_fallocate(self._fd, end, length - end)
            self._alloc = length
        else:
            self._alloc = max(self._alloc, end)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _OsReadable:
    __slots__ = ("_fd", "_size", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    def read_at(self, offset: int, n: int) -> bytes:
        return os.pread(self._fd, n, offset)

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _OsLock:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class OsFileSystem:
    """The operating system's file system."""

    def create(self, path: str) -> WritableFile:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        return _OsWritable(path, fd)

    def open_append(self, path: str) -> WritableFile:
        # Appends at the current end of file: a caller continuing a preallocated log truncates it to its
        # data first.
        fd = os.open(path, os.O_WRONLY)
        return _OsWritable(path, fd)

    def open_read(self, path: str) -> ReadableFile:
        return _OsReadable(path)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def remove(self, path: str) -> None:
        os.remove(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size

    def lock(self, path: str) -> FileLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BlockingIOError(errno.EWOULDBLOCK, "lock held", path) from None
        return _OsLock(fd)
def default_fs() -> FileSystem:
    return OsFileSystem()


# The in-memory and fault-injecting file systems live in their own modules (they import the protocols
# above), and stay importable from here: resolved on first access (PEP 562), which keeps the import
# order free of cycles.
_ELSEWHERE = {"MemFileSystem": ".fs_mem", "FaultInjectingFileSystem": ".fs_fault",
              "InjectedFault": ".fs_fault", "OP_KINDS": ".fs_fault"}


def __getattr__(name: str) -> Any:
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __package__), name)
