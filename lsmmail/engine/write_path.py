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
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import native
from .batch import BATCH_HEADER_SIZE, WriteBatch, encode_header, encode_single_put
from .errors import Corruption, DBClosed, InvalidArgument, IOFailure, LsmError, ReadOnlyError
from .fs import OsFileSystem, _OsWritable
from .keys import KIND_PUT, KIND_RANGE_DEL
from .memtable import ENTRY_OVERHEAD
from .memtable_native import NativeMemTable, new_memtable
from .wal import WAL_PREALLOCATE, LogWriter

if TYPE_CHECKING:
    from .fs import FileSystem, WritableFile
    from .memtable import MemTable
    from .options import Options
    from .version import Version

#: A group commit takes queued batches up to this many bytes: 1 MiB amortises the write and fsync over
#: many writers while keeping the leader's latency bounded (LevelDB uses the same limit).
MAX_GROUP_BYTES = 1 << 20

#: Whether a DB on the real file system commits through the C queue (tests switch it off to run the
#: Python twin on the same file system).
NATIVE_COMMIT = True

#: The most writers one group takes on the C queue (its scratch array); with 1 KiB puts the byte limit
#: binds first.
_MAX_GROUP_WRITERS = 1024

#: How long a synced leader on the C queue waits for writers the last commit woke to queue behind it
#: (only while fewer than the last group are queued). See the A/B in the commit message.
GROUP_WAIT_NS = 100_000

_lib = native._lib
_from_buffer = native._ffi.from_buffer if native._ffi is not None else None
_ECORRUPT = -1
_ffi = native._ffi


class _Writer:
    __slots__ = ("entries", "rep", "sync", "size", "done", "error", "force_flush", "signal")

    def __init__(self, entries: list[tuple[int, bytes, bytes]] | None, sync: bool, size: int,
                 force_flush: bool = False, rep: bytes = b"") -> None:
        self.entries = entries
        self.rep = rep  # the batch's encoded entries (WAL payload after the header)
        self.sync = sync
        self.size = size
        self.done = False
        self.error: BaseException | None = None
        self.force_flush = force_flush
        # Held (locked) while this writer sleeps waiting for its turn or its group's commit; whoever
        # changes that releases it, so exactly one thread wakes per event instead of all queued writers.
        self.signal: Any = None


def pick_group(writers: Iterable[_Writer], max_bytes: int = MAX_GROUP_BYTES) -> int:
    """How many writers from the head of the queue ``writers`` (non-empty) form the head's group: the
    head, then each writer until one that must lead alone (a forced flush), one that wants a sync behind
    a head that does not (its durability would ride on an unsynced commit), or one that would take the
    group past ``max_bytes``. The pure twin of ``lsm_cq_group`` (native/commit.c)."""
    it = iter(writers)
    head = next(it)
    if head.force_flush:
        return 1
    n = 1
    size = head.size
    for other in it:
        if other.force_flush or (other.sync and not head.sync) or size + other.size > max_bytes:
            break
        size += other.size
        n += 1
    return n


def _setup_c_framing() -> bool:
    """Hand the xxhash package's ``XXH3_64bits`` to native/commit.c so it frames WAL records itself, and
    check one framing against :meth:`LogWriter.encode_record` (any doubt: False, Python frames)."""
    if _lib is None or not native.AVAILABLE:
        return False
    try:
        import ctypes

        import xxhash._xxhash as xxh_ext  # type: ignore[import-not-found]

        addr = ctypes.cast(ctypes.CDLL(xxh_ext.__file__).XXH3_64bits, ctypes.c_void_p).value
    except (ImportError, OSError, AttributeError):
        return False
    if not addr:
        return False
    _lib.lsm_cq_set_hash(_ffi.cast("void *", addr))
    cq = _ffi.gc(_lib.lsm_cq_new(), _lib.lsm_cq_free)
    out = _ffi.new("uint64_t[5]")
    mem = NativeMemTable(0)
    # ~78 KB from 5 bytes before a block end: padding, then FIRST, MIDDLE and LAST fragments.
    rep = b"".join(encode_single_put(b"k%03d" % i, bytes(range(256))) or b"" for i in range(300))
    want = LogWriter(_NullFile(), 32768 - 5).encode_record(encode_header(7, 300) + rep)
    try:
        fd = os.memfd_create("lsmmail-frame-check")
    except (AttributeError, OSError):
        return False
    try:
        rc = _lib.lsm_cq_commit_framed(cq, fd, 0, 32768 - 5, 0, mem._m, 7, 0, rep, len(rep), 300, out)
        got = os.pread(fd, len(want) + 1, 0)
    finally:
        os.close(fd)
    return rc == 0 and out[4] == len(want) and got == want and out[1] == 300 * (4 + 256)


class _NullFile:
    def append(self, data: object) -> None:
        pass


class _ThreadWriter:
    """A thread's C writer slot (it is in the queue at most once: a thread commits one batch at a time)
    and the leader's scratch arrays."""

    __slots__ = ("ptr", "addr", "addrs", "need_sync", "out")

    def __init__(self) -> None:
        ptr = _lib.lsm_cqw_new()
        if ptr == _ffi.NULL:
            raise MemoryError("cannot allocate a commit queue slot")
        self.ptr = _ffi.gc(ptr, _lib.lsm_cqw_free)
        self.addr = int(_ffi.cast("uintptr_t", ptr))
        self.addrs = _ffi.new("uint64_t[]", _MAX_GROUP_WRITERS)
        self.need_sync = _ffi.new("int *")
        self.out = _ffi.new("uint64_t[5]")


def _account(mem: NativeMemTable, first_seq: int, group: list[_Writer], kv_bytes: int,
             range_dels: int) -> None:
    """After ``lsm_cq_commit`` inserted ``group``'s batches into ``mem``'s skiplist: the bookkeeping
    ``NativeMemTable.add_batch`` does after its own C call (sizes, counts, range tombstones, which the
    skiplist does not hold)."""
    size = kv_bytes
    seq = first_seq
    n = 0
    for g in group:
        entries = g.entries
        assert entries is not None
        if range_dels:
            s = seq
            for kind, key, value in entries:
                if kind == KIND_RANGE_DEL:
                    mem.range_tombstones.append((s, key, value))
                    size += len(key) + len(value)
                s += 1
        seq += len(entries)
        n += len(entries)
    mem.approximate_size += size + n * ENTRY_OVERHEAD
    mem.num_entries += n
    if seq - 1 > mem.largest_seq:
        mem.largest_seq = seq - 1


class NativeWriteQueue:
    """The C group-commit queue of one DB, standing in for the Python deque of writers: ``len()`` and
    truth are the number of queued writers, plus one while a solo writer commits (``DB.close`` waits for
    it to drain)."""

    def __init__(self) -> None:
        cq = _lib.lsm_cq_new()
        if cq == _ffi.NULL:
            raise MemoryError("cannot allocate a commit queue")
        self.cq = _ffi.gc(cq, _lib.lsm_cq_free)
        # The Python writer behind each queued C slot, by slot address (set before joining).
        self.by_writer: dict[int, _Writer] = {}
        # Errors of failed groups; a follower gets -(index + 1) as its status.
        self.errors: list[BaseException] = []
        # One entry per thread inside lsm_cq_join (list append/pop are atomic under the GIL): the solo
        # lane is open only while it is empty.
        self.joined: list[None] = []
        # The commit section: held by a queue leader while it commits and by a solo writer.
        self.section = threading.Lock()
        self._local = threading.local()

    def local_writer(self) -> _ThreadWriter:
        try:
            return self._local.w  # type: ignore[no-any-return]
        except AttributeError:
            w = self._local.w = _ThreadWriter()
            return w

    def __len__(self) -> int:
        # A solo writer (holding the section outside the queue) counts too: close waits for it.
        return int(_lib.lsm_cq_len(self.cq)) + self.section.locked()


class WritePath:
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
        if NATIVE_COMMIT and _lib is not None and native.AVAILABLE and type(self._fs) is OsFileSystem:
            self._submit = self._submit_native  # type: ignore[method-assign]
            return NativeWriteQueue()
        return deque()

    def put(self, key: bytes, value: bytes, *, sync: bool | None = None) -> None:
        """Set ``key`` to ``value``. Durability: see the module docstring (``sync``)."""
        rep = encode_single_put(key, value)
        if rep is None:
            b = WriteBatch()
            b.put(key, value)
            self.write(b, sync=sync)
            return
        # The batch of one put, encoded directly (WriteBatch object, its list and copies: ~1 us).
        sync = self.options.sync_writes if sync is None else bool(sync)
        self._submit(_Writer([(KIND_PUT, key, value)], sync, BATCH_HEADER_SIZE + len(rep), rep=rep))

    def delete(self, key: bytes, *, sync: bool | None = None) -> None:
        """Remove ``key`` (no error if it is absent)."""
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
        if not batch.entries:
            return
        sync = self.options.sync_writes if sync is None else bool(sync)
        self._submit(_Writer(list(batch.entries), sync, batch.byte_size, rep=batch.encoded_entries()))

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

    def _submit_native(self, w: _Writer) -> None:
        """:meth:`_submit` on the C queue (native/commit.c): a follower sleeps in C with the GIL released
        and returns to Python once, with its group's outcome; the leader gets its group from the same
        call, frames it in Python and commits it with one C call (:meth:`_commit_native`)."""
        if self._poisoned is not None or self._closing or self._closed:
            with self._mu:
                self._check_writable()
        q = self._writers
        assert isinstance(q, NativeWriteQueue)
        cw = q.local_writer()
        if not q.joined and not w.sync and not w.force_flush and q.section.acquire(False):
            # The solo lane: no one queued, an unsynced batch; committed without the queue with one C
            # call (the queue path gives the GIL up three times per put, each a chance for a flush or
            # compaction thread to take it).
            try:
                err = self._commit_solo(cw, w)
            finally:
                q.section.release()
                if self._closing:
                    with self._mu:
                        self._write_cv.notify_all()
            if err is not None:
                raise err
            return
        q.by_writer[cw.addr] = w
        entries = w.entries
        # Like the Python twin's yield: a synced leader waits (GIL released) for the last group's size.
        wait_for = self._last_group if w.sync and self._last_group > 1 else 0
        # from_buffer: a pointer into ``w.rep`` itself, alive until the group is committed (the leader
        # reads its own batch after its join returned). A bytes argument may go through a temporary copy
        # that is freed when the call returns.
        q.joined.append(None)
        try:
            n = _lib.lsm_cq_join(q.cq, cw.ptr, _from_buffer("uint8_t[]", w.rep), len(w.rep),
                                 len(entries) if entries else 0, w.size, w.sync, w.force_flush,
                                 MAX_GROUP_BYTES, cw.addrs, _MAX_GROUP_WRITERS, cw.need_sync, wait_for,
                                 GROUP_WAIT_NS)
        finally:
            q.joined.pop()
        if n <= 0:
            if n < 0:
                raise q.errors[-n - 1]
            return
        # This thread leads a group of n (itself first); a solo writer may be finishing its commit.
        q.section.acquire()
        try:
            with self._mu:
                self._make_room_for_write(force=w.force_flush)
        except BaseException as e:
            # Only the leader fails: the rest of its group stays queued, and the next head leads.
            q.section.release()
            self._native_finish(q, 1, 0)
            if isinstance(e, OSError):
                raise IOFailure(e.errno, f"write failed: {e}") from e
            raise
        if w.force_flush:
            q.section.release()
            self._native_finish(q, 1, 0)
            return
        if n == 1:
            group = [w]
        else:
            by_writer, addrs = q.by_writer, cw.addrs
            group = [w] + [by_writer[addrs[i]] for i in range(1, n)]
        try:
            err = self._commit_native(q, cw, group, bool(cw.need_sync[0]))
        except BaseException as e:  # noqa: BLE001 - a bug or KeyboardInterrupt: fail the group, never hang it
            with self._mu:
                self._poison(e)
            err = e
        finally:
            q.section.release()
        status = 0
        if err is not None:
            q.errors.append(err)
            status = -len(q.errors)
        self._native_finish(q, n, status)
        if err is not None:
            raise err

    def _native_finish(self, q: NativeWriteQueue, n: int, status: int) -> None:
        _lib.lsm_cq_finish(q.cq, n, status)
        if self._closing:
            with self._mu:
                self._write_cv.notify_all()

    def _commit_solo(self, cw: _ThreadWriter, w: _Writer) -> BaseException | None:
        """The solo lane's commit of ``w`` (the commit section is held): make room, then
        :meth:`_commit_native` of a group of one."""
        try:
            with self._mu:
                self._make_room_for_write(force=False)
        except OSError as e:
            return IOFailure(e.errno, f"write failed: {e}")
        except LsmError as e:
            return e
        q = self._writers
        assert isinstance(q, NativeWriteQueue)
        return self._commit_native(q, cw, [w], False, solo=True)

    def _commit_native(self, q: NativeWriteQueue, cw: _ThreadWriter, group: list[_Writer], need_sync: bool,
                       solo: bool = False) -> BaseException | None:
        """:meth:`_commit` with the framing, write, fdatasync and memtable inserts in one C call
        (``lsm_cq_commit_framed``; where XXH3 could not be handed to C, framed here and then
        ``lsm_cq_commit`` for a queue leader's group or ``lsm_wal_commit_one`` for a ``solo`` writer,
        which holds the commit section outside the queue): the leader gives up the GIL once. Falls back
        to :meth:`_commit` for a pure memtable."""
        with self._mu:
            first_seq = self._last_seq + 1
            mem, log = self._mem, self._log
        assert log is not None
        if type(mem) is not NativeMemTable or not isinstance(log.file, _OsWritable):
            return self._commit(group, need_sync)
        seq = first_seq
        err: BaseException | None = None
        framed: bytes | bytearray = b""
        out = cw.out
        try:
            if _C_FRAMING:
                # Framing and checksums in C too (XXH3 from the xxhash package): nothing per record here.
                g = group[0]
                rep_bytes = len(g.rep) if len(group) == 1 else sum(len(x.rep) for x in group)
                log.reserve(_lib.lsm_cq_frame_bound(rep_bytes, len(group)))
                f = log.file
                for x in group:
                    assert x.entries is not None
                    seq += len(x.entries)
                rc = _lib.lsm_cq_commit_framed(q.cq, f.fileno(), f.size(), log.block_offset, need_sync,
                                               mem._m, first_seq, 0 if solo else len(group), g.rep,
                                               len(g.rep), seq - first_seq, out)
                log.advance(out[4])
                framed_len = out[4]
            else:
                if len(group) == 1:
                    g = group[0]
                    assert g.entries is not None
                    framed = log.encode_record(encode_header(seq, len(g.entries)) + g.rep)
                    seq += len(g.entries)
                else:
                    framed = bytearray()
                    for g in group:
                        assert g.entries is not None
                        framed += log.encode_record(encode_header(seq, len(g.entries)) + g.rep)
                        seq += len(g.entries)
                framed_len = len(framed)
                log.reserve()
                f = log.file
                if solo:
                    g = group[0]
                    rc = _lib.lsm_wal_commit_one(f.fileno(), framed, len(framed), f.size(), need_sync,
                                                 mem._m, g.rep, len(g.rep), first_seq, seq - first_seq, out)
                else:
                    buf = framed if type(framed) is bytes else _ffi.from_buffer(framed)
                    rc = _lib.lsm_cq_commit(q.cq, f.fileno(), buf, len(framed), f.size(), need_sync,
                                            mem._m, first_seq, len(group), out)
            f.advance(out[2])
            if rc < 0:
                if out[3] == 3:
                    raise Corruption("malformed write batch") if rc == _ECORRUPT else MemoryError(
                        "memtable arena cannot grow")
                log.fail()
                code = -rc
                raise OSError(code, f"{'fdatasync' if out[3] == 2 else 'write'}: {os.strerror(code)}")
            _account(mem, first_seq, group, out[1], out[0])
        except OSError as e:
            err = IOFailure(e.errno, f"WAL write failed: {e}")
            err.__cause__ = e
        except (LsmError, MemoryError) as e:
            err = e
        with self._mu:
            if err is None:
                self._last_seq = seq - 1
                st = self._stats
                st["user_bytes_written"] += sum(g.size for g in group)
                st["wal_bytes_written"] += framed_len
                st["group_commits"] += 1
                st["grouped_writes"] += len(group)
                self._last_group = len(group)
                if need_sync:
                    st["wal_syncs"] += 1
            else:
                self._poison(err)
        return err

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
            if len(group) == 1:
                # A lone writer (every single put without concurrency): its record framed directly.
                w = group[0]
                assert w.entries is not None
                framed = log.encode_record(encode_header(seq, len(w.entries)) + w.rep)
                seq += len(w.entries)
            else:
                framed = bytearray()
                for g in group:
                    assert g.entries is not None
                    framed += log.encode_record(encode_header(seq, len(g.entries)) + g.rep)
                    seq += len(g.entries)
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
                st = self._stats
                st["user_bytes_written"] += sum(g.size for g in group)
                st["wal_bytes_written"] += len(framed)
                st["group_commits"] += 1
                st["grouped_writes"] += len(group)
                self._last_group = len(group)
                if need_sync:
                    st["wal_syncs"] += 1
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
        self._bg_cv.notify_all()

    @staticmethod
    def _new_log(file: WritableFile) -> LogWriter:
        """The writer of a new WAL file: preallocated in chunks (docs/format.md, "Preallocated WAL tail")."""
        return LogWriter(file, preallocate=WAL_PREALLOCATE)

    def _new_file_number(self) -> int:
        n = self._next_file
        self._next_file += 1
        return n


#: Whether native/commit.c frames WAL records itself (checked once against the Python framing).
_C_FRAMING = _setup_c_framing()
