"""The block cache: decoded data blocks kept in memory, least recently used evicted first.

Capacity is in bytes: each entry is put with a *charge* (for a data block, its payload size plus a
per-entry overhead, see :attr:`lsmmail.engine.block.DataBlock.charge`), and the cache evicts until the
sum of charges fits. Keys are ``(file_number, block_offset)``; file numbers are never reused, so an
entry of a deleted table can never be returned for another one and simply ages out.

Thread-safe: one lock guards the map; the work under it is O(1) dict operations.
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
