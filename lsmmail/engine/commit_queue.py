"""Group commit's queue: the writer record, the rule that cuts a group (``pick_group``, the pure twin), and
the C queue of native/commit.c with the leader's one-call commit (a mixin of the DB's write path).

On the real file system (and with the C extension) writers queue in C: a follower waits with the GIL
released (yielding the CPU for up to ``Options.group_commit_yield_us`` while that pays, then asleep on its
own condition variable) and returns to Python once, with its group's outcome; the leader
gets its group from the same call, and one more C call frames the records (XXH3 handed over from the
xxhash package), writes them with one pwrite, inserts every batch into the C memtable and fdatasyncs at
most once (synced, the inserts run while the device writes; the batches are published only after the
fdatasync returned, so no read sees them earlier). An unsynced batch with nobody queued takes the *solo
lane*: the commit section without the queue, one C call. Everything else (make room, publish the
sequence, poison on failure) is the Python write path's (:mod:`lsmmail.engine.write_path`), which also
holds the Python queue used on every other file system.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .. import native
from .batch import MAX_VALUE_SIZE, encode_batch, encode_header, encode_single_put
from .errors import Corruption, InvalidArgument, IOFailure, LsmError
from .fs import _OsWritable
from .keys import KIND_PUT, KIND_RANGE_DEL, MAX_KEY_SIZE
from .memtable import ENTRY_OVERHEAD
from .memtable_native import NativeMemTable
from .wal import LogWriter

if TYPE_CHECKING:
    from .memtable import MemTable

#: A group commit takes queued batches up to this many bytes: 1 MiB amortises the write and fsync over
#: many writers while keeping the leader's latency bounded (LevelDB uses the same limit).
MAX_GROUP_BYTES = 1 << 20

#: The most writers one group takes on the C queue (its scratch array); with 1 KiB puts the byte limit
#: binds first.
_MAX_GROUP_WRITERS = 1024

#: How long a synced head on the C queue waits for the writers the last commit woke to queue again:
#: as many as that commit's finish saw (its group plus the writers still queued then), not the last
#: group's size, which a group cut by the wait's timeout would lower for good (the writer that missed
#: it, queued by the finish, then trailed every next group by a few microseconds). See the A/B in the
#: commit message.
GROUP_WAIT_NS = 100_000

_lib = native._lib
_from_buffer = native._ffi.from_buffer if native._ffi is not None else None
_ECORRUPT = -1
_ESPACE = -2
_ffi = native._ffi


class _Writer:
    __slots__ = ("entries", "rep", "sync", "size", "done", "error", "force_flush", "signal")

    def __init__(self, entries: Sequence[tuple[int, bytes, bytes]] | None, sync: bool, size: int,
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


def frame_group(log: LogWriter, group: list[_Writer], seq: int) -> tuple[bytes | bytearray, int]:
    """The WAL records of ``group`` (one per writer, its batch header carrying the writer's first
    sequence number from ``seq`` on), framed for appending at the log's position, and the next free
    sequence number. A lone writer (every single put without concurrency) is framed without a join."""
    if len(group) == 1:
        w = group[0]
        assert w.entries is not None
        return log.encode_record(encode_header(seq, len(w.entries)) + w.rep), seq + len(w.entries)
    framed = bytearray()
    for g in group:
        assert g.entries is not None
        framed += log.encode_record(encode_header(seq, len(g.entries)) + g.rep)
        seq += len(g.entries)
    return framed, seq


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


def _raise_commit_error(rc: int, out: Any, log: LogWriter) -> None:
    """Raise what a failed C commit (``rc`` < 0, ``out[3]`` the failed step) means: a memtable error
    (malformed batch, arena cannot grow), or the ``OSError`` of the write or fdatasync, after which the
    log refuses further appends."""
    if out[3] == 3:
        raise Corruption("malformed write batch") if rc == _ECORRUPT else MemoryError(
            "memtable arena cannot grow")
    if out[3] == 0:
        # Refused before anything was written: no framing buffer, or (lsm_cq_commit_kv) a sequence
        # number past 56 bits.
        if rc == _ESPACE:
            raise MemoryError("cannot grow the WAL framing buffer")
        raise InvalidArgument("the write cannot be framed (sequence numbers past 56 bits?)")
    log.fail()
    code = -rc
    raise OSError(code, f"{'fdatasync' if out[3] == 2 else 'write'}: {os.strerror(code)}")


def frame_bound(rep_bytes: int, nrec: int) -> int:
    """``lsm_cq_frame_bound`` without a C call: an upper bound of the framed size of ``nrec`` records
    whose entries total ``rep_bytes`` (what :meth:`LogWriter.reserve` needs before the C commit)."""
    total = _BATCH_HEADER + rep_bytes
    return total + (total // (_LOG_BLOCK - 13) + 2) * 13 + nrec * (_BATCH_HEADER + 26)


_BATCH_HEADER = 12
_LOG_BLOCK = 32768
#: The most bytes a single entry's encoding adds to its key and value: kind byte and two varints.
_KV_OVERHEAD = 11
#: ``rep`` of a writer whose entry C encoded (lsm_cq_join_kv; the bytes live in its C slot): a marker,
#: compared by identity (not empty bytes, which are one shared object).
_KV_REP = b"<entry encoded in the C slot>"
#: Smallest own buffer of a C slot (a put of a 1 KiB value and its key fits).
_MIN_KV_CAP = 4096
#: lsm_cq_join_kv's refusal before queueing (LSM_CQ_NOT_QUEUED in native/commit.h).
_NOT_QUEUED = -(1 << 62)


def _varint_len(n: int) -> int:
    return 1 if n < 0x80 else 2 if n < 0x4000 else (n.bit_length() + 6) // 7


class _ThreadWriter:
    """A thread's C writer slot (it is in the queue at most once: a thread commits one batch at a time)
    and the leader's scratch arrays."""

    __slots__ = ("ptr", "addr", "addrs", "need_sync", "out", "totals", "cap", "kv")

    def __init__(self, cq: Any) -> None:
        ptr = _lib.lsm_cqw_new_for(cq)
        if ptr == _ffi.NULL:
            raise MemoryError("cannot allocate a commit queue slot")
        # Freed through the queue: a finish may still be signalling the slot after its thread returned.
        # The slot holds a C reference to the queue, so the order in which the garbage collector
        # finalizes the two does not matter.
        self.ptr = _ffi.gc(ptr, lambda p: _lib.lsm_cq_drop_writer(cq, p))
        self.addr = int(_ffi.cast("uintptr_t", ptr))
        self.addrs = _ffi.new("uint64_t[]", _MAX_GROUP_WRITERS)
        self.need_sync = _ffi.new("int *")
        self.out = _ffi.new("uint64_t[5]")
        self.totals = _ffi.new("uint64_t[2]")  # lsm_cq_group_totals': the group's size and entries
        self.cap = 0  # bytes lsm_cq_join_kv may encode into the slot (lsm_cqw_reserve)
        # The record of this thread's synced single puts (:meth:`NativeCommit._submit_kv`), reused: a
        # thread has one write in flight, and a leader is done with its group's records at its finish.
        self.kv = _Writer(None, True, 0, rep=_KV_REP)


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

    def __init__(self, yield_us: int = 0) -> None:
        cq = _lib.lsm_cq_new()
        if cq == _ffi.NULL:
            raise MemoryError("cannot allocate a commit queue")
        self.cq = _ffi.gc(cq, _lib.lsm_cq_free)
        _lib.lsm_cq_set_yield(self.cq, yield_us * 1000)
        self.kv_out = _ffi.new("uint64_t[6]")  # lsm_cq_commit_kv's, used under the commit section
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
            w = self._local.w = _ThreadWriter(self.cq)
            return w

    def __len__(self) -> int:
        # A solo writer (holding the section outside the queue) counts too: close waits for it.
        return int(_lib.lsm_cq_len(self.cq)) + self.section.locked()


class NativeCommit:
    """The C-queue half of :class:`~lsmmail.engine.write_path.WritePath` (a mixin of ``DB``)."""

    if TYPE_CHECKING:
        _mu: threading.Lock
        _write_cv: threading.Condition
        _writers: Any
        _closing: bool
        _closed: bool
        _poisoned: BaseException | None
        _stats: dict[str, int]
        _mem: MemTable
        _log: LogWriter | None
        _last_seq: int
        _last_group: int

        def _check_writable(self) -> None: ...
        def _poison(self, exc: BaseException) -> None: ...
        def _make_room_for_write(self, force: bool) -> None: ...
        def _commit(self, group: list[_Writer], need_sync: bool) -> BaseException | None: ...

    def _count_group(self, size: int, n: int, framed_len: int, synced: bool) -> None:
        """Statistics of one committed group of ``n`` batches of ``size`` bytes in all (caller holds
        ``_mu``); both queues count the same way."""
        st = self._stats
        st["user_bytes_written"] += size
        st["wal_bytes_written"] += framed_len
        st["group_commits"] += 1
        st["grouped_writes"] += n
        self._last_group = n
        if synced:
            st["wal_syncs"] += 1

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
        # Like the Python twin's yield: a synced head waits (GIL released) for as many writers as the
        # last group's finish saw (wait_for -1).
        wait_for = -1 if w.sync else 0
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
        self._lead_native(q, cw, w, n)

    def _submit_kv(self, kind: int, key: bytes, value: bytes) -> None:
        """A synced single put or delete (``key`` and ``value`` checked ``bytes`` of allowed sizes) on the
        C queue, its entry encoded by ``lsm_cq_join_kv`` into the thread's C slot: no batch, no encoding
        and no writer record built in Python for it (the thread's reused record goes to the leader)."""
        if self._poisoned is not None or self._closing or self._closed:
            with self._mu:
                self._check_writable()
        q: NativeWriteQueue = self._writers  # type: ignore[assignment]
        try:
            cw = q._local.w
        except AttributeError:
            cw = q.local_writer()
        kn = len(key)
        if kind == KIND_PUT:
            vn = len(value)
            # The entry's encoded length: kind byte, varint lengths (1 byte below 128, 2 below 16384).
            size = (_BATCH_HEADER + 3 + kn + vn if kn < 0x80 and vn < 0x80 else
                    _BATCH_HEADER + 1 + _varint_len(kn) + kn + _varint_len(vn) + vn)
        else:
            vn = 0
            size = _BATCH_HEADER + 1 + _varint_len(kn) + kn
        if size + 10 > cw.cap:  # lsm_cq_join_kv wants 21 + kn + vn bytes (<= size + 10)
            cap = max(size + 10, _MIN_KV_CAP)
            if _lib.lsm_cqw_reserve(cw.ptr, cap) != 0:
                raise MemoryError("cannot grow a commit queue slot")
            cw.cap = cap
        w = cw.kv
        w.entries = [(kind, key, value)]
        w.rep = _KV_REP
        w.size = size
        q.by_writer[cw.addr] = w
        q.joined.append(None)
        try:
            n = _lib.lsm_cq_join_kv(q.cq, cw.ptr, kind, key, kn, value, vn, 1, MAX_GROUP_BYTES, cw.addrs,
                                    _MAX_GROUP_WRITERS, cw.need_sync, -1, GROUP_WAIT_NS)
        finally:
            q.joined.pop()
        if n <= 0:
            if n < 0:
                if n == _NOT_QUEUED:
                    raise InvalidArgument(f"lsm_cq_join_kv refused kind {kind}")
                raise q.errors[-n - 1]
            return
        self._lead_native(q, cw, w, n)

    def _lead_native(self, q: NativeWriteQueue, cw: _ThreadWriter, w: _Writer, n: int) -> None:
        """This thread's join returned a group of ``n`` to lead (``w`` is its own writer): make room,
        commit the group, finish it (waking its followers); raise the group's error, if any."""
        # This thread leads a group of n (the queue's first n writers, itself among them: the head, or
        # the writer whose push completed the group the head waited for); a solo writer may be finishing
        # its commit.
        q.section.acquire()
        try:
            with self._mu:
                self._make_room_for_write(force=w.force_flush)
        except BaseException as e:
            # Only the leader fails: the rest of its group stays queued, and the head leads.
            q.section.release()
            self._native_abandon(q, cw)
            if isinstance(e, OSError):
                raise IOFailure(e.errno, f"write failed: {e}") from e
            raise
        if w.force_flush:
            q.section.release()
            self._native_abandon(q, cw)
            return
        try:
            # A group of several: its records are looked up only if the commit needs them (not on the
            # C path without range deletions; see _commit_native).
            err = self._commit_native(q, cw, [w] if n == 1 else None, bool(cw.need_sync[0]), n=n)
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

    def _commit_kv(self, kind: int, key: object, value: object) -> bool:
        """An unsynced single put or delete in one C call (``lsm_cq_commit_kv``: encode, frame, write,
        insert) when the solo lane is free and nothing needs doing first; False, having done nothing,
        when the caller must take the general path (arguments the fast checks do not pass, writers
        queued, the memtable full, level 0 at the slowdown trigger, the DB poisoned or closing).
        Raises the commit's error (and poisons the DB) like the general path."""
        if (type(key) is not bytes or type(value) is not bytes or not 0 < len(key) <= MAX_KEY_SIZE
                or len(value) > MAX_VALUE_SIZE):
            return False
        q = self._writers
        if q.joined or self._poisoned is not None or self._closing or self._closed:
            return False
        section = q.section
        if not section.acquire(False):
            return False
        try:
            mem = self._mem
            opts = self.options
            # _make_room_for_write's checks: with room and no slowdown it does nothing.
            if (mem.approximate_size >= opts.memtable_size or type(mem) is not NativeMemTable
                    or len(self._current.levels[0]) >= opts.l0_slowdown_trigger):
                return False
            log = self._log
            assert log is not None
            # Only the holder of the commit section moves _last_seq, so it is read without _mu.
            seq = self._last_seq + 1
            f = log.file
            out = q.kv_out
            try:
                log.reserve(frame_bound(len(key) + len(value) + _KV_OVERHEAD, 1))
                rc = _lib.lsm_cq_commit_kv(q.cq, f.fileno(), f.size(), log.block_offset, 0, mem._m, seq, kind,
                                           key, len(key), value, len(value), out)
                log.advance(out[4])
                f.advance(out[2])
                if rc < 0:
                    _raise_commit_error(rc, out, log)
                mem.approximate_size += out[1] + ENTRY_OVERHEAD
                mem.num_entries += 1
                if seq > mem.largest_seq:
                    mem.largest_seq = seq
                with self._mu:
                    self._last_seq = seq
                    st = self._stats
                    st["user_bytes_written"] += _BATCH_HEADER + out[5]
                    st["wal_bytes_written"] += out[4]
                    st["group_commits"] += 1
                    st["grouped_writes"] += 1
                    self._last_group = 1
            except OSError as e:
                err = IOFailure(e.errno, f"WAL write failed: {e}")
                with self._mu:
                    self._poison(err)
                raise err from e
            except BaseException as e:
                # Also a KeyboardInterrupt between the commit and the publication: the entry may be in
                # the log and memtable under an unpublished sequence number, so no write may follow.
                with self._mu:
                    self._poison(e)
                raise
            return True
        finally:
            section.release()
            if self._closing:
                with self._mu:
                    self._write_cv.notify_all()

    def _native_abandon(self, q: NativeWriteQueue, cw: _ThreadWriter) -> None:
        _lib.lsm_cq_abandon(q.cq, cw.ptr)
        if self._closing:
            with self._mu:
                self._write_cv.notify_all()

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

    def _commit_native(self, q: NativeWriteQueue, cw: _ThreadWriter, group: list[_Writer] | None,
                       need_sync: bool, solo: bool = False, n: int = 1) -> BaseException | None:
        """:meth:`_commit` with the framing, write, fdatasync and memtable inserts in one C call
        (``lsm_cq_commit_framed``; where XXH3 could not be handed to C, framed here and then
        ``lsm_cq_commit`` for a queue leader's group or ``lsm_wal_commit_one`` for a ``solo`` writer,
        which holds the commit section outside the queue): the leader gives up the GIL once. Falls back
        to :meth:`_commit` for a pure memtable. ``group`` None: the queue's first ``n`` writers, whose
        Python records are looked up only when needed (a fallback, range deletions): the C queue sums
        their sizes and entries, so the leader, whom the group's followers wait for, runs no Python loop
        over them (8 synced threads: 39.4k -> 40.8k puts/s, medians of 5 interleaved pairs)."""
        with self._mu:
            first_seq = self._last_seq + 1
            mem, log = self._mem, self._log
        assert log is not None
        if group is None:
            tot = cw.totals
            _lib.lsm_cq_group_totals(q.cq, n, tot)
            size, count = tot[0], tot[1]
        else:
            n = len(group)
            g = group[0]
            size = g.size if n == 1 else sum(x.size for x in group)
            count = len(g.entries or ()) if n == 1 else sum(len(x.entries or ()) for x in group)
        if type(mem) is not NativeMemTable or not isinstance(log.file, _OsWritable) or not _C_FRAMING:
            if group is None:
                group = self._group_records(q, cw, n)
            for x in group:
                if x.rep is _KV_REP:
                    x.rep = encode_batch(0, x.entries or [])[_BATCH_HEADER:]
            if type(mem) is not NativeMemTable or not isinstance(log.file, _OsWritable):
                return self._commit(group, need_sync)
        seq = first_seq
        err: BaseException | None = None
        framed: bytes | bytearray = b""
        out = cw.out
        try:
            if _C_FRAMING:
                # Framing and checksums in C too (XXH3 from the xxhash package): nothing per record here.
                log.reserve(frame_bound(size - _BATCH_HEADER * n, n))
                f = log.file
                seq += count
                rep = group[0].rep if solo and group is not None else b""  # solo: the batch, not the queue
                rc = _lib.lsm_cq_commit_framed(q.cq, f.fileno(), f.size(), log.block_offset, need_sync,
                                               mem._m, first_seq, 0 if solo else n, rep, len(rep), count, out)
                log.advance(out[4])
                framed_len = out[4]
            else:
                assert group is not None
                framed, seq = frame_group(log, group, seq)
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
            f.advance(out[2], need_sync and rc >= 0)
            if rc < 0:
                _raise_commit_error(rc, out, log)
            if out[0]:  # range deletions: the memtable keeps them beside its skiplist, from the records
                _account(mem, first_seq, group or self._group_records(q, cw, n), out[1], out[0])
            else:  # what _account does without them
                mem.approximate_size += out[1] + count * ENTRY_OVERHEAD
                mem.num_entries += count
                if seq - 1 > mem.largest_seq:
                    mem.largest_seq = seq - 1
        except OSError as e:
            err = IOFailure(e.errno, f"WAL write failed: {e}")
            err.__cause__ = e
        except (LsmError, MemoryError) as e:
            err = e
        with self._mu:
            if err is None:
                self._last_seq = seq - 1
                self._count_group(size, n, framed_len, need_sync)
            else:
                self._poison(err)
        return err

    @staticmethod
    def _group_records(q: NativeWriteQueue, cw: _ThreadWriter, n: int) -> list[_Writer]:
        """The Python records of the queue's first ``n`` writers (the group ``lsm_cq_join`` gave ``cw``'s
        thread to lead; valid until its finish)."""
        by_writer, addrs = q.by_writer, cw.addrs
        return [by_writer[addrs[i]] for i in range(n)]


#: Whether native/commit.c frames WAL records itself (checked once against the Python framing).
C_FRAMING = _C_FRAMING = _setup_c_framing()
