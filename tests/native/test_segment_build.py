"""Differential test of the segment builder (native/segment.c) against its pure twin
(search/_segment_build.py), plus the twin against the memory segment's own grouping.

Random memory segments (docs with random fields, token streams with repeats, "" holes, Unicode, specials
that repeat or equal a word of their field) must give the same ``{engine key: posting block}`` on both
sides; the blocks must decode to the postings ``mem_segment.group_fields`` gives per doc, and the
any-field blocks to the union of each term's docs over the text fields. Malformed entries (order, token
counts, empty specials) are refused with ValueError by both.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.search import _segment_build as B
from lsmmail.search import postings as P
from lsmmail.search._group import decode_positions
from lsmmail.search.mem_segment import group_fields
from lsmmail.search.tokenizer import TEXT_FIELDS

if not native.BUILT or not hasattr(native._lib, "lsm_segment_build"):  # pragma: no cover
    raise RuntimeError("lsmmail._native lacks lsm_segment_build: run python native/build_native.py")

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_tok = st.sampled_from(["", "a", "b", "ab", "é", "日本", "x" * 64, "alice", "3"])
_special = st.sampled_from(["a", "alice", "alice@example.com", "example.com", "a b", "é.txt"])
_field = st.sampled_from(["s", "b", "f", "t", "c", "a", "h"])
_doc = st.dictionaries(_field, st.tuples(st.lists(_tok, max_size=40), st.lists(_special, max_size=4)),
                       max_size=7)


def _entries(docs: list[dict]) -> list[B.Entry]:
    out: list[B.Entry] = []
    for i, fields in enumerate(docs):
        for code in sorted(fields):
            toks, specials = fields[code]
            out.append((i, code, " ".join(toks).encode("utf-8"), len(toks), specials))
    return out


def _decoded(pairs: list[tuple[bytes, bytes]], prefix: bytes, suffix: bytes, ndocs: int) -> dict:
    got = {}
    for key, block in pairs:
        assert key.startswith(prefix) and key.endswith(suffix)
        term = key[len(prefix) : len(key) - len(suffix)].decode("utf-8")
        got[term] = P.decode_block(block, ndocs)
    return got


@FAST
@given(st.lists(_doc, max_size=12), st.binary(min_size=1, max_size=5), st.binary(max_size=9))
def test_native_equals_pure_and_postings(docs: list[dict], prefix: bytes, suffix: bytes) -> None:
    entries = _entries(docs)
    native_out = B.build_segment_native(entries, prefix, suffix)
    pure_out = B.build_segment_pure(entries, prefix, suffix)
    assert len(native_out) == len(dict(native_out))  # no key twice
    assert dict(native_out) == dict(pure_out)
    # Against the per-doc grouping the memory segment answers queries with.
    want: dict[str, list] = {}
    anyf: dict[str, set[int]] = {}
    for i, fields in enumerate(docs):
        raw_fields = {c: (" ".join(t).encode("utf-8"), len(t), s) for c, (t, s) in fields.items()}
        for code, terms in sorted(group_fields(raw_fields).items()):
            for term, run in terms.items():
                want.setdefault(code + term, []).append((i, decode_positions(run)))
                if code in TEXT_FIELDS:
                    anyf.setdefault(term, set()).add(i)
    for term, ords in anyf.items():
        want[P.ANY + term] = [(o, []) for o in sorted(ords)]
    assert _decoded(native_out, prefix, suffix, max(len(docs), 1)) == want


def test_many_docs_and_large_ordinal_gaps() -> None:
    # > 256 docs between two postings of a term: the varint delta mode; long streams: multi-byte runs.
    docs = [{"b": (["common", f"w{i}"] * 3, [])} for i in range(600)]
    docs[0]["b"] = (["rare"] + ["x"] * 300, [])
    docs[599]["b"] = (["rare"], [])
    entries = _entries(docs)
    native_out = dict(B.build_segment_native(entries, b"P", b"S"))
    assert native_out == dict(B.build_segment_pure(entries, b"P", b"S"))
    assert P.decode_ordinals(native_out[b"PbrareS"], 600) == [0, 599]
    assert native_out[b"PbrareS"][1] == P.DELTAS_VARINT


@pytest.mark.parametrize(
    "entries",
    [
        [(0, "b", b"a", 1, []), (0, "b", b"b", 1, [])],  # the same (doc, field) twice
        [(1, "b", b"a", 1, []), (0, "b", b"b", 1, [])],  # ordinals going down
        [(0, "b", b"a b", 1, [])],  # more tokens than counted
        [(0, "b", b"a", 2, [])],  # fewer
        [(0, "b", b"x", 0, [])],  # bytes but no tokens
        [(0, "b", b"", 0, [""])],  # an empty special
        [(0, "*", b"a", 1, [])],  # the any-field code as a field
    ],
)
def test_malformed_entries_are_refused(entries: list[B.Entry]) -> None:
    with pytest.raises(ValueError):
        B.build_segment_native(entries, b"P", b"S")
    with pytest.raises(ValueError):
        B.build_segment_pure(entries, b"P", b"S")


def test_empty() -> None:
    assert B.build_segment_native([], b"P", b"S") == [] == B.build_segment_pure([], b"P", b"S")


# ---- lsm_segment_build_fwd: the same build over forward records (what a flush passes) ------------


def _records(docs: list[dict]) -> list[bytes]:
    return [P.encode_forward_raw({c: (" ".join(t).encode("utf-8"), len(t), s) for c, (t, s) in f.items()})
            for f in docs]


@FAST
@given(st.lists(_doc, max_size=12), st.binary(min_size=1, max_size=5), st.binary(max_size=9))
def test_fwd_native_equals_pure_and_entries(docs: list[dict], prefix: bytes, suffix: bytes) -> None:
    records = _records(docs)
    got = B.build_segment_fwd_native(records, prefix, suffix)
    assert len(got) == len(dict(got))
    assert dict(got) == dict(B.build_segment_fwd_pure(records, prefix, suffix))
    assert dict(got) == dict(B.build_segment_native(_entries(docs), prefix, suffix))


@FAST
@given(st.lists(_doc, min_size=1, max_size=4), st.data())
def test_fwd_damaged_records_refused_or_equal(docs: list[dict], data: st.DataObject) -> None:
    """A damaged record (a byte changed, cut, or extended) is refused by both versions with ValueError,
    or, if it is still well-formed, gives the same segment in both. Bytes inside token streams may become
    invalid UTF-8, which only the pure twin checks (the kernel's input was decoded once before: see
    ``build_segment_fwd_native``), so damage is aimed at the structure: the format byte, counts, lengths."""
    records = _records(docs)
    i = data.draw(st.integers(0, len(records) - 1))
    rec = bytearray(records[i])
    how = data.draw(st.sampled_from(["byte", "cut", "extend"]))
    if how == "byte":
        at = data.draw(st.integers(0, len(rec) - 1))
        rec[at] = data.draw(st.sampled_from([0, 1, 2, 3, 0x20, 0x7F, 0x80, 0xFF]))
    elif how == "cut":
        del rec[data.draw(st.integers(0, len(rec) - 1)):]
    else:
        rec += data.draw(st.binary(min_size=1, max_size=3))
    records[i] = bytes(rec)
    try:
        want = dict(B.build_segment_fwd_pure(records, b"P", b"S"))
    except ValueError:
        want = None
    try:
        got = dict(B.build_segment_fwd_native(records, b"P", b"S"))
    except ValueError:
        got = None
    if want is None and got is not None:
        # Only an undecodable token or special may pass the kernel (UTF-8 is the caller's check).
        with pytest.raises(UnicodeDecodeError):
            for r in records:
                r.decode("utf-8")
    else:
        assert got == want


@pytest.mark.parametrize(
    "records",
    [
        [b""],  # empty record
        [b"\x01\x00"],  # format 1
        [b"\x02"],  # no field count
        [b"\x02\x01"],  # a field announced, none there
        [b"\x02\x01b\x01\x05ab\x00\x00"],  # stream shorter than its length
        [b"\x02\x01b\x01\x01a\x00\x00\x00"],  # trailing byte
        [b"\x02\x02b\x01\x01a\x00\x00b\x01\x01a\x00\x00"],  # the same field twice
        [b"\x02\x01*\x01\x01a\x00\x00"],  # the any-field code
        [b"\x02\x02t\x01\x01a\x00\x00s\x01\x01a\x00\x00"],  # fields out of order
        [b"\x02\x01\xe9\x01\x01a\x00\x00"],  # a field code that is not ASCII
        [b"\x02\x01b\x02\x01a\x00\x00"],  # two tokens counted, one there
        [b"\x02\x01b\x00\x00\x01\x00"],  # an empty special
        [b"\x02\x01b\x01\xff\xff\xff\xff\xff\x01a\x00\x00"],  # an over-long varint
    ],
)
def test_fwd_malformed_records_are_refused(records: list[bytes]) -> None:
    with pytest.raises(ValueError):
        B.build_segment_fwd_native(records, b"P", b"S")
    with pytest.raises(ValueError):
        B.build_segment_fwd_pure(records, b"P", b"S")


def test_fwd_empty_and_fieldless() -> None:
    assert B.build_segment_fwd_native([], b"P", b"S") == [] == B.build_segment_fwd_pure([], b"P", b"S")
    assert B.build_segment_fwd_native([b"\x02\x00"], b"P", b"S") == []
    assert B.build_segment_fwd_pure([b"\x02\x00"], b"P", b"S") == []
