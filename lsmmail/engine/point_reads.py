"""Point reads: ``DB.get`` and ``DB.get_many``, and the table and blob readers they (and scans) open.

This is a mixin of :class:`lsmmail.engine.db.DB` (like :class:`~lsmmail.engine.maintenance.Maintenance`),
split out to keep each file about one concern; it uses the DB's state directly. A read takes one read
state under ``_mu`` (sequence number, memtables, version), then looks the key up newest first: the
active memtable, the immutable memtables newest first, the L0 tables newest first, then at most one
table per deeper level. The first version found at or below the sequence number answers, unless a range
tombstone newer than it covers the key.

``get`` without a snapshot is one C call (``lsm_get_state``) on a read state built once per state
(:class:`_ReadState`: the memtables' and the version's C handles), whose return value is the answer in
the common cases (a value's length, none, a blob reference); the rest takes the full path
(``_get_state``), which reads tables C cannot and reports every error.

Errors: ``InvalidArgument`` for a bad key or snapshot, ``DBClosed`` after ``close``, ``Corruption`` for
data that fails its checks (never wrong data), ``IOFailure`` for a read error.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import native_pointget as _pointget
from ..native_lib import ffi as _ffi
from ..native_lib import lib as _lib
from .blob import BlobFileReader, decode_blob_ref
from .cache import NativeBlockCache
from .coding import hash64
from .errors import Corruption, DBClosed, InvalidArgument, IOFailure, LsmError
from .iterators import covering_tombstone_seq
from .keys import KIND_BLOB, KIND_DELETE, MAX_KEY_SIZE, check_key
from .sstable import TableReader

if TYPE_CHECKING:
    from .cache import BlockCache
    from .db import Snapshot
    from .fs import FileSystem
    from .memtable import MemTable
    from .options import Options
    from .version import FileMeta, Version


#: Whole-version table probes in C (``native_pointget.VersionProbe``), or False on the pure-Python engine
#: (or when the C load's codecs are missing): then each table is probed from Python.
_VERSION_PROBE = _lib is not None and _pointget.READY
_MEM_HIT = _pointget.MEM_HIT
_tls = _pointget._tls
_ECORRUPT, _ESPACE = -1, -2  # lsm_native.h
_GET_NONE, _GET_BLOB = -20, -21  # pointget.h LSM_GET_NONE / LSM_GET_BLOB
_get_state = _lib.lsm_get_state if _VERSION_PROBE else None
#: ``bytes`` of a ``char *`` and a length: ``ffi.unpack`` is ~35 ns less than ``ffi.buffer(p, n)[:]``.
_unpack = _ffi.unpack if _VERSION_PROBE else None


def _memtables_get(key: bytes, seq: int, mem: MemTable,
                   imms: tuple[MemTable, ...]) -> tuple[int, int, bytes] | None:
    """The newest version of ``key`` at or below ``seq`` in the active memtable, then the immutable ones
    newest first; None if none holds one."""
    found = mem.get(key, seq)
    if found is not None:
        return found
    for imm in reversed(imms):
        found = imm.get(key, seq)
        if found is not None:
            return found
    return None


class ReadView:
    """The memtable, immutable memtables (oldest first) and version a get reads, published whole: a
    writer that changes any of the three (a memtable switch, a version install, the close) builds a new
    view under ``_mu`` after the change (``_publish_view``) and assigns it in one step, so a get reads it
    without the lock. Every write a sequence number read *before* the view covers is in that view: a write
    publishes its sequence number after its memtable insert, and a view only replaces one that already
    held the data (a switch moves the memtable to the immutable ones, a flush installs its table in the
    same step that drops the memtable). ``rs``: the view's :class:`_ReadState`, built by its first get
    (threads may race to build it; each result is valid, the last assignment stays): kept on the view, so
    a get finds it with one attribute load (a weak reference on the DB checked per get cost ~60 ns of
    a ~570 ns missing-key get), and it goes with the view."""

    __slots__ = ("mem", "imms", "v", "rs", "__weakref__")

    def __init__(self, mem: MemTable, imms: tuple[MemTable, ...], v: Version) -> None:
        self.mem, self.imms, self.v = mem, imms, v
        self.rs: _ReadState | None = None


class _ReadState:
    """What ``lsm_get_state`` reads for one ``(memtable, immutable memtables, version)`` state: an
    ``lsm_read_state`` (``ptr``) pointing at the version's read view and at the memtables' C handles,
    newest first. Built on the first get of a state and reused while the state stays current. It holds the
    memtables and the version only weakly (a state replaced by a flush or a compaction must not keep them,
    and their memory and files, alive); a get uses it only after checking, with its own strong references
    to the current state in hand, that the weak ones still name that state."""

    __slots__ = ("mem_ref", "ver_ref", "imm_refs", "ptr", "tombs", "_keep")

    def __init__(self, mem: MemTable, imms: tuple[MemTable, ...], v: Version,
                 vp: tuple[weakref.ref[Version], _pointget.VersionProbe, list[TableReader]]) -> None:
        handles = [mem._m] + [m._m for m in reversed(imms)]  # type: ignore[attr-defined]
        mems = _ffi.new("struct lsm_memtable *[]", handles)
        st = _ffi.new("lsm_read_state *")
        st.view, st.mems, st.nmem = vp[1].view, mems, 1 + len(imms)
        self.mem_ref = weakref.ref(mem)
        self.ver_ref = vp[0]
        self.imm_refs = tuple(weakref.ref(m) for m in imms)
        self.ptr = st
        #: Whether a version found may be covered by a range tombstone of the version or of an immutable
        #: memtable (both fixed; the active memtable's list grows, so each get checks it).
        self.tombs = bool(v.range_tombstones) or any(m.range_tombstones for m in imms)
        self._keep = (vp[1], mems)

    def names(self, imms: tuple[MemTable, ...]) -> bool:
        """Whether this state's immutable memtables are ``imms`` (a get checks the memtable and the
        version itself: the common case, with no immutable memtable, needs no call)."""
        if len(self.imm_refs) != len(imms):
            return False
        for r, m in zip(self.imm_refs, imms, strict=True):
            if r() is not m:
                return False
        return True


class PointReads:
    """Mixin of DB: point reads, and the readers of table and blob files."""

    #: The last version's ``(weakref to it, VersionProbe, readers)`` (see ``_get_from_version``). Replaced
    #: whole (one assignment), so threads may race to rebuild it but never see a torn one; a weak
    #: reference, so it never keeps an old version (and its files) alive.
    _probe: tuple[weakref.ref[Version], _pointget.VersionProbe, list[TableReader]] | None = None
    #: The current :class:`ReadView` (None until the DB is open).
    _view: ReadView | None = None

    def _publish_view(self) -> None:
        """Publish the current memtables and version to lock-free gets. ``_mu`` is held (or the DB is
        opening); call after every change of ``_mem``, ``_imms`` or ``_current``."""
        mem = getattr(self, "_mem", None)
        if mem is not None:
            self._view = ReadView(mem, tuple(self._imms), self._current)  # type: ignore[attr-defined]

    # State owned by DB (declared for type checkers).
    if TYPE_CHECKING:
        options: Options
        _fs: FileSystem
        _mu: threading.Lock
        _table_lock: threading.Lock
        _tables: dict[int, TableReader]
        _blob_readers: dict[int, BlobFileReader]
        _cache: BlockCache | None
        _closed: bool
        _current: Version
        _mem: MemTable
        _imms: list[MemTable]
        _last_seq: int
        def _p(self, name: str) -> str: ...

    def _read_state(self, snapshot: Snapshot | None) -> tuple[int, MemTable, tuple[MemTable, ...], Version]:
        with self._mu:
            if self._closed:
                raise DBClosed("the database is closed")
            if snapshot is not None:
                if snapshot._db is not self or snapshot._released:
                    raise InvalidArgument("snapshot is released or belongs to another database")
                seq = snapshot.seq
            else:
                seq = self._last_seq
            return seq, self._mem, tuple(self._imms), self._current

    def get(self, key: bytes, *, snapshot: Snapshot | None = None) -> bytes | None:
        """The value of ``key`` (as of ``snapshot`` if given), or None. Raises ``Corruption`` rather than
        return data that fails its checks."""
        if snapshot is not None or type(key) is not bytes or _get_state is None:
            return self._get_full(key, snapshot)
        # Without the lock: the sequence number first, then the view (see ReadView for why that is
        # consistent), then the closed flag (a close after it finds this get holding its own references
        # to the view's memtables and version, as a get under the lock did). ~0.1 us less than taking _mu.
        seq = self._last_seq
        view = self._view
        if self._closed or view is None:
            if self._closed:
                raise DBClosed("the database is closed")
            return self._get_full(key, None)
        rs = view.rs
        if rs is None:
            try:
                rs = view.rs = _ReadState(view.mem, view.imms, view.v, self._probe_of(view.v))
            except AttributeError:  # a pure-Python memtable: made only without the extension
                return self._get_state(key, seq, view.mem, view.imms, view.v)
        try:
            s = _tls.p
        except AttributeError:
            s = _pointget.point_scratch()
        # One C call: memtables, then the tables' filters, indexes and blocks (``lsm_get_state``); the
        # answer is in its return value. ``view`` keeps its memtables and version alive until it returns.
        n = _get_state(rs.ptr, key, len(key), seq, s.sc)
        if n >= 0:
            if (rs.tombs or view.mem.range_tombstones) and self._covered(view, key, seq, s.out[0] >> 8):
                return None
            return _unpack(s.cvbuf, n)
        if n == _GET_NONE:
            return None
        if n == _GET_BLOB:
            if (rs.tombs or view.mem.range_tombstones) and self._covered(view, key, seq, s.out[0] >> 8):
                return None
            ref = _unpack(s.cvbuf, s.out[1])
            try:
                return self._read_blob(ref)
            except LsmError:
                raise
            except OSError as e:
                raise IOFailure(e.errno, f"read failed: {e}") from e
        # Anything else (a table that is not an OS file, a large value, an error to report, a bad key):
        # the full path, which reports each case.
        return self._get_state(check_key(key), seq, view.mem, view.imms, view.v)

    def _covered(self, view: ReadView, key: bytes, seq: int, found_seq: int) -> bool:
        """Whether a range tombstone of ``view`` visible at ``seq`` and newer than ``found_seq`` covers
        ``key``."""
        mem, imms, v = view.mem, view.imms, view.v
        tombs = self._tombstones(mem, imms, v)
        return bool(tombs) and covering_tombstone_seq(tombs, key, seq) > found_seq

    def _get_full(self, key: bytes, snapshot: Snapshot | None) -> bytes | None:
        """:meth:`get` for a snapshot, a key that is not ``bytes`` (checked here), or the pure engine."""
        key = check_key(key)
        if snapshot is None:
            with self._mu:
                if self._closed:
                    raise DBClosed("the database is closed")
                seq, mem, version = self._last_seq, self._mem, self._current
                imms = tuple(self._imms) if self._imms else ()
        else:
            seq, mem, imms, version = self._read_state(snapshot)
        return self._get_state(key, seq, mem, imms, version)

    def _get_state(self, key: bytes, seq: int, mem: MemTable, imms: tuple[MemTable, ...],
                   version: Version) -> bytes | None:
        """The value of ``key`` at ``seq`` in the read state ``(mem, imms, version)``, or None, one source
        at a time (``_lookup``), range tombstones gathered only for a key that was found (and only when
        some source has any). ``key`` must be valid."""
        try:
            found = self._lookup(key, seq, mem, imms, version)
            if found is None:
                return None
            kind = found[1]
            if kind == KIND_DELETE:
                return None
            if mem.range_tombstones or version.range_tombstones or imms:
                tombs = self._tombstones(mem, imms, version)
                if tombs and covering_tombstone_seq(tombs, key, seq) > found[0]:
                    return None
            if kind == KIND_BLOB:
                return self._read_blob(found[2])
            return found[2]
        except LsmError:
            raise
        except OSError as e:
            # Table and blob readers let read errors through as plain OSError.
            raise IOFailure(e.errno, f"read failed: {e}") from e

    def get_many(self, keys: Iterable[bytes], *, snapshot: Snapshot | None = None) -> list[bytes | None]:
        """``[get(k) for k in keys]`` as of one state: one snapshot of the read state (so all keys see the
        same sequence number and files, even while writes go on), one pass over the memtables, and the
        tables probed per key. Same values, ``None`` for missing keys, and the same errors as :meth:`get`
        (a bad key raises ``InvalidArgument`` before anything is read)."""
        checked = [k if type(k) is bytes and k and len(k) <= MAX_KEY_SIZE else check_key(k) for k in keys]
        seq, mem, imms, version = self._read_state(snapshot)
        tombs = self._tombstones(mem, imms, version)
        get = self._get
        try:
            return [get(k, seq, mem, imms, version, tombs) for k in checked]
        except LsmError:
            raise
        except OSError as e:
            raise IOFailure(e.errno, f"read failed: {e}") from e

    def _get(self, key: bytes, seq: int, mem: MemTable, imms: tuple[MemTable, ...], version: Version,
             tombs: list[tuple[int, bytes, bytes]]) -> bytes | None:
        found = self._lookup(key, seq, mem, imms, version)
        if found is None:
            return None
        if tombs and covering_tombstone_seq(tombs, key, seq) > found[0]:
            return None
        kind = found[1]
        if kind == KIND_DELETE:
            return None
        if kind == KIND_BLOB:
            return self._read_blob(found[2])
        return found[2]

    def _lookup_py(self, key: bytes, seq: int, mem: MemTable, imms: tuple[MemTable, ...],
                   v: Version) -> tuple[int, int, bytes] | None:
        """:meth:`_lookup_native` in Python: each memtable, then ``_get_from_version``."""
        found = _memtables_get(key, seq, mem, imms)
        if found is not None:
            return found
        return self._get_from_version(v, key, seq)

    def _lookup_native(self, key: bytes, seq: int, mem: MemTable, imms: tuple[MemTable, ...],
                       v: Version) -> tuple[int, int, bytes] | None:
        """The newest ``(seq, kind, value)`` of ``key`` at or below ``seq`` in the memtables (newest first)
        and ``v``'s tables, or None. One C call (``lsm_get``) checks the memtables, then the
        range, bloom filter and index of every table a read must consult, and reads the data blocks they
        name through the C block cache (read, verified, decompressed and cached on a miss) until one
        answers: a whole get is one crossing (it was one per memtable and table in Python: ~1 us each, and
        then one more per block). Tables that are not OS files (``fs_mem``, ``fs_fault``) come back here
        and are read by ``TableReader.get_from``."""
        vp = self._probe
        if vp is None or vp[0]() is not v:
            vp = self._probe_of(v)
        try:
            s = _tls.p
        except AttributeError:
            s = _pointget.point_scratch()
        mems = s.mems
        if imms:
            if len(imms) >= s.cap:
                s = _pointget.point_scratch(len(imms) + 1)
                mems = s.mems
            nmem = 1
            try:
                for m in reversed(imms):
                    mems[nmem] = m._m  # type: ignore[attr-defined]
                    nmem += 1
            except AttributeError:  # a pure-Python memtable: made only without the extension
                nmem = -1
        else:
            nmem = 1
        try:
            mems[0] = mem._m  # type: ignore[attr-defined]
        except AttributeError:
            nmem = -1
        if nmem < 0:  # kept correct: the memtables in Python, then the tables in C
            found = _memtables_get(key, seq, mem, imms)
            if found is not None:
                return found
            nmem = 0
        view, sc = vp[1].view, s.sc
        ti = _lib.lsm_get(view, mems, nmem, 0, key, len(key), seq, sc)
        while True:
            if ti == _MEM_HIT:
                out = s.out
                t = out[0]
                return t >> 8, t & 0xFF, _ffi.buffer(s.cvbuf, out[1])[:]
            if ti >= 0:
                if ti >= vp[1].total:
                    return None
                out = s.out
                r = vp[2][ti].get_from(key, seq, out[0])
                if r is not None:
                    return r
                ti = _lib.lsm_get(view, mems, 0, ti + 1, key, len(key), seq, sc)
                continue
            if ti == _ESPACE:  # a value larger than this thread's buffer: grow it, read again
                _pointget.point_scratch(0, int(s.out[1]))
                return self._lookup_native(key, seq, mem, imms, v)
            raise self._point_error(ti, s.out, vp[2])

    @staticmethod
    def _point_error(rc: int, out: object, tables: list[TableReader]) -> Exception:
        """The exception for ``lsm_get``'s error ``rc``: ``Corruption`` naming the table and
        block offset, or ``OSError`` for a read error."""
        if rc == _ECORRUPT:
            t = tables[out[3]]  # type: ignore[index]
            return t._corrupt(_pointget.POINT_WHY.get(int(out[2]), "malformed block"),  # type: ignore[index]
                              int(out[4]))  # type: ignore[index]
        if rc == _pointget._EIO:
            err = int(out[1])  # type: ignore[index]
            return OSError(err, os.strerror(err))
        return RuntimeError(f"lsm_point_get_cached returned {rc}")

    @property
    def _cache_ptr(self) -> object:
        """The C block cache for C readers, or NULL (no cache, or the pure one)."""
        c = self._cache
        return c.ptr if isinstance(c, NativeBlockCache) else _ffi.NULL

    def _get_from_version(self, v: Version, key: bytes, seq: int) -> tuple[int, int, bytes] | None:
        # One XXH3 of the key for every table's bloom probe (TableReader.get's ``h``).
        h = -1
        tables = self._tables
        levels = v.levels
        for f in levels[0]:
            if f.smallest_user <= key <= f.largest_user:
                if h < 0:
                    h = hash64(key)
                t = tables.get(f.number) or self._table(f)
                r = t.get(key, seq, h)
                if r is not None:
                    return r
        for level in range(1, len(levels)):
            if not levels[level]:
                continue
            f = v.file_for_key(level, key)
            if f is not None:
                if h < 0:
                    h = hash64(key)
                t = tables.get(f.number) or self._table(f)
                r = t.get(key, seq, h)
                if r is not None:
                    return r
        return None

    def _probe_of(self, v: Version) -> tuple[weakref.ref[Version], _pointget.VersionProbe, list[TableReader]]:
        """``(weakref to v, its VersionProbe, its table readers by position)``, kept for the last version
        asked about (point reads and scans share it)."""
        vp = self._probe
        if vp is None or vp[0]() is not v:
            vp = self._probe = (weakref.ref(v), *self._version_probe(v))
        return vp

    def _version_probe(self, v: Version) -> tuple[_pointget.VersionProbe, list[TableReader]]:
        """``v``'s tables in point-read order (L0 newest first, then each level in key order), laid out
        for ``VersionProbe.find``, and their readers by position. Opens any table not open yet."""
        groups: list[tuple[bool, list[_pointget.ProbeTable]]] = []
        tables: list[TableReader] = []
        for level, files in enumerate(v.levels):
            if not files:
                continue
            group: list[_pointget.ProbeTable] = []
            for f in files:
                t = self._table(f)
                filt, index = t.probe_parts
                group.append((filt, index, f.smallest_user, f.largest_user, _pointget.table_fd(t), f.number,
                              _pointget.table_layout(t)))
                tables.append(t)
            groups.append((level > 0, group))
        probe = _pointget.VersionProbe(groups)
        probe.set_reads(self._cache_ptr, self.options.verify_checksums)
        return probe, tables

    #: The newest version of a key in memtables and tables: one C call, or per memtable and table in Python.
    _lookup = _lookup_native if _VERSION_PROBE else _lookup_py

    @staticmethod
    def _tombstones(mem: MemTable, imms: tuple[MemTable, ...], v: Version) -> list[tuple[int, bytes, bytes]]:
        """Every range tombstone a read of this state must honour (scans use it too); [] if none."""
        if not mem.range_tombstones and not v.range_tombstones:
            for m in imms:  # a loop, not any(genexpr): this runs on every get
                if m.range_tombstones:
                    break
            else:
                return []
        tombs = list(v.range_tombstones)
        for m in imms:
            tombs += m.range_tombstones
        tombs += list(mem.range_tombstones)
        return tombs

    # ------------------------------------------------------------------------------------------------
    # Files: tables and blobs

    def _table(self, f: FileMeta) -> TableReader:
        t = self._tables.get(f.number)
        if t is not None:
            return t
        with self._table_lock:
            t = self._tables.get(f.number)
            if t is None:
                path = self._p(f"{f.number:06d}.sst")
                try:
                    t = TableReader.open(self._fs.open_read(path), f.number, cache=self._cache,
                                         verify_checksums=self.options.verify_checksums)
                except OSError as e:
                    raise IOFailure(e.errno, f"cannot open {path}: {e}") from e
                self._tables[f.number] = t
            return t

    def _blob_reader(self, number: int) -> BlobFileReader:
        r = self._blob_readers.get(number)
        if r is not None:
            return r
        with self._table_lock:
            r = self._blob_readers.get(number)
            if r is None:
                path = self._p(f"{number:06d}.blob")
                try:
                    r = BlobFileReader.open(self._fs.open_read(path), number)
                except FileNotFoundError as e:
                    raise Corruption(f"blob reference to missing file {number:06d}.blob") from e
                except OSError as e:
                    raise IOFailure(e.errno, f"cannot open {path}: {e}") from e
                self._blob_readers[number] = r
            return r

    def _read_blob(self, ref: bytes) -> bytes:
        number, offset, length = decode_blob_ref(ref)
        return self._blob_reader(number).get(offset, length)
