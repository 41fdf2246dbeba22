"""``DB.get_many`` against per-key ``DB.get`` and the dict model.

Random write histories on tiny options (so memtables, L0, deeper levels, blob files and range
tombstones all hold versions) with snapshots taken along the way; after each history ``get_many`` over
random key lists (repeats and missing keys included) must equal ``[get(k) for k in keys]`` and the
model, for the latest state and for every snapshot.
"""

from __future__ import annotations

import pytest
from _helpers import HISTORY_KEYS, MEM_DIR, apply_step, history_entries, tiny_options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.engine.db import DB
from lsmmail.engine.errors import DBClosed, InvalidArgument

KEYS = HISTORY_KEYS
keys = st.sampled_from(KEYS + [b"missing", b"zz"])
entries = history_entries
ops = st.one_of(
    st.tuples(st.just("write"), st.lists(entries, min_size=1, max_size=6)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("compact"), st.none()),
    st.tuples(st.just("snapshot"), st.none()),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=30), st.lists(st.lists(keys, max_size=8), min_size=1, max_size=4),
       st.booleans())
def test_get_many_equals_get_per_key(history: list, key_lists: list[list[bytes]], background: bool) -> None:
    db = DB.open(MEM_DIR, tiny_options(background=background))
    model: dict[bytes, bytes] = {}
    snaps = []
    try:
        for op, arg in history:
            if not apply_step(db, model, op, arg):
                snaps.append((db.snapshot(), dict(model)))
        for ks in key_lists:
            got = db.get_many(ks)
            assert got == [db.get(k) for k in ks] == [model.get(k) for k in ks]
            for s, frozen in snaps:
                got = db.get_many(ks, snapshot=s)
                assert got == [db.get(k, snapshot=s) for k in ks] == [frozen.get(k) for k in ks]
    finally:
        for s, _ in snaps:
            s.release()
        db.close()


def test_get_many_errors_match_get() -> None:
    db = DB.open(MEM_DIR, tiny_options())
    db.put(b"a", b"1")
    assert db.get_many([]) == []
    assert db.get_many(iter([b"a", bytearray(b"a"), memoryview(b"b")])) == [b"1", b"1", None]
    for bad in ([b""], [b"a", "a"], [b"x" * 70000]):
        with pytest.raises(InvalidArgument):
            db.get_many(bad)
    s = db.snapshot()
    s.release()
    with pytest.raises(InvalidArgument):
        db.get_many([b"a"], snapshot=s)
    db.close()
    with pytest.raises(DBClosed):
        db.get_many([b"a"])
