"""The fault-injecting file system of the file-system seam (see :mod:`lsmmail.engine.fs`): wraps another
file system and makes the N-th operation of a kind fail with a chosen errno, to test every failure path
(EIO on write, ENOSPC, failed fsync, failed preallocation, ...)."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

from .fs import FileLock, FileSystem, ReadableFile, WritableFile

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
