"""``lsmmail.DB``: the engine's public face — an ordered, durable key-value store (an LSM tree).

Write path (docs/architecture.md): a writer joins a queue; the writer at its head becomes the *leader*,
takes the batches queued behind it (group commit), gives them consecutive sequence numbers, appends them
to the WAL with **one** write and at most **one** fdatasync, applies them to the memtable, and then
publishes the new last sequence number, which makes them visible to readers all at once. A full
memtable is frozen and flushed to an L0 SSTable by a background thread while writes go on into a new
memtable and WAL. A second background thread compacts.

Durability contract:

* ``sync=True``: the call returns after the WAL was fdatasync'ed. The write survives a process crash and
  power loss.
* ``sync=False`` (default, see ``Options.sync_writes``): the call returns once the operating system has
  the bytes. The write survives a process crash (kill -9), not power loss. After power loss, recovery
  yields a *prefix* of the acknowledged writes: never a later write without the earlier ones.
* If any write or fsync of the WAL, a table, the manifest or the directory fails, the database refuses
  all further writes with ``ReadOnlyError`` until it is reopened (reads go on). Retrying a failed fsync
  can report success for data the kernel already dropped, so the engine never retries one.

Thread safety: any number of threads may read and write one ``DB`` at once. One process holds the
database directory at a time (the ``LOCK`` file); a second open raises ``Locked``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from typing import Any

from sortedcontainers import SortedList

from .batch import BATCH_HEADER_SIZE, WriteBatch, decode_batch, encode_header, encode_single_put
from .blob import BlobFileReader
from .cache import BlockCache
from .errors import Corruption, DBClosed, InvalidArgument, IOFailure, Locked, LsmError, ReadOnlyError
from .keys import KIND_PUT, MAX_KEY_SIZE
from .maintenance import Maintenance
from .manifest import (
    ManifestWriter,
    VersionEdit,
    apply_edit,
    manifest_name,
    read_current,
    replay_manifest,
    set_current,
    snapshot_edit,
)
from .memtable import MemTable
from .memtable_native import NativeMemTable, new_memtable
from .options import Options
from .point_reads import PointReads
from .scan import Scans
from .sstable import TableReader
from .version import Version
from .wal import LogWriter, read_log

#: A group commit takes queued batches up to this many bytes: 1 MiB amortises the write and fsync over
#: many writers while keeping the leader's latency bounded (LevelDB uses the same limit).
MAX_GROUP_BYTES = 1 << 20


class Snapshot:
    """A consistent, read-only view of the database as of one sequence number.

    Use as a context manager (or call :meth:`release`); while it lives, compaction keeps every version
    it can see.
    """

    __slots__ = ("seq", "_db", "_released", "__weakref__")

    def __init__(self, db: DB, seq: int) -> None:
        self.seq = seq
        self._db = db
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._db._release_snapshot(self.seq)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        # A finalizer may run on a thread that holds the DB mutex, so it must not take it.
        if not self._released:
            self._released = True
            self._db._released_by_gc.append(self.seq)


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


def _check_key(key: object) -> bytes:
    if type(key) is not bytes:
        if isinstance(key, (bytearray, memoryview)):
            key = bytes(key)
        else:
            raise InvalidArgument(f"keys must be bytes, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_SIZE:
        raise InvalidArgument(f"keys must be 1 to {MAX_KEY_SIZE} bytes, got {len(key)}")
    return key


class DB(PointReads, Maintenance, Scans):
    """An LSM-tree key-value store in one directory. Open with :meth:`DB.open`."""

    # ------------------------------------------------------------------------------------------------
    # Opening and closing

    def __init__(self, path: str, options: Options) -> None:
        self.path = path
        self.options = options
        self._fs = options.fs
        self._mu = threading.Lock()
        self._write_cv = threading.Condition(self._mu)
        self._bg_cv = threading.Condition(self._mu)
        self._version_lock = threading.Lock()
        self._compaction_lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._writers: deque[_Writer] = deque()
        self._snapshots: SortedList = SortedList()
        self._released_by_gc: list[int] = []  # snapshots dropped unreleased; drained under _mu
        self._tables: dict[int, TableReader] = {}
        self._blob_readers: dict[int, BlobFileReader] = {}
        self._cache = BlockCache(options.block_cache_size) if options.block_cache_size > 0 else None
        self._live_versions: weakref.WeakSet[Version] = weakref.WeakSet()
        self._obsolete: set[str] = set()
        self._closed = False
        self._closing = False
        self._poisoned: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._compaction_pointers: dict[int, bytes] = {}
        self._lock_handle: Any = None
        self._manifest: ManifestWriter | None = None
        self._log: LogWriter | None = None
        self._stats: dict[str, int] = {
            "user_bytes_written": 0, "wal_bytes_written": 0, "flush_bytes_written": 0,
            "compaction_bytes_written": 0, "compaction_bytes_read": 0, "flushes": 0, "compactions": 0,
            "trivial_moves": 0, "stall_slowdowns": 0, "stall_stops": 0, "stall_memtable": 0,
            "group_commits": 0, "grouped_writes": 0, "wal_syncs": 0, "blob_files_deleted": 0,
        }
        self._bg_work_pending = False
        self._last_group = 1

    @classmethod
    def open(cls, path: str | os.PathLike[str], options: Options | None = None) -> DB:
        """Open (creating if missing, per ``options.create_if_missing``) the database in ``path``.

        Recovery replays the manifest and then every WAL newer than the last flush; the recovered
        memtable is flushed to L0 at once. Raises ``Locked`` if another handle holds the directory,
        ``Corruption`` if a file fails its checks, ``InvalidArgument`` for bad options.
        """
        opts = options or Options()
        opts.validate()
        db = cls(os.fspath(path), opts)
        try:
            db._open()
        except BaseException as e:
            db._abort_open()
            if isinstance(e, OSError) and not isinstance(e, LsmError):
                # Recovery's reads and writes (manifest, CURRENT, the new WAL) raise plain OSError.
                raise IOFailure(e.errno, f"cannot open database {db.path!r}: {e}") from e
            raise
        return db

    def _p(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _abort_open(self) -> None:
        self._closed = True
        for closable in (self._log, self._manifest):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    pass
        self._close_readers()
        if self._lock_handle is not None:
            self._lock_handle.release()

    def _open(self) -> None:
        fs = self._fs
        try:
            fs.makedirs(self.path)
            self._lock_handle = fs.lock(self._p("LOCK"))
        except BlockingIOError:
            raise Locked(f"database {self.path!r} is held by another process or handle") from None
        except OSError as e:
            raise IOFailure(e.errno, f"cannot open database directory: {e}") from e
        opts = self.options
        if fs.exists(self._p("CURRENT")):
            if opts.error_if_exists:
                raise InvalidArgument(f"database {self.path!r} already exists")
            rec = replay_manifest(fs, self._p(read_current(fs, self.path)), opts.num_levels)
            version, log_number = rec.version, rec.log_number
            self._next_file = rec.next_file_number
            self._last_seq = rec.last_sequence
            self._compaction_pointers = rec.compact_pointers
            self._check_files_exist(version)
        else:
            if not opts.create_if_missing:
                raise InvalidArgument(f"no database in {self.path!r} and create_if_missing is False")
            version, log_number = Version.empty(opts.num_levels), 0
            self._next_file = 1
            self._last_seq = 0
        self._current = version
        self._live_versions.add(version)
        recovered = self._replay_logs(log_number)
        edit = VersionEdit()
        if len(recovered):
            self._flush_memtable_to_edit(recovered, edit, snapshots=[])
            version = apply_edit(version, edit, opts.num_levels)
            self._install(version)
        new_log = self._new_file_number()
        manifest_number = self._new_file_number()
        self._manifest = ManifestWriter(fs, self._p(manifest_name(manifest_number)))
        self._manifest.append(snapshot_edit(version, new_log, self._next_file, self._last_seq,
                                            self._compaction_pointers))
        set_current(fs, self.path, manifest_name(manifest_number))
        self._mem = new_memtable(new_log)
        self._imms: list[MemTable] = []
        self._log = LogWriter(fs.create(self._p(f"{new_log:06d}.log")))
        fs.sync_dir(self.path)
        self._remove_unreferenced_files(keep_logs_from=new_log, manifest=manifest_name(manifest_number))
        if opts.background_work:
            loops = (("lsmmail-flush", self._flush_loop), ("lsmmail-compact", self._compact_loop))
            for name, target in loops:
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
                self._threads.append(t)
            with self._mu:
                self._bg_cv.notify_all()
        else:
            self._run_inline_work()

    def _check_files_exist(self, version: Version) -> None:
        names = set(self._fs.listdir(self.path))
        for f in version.files():
            if f"{f.number:06d}.sst" not in names:
                raise Corruption(f"manifest names {f.number:06d}.sst, which is missing")
        for b in version.blobs:
            if f"{b:06d}.blob" not in names:
                raise Corruption(f"manifest names {b:06d}.blob, which is missing")

    def _replay_logs(self, log_number: int) -> MemTable | NativeMemTable:
        mem = new_memtable(0)
        logs = sorted(int(n[:-4]) for n in self._fs.listdir(self.path)
                      if n.endswith(".log") and n[:-4].isdigit() and int(n[:-4]) >= log_number)
        if log_number and logs and logs[0] != log_number:
            # The WAL at log_number is removed only after a synced edit moves log_number past it, and a
            # newer WAL is created (and its directory synced) only while it exists. So a newer WAL
            # without it means the manifest lost an edit: a bad last record read as a torn tail, whose
            # flushed data is gone with its WAL. Reporting beats silently returning older values.
            raise Corruption(f"{log_number:06d}.log, the oldest live WAL per the manifest, is missing while "
                             f"{logs[0]:06d}.log exists: the manifest lost an edit")
        for i, number in enumerate(logs):
            name = f"{number:06d}.log"
            data = self._fs.read_file(self._p(name))
            records, good_end = read_log(data, name=name)
            if good_end < len(data) and i != len(logs) - 1:
                # An older log is synced before a newer one is started, so it cannot be torn.
                raise Corruption(f"{name}: torn record in a log that is not the newest")
            for rec in records:
                # Every log at or after ``log_number`` holds only writes no flush has persisted.
                seq, entries = decode_batch(rec)
                mem.add_batch(seq, entries, bytes(rec[BATCH_HEADER_SIZE:]))
                self._last_seq = max(self._last_seq, seq + len(entries) - 1)
            if number >= self._next_file:
                self._next_file = number + 1
        return mem

    def _remove_unreferenced_files(self, keep_logs_from: int, manifest: str) -> None:
        live = {f"{f.number:06d}.sst" for f in self._current.files()}
        live |= {f"{b:06d}.blob" for b in self._current.blobs}
        for name in self._fs.listdir(self.path):
            stem, _, ext = name.partition(".")
            drop = False
            if name.endswith(".tmp"):
                drop = True
            elif ext in ("sst", "blob") and stem.isdigit():
                drop = name not in live
            elif ext == "log" and stem.isdigit():
                drop = int(stem) < keep_logs_from
            elif name.startswith("MANIFEST-"):
                drop = name != manifest
            if drop:
                self._try_remove(self._p(name))

    def _try_remove(self, path: str) -> None:
        try:
            self._fs.remove(path)
        except OSError:
            # Harmless: an unreferenced file left behind is removed at the next open.
            pass

    def close(self) -> None:
        """Stop background work and close every file. Writes already acknowledged stay as their ``sync``
        promised; nothing needs flushing, since the WAL holds the memtable. Idempotent."""
        with self._mu:
            if self._closed:
                return
            self._closing = True
            while self._writers:
                self._write_cv.wait()
            self._bg_cv.notify_all()
        for t in self._threads:
            t.join()
        with self._compaction_lock, self._version_lock, self._mu:
            self._closed = True
            for closable in (self._log, self._manifest):
                if closable is not None:
                    try:
                        closable.close()
                    except OSError:
                        pass
            self._close_readers()
            if self._lock_handle is not None:
                self._lock_handle.release()
                self._lock_handle = None

    def _close_readers(self) -> None:
        for r in list(self._tables.values()):
            r.close()
        for b in list(self._blob_readers.values()):
            b.close()
        self._tables.clear()
        self._blob_readers.clear()

    def __enter__(self) -> DB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------
    # Writing

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
            group = [w]
            size = w.size
            need_sync = w.sync
            if len(self._writers) > 1:
                for other in list(self._writers)[1:]:
                    if (other.force_flush or (other.sync and not w.sync)
                            or size + other.size > MAX_GROUP_BYTES):
                        break
                    group.append(other)
                    size += other.size
                need_sync = any(g.sync for g in group)
            first_seq = self._last_seq + 1
            mem, log = self._mem, self._log
        assert log is not None
        err: BaseException | None = None
        seq = first_seq
        framed: bytes | bytearray = b""
        try:
            if len(group) == 1:
                # A lone writer (every single put without concurrency): its record framed directly.
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
                st["user_bytes_written"] += size
                st["wal_bytes_written"] += len(framed)
                st["group_commits"] += 1
                st["grouped_writes"] += len(group)
                self._last_group = len(group)
                if need_sync:
                    st["wal_syncs"] += 1
            else:
                self._poison(err)
            for g in group:
                self._writers.popleft()
                g.done = True
                g.error = err
                if g.signal is not None:
                    self._wake(g)
            self._wake_head()
        if err is not None:
            raise err

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
            # Sync the old log first: an older log is then never torn, so recovery can tell a torn
            # tail (only in the newest log) from lost data. Costs one fdatasync per memtable.
            self._log.sync()
            new_file = self._fs.create(self._p(f"{number:06d}.log"))
            self._fs.sync_dir(self.path)
        except OSError as e:
            if new_file is not None:
                new_file.close()
            err = IOFailure(e.errno, f"cannot start a new WAL: {e}")
            self._poison(err)
            raise err from e
        self._log.close()
        self._log = LogWriter(new_file)
        self._imms.append(self._mem)
        self._mem = new_memtable(number)
        self._bg_cv.notify_all()

    def _new_file_number(self) -> int:
        n = self._next_file
        self._next_file += 1
        return n

    # ------------------------------------------------------------------------------------------------
    # Reading

    def snapshot(self) -> Snapshot:
        """A snapshot of the current state; release it (context manager) when done."""
        with self._mu:
            if self._closed:
                raise DBClosed("the database is closed")
            s = Snapshot(self, self._last_seq)
            self._snapshots.add(s.seq)
            return s

    def _release_snapshot(self, seq: int) -> None:
        with self._mu:
            self._snapshots.discard(seq)

    def _snapshot_seqs(self) -> list[int]:
        """Sequence numbers of live snapshots, ascending. ``_mu`` is held."""
        while self._released_by_gc:
            self._snapshots.discard(self._released_by_gc.pop())
        return list(self._snapshots)
