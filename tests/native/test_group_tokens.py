"""Differential test of the token-grouping kernel (native/group.c) against its pure twin (search/_group.py).

Both sides get the same token streams -- random words from a small alphabet (so terms repeat), Unicode,
"" holes, long streams that exercise hash collisions and multi-byte varints -- and must return the same
``term -> encoded positions`` dict, in the same (first-occurrence) order, decoding to the same positions as
the list-grouping reference.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.errors import Corruption
from lsmmail.search import _group as G

if not native.BUILT:  # pragma: no cover
    raise RuntimeError("lsmmail._native is not built: run `pip install -e .` (needs a C compiler)")
if not G.NATIVE:  # pragma: no cover
    raise RuntimeError("lsmmail._native predates lsm_group_tokens: run python native/build_native.py")

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_token = st.one_of(
    st.sampled_from(["", "", "a", "b", "ab", "ba", "é", "ß", "日本", "x" * 64]),
    st.text(st.characters(codec="utf-8", blacklist_characters=" "), min_size=1, max_size=6),
)


def _check(tokens: list[str]) -> None:
    native_out = G.group_encoded_native(tokens)
    pure_out = G.group_encoded_pure(tokens)
    assert list(native_out.items()) == list(pure_out.items())
    assert {t: G.decode_positions(r) for t, r in native_out.items()} == G.group_tokens(tokens)


@FAST
@given(st.lists(_token, max_size=300))
def test_group_encoded_native_equals_pure(tokens: list[str]) -> None:
    _check(tokens)


@FAST
@given(st.lists(st.sampled_from([f"w{i}" for i in range(40)] + [""]), min_size=200, max_size=3000))
def test_long_streams_with_repeats(tokens: list[str]) -> None:
    # positions past 127 take two varint bytes; 40 terms over thousands of slots exercise probing
    _check(tokens)


def test_known_runs() -> None:
    out = G.group_encoded_native(["a", "b", "", "a"] + ["c"] * 200)
    assert out["a"] == b"\x02\x00\x02" and out["b"] == b"\x01\x01"
    assert G.decode_positions(out["c"]) == list(range(4, 204))
    assert G.group_encoded_native([]) == {} and G.group_encoded_native(["", ""]) == {}


def test_token_with_a_space_is_rejected() -> None:
    with pytest.raises(ValueError):
        G.group_encoded_native(["a b"])


@FAST
@given(st.binary(max_size=12))
def test_decode_positions_rejects_what_it_did_not_encode(raw: bytes) -> None:
    try:
        got = G.decode_positions(raw)
    except Corruption:
        return
    assert got == sorted(set(got))  # ascending, distinct: a valid position list
    assert G.decode_positions(G.encode_positions(got)) == got
