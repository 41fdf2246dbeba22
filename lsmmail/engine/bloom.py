"""The per-table bloom filter over user keys (docs/format.md, "Filter block").

Layout: ``bit array (m bits) || u8 k``. Probe ``i`` of a key tests bit ``(h1 + i*h2) mod m`` with
``h = XXH3-64(key)``, ``h1 = h & 0xFFFFFFFF``, ``h2 = (h >> 32) | 1`` (double hashing: two hash halves
give k independent-enough probes for the price of one hash). A reader derives ``m`` from the length.
"""

from __future__ import annotations

import math

from .. import native as _native
from .coding import hash64
from .errors import InvalidArgument

#: A filter whose ``k`` is outside 1..30 matches every key, so a reader of a future filter kind stays
#: correct. 30 probes already reach a false-positive rate of ~1e-9 at 43 bits per key.
MAX_PROBES = 30

#: Small filters get at least 64 bits: below that a few keys would already saturate the array.
MIN_BITS = 64


def num_probes(bits_per_key: int) -> int:
    """``k = round(bits_per_key * ln 2)`` clamped to 1..30 (the k that minimises false positives)."""
    return min(MAX_PROBES, max(1, int(bits_per_key * math.log(2) + 0.5)))


class BloomBuilder:
    """Collects user keys and builds one filter.

    Add each distinct user key once (the table builder skips repeats of the same user key): ``m`` is
    sized from the number of keys added. ``bits_per_key = 0`` turns filtering off: :meth:`finish`
    returns the single byte ``k = 0``, a filter that matches every key.
    """

    __slots__ = ("_bits_per_key", "_k", "_hashes")

    def __init__(self, bits_per_key: int = 10) -> None:
        if not isinstance(bits_per_key, int) or bits_per_key < 0:
            raise InvalidArgument("bloom bits_per_key must be an integer >= 0")
        self._bits_per_key = bits_per_key
        self._k = num_probes(bits_per_key) if bits_per_key else 0
        self._hashes: list[int] = []

    def add_key(self, user_key: bytes) -> None:
        self._hashes.append(hash64(user_key))

    def __len__(self) -> int:
        return len(self._hashes)

    def finish(self) -> bytes:
        """The filter block payload. The builder keeps its keys (finishing twice gives the same bytes)."""
        if self._k and _native.lib is not None:
            return _native.bloom_build_native(self._hashes, self._bits_per_key)
        return self.finish_py()

    def finish_py(self) -> bytes:
        """The pure-Python twin of :meth:`finish` (the C kernel must give the same bytes)."""
        k = self._k
        if k == 0:
            return bytes((0,))
        m = max(MIN_BITS, self._bits_per_key * len(self._hashes))
        m = (m + 7) & ~7
        bits = bytearray(m >> 3)
        probes = range(k)
        for h in self._hashes:
            h1 = h & 0xFFFFFFFF
            h2 = (h >> 32) | 1
            for i in probes:
                b = (h1 + i * h2) % m
                bits[b >> 3] |= 1 << (b & 7)
        bits.append(k)
        return bytes(bits)


def bloom_may_contain(filter_bytes: bytes, user_key: bytes) -> bool:
    """False only if ``user_key`` was certainly not added to the filter.

    An empty filter, or one whose ``k`` is 0 or above 30, matches every key.
    """
    if _native.lib is not None:
        return _native.bloom_may_contain_native(filter_bytes, hash64(user_key))
    return bloom_may_contain_py(filter_bytes, user_key)


def bloom_may_contain_py(filter_bytes: bytes, user_key: bytes) -> bool:
    """The pure-Python twin of :func:`bloom_may_contain`."""
    n = len(filter_bytes)
    if n < 2:
        return True
    k = filter_bytes[-1]
    if k == 0 or k > MAX_PROBES:
        return True
    m = (n - 1) << 3
    h = hash64(user_key)
    h1 = h & 0xFFFFFFFF
    h2 = (h >> 32) | 1
    for i in range(k):
        b = (h1 + i * h2) % m
        if not filter_bytes[b >> 3] & (1 << (b & 7)):
            return False
    return True
