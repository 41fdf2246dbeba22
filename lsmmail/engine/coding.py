"""Varints, fixed-width integers and the checksum, as specified in docs/format.md (Conventions)."""

from __future__ import annotations

import struct

import xxhash

from .errors import Corruption

_xxh3 = xxhash.xxh3_64_intdigest

u32 = struct.Struct("<I")
u64 = struct.Struct("<Q")


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The low 32 bits of XXH3-64 (seed 0): every block, record and footer carries one."""
    return _xxh3(data) & 0xFFFFFFFF


def hash64(data: bytes) -> int:
    """XXH3-64 of ``data`` (bloom filter probes)."""
    return _xxh3(data)


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (0 ≤ value < 2**64) as unsigned LEB128."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    put_varint(out, value)
    return bytes(out)


def get_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return ``(value, next_pos)``. Raise ``Corruption`` if malformed."""
    b = buf[pos] if pos < len(buf) else -1
    if 0 <= b < 0x80:
        return b, pos + 1
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end or shift > 63:
            raise Corruption("malformed varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def put_bytes(out: bytearray, data: bytes) -> None:
    put_varint(out, len(data))
    out += data


def get_bytes(buf: bytes | bytearray | memoryview, pos: int) -> tuple[bytes, int]:
    n, pos = get_varint(buf, pos)
    end = pos + n
    if end > len(buf):
        raise Corruption("length-prefixed bytes run past the buffer")
    return bytes(buf[pos:end]), end
