"""MemTable: a batch added at once equals the same entries added one by one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL
from lsmmail.engine.memtable import MemTable

_entry = st.tuples(
    st.sampled_from([KIND_PUT, KIND_PUT, KIND_DELETE, KIND_RANGE_DEL]),
    st.binary(min_size=1, max_size=3),
    st.binary(max_size=4),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_entry, max_size=12), max_size=6))
def test_add_batch_equals_add_per_entry(batches) -> None:  # type: ignore[no-untyped-def]
    one, many = MemTable(1), MemTable(1)
    seq = 1
    for entries in batches:
        many.add_batch(seq, entries)
        for kind, key, value in entries:
            one.add(seq, kind, key, value)
            seq += 1
    assert list(many.entries()) == list(one.entries())
    assert list(many.entries_reverse()) == list(one.entries_reverse())
    assert many.range_tombstones == one.range_tombstones
    assert (many.approximate_size, many.num_entries, many.largest_seq) == (
        one.approximate_size, one.num_entries, one.largest_seq)
    # Internal order: keys ascending, versions of one key newest first.
    got = [(k, -s) for k, s, _, _ in many.entries()]
    assert got == sorted(got)
    for k, s, _, _ in many.entries():
        assert many.get(k, seq)[0] >= s
