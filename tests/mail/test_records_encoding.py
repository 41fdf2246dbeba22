"""records.dumps (one C encoder made once) against the stdlib JSONEncoder it stands for."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.mail import records

_REFERENCE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_dumps_equals_the_json_encoder(value: object) -> None:
    assert records.dumps(value) == _REFERENCE.encode(value).encode("utf-8")


def test_details_prefix_unchanged() -> None:
    details = {"m": "a@b", "i": ["x@y"], "r": [], "b": [["N", "n@x"]],
               "a": [["f é.pdf", "application/pdf", 3, "ab"]]}
    assert records.details_prefix(details) == _REFERENCE.encode({**details, "k": None}).encode()[:-5]
