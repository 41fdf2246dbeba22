from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lsmmail.mail import schema
from lsmmail.mail.ids import IdGenerator


def test_tags_unique_and_search_tags_unused() -> None:
    assert len(set(schema.ALL_TAGS)) == len(schema.ALL_TAGS)
    assert all(len(t) == 1 for t in schema.ALL_TAGS)
    assert not set(schema.ALL_TAGS) & set(schema.SEARCH_RESERVED)


@given(st.lists(st.integers(min_value=0, max_value=2**40), min_size=2, max_size=50))
def test_listing_keys_sort_newest_first(times: list[int]) -> None:
    ids = []
    for t in times:
        ids.append(IdGenerator(clock_ms=lambda t=t: t).new())
    uk = schema.user_key(7)
    keys = sorted(schema.listing_key(uk, 1, m) for m in ids)
    assert [schema.id_of_list_key(k) for k in keys] == sorted(ids, reverse=True)
    assert all(k.startswith(schema.list_prefix(schema.LISTING, uk, 1)) for k in keys)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_user_keys_fixed_width_and_ordered(a: int, b: int) -> None:
    ka, kb = schema.user_key(a), schema.user_key(b)
    assert len(ka) == 4 and (ka < kb) == (a < b)


def test_prefix_end() -> None:
    assert schema.prefix_end(b"L\x00\x01") == b"L\x00\x02"
    assert schema.prefix_end(b"L\xff") == b"M"
    assert schema.prefix_end(b"\xff\xff") is None
