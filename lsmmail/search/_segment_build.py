"""Building one user's flushed segment from the memory segment: the native kernel and its pure twin.

Input: ``entries``, one per (doc, field) of the memory segment, as ``(ordinal, field code, raw, ntok,
specials)`` (a :data:`~lsmmail.search.tokenizer.RawStream` with the doc's ordinal in the segment's doc
table and the field's code), in strictly ascending ``(ordinal, field)`` order. Output: the segment's
posting blocks as ``(engine key, block)`` pairs, key = ``prefix + field + term + suffix``:

* one format-1 block per (field, term): ordinals, then each doc's encoded position run (a special term
  alone in its field has the empty run ``b"\\x00"``), exactly what ``postings.encode_block_runs`` gives;
* one ordinals-only (format 2) block per term of the text fields under the any-field code ``*``.

The order of the pairs is unspecified (a WriteBatch does not care). Why C: a flush used to walk every
(term, doc) posting in Python (~2 µs each, 250 per corpus message) and the memory segment kept a dict entry
per posting; now the memory segment keeps each doc's token streams as they are and one call per user
groups, inverts and encodes them (``native/segment.c``).

``build_segment_fwd`` takes the docs as their forward records instead (``postings.encode_forward_raw``,
format 2; record i is the doc of ordinal i), which is what the memory segment keeps: the C kernel reads
the streams and specials in place, so a flush does no Python work per (doc, field).

``tests/native/test_segment_build.py`` requires both versions to give the same pairs.
"""

from __future__ import annotations

from itertools import accumulate

from .. import native
from ..engine.batch import WriteBatch
from ..engine.coding import get_varint
from ..engine.errors import Corruption
from ..native_lib import split_at
from ._group import NO_POSITIONS, group_raw_pure
from .postings import ANY, FORWARD_STREAMS, decode_forward_raw, encode_block_runs, encode_ordinals
from .tokenizer import TEXT_FIELDS

Entry = tuple[int, str, bytes, int, list[str]]

_lib = native._lib  # the *_native twin works even under LSMMAIL_PURE=1 (differential tests)
_ffi = native._ffi
NATIVE = native.lib is not None and hasattr(native.lib, "lsm_segment_build")
NATIVE_FWD = native.lib is not None and hasattr(native.lib, "lsm_segment_build_fwd")
_TEXT = frozenset(TEXT_FIELDS)
_TEXT_MASK = bytes(1 if chr(c) in _TEXT else 0 for c in range(256))


def _check_order(entries: list[Entry]) -> None:
    prev: tuple[int, str] | None = None
    for o, f, _, _, _ in entries:
        if len(f) != 1 or f == ANY or not f.isascii() or (prev is not None and (o, f) <= prev):
            raise ValueError("segment entries must be in strictly ascending (ordinal, field) order")
        prev = (o, f)


def build_segment_pure(entries: list[Entry], prefix: bytes, suffix: bytes) -> list[tuple[bytes, bytes]]:
    _check_order(entries)
    post: dict[tuple[str, str], tuple[list[int], list[bytes]]] = {}
    for o, field, raw, n, specials in entries:
        grouped = group_raw_pure(raw, n)
        for special in specials:
            if not special:
                raise ValueError("empty special term")
            if special not in grouped:
                grouped[special] = NO_POSITIONS
        for term, run in grouped.items():
            got = post.get((field, term))
            if got is None:
                post[(field, term)] = ([o], [run])
            else:
                got[0].append(o)
                got[1].append(run)
    out = []
    anyf: dict[str, set[int]] = {}
    for (field, term), (ords, runs) in post.items():
        out.append((prefix + (field + term).encode("utf-8") + suffix, encode_block_runs(ords, runs)))
        if field in _TEXT:
            anyf.setdefault(term, set()).update(ords)
    for term, ord_set in anyf.items():
        out.append((prefix + (ANY + term).encode("utf-8") + suffix, encode_ordinals(sorted(ord_set))))
    return out


def build_segment_native(entries: list[Entry], prefix: bytes, suffix: bytes) -> list[tuple[bytes, bytes]]:
    """Twin of :func:`build_segment_pure` (``ValueError`` for the same malformed inputs)."""
    n = len(entries)
    if n == 0:
        return []
    _check_order(entries)
    ords = _ffi.new("uint32_t[]", [e[0] for e in entries])
    fields = _ffi.new("uint8_t[]", [ord(e[1]) for e in entries])
    tok_buf = b"".join(e[2] for e in entries)
    tok_end = _ffi.new("uint64_t[]", n)
    ntok = _ffi.new("uint32_t[]", [e[3] for e in entries])
    specs = ["\x00".join(e[4]).encode("utf-8") for e in entries]
    spec_buf = b"".join(specs)
    spec_end = _ffi.new("uint64_t[]", n)
    nspec = _ffi.new("uint32_t[]", [len(e[4]) for e in entries])
    t = s = 0
    for i, (e, sp) in enumerate(zip(entries, specs, strict=True)):
        t += len(e[2])
        s += len(sp)
        tok_end[i] = t
        spec_end[i] = s
    res = _ffi.new("lsm_segment_result *")
    nkeys = _lib.lsm_segment_build(
        n, ords, fields, tok_buf, len(tok_buf), tok_end, ntok, spec_buf, len(spec_buf), spec_end, nspec,
        _TEXT_MASK, ord(ANY), prefix, len(prefix), suffix, len(suffix), res,
    )
    return _result(res, nkeys)


def build_segment_fwd_pure(records: list[bytes], prefix: bytes, suffix: bytes) -> list[tuple[bytes, bytes]]:
    """:func:`build_segment_pure` of the docs whose forward records (format 2) are ``records``, record i
    being the doc of ordinal i. ``ValueError`` for a record that is not well-formed format 2."""
    entries: list[Entry] = []
    for i, rec in enumerate(records):
        if not rec or rec[0] != FORWARD_STREAMS:
            raise ValueError("forward record of another format than 2")
        try:
            fields = decode_forward_raw(rec)
            nfields = get_varint(rec, 1)[0]
        except (Corruption, IndexError) as exc:
            raise ValueError(f"malformed forward record: {exc}") from None
        codes = list(fields)  # in record order
        if len(codes) != nfields or codes != sorted(codes):
            raise ValueError("forward record fields repeated or out of order")
        entries.extend((i, code, *fields[code]) for code in sorted(fields))
    return build_segment_pure(entries, prefix, suffix)


def build_segment_fwd_native(records: list[bytes], prefix: bytes, suffix: bytes) -> list[tuple[bytes, bytes]]:
    """Twin of :func:`build_segment_fwd_pure`. The kernel checks the records' structure, not their UTF-8
    (the memory segment holds records that were decoded once when they entered it)."""
    got = _fwd_buffers(records, prefix, suffix)
    if got is None:
        return []
    keys, kend, vals, vend = got
    return list(zip(split_at(keys, kend), split_at(vals, vend), strict=True))


def put_segment_fwd_pure(batch: WriteBatch, records: list[bytes], prefix: bytes, suffix: bytes) -> None:
    """``batch.put(key, block)`` for each pair of :func:`build_segment_fwd_pure` (what a flush does with
    them)."""
    for key, block in build_segment_fwd_pure(records, prefix, suffix):
        batch.put(key, block)


def put_segment_fwd_native(batch: WriteBatch, records: list[bytes], prefix: bytes, suffix: bytes) -> None:
    """:func:`put_segment_fwd_pure` with the kernel: its output buffers go into ``batch`` in one
    ``WriteBatch.put_packed`` call (~31,000 keys per 1,500-doc flush of the bench import: a Python ``put``
    per key cost ~12 us per imported message, ``put_packed`` ~6-9). On ``ValueError`` or ``MemoryError``
    nothing has been put."""
    got = _fwd_buffers(records, prefix, suffix)
    if got is not None:
        batch.put_packed(*got)


def _fwd_buffers(
    records: list[bytes], prefix: bytes, suffix: bytes
) -> tuple[bytes, list[int], bytes, list[int]] | None:
    """The kernel's output for ``records`` (see :func:`_buffers`)."""
    n = len(records)
    if n == 0:
        return None
    buf = b"".join(records)
    ends = _ffi.new("uint64_t[]", list(accumulate(map(len, records))))
    ords = _ffi.new("uint32_t[]", list(range(n)))
    res = _ffi.new("lsm_segment_result *")
    nkeys = _lib.lsm_segment_build_fwd(n, ords, buf, len(buf), ends, _TEXT_MASK, ord(ANY), prefix,
                                       len(prefix), suffix, len(suffix), res)
    return _buffers(res, nkeys)


def _result(res: object, nkeys: int) -> list[tuple[bytes, bytes]]:
    got = _buffers(res, nkeys)
    if got is None:
        return []
    keys, kend, vals, vend = got
    out = []
    ka = va = 0
    for kb, vb in zip(kend, vend, strict=True):
        out.append((keys[ka:kb], vals[va:vb]))
        ka, va = kb, vb
    return out


def _buffers(res: object, nkeys: int) -> tuple[bytes, list[int], bytes, list[int]] | None:
    """The kernel's keys and blocks as two byte strings and their end offsets (None: no keys); frees
    ``res``. ``MemoryError`` / ``ValueError`` for the kernel's error codes."""
    if nkeys == -5:
        raise MemoryError("segment build ran out of memory")
    if nkeys < 0:
        raise ValueError("malformed segment entries (token counts, empty specials or order)")
    try:
        if nkeys == 0:
            return None
        kend = _ffi.unpack(res.key_end, nkeys)
        vend = _ffi.unpack(res.val_end, nkeys)
        keys = _ffi.buffer(res.keys, kend[-1])[:]
        vals = _ffi.buffer(res.vals, vend[-1])[:]
    finally:
        _lib.lsm_segment_free(res)
    return keys, kend, vals, vend


build_segment = build_segment_native if NATIVE else build_segment_pure
build_segment_fwd = build_segment_fwd_native if NATIVE_FWD else build_segment_fwd_pure
put_segment_fwd = put_segment_fwd_native if NATIVE_FWD else put_segment_fwd_pure
