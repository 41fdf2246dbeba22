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
