"""Grouping one field's token stream into ``term -> positions``: the native kernel and its pure twins.

Positions are list indexes; "" tokens hold a position but are not terms; terms come out in first-occurrence
order with ascending positions. Two shapes:

* ``group_tokens(tokens) -> {term: [positions]}`` (what ``tokenizer.analyze`` returns);
* ``group_encoded(tokens) -> {term: run}`` where ``run`` is the positions encoded exactly as in a posting
  block (varint count, first position, then gaps - 1): what the index keeps in its memory segment and what a
  flush concatenates into blocks. Bytes are not tracked by Python's garbage collector, whose passes over
  the millions of small position lists of a memory segment cost more than building them (measured: the
  grouping of a corpus body took 85 µs with the collector off and ~300 µs with it on, in a process holding
  one import's postings); the C kernel (``native/group.c``) hashes tokens and encodes runs without a Python
  loop per token or position.

``tests/native/test_group_tokens.py`` requires the native and pure versions to give equal results.
"""

from __future__ import annotations

from itertools import accumulate

from .. import native
from ..engine.coding import put_varint
from ..engine.errors import Corruption

# The built extension even under LSMMAIL_PURE=1, so the differential tests still hold the kernel against
# its twin there; dispatch below honours LSMMAIL_PURE.
_lib = native._lib
_ffi = native._ffi
#: The kernel exists in extensions built since it was added; an older build falls back to the twin.
NATIVE = _lib is not None and hasattr(_lib, "lsm_group_tokens")
_DISPATCH = NATIVE and not native.PURE_FORCED
#: Encoded run of a position-less special (count 0).
NO_POSITIONS = b"\x00"


def group_tokens(tokens: list[str]) -> dict[str, list[int]]:
    f: dict[str, list[int]] = {}
    get = f.get
    for p, tok in enumerate(tokens):
        if tok:
            lst = get(tok)
            if lst is None:
                f[tok] = [p]
            else:
                lst.append(p)
    return f


def encode_positions(positions: list[int]) -> bytes:
    """The posting-block encoding of one doc's ascending positions: count, first, then gaps - 1."""
    out = bytearray()
    put_varint(out, len(positions))
    prev = -1
    for p in positions:
        put_varint(out, p - prev - 1 if prev >= 0 else p)
        prev = p
    return bytes(out)


def decode_positions(run: bytes) -> list[int]:
    """Inverse of :func:`encode_positions`; ``Corruption`` if ``run`` is not exactly one run."""
    vals, used = native.decode_varints(run)
    if used != len(run) or not vals or vals[0] != len(vals) - 1:
        raise Corruption("malformed position run")
    if len(vals) == 1:
        return []
    return list(accumulate(vals[2:], lambda a, g: a + g + 1, initial=vals[1]))


def group_encoded_pure(tokens: list[str]) -> dict[str, bytes]:
    return {t: encode_positions(ps) for t, ps in group_tokens(tokens).items()}


def group_encoded_native(tokens: list[str]) -> dict[str, bytes]:
    """Twin of :func:`group_encoded_pure`; tokens must not contain " " (words never do)."""
    if not tokens:
        return {}
    return group_raw_native(" ".join(tokens).encode("utf-8"), len(tokens))


def group_raw_pure(raw: bytes, n: int) -> dict[str, bytes]:
    """:func:`group_encoded` of the ``n`` tokens joined by single spaces in ``raw`` (a stream's stored form).
    ``ValueError`` if ``raw`` does not hold exactly ``n`` tokens."""
    tokens = raw.decode("utf-8").split(" ") if n else []
    if len(tokens) != n or (n == 0 and raw):
        raise ValueError("token stream does not match its token count")
    return group_encoded_pure(tokens)


def group_raw_native(raw: bytes, n: int) -> dict[str, bytes]:
    """Twin of :func:`group_raw_pure`."""
    if n == 0:
        if raw:
            raise ValueError("token stream does not match its token count")
        return {}
    size = 1 << n.bit_length()  # a power of two > n
    table = _ffi.new("uint32_t[]", size)  # zeroed: 0 marks an empty slot
    scratch = _ffi.new("uint32_t[]", 6 * n + 1)
    offsets = scratch + 5 * n
    enc = _ffi.new("uint8_t[]", 10 * n)
    terms = _ffi.new("uint8_t[]", len(raw) or 1)
    terms_len = _ffi.new("size_t *")
    nterms = _lib.lsm_group_tokens(raw, len(raw), n, scratch, table, size, offsets, enc, terms, terms_len)
    if nterms < 0:
        raise ValueError("token stream does not match its token count (a token contains a space?)")
    if nterms == 0:
        return {}
    names = _ffi.buffer(terms, terms_len[0])[:].decode("utf-8").split(" ")
    offs = _ffi.unpack(offsets, nterms + 1)
    runs = _ffi.buffer(enc, offs[-1])[:]
    return {t: runs[a:b] for t, a, b in zip(names, offs, offs[1:], strict=False)}


group_encoded = group_encoded_native if _DISPATCH else group_encoded_pure
group_raw = group_raw_native if _DISPATCH else group_raw_pure
