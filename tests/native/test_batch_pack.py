"""Differential test of the batch packing kernel (native/batchbuild.c, ``lsm_batch_pack_puts``) against its
pure twin (engine/batch.py ``_pack_puts_pure``): random key/value lists must encode to the same bytes (and
to what ``WriteBatch.put`` gives), and malformed end lists (falling, past the buffer, short of it, empty
or over-long keys, mismatched lengths) must be refused with InvalidArgument by both."""

from __future__ import annotations

from itertools import accumulate

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine import batch as B
from lsmmail.engine.errors import InvalidArgument
from lsmmail.engine.keys import MAX_KEY_SIZE

if not native.BUILT or not hasattr(native._lib, "lsm_batch_pack_puts"):  # pragma: no cover
    raise RuntimeError("lsmmail._native lacks lsm_batch_pack_puts: run python native/build_native.py")

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Lengths around the varint boundaries (127/128, 16383/16384) matter most.
_key = st.one_of(st.binary(min_size=1, max_size=40), st.integers(120, 300).map(lambda n: b"k" * n))
_value = st.one_of(st.binary(max_size=40), st.sampled_from([127, 128, 300, 16383, 16384]).map(b"v".__mul__))
_pairs = st.lists(st.tuples(_key, _value), max_size=25)


def _packed(pairs: list[tuple[bytes, bytes]]) -> tuple[bytes, list[int], bytes, list[int]]:
    keys = [k for k, _ in pairs]
    vals = [v for _, v in pairs]
    return b"".join(keys), list(accumulate(map(len, keys))), b"".join(vals), list(accumulate(map(len, vals)))


@FAST
@given(_pairs)
def test_native_equals_pure_and_puts(pairs: list[tuple[bytes, bytes]]) -> None:
    args = _packed(pairs)
    want = WriteBatchOf(pairs).encoded_entries()
    assert B._pack_puts_native(*args) == want
    assert B._pack_puts_pure(*args) == want


def WriteBatchOf(pairs: list[tuple[bytes, bytes]]) -> B.WriteBatch:  # noqa: N802 - reads as a constructor
    b = B.WriteBatch()
    for k, v in pairs:
        b.put(k, v)
    return b


@FAST
@given(_pairs.filter(bool), st.data())
def test_damaged_ends_refused_by_both(pairs: list[tuple[bytes, bytes]], data: st.DataObject) -> None:
    keys, kend, vals, vend = _packed(pairs)
    which = data.draw(st.sampled_from(["kend", "vend"]))
    ends = list(kend if which == "kend" else vend)
    i = data.draw(st.integers(0, len(ends) - 1))
    ends[i] = data.draw(st.integers(0, len(keys) + len(vals) + 3))
    args = (keys, ends, vals, vend) if which == "kend" else (keys, kend, vals, ends)
    try:
        want = B._pack_puts_pure(*args)
    except InvalidArgument:
        with pytest.raises(InvalidArgument):
            B._pack_puts_native(*args)
    else:  # the damage left a valid layout (e.g. the same value, or an empty value moved)
        assert B._pack_puts_native(*args) == want


@pytest.mark.parametrize(
    "args",
    [
        (b"ab", [1, 1], b"", [0, 0]),  # empty key
        (b"ab", [2, 1], b"", [0, 0]),  # falling
        (b"ab", [1], b"", [0]),  # stops short of the keys
        (b"ab", [3], b"", [0]),  # runs past the keys
        (b"a", [1], b"xy", [3]),  # runs past the values
        (b"a", [1], b"xy", [1]),  # stops short of the values
        (b"a" * (MAX_KEY_SIZE + 1), [MAX_KEY_SIZE + 1], b"", [0]),  # key too long
        (b"ab", [1, 2], b"xy", [2, 1]),  # values falling
        (b"", [], b"x", []),  # bytes without ends
    ],
)
def test_malformed_refused(args: tuple[bytes, list[int], bytes, list[int]]) -> None:
    with pytest.raises(InvalidArgument):
        B._pack_puts_pure(*args)
    with pytest.raises(InvalidArgument):
        B._pack_puts_native(*args)


def test_negative_end_refused_by_native() -> None:
    with pytest.raises(InvalidArgument):
        B._pack_puts_native(b"a", [-1], b"", [0])


def test_empty() -> None:
    assert B._pack_puts_native(b"", [], b"", []) == b"" == B._pack_puts_pure(b"", [], b"", [])
