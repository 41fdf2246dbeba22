"""The fixed-length fast path of the native data-block decode (``native._user_keys``): keys of one
length are split by one ``Struct.unpack``; anything else by slices. Both must give the pure decode's
entries, or its Corruption."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.block import BlockBuilder, decode_data_block_spans_py
from lsmmail.engine.errors import Corruption

pytestmark = pytest.mark.skipif(not native.BUILT, reason="native extension not built")

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _block(entries: list[tuple[bytes, int, int, bytes]], interval: int) -> bytes:
    b = BlockBuilder(interval)
    for user, seq, kind, value in entries:
        b.add(user + struct.pack("<Q", (seq << 8) | kind), value)
    return b.finish()


def _outcome(fn, blk: bytes):  # type: ignore[no-untyped-def]
    try:
        return "ok", fn(blk)
    except Corruption:
        return "err", None


@st.composite
def fixed_length_entries(draw: st.DrawFn) -> list[tuple[bytes, int, int, bytes]]:
    n = draw(st.integers(1, 12))
    users = draw(st.lists(st.binary(min_size=n, max_size=n), min_size=1, max_size=60))
    out = [(u, draw(st.integers(0, 2**56 - 1)), draw(st.sampled_from([0, 1, 2, 1, 1, 3])),
            draw(st.binary(max_size=20))) for u in users]
    return sorted(out, key=lambda e: (e[0], -e[1]))


@FAST
@given(fixed_length_entries(), st.integers(1, 16), st.sampled_from(["none", "flip", "truncate"]), st.data())
def test_fixed_length_keys_match_pure(entries, interval: int, how: str, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    blk = bytearray(_block(entries, interval))
    if how == "flip":
        blk[data.draw(st.integers(0, len(blk) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del blk[data.draw(st.integers(0, len(blk))) :]
    blk = bytes(blk)
    assert _outcome(native.decode_data_block_spans_native, blk) == _outcome(decode_data_block_spans_py, blk)


def test_fixed_length_keys_decode_to_user_keys() -> None:
    entries = [(b"%016d" % i, 100 - i, 1, b"v%d" % i) for i in range(40)]
    ukeys, seqs, kinds, offs, lens = native.decode_data_block_spans_native(_block(entries, 16))
    assert ukeys == [e[0] for e in entries]
    assert type(ukeys) is list
    assert seqs == [e[1] for e in entries]
    assert kinds == [1] * 40


@pytest.mark.parametrize("lengths", [[10, 8, 12], [9, 9, 9, 10], [12, 9], [9], [20, 20, 20]])
def test_user_keys_lengths_that_only_sum_alike(lengths: list[int]) -> None:
    # Internal key lengths whose total equals first-length * count without all being equal must not
    # take the one-Struct path.
    keys = [bytes([65 + i]) * n for i, n in enumerate(lengths)]
    kb = b"".join(keys)
    ends = []
    total = 0
    for k in keys:
        total += len(k)
        ends.append(total)
    assert native._user_keys(kb, ends, len(keys)) == [k[:-8] for k in keys]


def test_user_keys_struct_memo_stays_bounded() -> None:
    for count in range(1, native._MAX_KEY_STRUCTS + 40):
        keys = [b"%09d" % i + b"t" * 8 for i in range(count)]
        ends = [17 * (i + 1) for i in range(count)]
        assert native._user_keys(b"".join(keys), ends, count) == [k[:-8] for k in keys]
    assert len(native._KEY_STRUCTS) <= native._MAX_KEY_STRUCTS


def _compact_outcome(blk: bytes):  # type: ignore[no-untyped-def]
    got = _outcome(native.decode_data_block_compact_native, blk)
    if got[0] == "ok":
        ukeys, seqs, kinds, offs, lens = got[1]
        assert type(ukeys) is list
        return "ok", (ukeys, list(seqs), list(kinds), list(offs), list(lens))
    return got


@FAST
@given(st.one_of(fixed_length_entries(), st.lists(
    st.tuples(st.binary(min_size=1, max_size=10), st.integers(0, 2**56 - 1), st.integers(0, 3),
              st.binary(max_size=20)), max_size=40).map(lambda es: sorted(es, key=lambda e: (e[0], -e[1])))),
       st.integers(1, 16), st.sampled_from(["none", "flip", "truncate", "random"]), st.data())
def test_compact_decode_matches_pure(entries, interval: int, how: str, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    # The array/bytes decode the block cache keeps: the same numbers as the pure lists, or Corruption.
    blk = bytearray(_block(entries, interval))
    if how == "flip" and blk:
        blk[data.draw(st.integers(0, len(blk) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del blk[data.draw(st.integers(0, len(blk))) :]
    elif how == "random":
        blk = bytearray(data.draw(st.binary(max_size=120)))
    blk = bytes(blk)
    assert _compact_outcome(blk) == _outcome(decode_data_block_spans_py, blk)
