"""Posting blocks, doc tables and forward records: round trips, the documented bytes, and corruption."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.errors import Corruption
from lsmmail.search import IndexedDocument, analyze
from lsmmail.search import postings as P
from lsmmail.search._group import decode_positions
from lsmmail.search.mem_segment import group_fields
from lsmmail.search.tokenizer import analyze_raw, analyze_streams, group_encoded

_positions = st.lists(st.integers(0, 5000), max_size=6, unique=True).map(sorted)
_entries = st.lists(
    st.tuples(st.integers(0, 100_000), _positions), min_size=1, max_size=40, unique_by=lambda e: e[0]
).map(sorted)


def test_documented_example() -> None:
    assert P.encode_block([(3, [0]), (4, [2, 5]), (9, [])]).hex(" ") == "01 00 03 03 01 05 01 00 02 02 02 00"


@settings(deadline=None)  # no timing assertions: a slow example on a busy machine is fine
@given(_entries)
def test_block_round_trip(entries: list[tuple[int, list[int]]]) -> None:
    block = P.encode_block(entries)
    n = entries[-1][0] + 1
    assert P.decode_block(block, n) == entries
    assert P.decode_ordinals(block, n) == [o for o, _ in entries]
    with pytest.raises(Corruption):
        P.decode_block(block, entries[-1][0])  # an ordinal beyond the doc table is caught


@settings(deadline=None)  # no timing assertions: a slow example on a busy machine is fine
@given(_entries, st.data())
def test_truncated_block_is_corruption(entries: list[tuple[int, list[int]]], data: st.DataObject) -> None:
    block = P.encode_block(entries)
    cut = data.draw(st.integers(0, len(block) - 1))
    with pytest.raises(Corruption):
        P.decode_block(block[:cut], 10**6)
    with pytest.raises(Corruption):
        P.decode_block(block + b"\x00", 10**6)


@settings(deadline=None)  # no timing assertions: a slow example on a busy machine is fine
@given(
    st.dictionaries(
        st.sampled_from("sbftcah"),
        st.dictionaries(st.text(min_size=1, max_size=8), _positions, max_size=5),
        max_size=4,
    )
)
def test_forward_round_trip(fields: dict[str, dict[str, list[int]]]) -> None:
    value = P.encode_forward(fields)
    assert P.decode_forward(value) == fields
    for cut in range(len(value)):
        with pytest.raises(Corruption):
            P.decode_forward(value[:cut])


def test_doc_table_and_keys() -> None:
    ids = [bytes([i]) * 16 for i in (1, 2, 3)]
    assert P.decode_doc_table(P.encode_doc_table(ids)) == ids
    with pytest.raises(Corruption):
        P.decode_doc_table(P.encode_doc_table(ids[::-1]))
    with pytest.raises(Corruption):
        P.decode_doc_table(b"x" * 17)
    key = P.block_key(b"\x00\x00\x00\x01", "f", "alice@example.com", 7)
    user, rest = P.split_user_key(key, 1)
    assert user == b"\x00\x00\x00\x01" and P.parse_segment_key(rest) == ("f", "alice@example.com", 7)
    assert key.startswith(P.term_prefix(b"\x00\x00\x00\x01", "f", "alice@example.com"))
    assert not P.block_key(b"\x00\x00\x00\x01", "f", "alice@example.comx", 7).startswith(
        P.term_prefix(b"\x00\x00\x00\x01", "f", "alice@example.com")
    )
    assert P.parse_segment_key(P.doc_table_key(b"u", 9)[3:]) == ("#", "", 9)


_texts = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(["", " \n", "a" * 70 + " b"])


@settings(deadline=None)  # no timing assertions: a slow example on a busy machine is fine
@given(
    st.builds(
        IndexedDocument,
        subject=_texts,
        from_=st.lists(st.tuples(_texts, _texts), max_size=3),
        cc=st.lists(st.tuples(st.just(""), _texts), max_size=2),
        body_text=_texts,
        body_html=_texts,
        attachment_names=st.lists(_texts, max_size=3),
        has_attachment=st.booleans(),
    )
)
def test_forward_streams_round_trip(doc: IndexedDocument) -> None:
    """The stream-format forward record decodes to exactly analyze(doc); every truncation is Corruption."""
    value = P.encode_forward_streams(analyze_streams(doc))
    assert P.decode_forward(value) == analyze(doc)
    runs = P.decode_forward_encoded(value)  # the memory segment's form: encoded runs, same postings
    assert {c: {t: decode_positions(r) for t, r in ts.items()} for c, ts in runs.items()} == analyze(doc)
    assert runs == group_encoded(analyze_streams(doc))
    for cut in range(len(value)):
        with pytest.raises(Corruption):
            P.decode_forward(value[:cut])
    with pytest.raises(Corruption):
        P.decode_forward(value + b"\x00")
    # The delivery path's form (streams already joined, C tokenizer): the same bytes, and back.
    raw = analyze_raw(doc)
    assert P.encode_forward_raw(raw) == value
    assert P.decode_forward_raw(value) == raw
    assert group_fields(raw) == runs


def test_forward_raw_from_format_1() -> None:
    """An old (format 1) forward record becomes streams that group to the same postings."""
    fields = {"s": {"hi": [0, 3], "yo": [1]}, "t": {"a": [0], "a@b.c": []}, "h": {"attachment": []}}
    raw = P.decode_forward_raw(P.encode_forward(fields))
    assert raw == {"s": (b"hi yo  hi", 4, []), "t": (b"a", 1, ["a@b.c"]), "h": (b"", 0, ["attachment"])}
    grouped = group_fields(raw)
    assert {c: {t: decode_positions(r) for t, r in ts.items()} for c, ts in grouped.items()} == fields
    with pytest.raises(Corruption):  # two terms at one position
        P.decode_forward_raw(P.encode_forward({"s": {"a": [0], "b": [0]}}))


def test_forward_streams_documented_bytes() -> None:
    doc = IndexedDocument(subject="Hi hi", to=[("", "a@b.c")])
    value = P.encode_forward_streams(analyze_streams(doc))
    # format 2, two fields: "s" (2 tokens "hi hi", no specials), "t" (4 tokens "a b c " + 3 specials)
    assert value == b"\x02\x02s\x02\x05hi hi\x00\x00t\x04\x06a b c \x03\x0ba@b.c\x00a\x00b.c"
    assert P.decode_forward(value) == {"s": {"hi": [0, 1]}, "t": {"a": [0], "b": [1], "c": [2], "a@b.c": [],
                                                                  "b.c": []}}
