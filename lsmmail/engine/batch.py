"""Write batches and their WAL encoding (docs/format.md, "WAL record payload = one write batch").

::

    u64 sequence      sequence number of the first entry
    u32 count         number of entries
    count x entry:
      u8    kind      0 DELETE, 1 PUT, 3 RANGE_DEL
      bytes key
      bytes value     only for PUT (the value) and RANGE_DEL (the exclusive end key)

Entry *i* gets sequence number ``sequence + i``. A batch is one log record, so it is recovered whole or not
at all.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence

from ..native_lib import _ffi, _lib, lib
from .coding import encode_varint, get_varint, put_varint
from .errors import Corruption, InvalidArgument
from .keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL, MAX_KEY_SIZE, MAX_SEQUENCE

#: u64 sequence + u32 count.
BATCH_HEADER_SIZE = 12

#: Values are at most 2**32 - 1 bytes (a blob record stores the length as u32).
MAX_VALUE_SIZE = (1 << 32) - 1

#: Largest entry count (the count field is a u32).
MAX_BATCH_COUNT = (1 << 32) - 1

#: A put value of at least this many bytes is kept as its own piece of the encoding instead of being
#: appended to the growing buffer (``WriteBatch._parts``): a mail import batch holds ~64 raw messages and
#: bodies of 2-60 KB, and growing one bytearray over them re-copied it on reallocation (the pieces are
#: joined once at the end). Appending the values of 64 sample messages: ~10 -> ~2.6 us per message
#: (median of 15 runs); below ~1 KB the extra piece costs more than the copy it saves.
_PIECE_MIN = 2048

_header = struct.Struct("<QI")

#: The kind byte and one-byte key length that start a DELETE of a key of each length below 128: one
#: bytearray append instead of two in ``WriteBatch.delete``'s fast path.
_DELETE_HEADS = tuple(bytes((KIND_DELETE, n)) for n in range(0x80))
_KIND_NAMES = {KIND_DELETE: "DELETE", KIND_PUT: "PUT", KIND_RANGE_DEL: "RANGE_DEL"}

Entry = tuple[int, bytes, bytes]


def _as_bytes(obj: object, what: str) -> bytes:
    """Accept bytes, bytearray or memoryview (copied, so later changes by the caller do not leak in)."""
    if type(obj) is bytes:
        return obj
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, memoryview):
        return obj.tobytes()
    raise InvalidArgument(f"{what} must be bytes, bytearray or memoryview, not {type(obj).__name__}")


def _byte_len(obj: object) -> int:
    return obj.nbytes if isinstance(obj, memoryview) else len(obj)  # type: ignore[arg-type]


def _check_key(obj: object, what: str) -> bytes:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        n = _byte_len(obj)
        if n == 0:
            raise InvalidArgument(f"{what} must not be empty")
        if n > MAX_KEY_SIZE:
            raise InvalidArgument(f"{what} is {n} bytes; keys are at most {MAX_KEY_SIZE} bytes")
    return _as_bytes(obj, what)


def _check_value(obj: object) -> bytes:
    # Check the size before converting, so an oversized value is refused without being copied.
    if isinstance(obj, (bytes, bytearray, memoryview)) and _byte_len(obj) > MAX_VALUE_SIZE:
        raise InvalidArgument(f"value is {_byte_len(obj)} bytes; values are at most {MAX_VALUE_SIZE} bytes")
    return _as_bytes(obj, "value")


class WriteBatch:
    """Atomic group of writes: all apply or none (one WAL record).

    Entries apply in the order they were added; a later entry for the same key wins. Arguments are
    validated when added (``InvalidArgument``): keys are 1 to 65,535 bytes, values at most 2**32 - 1
    bytes, and a range ``[start, end)`` needs ``start < end``. ``bytearray`` and ``memoryview`` arguments
    are copied to ``bytes``.

    ``entries`` is the list of ``(kind, key, value)``: ``value`` is ``b""`` for a DELETE and the exclusive
    end key for a RANGE_DEL. It is decoded from the batch's encoding when asked for (and kept until the
    batch changes): treat it as read-only.
    """

    __slots__ = ("_count", "_decoded", "_parts", "_parts_len", "_rep")

    def __init__(self) -> None:
        # Only the encoding and the entry count are kept as entries are added: a list of entry tuples
        # beside them was ~25 of a batched delete's ~165 ns in Python, and a put_packed of a search
        # flush's ~31k keys sliced every key and value into one. ``entries`` decodes them on demand.
        self._count = 0
        self._decoded: list[Entry] | None = None
        # The WAL payload's entries, encoded as they are added (the header needs the sequence number,
        # known only at commit): the leader then frames one buffer instead of re-walking every entry.
        # The encoding is ``b"".join(_parts) + _rep``: finished pieces (large values, packed puts, and
        # the buffer before each of them) and the buffer being appended to; ``_parts_len`` their bytes.
        self._rep = bytearray()
        self._parts: list[bytes | bytearray] = []
        self._parts_len = 0

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``."""
        # Fast path for the common case (bytes key and value, both short enough that the checks below
        # cannot fail): one call per put instead of four; ~0.8 -> 0.5 us per put.
        if (type(key) is bytes and type(value) is bytes and 0 < len(key) <= MAX_KEY_SIZE
                and len(value) <= MAX_VALUE_SIZE):
            if self._count >= MAX_BATCH_COUNT:
                raise InvalidArgument(f"a batch holds at most {MAX_BATCH_COUNT} entries")
            self._count += 1
            rep = self._rep
            rep.append(KIND_PUT)
            n = len(key)
            if n < 0x80:
                rep.append(n)
            else:
                put_varint(rep, n)
            rep += key
            n = len(value)
            if n < 0x80:
                rep.append(n)
                rep += value
            elif n < _PIECE_MIN:  # < 0x4000: a two-byte length (no put_varint call, ~60 ns)
                rep.append(n & 0x7F | 0x80)
                rep.append(n >> 7)
                rep += value
            else:
                put_varint(rep, n)
                self._parts += (rep, value)
                self._parts_len += len(rep) + n
                self._rep = bytearray()
            return
        k = _check_key(key, "key")
        v = _check_value(value)
        self._add(KIND_PUT, k, v)

    def put_packed(
        self, keys: bytes, key_ends: Sequence[int], values: bytes, value_ends: Sequence[int]
    ) -> None:
        """``put(key_i, value_i)`` for i = 0, 1, ... in order, where
        ``key_i = keys[key_ends[i-1]:key_ends[i]]`` and ``value_i = values[value_ends[i-1]:value_ends[i]]``
        (``key_ends[-1]`` counts as 0): the layout native kernels return many keys and values in. Same
        entries and same encoding as those puts, in one call (~0.25 instead of ~0.5 us per key: a search
        segment flush puts ~30,000).

        ``InvalidArgument``, with nothing added, unless ``keys`` and ``values`` are bytes, both end lists
        have the same length, each is non-decreasing and ends at the length of its buffer, and every key
        is 1 to 65,535 bytes (values fit: a buffer's length bounds them)."""
        if type(keys) is not bytes or type(values) is not bytes:
            raise InvalidArgument("put_packed takes keys and values as bytes")
        n = len(key_ends)
        if len(value_ends) != n:
            raise InvalidArgument(f"put_packed: {n} key ends but {len(value_ends)} value ends")
        if n == 0:
            if keys or values:
                raise InvalidArgument("put_packed: bytes given without ends")
            return
        if self._count + n > MAX_BATCH_COUNT:
            raise InvalidArgument(f"a batch holds at most {MAX_BATCH_COUNT} entries")
        encoded = _pack_puts(keys, key_ends, values, value_ends)
        self._count += n
        if self._rep:
            self._parts.append(self._rep)
            self._parts_len += len(self._rep)
            self._rep = bytearray()
        self._parts.append(encoded)
        self._parts_len += len(encoded)

    def delete(self, key: bytes) -> None:
        """Remove ``key`` (a no-op if absent)."""
        # Fast path as in put (a short bytes key): the checks and put_varint calls were ~half of a
        # batched delete's foreground cost once the memtable insert moved to C.
        if type(key) is bytes and 0 < len(key) < 0x80 and self._count < MAX_BATCH_COUNT:
            self._count += 1
            rep = self._rep
            rep += _DELETE_HEADS[len(key)]
            rep += key
            return
        self._add(KIND_DELETE, _check_key(key, "key"), b"")

    def delete_range(self, start: bytes, end: bytes) -> None:
        """Remove every key ``k`` with ``start <= k < end`` (bytewise)."""
        s = _check_key(start, "range start")
        e = _check_key(end, "range end")
        if not s < e:
            raise InvalidArgument(f"delete_range needs start < end, got start={s[:40]!r} end={e[:40]!r}")
        self._add(KIND_RANGE_DEL, s, e)

    def _add(self, kind: int, key: bytes, value: bytes) -> None:
        if self._count >= MAX_BATCH_COUNT:
            raise InvalidArgument(f"a batch holds at most {MAX_BATCH_COUNT} entries")
        self._count += 1
        rep = self._rep
        rep.append(kind)
        put_varint(rep, len(key))
        rep += key
        if kind != KIND_DELETE:
            put_varint(rep, len(value))
            rep += value

    def clear(self) -> None:
        """Remove every entry."""
        self._count = 0
        self._decoded = None
        self._rep.clear()
        self._parts.clear()
        self._parts_len = 0

    @property
    def entries(self) -> list[Entry]:
        """The entries in the order they were added, as ``(kind, key, value)`` (see the class docstring)."""
        d = self._decoded
        # Entries are only ever appended (clear() drops the cache), so an equal count means unchanged.
        if d is None or len(d) != self._count:
            d = self._decoded = decode_entries(self.encoded_entries(), self._count)
        return d

    def committed_entries(self) -> EncodedEntries:
        """What the write path hands the committer: the count at once, the tuples only if it iterates
        (range deletions, the pure memtable). A snapshot: later changes to the batch do not show."""
        return EncodedEntries(self.encoded_entries(), self._count)

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    @property
    def byte_size(self) -> int:
        """Size in bytes of this batch's WAL payload (exactly ``len(encode_batch(seq, entries))``)."""
        return BATCH_HEADER_SIZE + self._parts_len + len(self._rep)

    def encoded_entries(self) -> bytes:
        """The entries part of the WAL payload (everything after the 12-byte header), a copy."""
        if self._parts:
            return b"".join([*self._parts, self._rep])
        return bytes(self._rep)

    def encode(self, seq: int) -> bytes:
        """The WAL payload of this batch with first sequence number ``seq`` (same bytes as
        ``encode_batch(seq, self.entries)``)."""
        if self._parts:
            return b"".join([encode_header(seq, self._count), *self._parts, self._rep])
        return encode_header(seq, self._count) + self._rep

    def __repr__(self) -> str:
        return f"<WriteBatch {self._count} entries, {self.byte_size} bytes>"


class EncodedEntries(Sequence[Entry]):
    """A batch's entries as its encoding (``WriteBatch.encoded_entries()``) and count: ``len()`` at once,
    the ``(kind, key, value)`` tuples decoded on first use."""

    __slots__ = ("_count", "_list", "rep")

    def __init__(self, rep: bytes, count: int) -> None:
        self.rep = rep
        self._count = count
        self._list: list[Entry] | None = None

    def _decoded(self) -> list[Entry]:
        if self._list is None:
            self._list = decode_entries(self.rep, self._count)
        return self._list

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        return self._decoded()[i]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _check_ends(ends: Sequence[int], size: int, what: str, min_len: int, max_len: int) -> None:
    prev = 0
    for e in ends:
        if not min_len <= e - prev <= max_len:
            raise InvalidArgument(f"put_packed: {what} of {e - prev} bytes (ends must rise, {what}s are "
                                  f"{min_len} to {max_len} bytes)")
        prev = e
    if prev != size:
        raise InvalidArgument(f"put_packed: {what} ends stop at {prev}, not at the buffer's {size} bytes")


def _pack_puts_pure(keys: bytes, key_ends: Sequence[int], values: bytes, value_ends: Sequence[int]) -> bytes:
    """The encoded entries of ``WriteBatch.put_packed``'s puts (twin of ``native/batchbuild.c``);
    ``InvalidArgument`` for ends that break its rules."""
    _check_ends(key_ends, len(keys), "key", 1, MAX_KEY_SIZE)
    _check_ends(value_ends, len(values), "value", 0, MAX_VALUE_SIZE)
    out = bytearray()
    ka = va = 0
    for kb, vb in zip(key_ends, value_ends, strict=True):
        out.append(KIND_PUT)
        put_varint(out, kb - ka)
        out += keys[ka:kb]
        put_varint(out, vb - va)
        out += values[va:vb]
        ka, va = kb, vb
    return bytes(out)


def _pack_puts_native(
    keys: bytes, key_ends: Sequence[int], values: bytes, value_ends: Sequence[int]
) -> bytes:
    """Twin of :func:`_pack_puts_pure` (``lsm_batch_pack_puts``); the ends must be ints >= 0."""
    n = len(key_ends)
    try:
        kend = _ffi.new("uint64_t[]", key_ends)
        vend = _ffi.new("uint64_t[]", value_ends)
    except (OverflowError, TypeError):
        raise InvalidArgument("put_packed: ends must be non-negative ints below 2**64") from None
    cap = len(keys) + len(values) + 9 * n
    out = _ffi.new("uint8_t[]", cap or 1)
    got = _lib.lsm_batch_pack_puts(n, keys, len(keys), kend, values, len(values), vend, out, cap)
    if got < 0:
        _pack_puts_pure(keys, key_ends, values, value_ends)  # names what is wrong
        raise InvalidArgument("put_packed: malformed ends")  # pragma: no cover - the twin raised
    return _ffi.buffer(out, got)[:]


_PACK_NATIVE = _lib is not None and hasattr(_lib, "lsm_batch_pack_puts")
_pack_puts = _pack_puts_native if _PACK_NATIVE and lib is not None else _pack_puts_pure


def encode_single_put(key: object, value: object) -> bytes | None:
    """The encoded entries (``WriteBatch.encoded_entries()``) of a batch holding only ``put(key, value)``,
    for ``DB.put`` without building a batch (~1 us of a single put's ~11). None when the arguments are
    not ``bytes`` with a key of 1..127 bytes and a value of at most ``MAX_VALUE_SIZE`` bytes: the caller
    builds a ``WriteBatch`` then, whose checks report what is wrong."""
    if type(key) is not bytes or type(value) is not bytes:
        return None
    kn = len(key)
    vn = len(value)
    if not 0 < kn < 0x80:
        return None
    if vn < 0x80:
        vlen = bytes((vn,))
    elif vn < 0x4000:
        vlen = bytes((vn & 0x7F | 0x80, vn >> 7))
    elif vn <= MAX_VALUE_SIZE:
        vlen = encode_varint(vn)
    else:
        return None
    return bytes((KIND_PUT, kn)) + key + vlen + value


def encode_header(seq: int, count: int) -> bytes:
    """The 12-byte payload header. ``InvalidArgument`` if the sequence numbers do not fit in 56 bits."""
    if seq < 0 or seq + max(count, 1) - 1 > MAX_SEQUENCE:
        raise InvalidArgument(f"sequence numbers {seq}..{seq + count - 1} do not fit in 56 bits")
    return _header.pack(seq, count)


def encode_batch(seq: int, entries: Iterable[Entry]) -> bytes:
    """Encode ``entries`` as a WAL payload whose first entry has sequence number ``seq``.

    Raises ``InvalidArgument`` for a kind other than DELETE, PUT or RANGE_DEL, or if the batch's sequence
    numbers do not fit in 56 bits. Keys and values are assumed valid (``WriteBatch`` checked them).
    """
    out = bytearray(BATCH_HEADER_SIZE)
    count = 0
    for kind, key, value in entries:
        if kind not in _KIND_NAMES:
            raise InvalidArgument(f"entry kind {kind} cannot be written to the WAL")
        out.append(kind)
        put_varint(out, len(key))
        out += key
        if kind != KIND_DELETE:
            put_varint(out, len(value))
            out += value
        count += 1
    if count > MAX_BATCH_COUNT:
        raise InvalidArgument(f"a batch holds at most {MAX_BATCH_COUNT} entries")
    if seq < 0 or seq + max(count, 1) - 1 > MAX_SEQUENCE:
        raise InvalidArgument(f"sequence numbers {seq}..{seq + count - 1} do not fit in 56 bits")
    _header.pack_into(out, 0, seq, count)
    return bytes(out)


def _get_length(buf: bytes, pos: int, i: int, what: str) -> tuple[int, int]:
    """A varint length at ``pos`` whose bytes fit in ``buf``; return ``(length, pos after the varint)``."""
    try:
        n, pos = get_varint(buf, pos)
    except Corruption:
        raise Corruption(f"write batch entry {i}: malformed {what} length") from None
    if pos + n > len(buf):
        raise Corruption(f"write batch entry {i}: {what} of {n} bytes runs past the end")
    return n, pos


def decode_batch(payload: bytes | bytearray | memoryview) -> tuple[int, list[Entry]]:
    """Decode a WAL payload into ``(first_sequence, entries)``.

    Raises ``Corruption`` if the payload is malformed: shorter than its header, a varint or a length that
    runs past the end, an empty or over-long key, an unknown kind, fewer entries than ``count``, bytes
    left over after ``count`` entries, or sequence numbers beyond 56 bits.
    """
    buf = bytes(payload)
    end = len(buf)
    if end < BATCH_HEADER_SIZE:
        raise Corruption(f"write batch of {end} bytes is shorter than its {BATCH_HEADER_SIZE}-byte header")
    seq, count = _header.unpack_from(buf, 0)
    # Every entry takes at least 3 bytes (kind, key length, a key byte): refuse an absurd count up front.
    if count * 3 > end - BATCH_HEADER_SIZE:
        raise Corruption(f"write batch claims {count} entries but holds only {end} bytes")
    if count and seq + count - 1 > MAX_SEQUENCE:
        raise Corruption(f"write batch sequence numbers {seq}..{seq + count - 1} exceed 56 bits")
    pos = BATCH_HEADER_SIZE
    entries: list[Entry] = []
    for i in range(count):
        if pos >= end:
            raise Corruption(f"write batch claims {count} entries but ends after {i}")
        kind = buf[pos]
        pos += 1
        if kind not in _KIND_NAMES:
            raise Corruption(f"write batch entry {i} has unknown kind {kind}")
        n, pos = _get_length(buf, pos, i, "key")
        if n == 0 or n > MAX_KEY_SIZE:
            raise Corruption(f"write batch entry {i} has a key of {n} bytes")
        key = buf[pos : pos + n]
        pos += n
        if kind == KIND_DELETE:
            value = b""
        else:
            n, pos = _get_length(buf, pos, i, "value")
            value = buf[pos : pos + n]
            pos += n
            if kind == KIND_RANGE_DEL and not (0 < n <= MAX_KEY_SIZE and key < value):
                raise Corruption(f"write batch entry {i}: range end does not follow its start")
        entries.append((kind, key, value))
    if pos != end:
        raise Corruption(f"write batch has {end - pos} bytes after its {count} entries")
    return seq, entries


def decode_entries(rep: bytes | bytearray, count: int) -> list[Entry]:
    """The ``count`` entries encoded in ``rep`` (a payload without its header), as :func:`decode_batch`
    reads them; ``Corruption`` if malformed."""
    return decode_batch(_header.pack(0, count) + rep)[1]
