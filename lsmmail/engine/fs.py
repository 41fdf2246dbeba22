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
import os
import threading
from collections.abc import Callable
from typing import Protocol


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


class _OsWritable:
    __slots__ = ("_fd", "_size", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._size = os.fstat(fd).st_size

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

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self._size = size

    def size(self) -> int:
        return self._size

    def fileno(self) -> int:
        """The descriptor, for a caller that writes at :meth:`size` itself (the C group commit) and then
        reports the bytes with :meth:`advance`."""
        return self._fd

    def advance(self, n: int) -> None:
        self._size += n

    def preallocate(self, length: int) -> None:
        end = os.fstat(self._fd).st_size
        if length > end:
            os.posix_fallocate(self._fd, end, length - end)

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


# --------------------------------------------------------------------------------------------------
# In-memory file system with a power-loss model


class _MemNode:
    """One inode: its bytes and how many of them are durable, and its preallocated length (zeros past
    ``data`` up to ``alloc``) now and as of its last sync."""

    __slots__ = ("data", "synced", "alloc", "synced_alloc")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = 0
        self.alloc = 0
        self.synced_alloc = 0

    def contents(self) -> bytes:
        """What a reader sees: the data, then zeros up to the preallocated length."""
        return bytes(self.data) + bytes(max(0, self.alloc - len(self.data)))

    def length(self) -> int:
        return max(len(self.data), self.alloc)


def _split(path: str) -> tuple[str, str]:
    path = os.path.normpath(path)
    return os.path.dirname(path), os.path.basename(path)


class _MemWritable:
    def __init__(self, fs: MemFileSystem, node: _MemNode) -> None:
        self._fs = fs
        self._node = node
        self._closed = False

    def append(self, data: bytes | bytearray | memoryview) -> None:
        with self._fs._mu:
            self._node.data += data

    def sync(self) -> None:
        with self._fs._mu:
            self._node.synced = len(self._node.data)
            self._node.synced_alloc = self._node.alloc

    def truncate(self, size: int) -> None:
        with self._fs._mu:
            del self._node.data[size:]
            self._node.synced = min(self._node.synced, size)
            # The shorter length is durable at the next sync; a crash before it brings the tail back.
            self._node.alloc = 0

    def size(self) -> int:
        return len(self._node.data)

    def preallocate(self, length: int) -> None:
        with self._fs._mu:
            # Appends land on the zeros; a crash before the next sync drops the allocation (the model
            # picks the stricter outcome: the size change was not journalled).
            self._node.alloc = max(self._node.alloc, length)

    def close(self) -> None:
        self._closed = True


class _MemReadable:
    def __init__(self, fs: MemFileSystem, node: _MemNode) -> None:
        self._fs = fs
        self._node = node

    def read_at(self, offset: int, n: int) -> bytes:
        with self._fs._mu:
            node = self._node
            if offset + n <= len(node.data):
                return bytes(node.data[offset : offset + n])
            return node.contents()[offset : offset + n]

    def size(self) -> int:
        return self._node.length()

    def close(self) -> None:
        pass


class _MemLock:
    def __init__(self, fs: MemFileSystem, path: str) -> None:
        self._fs = fs
        self._path = path

    def release(self) -> None:
        with self._fs._mu:
            self._fs._locks.discard(self._path)


class MemFileSystem:
    """An in-memory file system that can simulate power loss.

    ``crash()`` keeps, for every file, only the bytes up to its last ``sync()``, and restores every
    directory to its state at its last ``sync_dir()``: files created or renamed since then vanish or
    move back, removed files come back. Locks are dropped (the process died).
    """

    def __init__(self) -> None:
        self._mu = threading.RLock()
        self._live: dict[str, dict[str, _MemNode]] = {}
        self._durable: dict[str, dict[str, _MemNode]] = {}
        self._locks: set[str] = set()

    # -- helpers
    def _dir(self, d: str) -> dict[str, _MemNode]:
        try:
            return self._live[d]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such directory", d) from None

    def _node(self, path: str) -> _MemNode:
        d, name = _split(path)
        try:
            return self._dir(d)[name]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such file", path) from None

    # -- FileSystem
    def create(self, path: str) -> WritableFile:
        with self._mu:
            d, name = _split(path)
            node = _MemNode()
            self._dir(d)[name] = node
            return _MemWritable(self, node)

    def open_append(self, path: str) -> WritableFile:
        with self._mu:
            return _MemWritable(self, self._node(path))

    def open_read(self, path: str) -> ReadableFile:
        with self._mu:
            return _MemReadable(self, self._node(path))

    def read_file(self, path: str) -> bytes:
        with self._mu:
            return self._node(path).contents()

    def exists(self, path: str) -> bool:
        with self._mu:
            path = os.path.normpath(path)
            if path in self._live:
                return True
            d, name = _split(path)
            return name in self._live.get(d, {})

    def listdir(self, path: str) -> list[str]:
        with self._mu:
            return sorted(self._dir(os.path.normpath(path)))

    def makedirs(self, path: str) -> None:
        with self._mu:
            path = os.path.normpath(path)
            if path not in self._live:
                self._live[path] = {}
                # Directory creation is treated as durable at once: tests are about data files.
                self._durable[path] = {}

    def remove(self, path: str) -> None:
        with self._mu:
            d, name = _split(path)
            entries = self._dir(d)
            if name not in entries:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            del entries[name]

    def rename(self, src: str, dst: str) -> None:
        with self._mu:
            sd, sname = _split(src)
            dd, dname = _split(dst)
            node = self._dir(sd).pop(sname, None)
            if node is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", src)
            self._dir(dd)[dname] = node

    def link(self, src: str, dst: str) -> None:
        with self._mu:
            node = self._node(src)
            dd, dname = _split(dst)
            self._dir(dd)[dname] = node

    def sync_dir(self, path: str) -> None:
        with self._mu:
            path = os.path.normpath(path)
            self._durable[path] = dict(self._dir(path))

    def file_size(self, path: str) -> int:
        with self._mu:
            return self._node(path).length()

    def lock(self, path: str) -> FileLock:
        with self._mu:
            path = os.path.normpath(path)
            if path in self._locks:
                raise BlockingIOError(errno.EWOULDBLOCK, "lock held", path)
            d, name = _split(path)
            self._dir(d).setdefault(name, _MemNode())
            self._locks.add(path)
            return _MemLock(self, path)

    # -- power loss
    def crash(self) -> None:
        """Simulate a power cut: drop unsynced bytes and unsynced directory changes."""
        with self._mu:
            self._live = {d: dict(entries) for d, entries in self._durable.items()}
            seen: set[int] = set()
            for entries in self._live.values():
                for node in entries.values():
                    if id(node) not in seen:
                        seen.add(id(node))
                        del node.data[node.synced :]
                        node.alloc = node.synced_alloc
            self._locks.clear()

    def unsynced_bytes(self) -> int:
        """Bytes that a crash now would drop (for tests that want to know a crash mattered)."""
        with self._mu:
            return sum(len(n.data) - n.synced for e in self._live.values() for n in e.values())


# --------------------------------------------------------------------------------------------------
# Fault injection

#: Operation kinds that can be made to fail.
OP_KINDS = ("create", "open", "read", "write", "sync", "sync_dir", "rename", "remove", "link", "truncate",
            "allocate")


class InjectedFault(OSError):
    """The error a :class:`FaultInjectingFileSystem` raises (an ``OSError`` with a real errno)."""


class FaultInjectingFileSystem:
    """Wraps a file system; fails chosen operations.

    ``fail_at(n, kinds=("write",), err=errno.EIO)`` makes the n-th (1-based) operation among ``kinds``
    raise, counted from now; ``fail_always(kinds)`` makes every such operation fail from now on.
    ``counts`` tells how many operations of each kind ran, so a test can first run a workload to count
    its operations and then fail each one in turn.
    """

    def __init__(self, base: FileSystem) -> None:
        self.base = base
        self.counts: dict[str, int] = dict.fromkeys(OP_KINDS, 0)
        self._mu = threading.Lock()
        self._countdown: int | None = None
        self._kinds: frozenset[str] = frozenset()
        self._err = errno.EIO
        self._always = False
        self.faults_injected = 0
        self.on_fault: Callable[[str], None] | None = None

    def fail_at(self, n: int, kinds: tuple[str, ...] = OP_KINDS, err: int = errno.EIO) -> None:
        with self._mu:
            self._countdown = n
            self._kinds = frozenset(kinds)
            self._err = err
            self._always = False

    def fail_always(self, kinds: tuple[str, ...] = OP_KINDS, err: int = errno.EIO) -> None:
        with self._mu:
            self._countdown = None
            self._kinds = frozenset(kinds)
            self._err = err
            self._always = True

    def heal(self) -> None:
        with self._mu:
            self._countdown = None
            self._always = False
            self._kinds = frozenset()

    def total_ops(self, kinds: tuple[str, ...] = OP_KINDS) -> int:
        return sum(self.counts[k] for k in kinds)

    def _op(self, kind: str, path: str) -> None:
        with self._mu:
            self.counts[kind] += 1
            if kind not in self._kinds:
                return
            fire = self._always
            if self._countdown is not None:
                self._countdown -= 1
                if self._countdown == 0:
                    fire = True
                    self._countdown = None
            if not fire:
                return
            self.faults_injected += 1
            err = self._err
        if self.on_fault is not None:
            self.on_fault(kind)
        raise InjectedFault(err, f"injected {os.strerror(err)} on {kind}", path)

    # -- FileSystem
    def create(self, path: str) -> WritableFile:
        self._op("create", path)
        return _FaultWritable(self, path, self.base.create(path))

    def open_append(self, path: str) -> WritableFile:
        self._op("open", path)
        return _FaultWritable(self, path, self.base.open_append(path))

    def open_read(self, path: str) -> ReadableFile:
        self._op("open", path)
        return _FaultReadable(self, path, self.base.open_read(path))

    def read_file(self, path: str) -> bytes:
        self._op("read", path)
        return self.base.read_file(path)

    def exists(self, path: str) -> bool:
        return self.base.exists(path)

    def listdir(self, path: str) -> list[str]:
        return self.base.listdir(path)

    def makedirs(self, path: str) -> None:
        self.base.makedirs(path)

    def remove(self, path: str) -> None:
        self._op("remove", path)
        self.base.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self._op("rename", src)
        self.base.rename(src, dst)

    def link(self, src: str, dst: str) -> None:
        self._op("link", src)
        self.base.link(src, dst)

    def sync_dir(self, path: str) -> None:
        self._op("sync_dir", path)
        self.base.sync_dir(path)

    def file_size(self, path: str) -> int:
        return self.base.file_size(path)

    def lock(self, path: str) -> FileLock:
        return self.base.lock(path)


class _FaultWritable:
    def __init__(self, fs: FaultInjectingFileSystem, path: str, inner: WritableFile) -> None:
        self._fs = fs
        self._path = path
        self._inner = inner

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._fs._op("write", self._path)
        self._inner.append(data)

    def sync(self) -> None:
        self._fs._op("sync", self._path)
        self._inner.sync()

    def truncate(self, size: int) -> None:
        self._fs._op("truncate", self._path)
        self._inner.truncate(size)

    def preallocate(self, length: int) -> None:
        self._fs._op("allocate", self._path)
        self._inner.preallocate(length)

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()


class _FaultReadable:
    def __init__(self, fs: FaultInjectingFileSystem, path: str, inner: ReadableFile) -> None:
        self._fs = fs
        self._path = path
        self._inner = inner

    def read_at(self, offset: int, n: int) -> bytes:
        self._fs._op("read", self._path)
        return self._inner.read_at(offset, n)

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()


def default_fs() -> FileSystem:
    return OsFileSystem()
