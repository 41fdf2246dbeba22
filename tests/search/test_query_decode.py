"""The query side's posting-block decoders (one native varint call per block) against a byte-by-byte
reference decoder of the documented format, on valid, truncated and random blocks, with the C varint
kernel and its pure twin alike: same values, or Corruption from both."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.errors import Corruption
from lsmmail.search import postings as P

TWINS = [pytest.param(native.decode_varints_pure, id="pure")]
if native.BUILT:
    TWINS.append(pytest.param(native.decode_varints_native, id="native"))


def _varint(b: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        if pos >= len(b) or shift > 63:
            raise Corruption("bad varint")
        c = b[pos]
        pos += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            if v >= 1 << 64:
                raise Corruption("bad varint")
            return v, pos
        shift += 7


def reference(block: bytes, table_len: int) -> list[tuple[int, list[int]]]:
    """docs/search.md "Posting block", decoded one byte at a time."""
    if len(block) < 4 or block[0] not in (1, 2) or block[1] not in (0, 1):
        raise Corruption("header")
    n, pos = _varint(block, 2)
    first, pos = _varint(block, pos)
    if n == 0:
        raise Corruption("empty")
    ords = [first]
    for _ in range(n - 1):
        if block[1] == 0:
            if pos >= len(block):
                raise Corruption("truncated")
            d, pos = block[pos], pos + 1
        else:
            d, pos = _varint(block, pos)
        if d == 0:
            raise Corruption("zero delta")
        ords.append(ords[-1] + d)
    if ords[-1] >= table_len:
        raise Corruption("ordinal")
    out = []
    for o in ords:
        plist: list[int] = []
        if block[0] == 1:
            npos, pos = _varint(block, pos)
            for k in range(npos):
                d, pos = _varint(block, pos)
                plist.append(d if k == 0 else plist[-1] + d + 1)
        out.append((o, plist))
    if pos != len(block):
        raise Corruption("trailing")
    return out


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return "ok", fn(*args)
    except Corruption:
        return "corruption", None


_ords = st.lists(st.integers(0, 3_000_000), min_size=1, max_size=30, unique=True).map(sorted)
_pos = st.lists(st.integers(0, 70_000), max_size=5, unique=True).map(sorted)


@pytest.mark.parametrize("twin", TWINS)
@settings(deadline=None, max_examples=150)
@given(ords=_ords, data=st.data(), ords_only=st.booleans())
def test_valid_and_damaged_blocks_match_the_reference(twin, ords, data, ords_only) -> None:  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "decode_varints", twin)
        if ords_only:
            block = P.encode_ordinals(ords)
            entries = [(o, []) for o in ords]
        else:
            entries = [(o, data.draw(_pos)) for o in ords]
            block = P.encode_block(entries)
        n = ords[-1] + 1
        assert P.decode_block(block, n) == reference(block, n) == entries
        assert P.decode_ordinals(block, n) == ords
        wanted = set(data.draw(st.lists(st.sampled_from(ords + [n, n + 7]), max_size=6)))
        assert P.decode_positions_of(block, n, wanted) == {o: p for o, p in entries if o in wanted}
        cut = data.draw(st.integers(0, len(block) - 1))
        flip = data.draw(st.tuples(st.integers(0, len(block) - 1), st.integers(0, 255)))
        damaged = bytearray(block)
        damaged[flip[0]] = flip[1]
        for bad in (block[:cut], block + b"\x00", block + b"\x81", bytes(damaged)):
            got = outcome(P.decode_block, bad, n)
            assert got == outcome(reference, bad, n), bad.hex()
            ref = outcome(reference, bad, n)
            some = {o for o, _ in (ref[1] or [])[::2]}
            expect = ("ok", {o: p for o, p in ref[1] if o in some}) if ref[0] == "ok" else ref
            assert outcome(P.decode_positions_of, bad, n, some) == expect


@pytest.mark.parametrize("twin", TWINS)
@settings(deadline=None, max_examples=200)
@given(raw=st.binary(min_size=0, max_size=40), table_len=st.integers(1, 10**6))
def test_random_bytes_match_the_reference(twin, raw: bytes, table_len: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "decode_varints", twin)
        for block in (raw, b"\x01\x01" + raw, b"\x02\x01" + raw, b"\x01\x00" + raw):
            assert outcome(P.decode_block, block, table_len) == outcome(reference, block, table_len)
            if outcome(reference, block, table_len)[0] == "ok":
                assert P.decode_ordinals(block, table_len) == [o for o, _ in reference(block, table_len)]
