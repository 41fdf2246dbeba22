"""Message ids: RFC 9562 UUIDv7, time-ordered and monotonic within a millisecond.

Layout (16 bytes, big-endian, RFC 9562 §5.7)::

    unix_ts_ms (48) | ver = 0b0111 (4) | rand_a (12) | var = 0b10 (2) | rand_b (62)

The 48-bit millisecond timestamp comes first, so the byte order of two ids is their time order (a v1
TIMEUUID stores the low time bits first and does not sort by time). Within one millisecond ``rand_a`` is
a counter (RFC 9562 §6.2, "Fixed Bit-Length Dedicated Counter", method 1), so ids made by one generator
strictly increase even when 4,096 are made in the same millisecond: on counter overflow, or when the
clock steps backwards, the generator keeps using (and, on overflow, advances) its last timestamp instead.
``rand_b`` is 62 random bits, so ids made by different processes do not collide.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref

ID_LEN = 16

# rand_a is 12 bits: the counter restarts at a random value below 2**11 in every new millisecond, which
# leaves at least 2,048 increments before overflow (RFC 9562 §6.2 suggests random seeding so ids are
# less guessable; keeping the top bit clear guarantees headroom).
_COUNTER_BITS = 12
_COUNTER_SEED_MAX = 1 << (_COUNTER_BITS - 1)
_MAX_MS = (1 << 48) - 1
#: Random bytes fetched per os.urandom call (8 per id): one syscall per 512 ids instead of one per id. A
#: syscall that releases the GIL lets the engine's background threads take it, and in an import (one id
#: per message, ~3,000 ids in a batch run) each of those hand-offs cost ~70 µs of wall time in a profile.
_RANDOM_POOL = 4096
_GENERATORS: weakref.WeakSet[IdGenerator] = weakref.WeakSet()


def _forget_pools() -> None:
    # A forked child must not hand out the random bytes its parent will use too.
    for gen in list(_GENERATORS):
        gen._pool, gen._pool_at = b"", 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


class IdGenerator:
    """Thread-safe generator of strictly increasing UUIDv7 ids (as 16 raw bytes)."""

    def __init__(self, clock_ms: object = None) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0
        self._pool = b""
        self._pool_at = 0
        _GENERATORS.add(self)
        self._clock = clock_ms if clock_ms is not None else (lambda: time.time_ns() // 1_000_000)

    def new(self) -> bytes:
        """Return a new id, greater (bytewise) than every id this generator returned before."""
        with self._lock:
            at = self._pool_at
            if at + 8 > len(self._pool):
                self._pool, at = os.urandom(_RANDOM_POOL), 0
            rand = self._pool[at:at + 8]
            self._pool_at = at + 8
            now = int(self._clock())  # type: ignore[operator]
            if now > self._last_ms:
                self._last_ms = now
                self._counter = int.from_bytes(rand[:2], "big") % _COUNTER_SEED_MAX
            else:
                # Same millisecond, or the clock went backwards: keep the last timestamp and count.
                self._counter += 1
                if self._counter >= 1 << _COUNTER_BITS:
                    self._last_ms += 1  # borrow the next millisecond rather than repeat an id
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        return _pack(ms, counter, int.from_bytes(rand, "big"))


def _pack(ms: int, rand_a: int, rand_b64: int) -> bytes:
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"timestamp {ms} ms does not fit in 48 bits")
    hi = (ms << 16) | (0x7 << 12) | (rand_a & 0xFFF)
    lo = (0b10 << 62) | (rand_b64 & ((1 << 62) - 1))
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


def id_at(ms: int) -> bytes:
    """An id for the given Unix time in milliseconds with random low bits (not monotonic; for imports
    that keep a message's own date). Unique with overwhelming probability (74 random bits)."""
    rand = int.from_bytes(os.urandom(10), "big")
    return _pack(ms, rand >> 68, rand)


_DEFAULT = IdGenerator()


def new_id() -> bytes:
    """A new id from the process-wide generator (strictly increasing within this process)."""
    return _DEFAULT.new()


def id_time_ms(mid: bytes) -> int:
    """The Unix time in milliseconds stored in a UUIDv7 id. Raises ValueError for a non-v7 id."""
    check_id(mid)
    return int.from_bytes(mid[:6], "big")


def check_id(mid: bytes) -> bytes:
    """Return ``mid`` if it is 16 bytes with UUIDv7 version and variant bits, else raise ValueError."""
    if len(mid) != ID_LEN or mid[6] >> 4 != 7 or mid[8] >> 6 != 0b10:
        raise ValueError("not a UUIDv7 message id")
    return mid


def id_to_str(mid: bytes) -> str:
    """Canonical text form, e.g. ``0190c1d2-...`` (lower-case hex with dashes); sorts like the bytes.

    Formatted from ``bytes.hex`` directly: ``str(uuid.UUID(bytes=mid))`` took 4.1 µs per id here (an int
    conversion and a Python ``__str__``; 13% of a list page in the profile), this 0.5 µs (loaded machine).
    Raises ValueError unless ``mid`` is 16 bytes."""
    if len(mid) != ID_LEN:
        raise ValueError("a message id is 16 bytes")
    h = mid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def id_from_str(text: str) -> bytes:
    """Inverse of :func:`id_to_str`; raises ValueError for anything that is not a UUIDv7 string."""
    if isinstance(text, str) and len(text) == 36:  # the canonical form: skip uuid.UUID (~3 µs)
        # The four dashes in place, and 32 characters that fromhex turns into 16 bytes: fromhex skips
        # whitespace, but then fewer than 32 hex digits remain and the result is shorter than 16 bytes.
        # (Formatting the bytes back and comparing, as before, cost ~0.5 µs more per call.)
        if text[8] == text[13] == text[18] == text[23] == "-":
            try:
                raw = bytes.fromhex(text[:8] + text[9:13] + text[14:18] + text[19:23] + text[24:])
            except ValueError:
                raw = b""
            if len(raw) == ID_LEN:
                return check_id(raw)
    try:
        raw = uuid.UUID(text).bytes
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"not a message id: {text!r}") from exc
    return check_id(raw)
