"""The memtable on the C arena skiplist (native/memtable.c), and the factory the DB uses.

:class:`NativeMemTable` has the contract of :class:`lsmmail.engine.memtable.MemTable` (its pure twin):
``add``/``add_batch``, ``get``, ``entries``/``entries_reverse`` in internal order, ``range_tombstones``,
``approximate_size``, ``num_entries``, ``largest_seq``, ``log_number``. Differences that are not
contract:

* A batch goes in with **one** C call over its encoded WAL entries (``WriteBatch``'s ``rep``): no Python
  per entry (~1.5-2.6 us per entry through the dict and ``SortedList``; see docs/benchmarks.md), and the
  GIL is released while it runs, so a flush or compaction proceeds beside it.
* Keys and values are copied into the arena: no Python object per entry. ``approximate_size`` charges
  what the twin charges (key + value + ``ENTRY_OVERHEAD`` per entry), so both flush at the same points;
  :meth:`memory_usage` is what the arena really holds (~30 bytes per entry over key and value).
* Scans copy entries out in chunks per C call, growing from :data:`_FIRST_CHUNK` to :data:`_CHUNK`;
  a reverse chunk is one skiplist search plus a forward walk, not a search per version.

Concurrency is the twin's: one writer at a time, readers at any time (the C side links each node in
with a release-store after writing it whole; see native/memtable.c).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

from .. import native
from ..native_lib import split_at
from .batch import encode_batch
from .block_frame import RawBlocks
from .errors import Corruption, InvalidArgument
from .keys import KIND_RANGE_DEL
from .memtable import ENTRY_OVERHEAD, Entry, MemTable, RangeTombstone

# The kernel itself even under LSMMAIL_PURE=1 (differential tests compare both twins); what the DB uses
# is decided by ``native.AVAILABLE`` in :func:`new_memtable`.
_lib = native._lib
_ffi = native._ffi

#: Versions a scan's first C call copies. A seek + next 50 (a folder page) mostly reads a handful of
#: memtable versions, and copying cold 1 KiB versions it never yields is what costs (~0.15 us/KiB): a
#: first copy of 256 (filling the 64 KiB buffer) made a memtable seek + 5 cost 11-14 us, 16 makes it
#: ~6 us (15k x 1 KiB memtable).
_FIRST_CHUNK = 16

#: Growth of the chunk per call, up to :data:`_CHUNK`: 16, 64, 256. x4 rather than x2 because a page of
#: 50 then takes 2 calls copying 80 versions (x2: 3 calls, 112); seek + 50 fwd 28 us vs 30 us (x2).
_GROW = 4

#: The most versions copied per C call (also the C side's reverse limit, BACK_MAX): long scans keep one
#: C call per 256 versions (or per :data:`_SCAN_BUF` bytes).
_CHUNK = 256

#: Versions per C call in a flush (one run handed to the table builder).
_FLUSH_CHUNK = 1024

#: Initial copy-out buffer of a scan; grown when one version does not fit.
_SCAN_BUF = 64 * 1024

_ECORRUPT, _ESPACE, _EINVAL = -1, -2, -3


class NativeMemTable:
    """Sorted in-memory table of versions in a C skiplist. ``log_number`` is the WAL holding the same
    writes. Raises ``MemoryError`` if the arena cannot grow."""

    def __init__(self, log_number: int) -> None:
        if _lib is None:
            raise InvalidArgument("the native memtable needs the C extension")
        self.log_number = log_number
        m = _lib.lsm_mem_new(random.getrandbits(64) | 1)
        if m == _ffi.NULL:
            raise MemoryError("cannot allocate a memtable")
        self._m = _ffi.gc(m, _lib.lsm_mem_free)
        self.range_tombstones: list[RangeTombstone] = []
        self.lock = threading.Lock()
        self.num_entries = 0
        self.largest_seq = 0
        self.approximate_size = 0
        self._out = _ffi.new("uint64_t[2]")

    def __len__(self) -> int:
        return self.num_entries

    def memory_usage(self) -> int:
        """Bytes the C arena holds (nodes, keys, values), without the Python-side range tombstones."""
        return int(_lib.lsm_mem_usage(self._m))

    def add(self, seq: int, kind: int, key: bytes, value: bytes) -> None:
        """Add one version. Sequence numbers of one key must only grow."""
        self.add_batch(seq, [(kind, key, value)])

    def add_batch(self, seq: int, entries: list[tuple[int, bytes, bytes]], rep: bytes | None = None) -> None:
        """Add a write batch whose first entry has sequence ``seq``. ``rep``, if given, must be the
        batch's encoded entries (``WriteBatch.encoded_entries()``, or a WAL payload after its 12-byte
        header): then the entries are read from it in C and ``entries`` is looked at only for range
        deletions. ``Corruption`` if ``rep`` is malformed (nothing is added then)."""
        n = len(entries)
        if not n:
            return
        if rep is None:
            rep = encode_batch(seq, entries)[12:]
        out = self._out
        got = _lib.lsm_mem_add_rep(self._m, rep, len(rep), seq, n, out)
        if got < 0:
            if got == _ECORRUPT:
                raise Corruption("malformed write batch")
            if got == _EINVAL:
                raise InvalidArgument(f"sequence numbers {seq}..{seq + n - 1} do not fit in 56 bits")
            raise MemoryError("memtable arena cannot grow")
        size = out[1]
        if out[0]:
            tombs = self.range_tombstones
            s = seq
            for kind, key, value in entries:
                if kind == KIND_RANGE_DEL:
                    tombs.append((s, key, value))
                    size += len(key) + len(value)
                s += 1
        self.approximate_size += size + n * ENTRY_OVERHEAD
        self.num_entries += n
        if seq + n - 1 > self.largest_seq:
            self.largest_seq = seq + n - 1

    def get(self, key: bytes, snapshot_seq: int) -> tuple[int, int, bytes] | None:
        """The newest ``(seq, kind, value)`` of ``key`` with ``seq <= snapshot_seq``, or None."""
        out = _ffi.new("uint64_t[2]")
        vp = _ffi.new("uint8_t **")
        if not _lib.lsm_mem_get(self._m, key, len(key), snapshot_seq, out, vp):
            return None
        t = out[0]
        return t >> 8, t & 0xFF, _ffi.buffer(vp[0], out[1])[:]

    def _scan(self, start: bytes | None, end: bytes | None, reverse: bool) -> Iterator[Entry]:
        lib, ffi, m = _lib, _ffi, self._m
        cap = _SCAN_BUF
        buf = native._new("uint8_t[]", cap)
        ends = native._new("uint64_t[]", 2 * _CHUNK)
        trailers = native._new("uint64_t[]", _CHUNK)
        last = ffi.new("void **")
        state = ffi.new("uint64_t[2]")
        s = ffi.NULL if start is None else start
        e = ffi.NULL if end is None else end
        slen = 0 if start is None else len(start)
        elen = 0 if end is None else len(end)
        after = ffi.NULL
        chunk = _FIRST_CHUNK
        while True:
            n = lib.lsm_mem_scan(m, reverse, after, s, slen, e, elen, chunk, buf, cap, ends, trailers, last,
                                 state)
            if n == 0 and state[1]:
                cap = max(2 * cap, int(state[1]))
                buf = native._new("uint8_t[]", cap)
                continue
            if n:
                after = last[0]
                pos = ffi.unpack(ends, 2 * n)
                tr = ffi.unpack(trailers, n)
                data = ffi.buffer(buf, pos[-1])[:]
                a = 0
                for i in range(n):
                    b = pos[2 * i]
                    c = pos[2 * i + 1]
                    t = tr[i]
                    yield data[a:b], t >> 8, t & 0xFF, data[b:c]
                    a = c
            if state[0]:
                return
            chunk = min(chunk * _GROW, _CHUNK)
            if cap > _SCAN_BUF * 16:
                # A huge version was copied out: do not keep its buffer for the rest of the scan.
                cap = _SCAN_BUF
                buf = native._new("uint8_t[]", cap)

    def flush_runs(self) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """For a flush with no live snapshot and no range tombstone: the newest version of every key,
        in order, as runs of ``(internal keys, values)`` (same result as the twin's method)."""
        lib, ffi, m = _lib, _ffi, self._m
        cap = 4 * _SCAN_BUF
        buf = native._new("uint8_t[]", cap)
        ends = native._new("uint64_t[]", 2 * _FLUSH_CHUNK)
        last = ffi.new("void **")
        state = ffi.new("uint64_t[2]")
        after = ffi.NULL
        while True:
            n = lib.lsm_mem_flush_scan(m, after, _FLUSH_CHUNK, buf, cap, ends, last, state)
            if n == 0 and state[1]:
                cap = max(2 * cap, int(state[1]))
                buf = native._new("uint8_t[]", cap)
                continue
            if n:
                after = last[0]
                pos = ffi.unpack(ends, 2 * n)
                data = ffi.buffer(buf, pos[-1])[:]
                ikeys = []
                values = []
                a = 0
                for i in range(0, 2 * n, 2):
                    b = pos[i]
                    c = pos[i + 1]
                    ikeys.append(data[a:b])
                    values.append(data[b:c])
                    a = c
                yield ikeys, values
            if state[0]:
                return

    def flush_blocks(
        self, block_size: int, restart_interval: int
    ) -> Iterator[tuple[list[bytes], list[bytes], list[bytes], list[int], int]]:
        """The data blocks of a flush with no live snapshot and no range tombstone (each key's newest
        version), encoded and cut as ``TableBuilder`` would: runs of ``(blocks, last internal key of each,
        user keys, trailers, value bytes)`` for :class:`~lsmmail.engine.flush_table.BlockTableWriter`;
        the blocks are a :class:`~lsmmail.engine.block_frame.RawBlocks` over this generator's buffer,
        valid until the next run is asked for. Values are copied as they are: the caller checks
        :meth:`max_value_size` against the blob threshold first."""
        lib, ffi, m = _lib, _ffi, self._m
        cap = 1 << 20
        nblocks = 64
        buf = native._new("uint8_t[]", cap)
        block_end = native._new("uint64_t[]", nblocks)
        block_last = native._new("uint64_t[]", nblocks)
        keycap = 1 << 18
        max_keys = 8192
        keys = native._new("uint8_t[]", keycap)
        key_end = native._new("uint64_t[]", max_keys)
        trailers = native._new("uint64_t[]", max_keys)
        last = ffi.new("void **")
        state = ffi.new("uint64_t[4]")
        after = ffi.NULL
        while True:
            nb = lib.lsm_mem_flush_blocks(m, after, block_size, restart_interval, nblocks, buf, cap,
                                          block_end, block_last, keys, keycap, key_end, trailers, max_keys,
                                          last, state)
            if nb < 0:
                raise MemoryError("flush block buffer")
            if nb == 0 and state[1]:
                cap *= 2
                keycap *= 2
                max_keys *= 2
                buf = native._new("uint8_t[]", cap)
                keys = native._new("uint8_t[]", keycap)
                key_end = native._new("uint64_t[]", max_keys)
                trailers = native._new("uint64_t[]", max_keys)
                continue
            if nb:
                after = last[0]
                ne = int(state[2])
                bends = ffi.unpack(block_end, nb)
                blasts = ffi.unpack(block_last, nb)
                kends = ffi.unpack(key_end, ne)
                tr = ffi.unpack(trailers, ne)
                # The blocks stay in buf (no copy): the table writer frames them from there before it
                # asks for the next run (block_frame.RawBlocks).
                blocks = RawBlocks(buf, bends)
                kdata = ffi.buffer(keys, kends[-1])[:]
                ukeys = split_at(kdata, kends)
                lasts = [ukeys[i] + tr[i].to_bytes(8, "little") for i in blasts]
                yield blocks, lasts, ukeys, tr, int(state[3])
            if state[0]:
                return

    def max_value_size(self) -> int:
        """The longest value held (0 when empty)."""
        return int(_lib.lsm_mem_max_value(self._m))

    def entries(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
        """Every version with ``start <= key < end`` in internal order (key ascending, seq descending)."""
        return self._scan(start, end, False)

    def entries_reverse(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
        """The exact reverse of :meth:`entries`: keys descending, and within a key seq ascending."""
        return self._scan(start, end, True)


def pooled_chunk_bytes() -> int:
    """Bytes of freed arena chunks native/memtable.c keeps for the next memtables (process-wide). When a
    memtable of n 1 MiB chunks is dropped, its chunks are kept only while pooled + live chunks stay within
    2n + 1 (a memtable filling and one being flushed; at most 64 pooled in any case; see POOL_MAX there);
    the rest, and all of them at :func:`release_free_memory`, are unmapped: arena chunks are mapped and
    unmapped directly, not taken from malloc, so that memory goes back to the OS at once."""
    return int(_lib.lsm_mem_pooled_bytes()) if _lib is not None else 0


def live_chunk_bytes() -> int:
    """Bytes of 1 MiB arena chunks held by live native memtables, process-wide (what the pool's budget
    counts; nodes too large for a shared chunk have chunks of their own, not counted)."""
    return int(_lib.lsm_mem_live_chunk_bytes()) if _lib is not None else 0


def release_free_memory() -> None:
    """Return to the OS the free memory malloc keeps (``malloc_trim``, glibc only) and the pooled memtable
    chunks; a no-op without the C extension. For a closed DB: the blocks of its cache were freed into
    the arenas of the threads that read them, where they stayed as RSS through the rest of the process."""
    if _lib is not None:
        _lib.lsm_mem_trim()


def new_memtable(log_number: int) -> NativeMemTable | MemTable:
    """The memtable the DB uses: the C skiplist when the extension is loaded, else the pure twin
    (``LSMMAIL_PURE=1`` or no compiler at install)."""
    if native.AVAILABLE:
        return NativeMemTable(log_number)
    return MemTable(log_number)
