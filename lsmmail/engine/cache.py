"""The block cache: decoded data blocks kept in memory, least recently used evicted first.

Capacity is in bytes: each entry is put with a *charge* (for a data block, its payload size plus a
per-entry overhead, see :attr:`lsmmail.engine.block.DataBlock.charge`), and the cache evicts until the
sum of charges fits. Keys are ``(file_number, block_offset)``; file numbers are never reused, so an
entry of a deleted table can never be returned for another one and simply ages out.

Thread-safe: one lock guards the map; the work under it is O(1) dict operations.

:class:`NativeBlockCache` is the same cache in C (``native/blockcache.c``), which point reads and scans
in C use without coming back to Python; :class:`BlockCache` is its pure twin (``LSMMAIL_PURE=1``, and
the model its differential test checks it against).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    usage: int
    capacity: int
    entries: int


class BlockCache:
    """An LRU map bounded by the sum of its entries' charges.

    ``capacity_bytes = 0`` makes a cache that stores nothing (every ``get`` misses). An object whose
    charge exceeds the capacity is not stored.
    """

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError("cache capacity must be >= 0")
        self._capacity = capacity_bytes
        self._map: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._usage = 0
        self._hits = 0
        self._misses = 0
        self._mu = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def usage(self) -> int:
        """Sum of the charges of the entries held now."""
        return self._usage

    def get(self, key: Hashable) -> object | None:
        """The object cached under ``key`` (now the most recently used), or None."""
        with self._mu:
            entry = self._map.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._map.move_to_end(key)
            self._hits += 1
            return entry[0]

    def put(self, key: Hashable, obj: object, charge: int) -> None:
        """Cache ``obj`` under ``key`` (replacing what was there), then evict the least recently used
        entries until the total charge fits the capacity."""
        if charge < 0:
            raise ValueError("charge must be >= 0")
        with self._mu:
            old = self._map.pop(key, None)
            if old is not None:
                self._usage -= old[1]
            if charge > self._capacity:
                return
            self._map[key] = (obj, charge)
            self._usage += charge
            m = self._map
            while self._usage > self._capacity:
                _, (_, c) = m.popitem(last=False)
                self._usage -= c

    def erase(self, key: Hashable) -> None:
        with self._mu:
            old = self._map.pop(key, None)
            if old is not None:
                self._usage -= old[1]

    def erase_table(self, file_number: int) -> int:
        """Drop every entry whose key is ``(file_number, offset)``; returns how many. O(entries)."""
        with self._mu:
            doomed = [k for k in self._map if type(k) is tuple and k and k[0] == file_number]
            for k in doomed:
                self._usage -= self._map.pop(k)[1]
            return len(doomed)

    def clear(self) -> None:
        with self._mu:
            self._map.clear()
            self._usage = 0

    def __len__(self) -> int:
        return len(self._map)

    @property
    def stats(self) -> CacheStats:
        with self._mu:
            return CacheStats(self._hits, self._misses, self._usage, self._capacity, len(self._map))


#: Shards of a native cache hold at least this much (so a shard always fits several 16 KiB blocks: a
#: small cache is one LRU, like the twin), and there are at most _MAX_SHARDS (LevelDB's 16: enough that
#: 2 cores and the flush/compaction threads rarely meet on one mutex).
_MIN_SHARD_BYTES = 1 << 20
_MAX_SHARDS = 16


class NativeBlockCache:
    """:class:`BlockCache` in C (``native/blockcache.c``): the same contract (with ``shards=1`` the same
    LRU order, charges and hit/miss counts), except that it holds bytes only -- ``put`` of a decoded
    block stores its ``payload`` -- and ``get`` returns a copy of them. It is sharded (each shard an LRU
    of ``capacity / shards``), and C code (point reads, scans) uses it directly through :attr:`ptr`
    without coming back to Python; blocks a reader holds stay valid until it lets go, even if evicted.

    Keys are ``(file_number, block_offset)`` pairs of ints. Raises ``MemoryError`` if C cannot
    allocate."""

    def __init__(self, capacity_bytes: int, shards: int = 0) -> None:
        from ..native_lib import _ffi, _lib

        if capacity_bytes < 0:
            raise ValueError("cache capacity must be >= 0")
        if shards <= 0:
            shards = max(1, min(_MAX_SHARDS, capacity_bytes // _MIN_SHARD_BYTES))
        ptr = _lib.lsm_bc_new(capacity_bytes, shards)
        if ptr == _ffi.NULL:
            raise MemoryError("cannot allocate the block cache")
        self.ptr = _ffi.gc(ptr, _lib.lsm_bc_free)
        self._lib, self._ffi = _lib, _ffi
        self._capacity = capacity_bytes
        self._out = _ffi.new("uint64_t[5]")
        self.shards = shards

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def usage(self) -> int:
        return self.stats.usage

    def get(self, key: tuple[int, int]) -> bytes | None:
        lib = self._lib
        e = lib.lsm_bc_lookup(self.ptr, key[0], key[1])
        if e == self._ffi.NULL:
            return None
        try:
            return self._ffi.buffer(lib.lsm_bc_data(e), lib.lsm_bc_len(e))[:]
        finally:
            lib.lsm_bc_release(self.ptr, e)

    def put(self, key: tuple[int, int], obj: object, charge: int) -> None:
        if charge < 0:
            raise ValueError("charge must be >= 0")
        data = obj if isinstance(obj, (bytes, bytearray, memoryview)) else obj.payload  # type: ignore[attr-defined]
        e = self._lib.lsm_bc_insert(self.ptr, key[0], key[1], bytes(data), len(data), charge)
        if e == self._ffi.NULL:
            raise MemoryError("cannot allocate a block cache entry")
        self._lib.lsm_bc_release(self.ptr, e)

    def erase(self, key: tuple[int, int]) -> None:
        self._lib.lsm_bc_erase(self.ptr, key[0], key[1])

    def erase_table(self, file_number: int) -> int:
        """Drop every block of table ``file_number`` (closed or deleted); returns how many."""
        return int(self._lib.lsm_bc_erase_table(self.ptr, file_number))

    def clear(self) -> None:
        self._lib.lsm_bc_clear(self.ptr)

    def __len__(self) -> int:
        return self.stats.entries

    @property
    def stats(self) -> CacheStats:
        out = self._ffi.new("uint64_t[5]")
        self._lib.lsm_bc_stats(self.ptr, out)
        return CacheStats(int(out[0]), int(out[1]), int(out[2]), int(out[3]), int(out[4]))


def new_block_cache(capacity_bytes: int) -> BlockCache | NativeBlockCache | None:
    """The engine's block cache: None for capacity 0, the C cache when the extension is loaded (and
    ``LSMMAIL_PURE`` is not set), else the pure :class:`BlockCache`."""
    from ..native_lib import AVAILABLE

    if capacity_bytes <= 0:
        return None
    return NativeBlockCache(capacity_bytes) if AVAILABLE else BlockCache(capacity_bytes)
