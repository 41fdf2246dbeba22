"""The in-memory file system of the file-system seam (see :mod:`lsmmail.engine.fs`), with a strict model of
what survives **power loss**: file bytes survive only up to the last ``sync()`` of that file (a
preallocated length only once synced too), and a directory entry survives only after ``sync_dir()`` of its
directory. :meth:`MemFileSystem.crash` drops everything else, as a power cut would."""

from __future__ import annotations

import errno
import os
import threading

from .fs import FileLock, ReadableFile, WritableFile


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
