"""The memoised address field streams of ``tokenizer.analyze_raw``: a hit gives exactly what the field
computes afresh, every call its own specials list, and unhashable pairs still work."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.search import IndexedDocument
from lsmmail.search import tokenizer as T

_names = st.sampled_from(["", "John Smith", "Jörg Ü", "ＡＢＣ", "a_b", "x" * 80])
_addrs = st.sampled_from(["", "a@b.c", "John.Smith@Example.ORG", "<weird@@x>", "no-at", "ü@ö.de", " sp @ x "])
_pairs = st.lists(st.tuples(_names, _addrs), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(_pairs, _pairs)
def test_memoised_address_streams_equal_fresh_ones(from_: list[tuple[str, str]],
                                                    to: list[tuple[str, str]]) -> None:
    doc = IndexedDocument(subject="s", from_=from_, to=to, cc=from_)
    first = T.analyze_raw(doc)
    second = T.analyze_raw(doc)  # from the memo
    assert first == second
    assert second[T.FROM] == T._address_stream_of(from_)
    assert second[T.TO] == T._address_stream_of(to)
    assert second[T.FROM][2] is not second[T.CC][2]  # own lists: a caller may change one
    second[T.FROM][2].append("changed")
    assert T.analyze_raw(doc)[T.FROM] == T._address_stream_of(from_)


def test_unhashable_pairs_are_not_memoised() -> None:
    pairs = [["John", "j@x.org"]]
    doc = IndexedDocument(from_=pairs)  # type: ignore[arg-type]
    assert T.analyze_raw(doc)[T.FROM] == T._address_stream_of(pairs)  # type: ignore[arg-type]
