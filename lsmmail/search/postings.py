"""Key layout and byte encodings of the search index (specified in docs/search.md, "Key layout").

Keys (``u8``/``u64be`` = big-endian so that byte order is numeric order)::

    s F <ulen u8><user> <doc 16>                  -> forward record of a doc not yet in a flushed segment
    s D <ulen u8><user> <doc 16>                  -> b""  (doc unindexed; filtered at query time)
    s M                                           -> u64be next segment id
    S <ulen u8><user> # <seg u64be>               -> doc table of one segment (sorted 16-byte doc ids)
    S <ulen u8><user> <field u8> <term utf-8> 00 <seg u64be>  -> posting block of (field, term) in a segment

Terms never contain NUL (see tokenizer.special_term), so ``<field><term>00`` is a prefix exactly of that
term's blocks. Every decoder checks lengths and ranges and raises :class:`Corruption` rather than return
data it cannot vouch for.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from itertools import accumulate
from operator import sub

from ..engine.coding import get_varint, put_varint
from ..engine.errors import Corruption
from ..native import decode_varints, encode_varints
from ._group import encode_positions
from .tokenizer import group, group_encoded

TAG_SEGMENT = b"S"
TAG_SMALL = b"s"
FORWARD = b"F"
DELETED = b"D"
META_NEXT_SEGMENT = b"sM"
#: Present (u64 = INDEX_FORMAT) once every segment carries the any-field (``*``) blocks; see docs/search.md.
META_FORMAT = b"sV"
INDEX_FORMAT = 2
DOC_TABLE = b"#"
#: The virtual "any text field" code: per segment, one ordinals-only block per term holding the union of
#: the term's docs over TEXT_FIELDS, so a bare word is ONE prefix scan instead of six (docs/search.md).
ANY = "*"
DOC_ID_LEN = 16

FORMAT_V1 = 1
#: An ordinals-only posting block (no positions): the any-field ``*`` blocks, one byte less per doc.
FORMAT_ORDS = 2
# Ordinal-delta encodings inside a posting block (byte 1 of the block).
DELTAS_U8 = 0  # every delta < 256: one byte each, decoded at C speed by accumulate(bytes)
DELTAS_VARINT = 1

_u64 = struct.Struct(">Q")


def user_prefix(user_key: bytes) -> bytes:
    if not 0 < len(user_key) < 256:
        raise ValueError("user_key must be 1..255 bytes")
    return bytes((len(user_key),)) + user_key


def forward_key(user_key: bytes, doc_id: bytes) -> bytes:
    return TAG_SMALL + FORWARD + user_prefix(user_key) + doc_id


def deleted_key(user_key: bytes, doc_id: bytes) -> bytes:
    return TAG_SMALL + DELETED + user_prefix(user_key) + doc_id


def segment_user_prefix(user_key: bytes) -> bytes:
    return TAG_SEGMENT + user_prefix(user_key)


def doc_table_key(user_key: bytes, seg: int) -> bytes:
    return TAG_SEGMENT + user_prefix(user_key) + DOC_TABLE + _u64.pack(seg)


def term_prefix(user_key: bytes, field: str, term: str) -> bytes:
    return TAG_SEGMENT + user_prefix(user_key) + field.encode("ascii") + term.encode("utf-8") + b"\x00"


def block_key(user_key: bytes, field: str, term: str, seg: int) -> bytes:
    return term_prefix(user_key, field, term) + _u64.pack(seg)


def split_user_key(key: bytes, skip: int) -> tuple[bytes, bytes]:
    """``(user_key, rest)`` of a key whose length-prefixed user starts at offset ``skip``."""
    n = key[skip] if len(key) > skip else 0
    end = skip + 1 + n
    if n == 0 or end > len(key):
        raise Corruption(f"search key with a bad user prefix: {key[:40]!r}")
    return key[skip + 1 : end], key[end:]


def parse_segment_key(rest: bytes) -> tuple[str, str, int]:
    """Decode what follows ``S <user>``: ``(field, term, seg)``; ``("#", "", seg)`` for doc tables."""
    if len(rest) < 9:
        raise Corruption(f"short search segment key {rest!r}")
    (seg,) = _u64.unpack_from(rest, len(rest) - 8)
    if rest[:1] == DOC_TABLE:
        if len(rest) != 9:
            raise Corruption(f"bad doc table key {rest!r}")
        return "#", "", seg
    if rest[-9] != 0:
        raise Corruption(f"posting key without term terminator {rest!r}")
    try:
        return chr(rest[0]), rest[1:-9].decode("utf-8"), seg
    except UnicodeDecodeError as e:
        raise Corruption(f"posting key with a non-UTF-8 term {rest!r}") from e


def encode_u64(v: int) -> bytes:
    return _u64.pack(v)


def decode_u64(b: bytes) -> int:
    if len(b) != 8:
        raise Corruption("bad u64 value in the search index")
    return _u64.unpack(b)[0]


# --------------------------------------------------------------------------- doc tables


def encode_doc_table(doc_ids: list[bytes]) -> bytes:
    """Sorted 16-byte ids, concatenated (the count is the length / 16)."""
    return b"".join(doc_ids)


def decode_doc_table(value: bytes) -> list[bytes]:
    if len(value) % DOC_ID_LEN:
        raise Corruption("doc table length is not a multiple of 16")
    ids = [value[i : i + DOC_ID_LEN] for i in range(0, len(value), DOC_ID_LEN)]
    for a, b in zip(ids, ids[1:], strict=False):
        if a >= b:
            raise Corruption("doc table not strictly ascending")
    return ids


# --------------------------------------------------------------------------- posting blocks
#
#   u8 format (1) | u8 delta mode | varint n | varint first ordinal
#   deltas of ordinals 2..n: n-1 bytes (mode 0) or n-1 varints (mode 1), each delta >= 1
#   then per doc, in ordinal order: varint npos, npos varints (first position absolute, then deltas >= 1)


def encode_block(entries: list[tuple[int, list[int]]]) -> bytes:
    """Encode ``[(ordinal, positions)]`` with ordinals strictly ascending and positions ascending."""
    return encode_postings([o for o, _ in entries], [p for _, p in entries])


def encode_block_runs(ords: list[int], runs: list[bytes]) -> bytes:
    """A posting block from ordinals and each doc's already-encoded position run (``_group``'s form):
    the header, then the runs concatenated. What a flush does: no Python loop over positions."""
    return bytes(_block_header(ords)) + b"".join(runs)


def _block_header(ords: list[int]) -> bytearray:
    n = len(ords)
    if n == 1:  # most blocks: a term in one doc of the segment
        out = bytearray((FORMAT_V1, DELTAS_U8, 1))
        put_varint(out, ords[0])
        return out
    if not ords:
        raise ValueError("empty posting block")
    deltas = list(map(sub, ords[1:], ords))
    out = bytearray((FORMAT_V1, DELTAS_U8))
    put_varint(out, n)
    put_varint(out, ords[0])
    if deltas:
        if min(deltas) <= 0:
            raise ValueError("ordinals must be strictly ascending")
        if max(deltas) < 256:
            out += bytes(deltas)
        else:
            out[1] = DELTAS_VARINT
            out += encode_varints(deltas)
    return out


def encode_postings(ords: list[int], plists: list[list[int]]) -> bytes:
    """:func:`encode_block` with the ordinals and their position lists given as two parallel lists.

    The varints go through ``native.encode_varints`` (one C call for the position section): with a
    Python ``put_varint`` per value this was ~60% of a flush (3.4 of 5.4 s for 3,011 corpus messages).
    """
    out = _block_header(ords)
    vals: list[int] = []
    for positions in plists:
        n = len(positions)
        vals.append(n)
        if n:
            vals.append(positions[0])
            if n > 1:
                vals += [b - a - 1 for a, b in zip(positions, positions[1:], strict=False)]
    out += encode_varints(vals)
    return bytes(out)


def encode_ordinals(ords: list[int]) -> bytes:
    """An ordinals-only block (format 2): the header of :func:`encode_block` and nothing after it."""
    block = _block_header(ords)
    block[0] = FORMAT_ORDS
    return bytes(block)


def _header(block: bytes, table_len: int) -> tuple[list[int], int]:
    if len(block) < 4 or block[0] not in (FORMAT_V1, FORMAT_ORDS):
        raise Corruption("posting block with unknown format")
    mode = block[1]
    n, pos = get_varint(block, 2)
    first, pos = get_varint(block, pos)
    if n == 0:
        raise Corruption("empty posting block")
    if mode == DELTAS_U8:
        end = pos + n - 1
        if end > len(block):
            raise Corruption("posting block truncated")
        raw = block[pos:end]
        if 0 in raw:
            raise Corruption("posting block with a zero ordinal delta")
        ords = list(accumulate(raw, initial=first))
        pos = end
    elif mode == DELTAS_VARINT:
        # one native call for the deltas (a Python get_varint per delta was ~0.3 µs each)
        deltas, used = decode_varints(memoryview(block)[pos:], n - 1)
        if len(deltas) != n - 1:
            raise Corruption("posting block truncated")
        if 0 in deltas:
            raise Corruption("posting block with a zero ordinal delta")
        ords = list(accumulate(deltas, initial=first))
        pos += used
    else:
        raise Corruption(f"posting block with unknown delta mode {mode}")
    if ords[-1] >= table_len:
        raise Corruption("posting ordinal beyond its segment's doc table")
    return ords, pos


def decode_ordinals(block: bytes, table_len: int) -> list[int]:
    """Ordinals only (positions not decoded): the fast path of single-word queries."""
    return _header(block, table_len)[0]


def decode_block(block: bytes, table_len: int) -> list[tuple[int, list[int]]]:
    """Ordinals with their positions."""
    return _walk(block, table_len, None)


def decode_positions_of(block: bytes, table_len: int, wanted: Container[int]) -> dict[int, list[int]]:
    """``{ordinal: positions}`` of the ordinals in ``wanted`` that the block holds. The whole block is
    checked as :func:`decode_block` checks it; only the wanted docs' position lists are built."""
    return dict(_walk(block, table_len, wanted))


def _walk(block: bytes, table_len: int, wanted: Container[int] | None) -> list[tuple[int, list[int]]]:
    ords, pos = _header(block, table_len)
    if block[0] == FORMAT_ORDS:
        if pos != len(block):
            raise Corruption("trailing bytes after an ordinals-only posting block")
        return [(o, []) for o in ords if wanted is None or o in wanted]
    # Every position varint in one native call, then a walk over the values: per doc ``npos`` and the
    # positions (first absolute, then gaps - 1). A value missing for a doc is truncation; values left
    # over after the last doc are trailing bytes.
    vals, _ = decode_varints(memoryview(block)[pos:])
    nvals = len(vals)
    out = []
    i = 0
    for o in ords:
        if i >= nvals:
            raise Corruption("posting block truncated")
        end = i + 1 + vals[i]
        if end > nvals:
            raise Corruption("posting block truncated")
        if wanted is None or o in wanted:
            if end > i + 1:
                out.append((o, list(accumulate(vals[i + 2 : end], _next_position, initial=vals[i + 1]))))
            else:
                out.append((o, []))
        i = end
    if i != nvals:
        raise Corruption("trailing bytes after a posting block")
    return out


def _next_position(prev: int, gap: int) -> int:
    return prev + gap + 1


# --------------------------------------------------------------------------- forward records
#
#   u8 format (1) | varint nfields | per field: u8 code, varint nterms,
#   per term: bytes term (varint length + utf-8), varint npos, positions (first absolute, then deltas >= 1)


def encode_forward(fields: dict[str, dict[str, list[int]]]) -> bytes:
    out = bytearray((FORMAT_V1,))
    put_varint(out, len(fields))
    for code in sorted(fields):
        terms = fields[code]
        out.append(ord(code))
        put_varint(out, len(terms))
        for term in sorted(terms):
            tb = term.encode("utf-8")
            put_varint(out, len(tb))
            out += tb
            positions = terms[term]
            put_varint(out, len(positions))
            prev = -1
            for p in positions:
                put_varint(out, p - prev - 1 if prev >= 0 else p)
                prev = p
    return bytes(out)


#   Format 2 (written since the token streams; format 1 above is still read):
#   u8 format (2) | varint nfields | per field: u8 code, varint ntokens, bytes tokens (varint length +
#   utf-8 of the tokens joined by " ", "" marking a position with no indexed token), varint nspecials,
#   bytes specials (varint length + utf-8 joined by NUL)

FORWARD_STREAMS = 2


def encode_forward_streams(streams: dict[str, tuple[list[str], list[str]]]) -> bytes:
    """The forward record of ``tokenizer.analyze_streams(doc)``: two joins per field, no per-token work.

    Replaces the per-position varint loop of :func:`encode_forward` (~160 µs per corpus message, ~10 µs
    now); :func:`decode_forward` regroups it with ``tokenizer.group``, i.e. exactly what ``analyze`` gives.
    """
    out = bytearray((FORWARD_STREAMS,))
    put_varint(out, len(streams))
    for code in sorted(streams):
        toks, specials = streams[code]
        out.append(ord(code))
        for items, sep in ((toks, " "), (specials, "\x00")):
            raw = sep.join(items).encode("utf-8")
            put_varint(out, len(items))
            put_varint(out, len(raw))
            out += raw
    return bytes(out)


def encode_forward_raw(streams: dict[str, tuple[bytes, int, list[str]]]) -> bytes:
    """:func:`encode_forward_streams` of ``tokenizer.analyze_raw(doc)`` (the same bytes): the token
    streams arrive already joined, so only the specials are joined here."""
    out = bytearray((FORWARD_STREAMS,))
    put_varint(out, len(streams))
    for code in sorted(streams):
        raw, n, specials = streams[code]
        out.append(ord(code))
        put_varint(out, n)
        put_varint(out, len(raw))
        out += raw
        sraw = "\x00".join(specials).encode("utf-8")
        put_varint(out, len(specials))
        put_varint(out, len(sraw))
        out += sraw
    return bytes(out)


def decode_forward_raw(value: bytes) -> dict[str, tuple[bytes, int, list[str]]]:
    """The streams of a forward record of either format in ``tokenizer.analyze_raw``'s form (what the
    memory segment keeps); ``Corruption`` for a malformed record. A format-1 record (grouped postings)
    becomes streams that group to the same postings: each term at its positions, "" elsewhere."""
    if value and value[0] == FORWARD_STREAMS:
        return {
            code: (" ".join(toks).encode("utf-8"), len(toks), specials)
            for code, (toks, specials) in _decode_forward_streams(value).items()
        }
    out: dict[str, tuple[bytes, int, list[str]]] = {}
    for code, terms in decode_forward(value).items():
        size = max((ps[-1] + 1 for ps in terms.values() if ps), default=0)
        toks = [""] * size
        for term, ps in terms.items():
            for p in ps:
                if toks[p]:
                    raise Corruption("forward record with two terms at one position")
                toks[p] = term
        out[code] = (" ".join(toks).encode("utf-8"), size, [t for t, ps in terms.items() if not ps])
    return out


def _decode_forward_streams(value: bytes) -> dict[str, tuple[list[str], list[str]]]:
    try:
        nfields, pos = get_varint(value, 1)
        streams: dict[str, tuple[list[str], list[str]]] = {}
        for _ in range(nfields):
            code = chr(value[pos])
            pos += 1
            parts: list[list[str]] = []
            for sep in (" ", "\x00"):
                n, pos = get_varint(value, pos)
                rlen, pos = get_varint(value, pos)
                if pos + rlen > len(value):
                    raise Corruption("forward record stream runs past the end")
                items = value[pos : pos + rlen].decode("utf-8").split(sep) if n else []
                pos += rlen
                if len(items) != n or (n == 0 and rlen):
                    raise Corruption("forward record stream with a wrong item count")
                parts.append(items)
            if code in streams or not all(parts[1]):
                raise Corruption("forward record with a repeated field or an empty special")
            streams[code] = (parts[0], parts[1])
    except (IndexError, UnicodeDecodeError) as e:
        raise Corruption(f"malformed forward record: {e}") from e
    if pos != len(value):
        raise Corruption("trailing bytes after a forward record")
    return streams


def decode_forward_encoded(value: bytes) -> dict[str, dict[str, bytes]]:
    """:func:`decode_forward` with positions as encoded runs (the memory segment's form)."""
    if value and value[0] == FORWARD_STREAMS:
        return group_encoded(_decode_forward_streams(value))
    fields = decode_forward(value)
    return {code: {t: encode_positions(ps) for t, ps in terms.items()} for code, terms in fields.items()}


def decode_forward(value: bytes) -> dict[str, dict[str, list[int]]]:
    """``field -> term -> positions`` of a forward record of either format."""
    if value and value[0] == FORWARD_STREAMS:
        return group(_decode_forward_streams(value))
    if not value or value[0] != FORMAT_V1:
        raise Corruption("forward record with unknown format")
    try:
        nfields, pos = get_varint(value, 1)
        fields: dict[str, dict[str, list[int]]] = {}
        for _ in range(nfields):
            code = chr(value[pos])
            pos += 1
            nterms, pos = get_varint(value, pos)
            terms: dict[str, list[int]] = {}
            for _ in range(nterms):
                tlen, pos = get_varint(value, pos)
                if pos + tlen > len(value):
                    raise Corruption("forward record term runs past the end")
                term = value[pos : pos + tlen].decode("utf-8")
                pos += tlen
                npos, pos = get_varint(value, pos)
                plist = []
                prev = -1
                for _ in range(npos):
                    d, pos = get_varint(value, pos)
                    prev = d if prev < 0 else prev + d + 1
                    plist.append(prev)
                terms[term] = plist
            fields[code] = terms
    except (IndexError, UnicodeDecodeError) as e:
        raise Corruption(f"malformed forward record: {e}") from e
    if pos != len(value):
        raise Corruption("trailing bytes after a forward record")
    return fields
