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
import weakref
from typing import Any

from sortedcontainers import SortedList

from .batch import BATCH_HEADER_SIZE, decode_batch
from .blob import BlobFileReader
from .cache import new_block_cache
from .errors import Corruption, DBClosed, InvalidArgument, IOFailure, Locked, LsmError
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
from .memtable_native import NativeMemTable, new_memtable, release_free_memory
from .options import Options
from .point_reads import PointReads
from .scan import Scans
from .sstable import TableReader
from .version import Version
from .wal import LogWriter, read_log
from .write_path import WritePath, _Writer  # noqa: F401 - re-exported (maintenance.flush imports it from here)


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


class DB(PointReads, WritePath, Maintenance, Scans):
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
        self._writers = self._new_write_queue()
        self._snapshots: SortedList = SortedList()
        self._released_by_gc: list[int] = []  # snapshots dropped unreleased; drained under _mu
        self._tables: dict[int, TableReader] = {}
        self._blob_readers: dict[int, BlobFileReader] = {}
        self._cache = new_block_cache(options.block_cache_size)
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
        memtable is flushed to L0 at once (one table per ``memtable_size``). Raises ``Locked`` if
        another handle holds the directory, ``Corruption`` if a file fails its checks,
        ``InvalidArgument`` for bad options.
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
        if len(recovered):
            self._flush_recovered(recovered)
        version = self._current
        new_log = self._new_file_number()
        manifest_number = self._new_file_number()
        self._manifest = ManifestWriter(fs, self._p(manifest_name(manifest_number)))
        self._manifest.append(snapshot_edit(version, new_log, self._next_file, self._last_seq,
                                            self._compaction_pointers))
        set_current(fs, self.path, manifest_name(manifest_number))
        self._mem = new_memtable(new_log)
        self._imms: list[MemTable] = []
        self._publish_view()
        self._log = self._new_log(fs.create(self._p(f"{new_log:06d}.log")))
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

    def _flush_recovered(self, mem: MemTable | NativeMemTable) -> None:
        """Write a memtable rebuilt from the WALs as one L0 table and make it current (in memory only: the
        open's new manifest names it; a crash before that leaves an unreferenced file the next open
        removes, and the WALs, still in place, are replayed again)."""
        edit = VersionEdit()
        self._flush_memtable_to_edit(mem, edit, snapshots=[])
        self._install(apply_edit(self._current, edit, self.options.num_levels))

    def _replay_logs(self, log_number: int) -> MemTable | NativeMemTable:
        """Rebuild the unflushed writes from every WAL at or after ``log_number``. Like a running DB, the
        replay flushes its memtable to L0 whenever it reaches ``memtable_size``, so reopening after many
        unflushed WALs (up to 1 + ``max_immutable_memtables`` of them) needs no more memory than writing
        them did. Returns the last, partly filled memtable."""
        mem = new_memtable(0)
        logs = sorted(int(n[:-4]) for n in self._fs.listdir(self.path)
                      if n.endswith(".log") and n[:-4].isdigit() and int(n[:-4]) >= log_number)
        if logs:
            # Tables flushed during the replay take numbers past every WAL's (as LevelDB marks them used).
            self._next_file = max(self._next_file, logs[-1] + 1)
        limit = self.options.memtable_size
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
                if mem.approximate_size >= limit:
                    self._flush_recovered(mem)
                    mem = new_memtable(0)
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
            self._release_memory()
            if self._lock_handle is not None:
                self._lock_handle.release()
                self._lock_handle = None

    def _release_memory(self) -> None:
        """A closed DB gives back its memtables and cached blocks now, not when the object is collected:
        a handle a caller keeps (a bound ``db.get``) held ~50 MiB in the engine bench. Reads of a closed
        DB raise before they look at either; a scan still open keeps the memtables it took."""
        self._mem = new_memtable(self._mem.log_number)
        self._imms = []
        self._publish_view()
        if self._cache is not None:
            self._cache.clear()
        release_free_memory()

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
