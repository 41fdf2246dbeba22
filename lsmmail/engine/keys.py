"""Internal keys: ``user_key || u64 trailer`` with ``trailer = sequence << 8 | kind`` (docs/format.md).

Internal keys order by user key ascending, then trailer descending (newest version first).
"""

from __future__ import annotations

import struct

from .errors import InvalidArgument

KIND_DELETE = 0
KIND_PUT = 1
KIND_BLOB = 2
KIND_RANGE_DEL = 3

#: Sequence numbers are 56 bits: the low 8 bits of the trailer hold the kind.
MAX_SEQUENCE = (1 << 56) - 1
MAX_KEY_SIZE = 65535

_trailer = struct.Struct("<Q")


def pack_internal(user_key: bytes, seq: int, kind: int) -> bytes:
    return user_key + _trailer.pack((seq << 8) | kind)


def unpack_internal(ikey: bytes) -> tuple[bytes, int, int]:
    """Split an internal key into ``(user_key, sequence, kind)``."""
    (t,) = _trailer.unpack_from(ikey, len(ikey) - 8)
    return ikey[:-8], t >> 8, t & 0xFF


def internal_sort_key(ikey: bytes) -> tuple[bytes, int]:
    """A Python sort key that orders internal keys as the format says."""
    (t,) = _trailer.unpack_from(ikey, len(ikey) - 8)
    return ikey[:-8], -(t >> 8)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with ``prefix`` (None: no such key, i.e. the
    prefix is empty or all 0xFF). ``scan(prefix, prefix_end(prefix))`` covers exactly the prefix."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


def check_key(key: object) -> bytes:
    """``key`` as ``bytes`` (a bytearray or memoryview is copied) for a read or a scan bound;
    ``InvalidArgument`` unless it is bytes-like and 1 to ``MAX_KEY_SIZE`` bytes long."""
    if type(key) is not bytes:
        if isinstance(key, (bytearray, memoryview)):
            key = bytes(key)
        else:
            raise InvalidArgument(f"keys must be bytes, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_SIZE:
        raise InvalidArgument(f"keys must be 1 to {MAX_KEY_SIZE} bytes, got {len(key)}")
    return key
