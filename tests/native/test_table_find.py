"""``native.table_find_native`` (bloom probe + index search of a point lookup, one C call) against its
pure twin ``table_find_pure`` and against a model (the filter's own answer, then a linear walk of the
index), on random indexes: repeated user keys across consecutive blocks with descending sequences,
empty indexes, filters that match everything, and keys inside, between and outside the index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.bloom import BloomBuilder, bloom_may_contain_py
from lsmmail.engine.coding import hash64

pytestmark = pytest.mark.skipif(not native.BUILT, reason="the C extension is not built")

user_keys = st.binary(min_size=1, max_size=5)


@st.composite
def indexes(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Index user keys ascending; a key may end several consecutive blocks, with descending seqs."""
    keys = sorted(draw(st.sets(user_keys, max_size=40)))
    out_k: list[bytes] = []
    out_s: list[int] = []
    for k in keys:
        seqs = sorted(draw(st.sets(st.integers(0, 2**56 - 1) | st.integers(0, 30), min_size=1, max_size=3)),
                      reverse=True)
        out_k += [k] * len(seqs)
        out_s += seqs
    return out_k, out_s


def model(filt: bytes, key: bytes, ikeys: list[bytes], iseqs: list[int], snap: int) -> int:
    if not bloom_may_contain_py(filt, key):
        return -1
    for i, (k, s) in enumerate(zip(ikeys, iseqs, strict=True)):
        if k > key or (k == key and s <= snap):
            return i
    return len(ikeys)


@settings(max_examples=300, deadline=None)
@given(indexes(), st.sets(user_keys, max_size=30), st.integers(0, 20), user_keys | st.just(b""),
       st.integers(0, 2**64 - 1) | st.integers(0, 40), st.data())
def test_table_find_matches_twin_and_model(index, filter_keys, bits: int, key: bytes, snap: int,  # type: ignore[no-untyped-def]
                                           data: st.DataObject) -> None:
    ikeys, iseqs = index
    if ikeys and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(ikeys))  # often a key the index names
    b = BloomBuilder(bits)
    for k in sorted(filter_keys | ({key} if data.draw(st.booleans()) else set())):
        b.add_key(k)
    filt = b.finish_py()
    ix = native.TableIndex(ikeys, iseqs)
    got = native.table_find_native(filt, hash64(key), ix, key, snap)
    assert got == native.table_find_pure(filt, key, ikeys, iseqs, snap)
    assert got == model(filt, key, ikeys, iseqs, snap)


@given(st.binary(max_size=40), user_keys)
def test_table_find_on_malformed_filters(filt: bytes, key: bytes) -> None:
    # Any filter bytes (short, k = 0, k > 30) answer as the pure probe does; the index is empty.
    ix = native.TableIndex([], [])
    got = native.table_find_native(filt, hash64(key), ix, key, 5)
    assert got == native.table_find_pure(filt, key, [], [], 5)


def test_table_index_rejects_mismatched_lengths() -> None:
    with pytest.raises(native.InvalidArgument):
        native.TableIndex([b"a"], [])
