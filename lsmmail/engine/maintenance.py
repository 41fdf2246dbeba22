"""The DB's background work and maintenance calls: flush, compaction, version installation, obsolete
file deletion, and the public ``flush``, ``compact_range``, ``checkpoint``, ``verify`` and ``stats``.

This is a mixin of :class:`lsmmail.engine.db.DB`, split out to keep each file about one concern; it uses
the DB's state directly. It picks compactions and installs their results; running a picked compaction
(the block path and the per-entry path) is in :mod:`lsmmail.engine.compaction_run`. Locks, always taken
in this order: ``_compaction_lock`` (one compaction at a time), ``_version_lock`` (one manifest append at
a time), ``_mu`` (the DB's state; never held across I/O except the rare WAL switch).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import native
from .blob import BlobFileReader
from .compact_native import can_frame_spill, flush_spilling_native
from .compaction import (
    Compaction,
    OutputSink,
    applied_tombstone_seq,
    drop_hidden,
    pick_compaction,
    setup_compaction,
)
from .compaction_run import CompactionRunner
from .errors import Corruption, DBClosed, InvalidArgument, IOFailure, LsmError
from .manifest import (
    ManifestWriter,
    VersionEdit,
    apply_edit,
    manifest_name,
    replay_manifest,
    set_current,
    snapshot_edit,
)
from .memtable import MemTable
from .memtable_native import NativeMemTable
from .sstable import TableReader
from .version import Version
from .wal import read_log

if TYPE_CHECKING:
    from sortedcontainers import SortedList

    from .cache import BlockCache
    from .fs import FileSystem
    from .options import Options
    from .version import FileMeta


class Maintenance(CompactionRunner):
    # State owned by DB (declared for type checkers).
    if TYPE_CHECKING:
        path: str
        options: Options
        _fs: FileSystem
        _mu: threading.Lock
        _bg_cv: threading.Condition
        _write_cv: threading.Condition
        _version_lock: threading.Lock
        _compaction_lock: threading.Lock
        _table_lock: threading.Lock
        _writers: deque[Any]
        _snapshots: SortedList
        _tables: dict[int, TableReader]
        _blob_readers: dict[int, BlobFileReader]
        _cache: BlockCache | None
        _live_versions: weakref.WeakSet[Version]
        _obsolete: set[str]
        _closed: bool
        _closing: bool
        _poisoned: BaseException | None
        _compaction_pointers: dict[int, bytes]
        _manifest: ManifestWriter | None
        _stats: dict[str, int]
        _current: Version
        _mem: MemTable
        _imms: list[MemTable]
        _last_seq: int
        _next_file: int

        def _p(self, name: str) -> str: ...
        def _new_file_number(self) -> int: ...
        def _read_blob(self, ref: bytes) -> bytes: ...
        def _table(self, f: FileMeta) -> TableReader: ...
        def _blob_reader(self, number: int) -> BlobFileReader: ...
        def _poison(self, exc: BaseException) -> None: ...
        def _try_remove(self, path: str) -> None: ...
        def _snapshot_seqs(self) -> list[int]: ...
        def _submit(self, w: Any) -> None: ...
        def _level_entries(self, files: list[FileMeta], start: bytes | None, end: bytes | None,
                           reverse: bool) -> Any: ...

    # ------------------------------------------------------------------------------------------------
    # Installing versions

    def _alloc_file_number(self) -> int:
        with self._mu:
            return self._new_file_number()

    def _install(self, new: Version) -> None:
        """Make ``new`` current. Files the old version had and the new one lacks become candidates for
        deletion, deleted once no live version (a reader's pinned one) holds them. ``_mu`` is held (or the
        DB is still opening)."""
        old = self._current
        self._current = new
        self._publish_view()
        self._live_versions.add(new)
        kept = {f.number for f in new.files()}
        for f in old.files():
            if f.number not in kept:
                self._obsolete.add(f"{f.number:06d}.sst")
        for b in old.blobs:
            if b not in new.blobs:
                self._obsolete.add(f"{b:06d}.blob")

    def _log_and_apply(self, edit: VersionEdit, on_install: Any = None) -> None:
        """Record ``edit`` in the manifest (fsynced) and make the resulting version current."""
        with self._version_lock:
            with self._mu:
                if self._closed:
                    raise DBClosed("the database is closed")
                base = self._current
                snapshots = self._snapshot_seqs()
                if edit.last_sequence is None:
                    edit.last_sequence = self._last_seq
            opts = self.options
            new = apply_edit(base, edit, opts.num_levels)
            refs = new.referenced_blobs()
            dead_blobs = [b for b in new.blobs if b not in refs]
            dead_tombs = self._droppable_tombstones(new, snapshots)
            if dead_blobs or dead_tombs:
                edit.deleted_blobs += dead_blobs
                edit.dropped_range_dels += dead_tombs
                new = apply_edit(base, edit, opts.num_levels)
            with self._mu:
                edit.next_file_number = self._next_file
            assert self._manifest is not None
            try:
                self._manifest.append(edit)
                if self._manifest.size > opts.max_manifest_size:
                    self._rotate_manifest(new)
            except OSError as e:
                err = IOFailure(e.errno, f"manifest write failed: {e}")
                with self._mu:
                    self._poison(err)
                    self._bg_cv.notify_all()
                raise err from e
            with self._mu:
                if on_install is not None:
                    on_install()
                self._install(new)
                self._bg_cv.notify_all()
        # Drop this frame's hold on the old version first: while ``base`` lived, the files it alone
        # referenced counted as live and stayed on disk until some later call (or the next open).
        del base, new
        self._delete_obsolete_files()

    @staticmethod
    def _droppable_tombstones(v: Version, snapshots: list[int]) -> list[tuple[int, bytes]]:
        """Range tombstones with nothing left beneath them: every table in their range already applied
        them (or is wholly newer), and no snapshot could see what they hid."""
        out = []
        for seq, start, end in v.range_tombstones:
            if snapshots and seq > snapshots[0]:
                continue
            clear = True
            for level in range(len(v.levels)):
                for f in v.files_in_range(level, start, end):
                    if f.tombstones_applied_seq < seq and f.smallest_seq < seq:
                        clear = False
                        break
                if not clear:
                    break
            if clear:
                out.append((seq, start))
        return out

    def _rotate_manifest(self, version: Version) -> None:
        """Start a new manifest holding one snapshot edit (called with ``_version_lock`` held)."""
        with self._mu:
            number = self._new_file_number()
            log_number = self._imms[0].log_number if self._imms else self._mem.log_number
            next_file, last_seq = self._next_file, self._last_seq
        writer = ManifestWriter(self._fs, self._p(manifest_name(number)))
        try:
            writer.append(snapshot_edit(version, log_number, next_file, last_seq, self._compaction_pointers))
            set_current(self._fs, self.path, manifest_name(number))
        except BaseException:
            writer.close()  # the old manifest stays CURRENT and already holds the edit
            raise
        old = self._manifest
        self._manifest = writer
        if old is not None:
            old.close()
            self._try_remove(old.path)

    def _delete_obsolete_files(self) -> None:
        with self._mu:
            if not self._obsolete:
                return
            live: set[str] = set()
            for v in list(self._live_versions):
                live.update(f"{f.number:06d}.sst" for f in v.files())
                live.update(f"{b:06d}.blob" for b in v.blobs)
            doomed = [n for n in self._obsolete if n not in live]
            self._obsolete.difference_update(doomed)
        for name in doomed:
            number = int(name.split(".")[0])
            with self._table_lock:
                reader: Any = (self._tables.pop(number, None) if name.endswith(".sst")
                               else self._blob_readers.pop(number, None))
            if reader is not None:
                reader.close()
            if name.endswith(".sst") and self._cache is not None:
                # File numbers are never reused, so stale blocks could not be returned; dropping them now
                # gives their room (up to a whole table's worth of the cache) back to live tables at once.
                self._cache.erase_table(number)
            if name.endswith(".blob"):
                self._stats["blob_files_deleted"] += 1
            self._try_remove(self._p(name))

    # ------------------------------------------------------------------------------------------------
    # Flush

    def _flush_memtable_to_edit(self, mem: MemTable | NativeMemTable, edit: VersionEdit,
                                snapshots: list[int]) -> None:
        """Write ``mem`` as one L0 table (plus a blob file for large values) and describe it in ``edit``."""
        version = self._current
        tombs = list(version.range_tombstones) + list(mem.range_tombstones)
        sink = OutputSink(self._fs, self.path, self.options, self._alloc_file_number, self._read_blob,
                          max_file_size=float("inf"),
                          tombstones_applied_seq=applied_tombstone_seq(tombs, snapshots))
        try:
            min_blob = self.options.min_blob_size
            if (not snapshots and not tombs and isinstance(mem, NativeMemTable)
                    and (min_blob is None or mem.max_value_size() < min_blob)):
                # Data blocks encoded and cut in C straight from the skiplist (TableBuilder.add per
                # entry was about half of a flush's CPU with 1 KiB values): byte-identical tables.
                sink.add_block_runs(mem.flush_blocks(self.options.block_size,
                                                     self.options.block_restart_interval))
            elif (not snapshots and not tombs and isinstance(mem, NativeMemTable) and native.AVAILABLE
                  and min_blob is not None):
                # Some values go to the blob file (mail bodies): the compaction kernel cuts the blocks and
                # spills those values, fed straight from the skiplist; the same bytes as add_run below,
                # whose per-entry Python was ~70 us of GIL per imported mail message.
                sink.reserve_table_number()
                number = sink.reserve_blob_number()
                framed = can_frame_spill()
                sink.add_compacted(flush_spilling_native(mem, self.options.block_size,
                                                         self.options.block_restart_interval, number,
                                                         min_blob, framed), framed)
            elif not snapshots and not tombs:
                # Nothing can see an older version: take each key's newest, as internal keys, in runs
                # (drop_hidden and OutputSink.add per entry were ~15% of a flush's Python).
                for ikeys, values in mem.flush_runs():
                    sink.add_run(ikeys, values)
            else:
                for e in drop_hidden(mem.entries(), snapshots, False, tombs, lambda e: None):
                    sink.add(e)
            out = sink.finish()
        except BaseException:
            for path in sink.abandon():
                self._try_remove(path)
            raise
        edit.new_files += [(0, f) for f in out.files]
        edit.new_blobs += out.blobs
        edit.added_range_dels += list(mem.range_tombstones)
        self._stats["flush_bytes_written"] += out.bytes_written
        self._stats["flushes"] += 1

    def _flush_one(self, imm: MemTable) -> None:
        with self._mu:
            snapshots = self._snapshot_seqs()
        edit = VersionEdit()
        self._flush_memtable_to_edit(imm, edit, snapshots)
        with self._mu:
            i = self._imms.index(imm)
            later = self._imms[i + 1 :]
            edit.log_number = later[0].log_number if later else self._mem.log_number

        def on_install() -> None:
            self._imms.remove(imm)

        self._log_and_apply(edit, on_install)
        self._try_remove(self._p(f"{imm.log_number:06d}.log"))

    def _flush_loop(self) -> None:
        while True:
            with self._mu:
                while not self._imms and not self._closing:
                    self._bg_cv.wait()
                if self._closing or self._poisoned is not None:
                    return
                imm = self._imms[0]
            try:
                self._flush_one(imm)
            except BaseException as e:  # noqa: BLE001 - any failure stops writes, never silently
                with self._mu:
                    self._poison(e)
                    self._bg_cv.notify_all()
                return

    # ------------------------------------------------------------------------------------------------
    # Compaction

    def _compact_loop(self) -> None:
        while True:
            with self._mu:
                if self._closing or self._poisoned is not None:
                    return
                c = pick_compaction(self._current, self.options, self._compaction_pointers)
                if c is None:
                    self._bg_cv.wait(timeout=1.0)
            if c is None:
                self._delete_obsolete_files()
                continue
            try:
                with self._compaction_lock:
                    with self._mu:
                        if self._closing:
                            return
                        c = pick_compaction(self._current, self.options, self._compaction_pointers)
                    if c is not None:
                        self._run_compaction(c)
            except BaseException as e:  # noqa: BLE001
                with self._mu:
                    self._poison(e)
                    self._bg_cv.notify_all()
                return

    def _maintenance_error(self, e: BaseException) -> BaseException:
        """Poison the database after a failed flush or compaction, as the background threads do, and
        return the error for the caller to raise: a plain ``OSError`` (the table and blob readers and
        writers let those through) becomes ``IOFailure``."""
        with self._mu:
            self._poison(e)
            self._bg_cv.notify_all()
        if isinstance(e, OSError) and not isinstance(e, LsmError):
            err = IOFailure(e.errno, f"flush or compaction failed: {e}")
            err.__cause__ = e
            return err
        return e

    def _run_inline_work(self) -> None:
        """Flush every frozen memtable, then compact until the tree is in shape (no background threads).
        A failure poisons the database (like a failure on the background threads)."""
        try:
            self._run_inline_work_unguarded()
        except Exception as e:
            raise self._maintenance_error(e)  # noqa: B904 - the cause is set on the error

    def _run_inline_work_unguarded(self) -> None:
        while True:
            with self._mu:
                imm = self._imms[0] if self._imms else None
            if imm is None:
                break
            self._flush_one(imm)
        with self._compaction_lock:
            while True:
                with self._mu:
                    c = pick_compaction(self._current, self.options, self._compaction_pointers)
                if c is None:
                    break
                self._run_compaction(c)

    def _run_compaction(self, c: Compaction) -> None:
        """Run ``c`` and install its result. Caller holds ``_compaction_lock``."""
        edit = VersionEdit()
        edit.deleted_files = [(c.level, f.number) for f in c.inputs[0]]
        edit.deleted_files += [(c.output_level, f.number) for f in c.inputs[1]]
        if c.inputs[0] and c.level > 0:
            largest = max(c.inputs[0], key=lambda f: f.largest_user).largest
            edit.compact_pointers.append((c.level, largest))
            self._compaction_pointers[c.level] = c.inputs[0][-1].largest_user
        if c.trivial_move:
            edit.new_files = [(c.output_level, c.inputs[0][0])]
            self._log_and_apply(edit)
            self._stats["trivial_moves"] += 1
            return
        with self._mu:
            snapshots = self._snapshot_seqs()
            tombs = list(self._current.range_tombstones)
        out = self._compact_blocks(c, snapshots, tombs)
        edit.new_files = [(c.output_level, f) for f in out.files]
        edit.new_blobs = out.blobs
        edit.blob_garbage = [(n, g[0], g[1]) for n, g in sorted(out.garbage.items())]
        # No cleanup of the outputs if this fails: a failed manifest append may still have reached the
        # file (a failed fsync says nothing about what was written), so the edit naming them may be
        # replayed at the next open. Unreferenced outputs are removed by that open instead.
        self._log_and_apply(edit)
        self._stats["compactions"] += 1
        self._stats["compaction_bytes_written"] += out.bytes_written
        self._stats["compaction_bytes_read"] += sum(f.file_size for f in c.all_inputs())

    # ------------------------------------------------------------------------------------------------
    # Public maintenance calls

    def flush(self) -> None:
        """Persist the memtable to an SSTable now and wait until every frozen memtable is flushed."""
        from .db import _Writer

        self._submit(_Writer(None, False, 0, force_flush=True))
        if not self.options.background_work:
            self._run_inline_work()
            return
        with self._mu:
            while self._imms and self._poisoned is None and not self._closed:
                self._bg_cv.wait(timeout=1.0)
            if self._poisoned is not None:
                raise IOFailure(0, f"flush failed: {self._poisoned}") from self._poisoned

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until background work has caught up: no frozen memtable waits for its flush, no level
        needs a compaction, none is running. The active memtable is not flushed (see :meth:`flush`).

        For steady-state measurements and tests; writers may keep writing meanwhile (then it returns at
        the first idle moment). Returns False if ``timeout`` seconds pass first; raises ``IOFailure`` if
        background work failed (the database is then read-only, as after any such failure)."""
        if not self.options.background_work:
            self._run_inline_work()
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._mu:
            while True:
                if self._poisoned is not None:
                    raise IOFailure(0, f"background work failed: {self._poisoned}") from self._poisoned
                if self._closed:
                    return True
                pending = pick_compaction(self._current, self.options, self._compaction_pointers)
                busy = bool(self._imms) or self._compaction_lock.locked() or pending is not None
                if not busy:
                    return True
                wait = 0.05  # install() notifies; the poll also covers a compaction ending without one
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                self._bg_cv.wait(timeout=wait)

    def compact_range(self, start: bytes | None = None, end: bytes | None = None) -> None:
        """Compact every key in ``[start, end)`` (None = unbounded) down to the last level, dropping
        overwritten versions, tombstones and blob garbage that no snapshot needs. Blocks until done."""
        self.flush()
        try:
            self._compact_range_unguarded(start, end)
        except Exception as e:
            raise self._maintenance_error(e)  # noqa: B904 - the cause is set on the error
        # The version the compactions started from was still referenced (a local there) when they
        # installed their results, which kept its files alive; it is gone now, so delete them.
        self._delete_obsolete_files()

    def _compact_range_unguarded(self, start: bytes | None, end: bytes | None) -> None:
        with self._compaction_lock:
            with self._mu:
                target = max(self._current.deepest_nonempty_level(), 1)
            for level in range(0, target):
                with self._mu:
                    v = self._current
                files = v.files_in_range(level, start, end)
                if files:
                    c = setup_compaction(v, level, files, "manual")
                    c.trivial_move = False
                    self._run_compaction(c)
            with self._mu:
                v = self._current
            files = v.files_in_range(target, start, end)
            if files:
                relocate = frozenset(b.number for b in v.blobs.values() if b.garbage_bytes > 0)
                c = setup_compaction(v, target, files, "manual", output_level=target, relocate=relocate)
                self._run_compaction(c)

    def checkpoint(self, dest: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the database into the new directory ``dest``, openable as a DB.

        The copy holds every write acknowledged before the call (the memtable is flushed first); table
        and blob files are hard-linked when the file system allows, else copied. ``dest`` must not exist
        or be empty.
        """
        dest = os.fspath(dest)
        fs = self._fs
        if fs.exists(dest) and fs.listdir(dest):
            raise InvalidArgument(f"checkpoint destination {dest!r} is not empty")
        self.flush()
        with self._version_lock:
            with self._mu:
                v = self._current
                last_seq = self._last_seq
                next_file = self._next_file
            fs.makedirs(dest)
            names = [f"{f.number:06d}.sst" for f in v.files()] + [f"{b:06d}.blob" for b in v.blobs]
            try:
                for name in names:
                    src, dst = self._p(name), os.path.join(dest, name)
                    try:
                        fs.link(src, dst)
                    except OSError:
                        out = fs.create(dst)
                        try:
                            out.append(fs.read_file(src))
                            out.sync()
                        finally:
                            out.close()
                manifest = manifest_name(next_file)
                w = ManifestWriter(fs, os.path.join(dest, manifest))
                pointers = dict(self._compaction_pointers)
                w.append(snapshot_edit(v, next_file + 1, next_file + 2, last_seq, pointers))
                w.close()
                set_current(fs, dest, manifest)
            except OSError as e:
                raise IOFailure(e.errno, f"checkpoint failed: {e}") from e

    def verify(self) -> None:
        """Read every live file and check every checksum; raise ``Corruption`` naming the first bad one."""
        with self._mu:
            if self._closed:
                raise DBClosed("the database is closed")
            v = self._current
            assert self._manifest is not None
            manifest_path = self._manifest.path
        try:
            self._verify_files(v, manifest_path)
        except LsmError:
            raise
        except OSError as e:
            raise IOFailure(e.errno, f"verify failed: {e}") from e

    def _verify_files(self, v: Version, manifest_path: str) -> None:
        # Fresh readers, not the cached ones: those decoded footer, index, filter and properties when
        # first opened and would never read those bytes again.
        for f in v.files():
            t = TableReader.open(self._fs.open_read(self._p(f"{f.number:06d}.sst")), f.number, cache=None,
                                 verify_checksums=True)
            try:
                t.verify()
                if t.properties.num_entries != f.num_entries:
                    raise Corruption(f"{f.number:06d}.sst: manifest says {f.num_entries} entries, "
                                     f"table has {t.properties.num_entries}")
            finally:
                t.close()
        for b in v.blobs:
            r = BlobFileReader.open(self._fs.open_read(self._p(f"{b:06d}.blob")), b)
            try:
                r.verify()
            finally:
                r.close()
        replay_manifest(self._fs, manifest_path, self.options.num_levels)
        for name in sorted(self._fs.listdir(self.path)):
            if name.endswith(".log"):
                read_log(self._fs.read_file(self._p(name)), name=name)

    def stats(self) -> dict[str, Any]:
        """Counters and shape: levels (files, bytes), blob files, write amplification (bytes written by
        flushes and compactions ÷ bytes of keys and values written by users; the WAL is reported
        separately as ``wal_bytes_written``), stall counts, cache hits."""
        with self._mu:
            v = self._current
            st = dict(self._stats)
            mem_bytes = self._mem.approximate_size + sum(m.approximate_size for m in self._imms)
            imms = len(self._imms)
            last_seq = self._last_seq
            snaps = len(self._snapshot_seqs())
        levels = [{"level": i, "files": len(files), "bytes": sum(f.file_size for f in files)}
                  for i, files in enumerate(v.levels)]
        user = st["user_bytes_written"]
        written = st["flush_bytes_written"] + st["compaction_bytes_written"]
        cache: dict[str, Any] = {}
        if self._cache is not None:
            cache = dataclasses.asdict(self._cache.stats)
        return {
            **st,
            "levels": levels,
            "sst_files": sum(lv["files"] for lv in levels),
            "sst_bytes": sum(lv["bytes"] for lv in levels),
            "blob_files": len(v.blobs),
            "blob_bytes": sum(b.file_size for b in v.blobs.values()),
            "blob_garbage_bytes": sum(b.garbage_bytes for b in v.blobs.values()),
            "range_tombstones": len(v.range_tombstones),
            "memtable_bytes": mem_bytes,
            "immutable_memtables": imms,
            "last_sequence": last_seq,
            "live_snapshots": snaps,
            "write_amplification": (written / user) if user else 0.0,
            "block_cache": cache,
        }
