"""The DB's write path: ``put``, ``delete``, ``delete_range``, ``write`` and the group commit behind them.

This is a mixin of :class:`lsmmail.engine.db.DB`, split out to keep each file about one concern; it uses the
DB's state directly (``db.py``'s module docstring states the durability contract). A writer joins a queue;
the writer at its head becomes the *leader*, takes the batches queued behind it, gives them consecutive
sequence numbers, appends them to the WAL with **one** write and at most **one** fdatasync, applies them to
the memtable, and then publishes the new last sequence number. The leader also freezes a full memtable
(starting a new WAL) and stalls writers while background work is behind.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from .. import native
from .batch import BATCH_HEADER_SIZE, WriteBatch, encode_single_put
from .commit_queue import C_FRAMING, NativeCommit, NativeWriteQueue, _Writer, frame_group, pick_group
from .errors import DBClosed, InvalidArgument, IOFailure, LsmError, ReadOnlyError
from .fs import OsFileSystem
from .keys import KIND_DELETE, KIND_PUT, MAX_KEY_SIZE
from .memtable_native import new_memtable
from .wal import WAL_PREALLOCATE, LogWriter

if TYPE_CHECKING:
    from .fs import FileSystem, WritableFile
    from .memtable import MemTable
    from .options import Options
    from .version import Version

#: Whether a DB on the real file system commits through the C queue (tests switch it off to run the
#: Python twin on the same file system).
NATIVE_COMMIT = True

#: A synced single put with a value up to this size is encoded into its thread's C queue slot
#: (:meth:`NativeCommit._submit_kv`); the slot keeps its buffer for the thread's life, so a larger value
#: takes the general path instead of leaving that much memory with the thread.
KV_JOIN_MAX_VALUE = 64 * 1024


class WritePath(NativeCommit):
    """The write-path methods of :class:`~lsmmail.engine.db.DB` (a mixin; ``_mu`` guards the state)."""

    # State owned by DB (declared for type checkers).
    if TYPE_CHECKING:
        path: str
        options: Options
        _fs: FileSystem
        _mu: threading.Lock
        _bg_cv: threading.Condition
        _write_cv: threading.Condition
        _writers: deque[_Writer] | NativeWriteQueue
        _closed: bool
        _closing: bool
        _poisoned: BaseException | None
        _stats: dict[str, int]
        _current: Version
        _mem: MemTable
        _imms: list[MemTable]
        _last_seq: int
        _next_file: int
        _last_group: int
        _log: LogWriter | None

        def _p(self, name: str) -> str: ...
        def _run_inline_work(self) -> None: ...


    def _new_write_queue(self) -> deque[_Writer] | NativeWriteQueue:
        """The queue of writers for ``DB.__init__``: the C queue (and :meth:`_submit_native`) when the
        extension is there and the file system is the real one; else the Python deque (the pure twin,
        also what every test file system such as the fault-injecting one runs through)."""
        if NATIVE_COMMIT and native._lib is not None and native.AVAILABLE and type(self._fs) is OsFileSystem:
            self._submit = self._submit_native  # type: ignore[method-assign]
            self._kv_lane = C_FRAMING
            return NativeWriteQueue(self.options.group_commit_yield_us)
        return deque()

    #: Whether an unsynced single put or delete may try :meth:`_commit_kv` (the C queue with C framing).
    _kv_lane = False

    def put(self, key: bytes, value: bytes, *, sync: bool | None = None) -> None:
        """Set ``key`` to ``value``. Durability: see the module docstring (``sync``)."""
        if sync is None:
            sync = self.options.sync_writes
        if self._kv_lane:
            if not sync:
                if self._commit_kv(KIND_PUT, key, value):
                    return
            elif (type(key) is bytes and type(value) is bytes and 0 < len(key) <= MAX_KEY_SIZE
                  and len(value) <= KV_JOIN_MAX_VALUE):
                self._submit_kv(KIND_PUT, key, value)
                return
        rep = encode_single_put(key, value)
        if rep is None:
            b = WriteBatch()
            b.put(key, value)
            self.write(b, sync=sync)
            return
        # The batch of one put, encoded directly (WriteBatch object, its list and copies: ~1 us).
        self._submit(_Writer([(KIND_PUT, key, value)], bool(sync), BATCH_HEADER_SIZE + len(rep), rep=rep))

    def delete(self, key: bytes, *, sync: bool | None = None) -> None:
        """Remove ``key`` (no error if it is absent)."""
        if sync is None:
            sync = self.options.sync_writes
        if self._kv_lane:
            if not sync:
                if self._commit_kv(KIND_DELETE, key, b""):
                    return
            elif type(key) is bytes and 0 < len(key) <= MAX_KEY_SIZE:
                self._submit_kv(KIND_DELETE, key, b"")
                return
        b = WriteBatch()
        b.delete(key)
        self.write(b, sync=sync)

    def delete_range(self, start: bytes, end: bytes, *, sync: bool | None = None) -> None:
        """Remove every key in ``[start, end)`` with one range tombstone (O(1) however many keys)."""
        b = WriteBatch()
        b.delete_range(start, end)
        self.write(b, sync=sync)

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        """Apply ``batch`` atomically: after a crash, all of it or none of it is there.

        Raises ``ReadOnlyError`` once the database refuses writes, ``IOFailure`` if this write's I/O
        failed (the batch may or may not be present after a reopen; it was not acknowledged).
        """
        if not isinstance(batch, WriteBatch):
            raise InvalidArgument("write() takes a WriteBatch")
        if not batch:
            return
        sync = self.options.sync_writes if sync is None else bool(sync)
        entries = batch.committed_entries()
        self._submit(_Writer(entries, sync, batch.byte_size, rep=entries.rep))

    def _check_writable(self) -> None:
        if self._closed or self._closing:
            raise DBClosed("the database is closed")
        if self._poisoned is not None:
            raise ReadOnlyError(f"the database refuses writes after an I/O failure ({self._poisoned}); "
                                "reopen it") from self._poisoned

    def _poison(self, exc: BaseException) -> None:
        if self._poisoned is None:
            self._poisoned = exc

    def _submit(self, w: _Writer) -> None:
        """Queue ``w`` and return once its batch is committed (or raise its error). The Python queue;
        :meth:`_submit_native` is its twin on the C queue (same groups, same commit)."""
        with self._mu:
            self._check_writable()
            self._writers.append(w)
            while not w.done and self._writers[0] is not w:
                self._sleep(w)
            if w.done:
                if w.error is not None:
                    raise w.error
                return
            try:
                self._make_room_for_write(force=w.force_flush)
            except BaseException as e:
                self._writers.popleft()
                self._wake_head()
                if isinstance(e, OSError):
                    raise IOFailure(e.errno, f"write failed: {e}") from e
                raise
            if w.force_flush:
                self._writers.popleft()
                self._wake_head()
                return
            if w.sync and self._last_group > 1 and len(self._writers) < self._last_group:
                # Concurrent synced writers are about: let the ones the last commit woke queue up
                # behind this leader before it takes its group, so one fdatasync serves all of them.
                self._mu.release()
                try:
                    time.sleep(0)
                finally:
                    self._mu.acquire()
            writers = self._writers
            group = list(itertools.islice(writers, pick_group(writers))) if len(writers) > 1 else [w]
            need_sync = any(g.sync for g in group)
        err = self._commit(group, need_sync)
        with self._mu:
            for g in group:
                self._writers.popleft()
                g.done = True
                g.error = err
                if g.signal is not None:
                    self._wake(g)
            self._wake_head()
        if err is not None:
            raise err

    def _commit(self, group: list[_Writer], need_sync: bool) -> BaseException | None:
        """The leader's commit of ``group`` (its batches in order): sequence numbers, one WAL append, at
        most one fdatasync, memtable inserts, then the new last sequence published under ``_mu``. Returns
        the error that poisoned the DB (every writer of the group raises it), or None."""
        with self._mu:
            first_seq = self._last_seq + 1
            mem, log = self._mem, self._log
        assert log is not None
        err: BaseException | None = None
        seq = first_seq
        framed: bytes | bytearray = b""
        try:
            framed, seq = frame_group(log, group, seq)
            log.append_encoded(framed)
            if need_sync:
                log.sync()
            for g in group:
                assert g.entries is not None
                mem.add_batch(first_seq, g.entries, g.rep)
                first_seq += len(g.entries)
        except OSError as e:
            err = IOFailure(e.errno, f"WAL write failed: {e}")
            err.__cause__ = e
        except LsmError as e:
            err = e
        with self._mu:
            if err is None:
                self._last_seq = seq - 1
                self._count_group(sum(g.size for g in group), len(group), len(framed), need_sync)
            else:
                self._poison(err)
        return err

    def _sleep(self, w: _Writer) -> None:
        """With ``_mu`` held: sleep until a leader wakes ``w`` (its turn came, or its group committed).
        A private lock per writer, not one condition for all: with ``notify_all`` every committed group
        woke all queued writers to fight for the GIL and ``_mu`` (8 threads doing synced puts formed
        groups of ~4 where ~8 queue)."""
        sig = threading.Lock()
        sig.acquire()
        w.signal = sig
        self._mu.release()
        try:
            sig.acquire()
        finally:
            self._mu.acquire()

    @staticmethod
    def _wake(w: _Writer) -> None:
        sig = w.signal
        w.signal = None
        sig.release()

    def _wake_head(self) -> None:
        """With ``_mu`` held, after the queue's head changed: wake the new head (the next leader)."""
        if self._writers:
            head = self._writers[0]
            if head.signal is not None:
                self._wake(head)
        if self._closing:
            self._write_cv.notify_all()

    def _make_room_for_write(self, force: bool) -> None:
        """Called by the leader with ``_mu`` held: freeze the memtable when full, stall when behind."""
        opts = self.options
        allow_delay = not force
        while True:
            if self._poisoned is not None or self._closing:
                self._check_writable()
            l0 = len(self._current.levels[0])
            if allow_delay and l0 >= opts.l0_slowdown_trigger:
                # Spread the slowdown over many writes instead of one long stop (LevelDB: 1 ms).
                self._stats["stall_slowdowns"] += 1
                allow_delay = False
                self._mu.release()
                try:
                    time.sleep(0.001)
                finally:
                    self._mu.acquire()
                continue
            if not force and self._mem.approximate_size < opts.memtable_size:
                return
            if force and len(self._mem) == 0:
                return
            if len(self._imms) >= opts.max_immutable_memtables:
                self._stats["stall_memtable"] += 1
                self._wait_for_background()
                continue
            if l0 >= opts.l0_stop_trigger:
                self._stats["stall_stops"] += 1
                self._wait_for_background()
                continue
            self._switch_memtable()
            force = False
            if not opts.background_work:
                self._mu.release()
                try:
                    self._run_inline_work()
                finally:
                    self._mu.acquire()

    def _wait_for_background(self) -> None:
        if self.options.background_work:
            self._bg_cv.wait(timeout=1.0)
        else:
            self._mu.release()
            try:
                self._run_inline_work()
            finally:
                self._mu.acquire()

    def _switch_memtable(self) -> None:
        """Start a new WAL and memtable; the old memtable waits for flush. ``_mu`` is held."""
        assert self._log is not None
        number = self._new_file_number()
        new_file = None
        try:
            # Sync the old log first, cut to its last record: an older log is then never torn and has
            # no zero tail, so recovery can tell a torn tail (only in the newest log) from lost data.
            # Costs one ftruncate and one fdatasync per memtable.
            self._log.seal()
            new_file = self._fs.create(self._p(f"{number:06d}.log"))
            self._fs.sync_dir(self.path)
        except OSError as e:
            if new_file is not None:
                new_file.close()
            err = IOFailure(e.errno, f"cannot start a new WAL: {e}")
            self._poison(err)
            raise err from e
        self._log.close()
        self._log = self._new_log(new_file)
        self._imms.append(self._mem)
        self._mem = new_memtable(number)
        self._publish_view()
        self._bg_cv.notify_all()

    @staticmethod
    def _new_log(file: WritableFile) -> LogWriter:
        """The writer of a new WAL file: preallocated in chunks (docs/format.md, "Preallocated WAL tail")."""
        return LogWriter(file, preallocate=WAL_PREALLOCATE)

    def _new_file_number(self) -> int:
        n = self._next_file
        self._next_file += 1
        return n
