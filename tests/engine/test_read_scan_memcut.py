"""Scans whose memtable ranges are split at a cut key (``DB._memtable_cut``, ``_memtable_entries``):
the same pairs as the dict model, for any cut strictly inside the scanned range, forward and reverse,
with bounds, prefixes, early stops and snapshots; and the cut ``DB`` picks itself is inside the range.
"""

from __future__ import annotations

from itertools import islice

from _helpers import MEM_DIR, apply_step, tiny_options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.engine import scan as scan_module
from lsmmail.engine.db import DB
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT

KEYS = [b"a", b"ab", b"b", b"b\x00", b"c", b"c\xff", b"d"] + [b"k%02d" % i for i in range(12)]
bounds = st.one_of(st.none(), st.sampled_from(KEYS + [b"0", b"k", b"zz"]))
values = st.one_of(st.binary(max_size=12), st.binary(min_size=40, max_size=90))
entries = st.one_of(
    st.tuples(st.just(KIND_PUT), st.sampled_from(KEYS), values),
    st.tuples(st.just(KIND_DELETE), st.sampled_from(KEYS), st.just(b"")),
)
ops = st.one_of(
    st.tuples(st.just("write"), st.lists(entries, min_size=1, max_size=8)),
    st.tuples(st.just("write"), st.lists(entries, min_size=1, max_size=8)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("compact"), st.none()),
    st.tuples(st.just("snapshot"), st.none()),
)
scans = st.tuples(bounds, bounds, st.sampled_from([None, b"k", b"b"]), st.booleans(), st.integers(0, 30),
                  st.one_of(st.none(), st.sampled_from(KEYS + [b"k0", b"c\x00"])))


def _model_scan(model: dict[bytes, bytes], start, end, prefix, reverse: bool, limit: int):  # type: ignore[no-untyped-def]
    ks = sorted(k for k in model if (start is None or k >= start) and (end is None or k < end)
                and (prefix is None or k.startswith(prefix)))
    if reverse:
        ks.reverse()
    return [(k, model[k]) for k in ks[: limit or None]]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40), st.lists(scans, min_size=1, max_size=6), st.booleans())
def test_scans_with_memtable_cut_match_model(history: list, queries: list, big_files: bool) -> None:
    # A 4 KiB memtable keeps versions in memory beside the levels; with big files, a table's index has
    # enough blocks for DB._memtable_cut to pick a cut.
    over = dict(target_file_size=4000, max_bytes_for_level_base=8000) if big_files else {}
    db = DB.open(MEM_DIR, tiny_options(memtable_size=4096, **over))
    db._scan_kernel = False  # the cut belongs to the pure-Python merge (the C kernel walks the skiplist)
    model: dict[bytes, bytes] = {}
    snaps = []
    real_cut = DB._memtable_cut
    picked: list[tuple[bytes | None, bytes | None, bytes | None]] = []

    def spy(self: DB, version, start, end, reverse):  # type: ignore[no-untyped-def]
        cut = real_cut(self, version, start, end, reverse)
        picked.append((start, end, cut))
        return cut

    try:
        for op, arg in history:
            if not apply_step(db, model, op, arg):
                snaps.append((db.snapshot(), dict(model)))
        for start, end, prefix, reverse, limit, forced in queries:
            states = [(None, model)] + [(s, frozen) for s, frozen in snaps]
            for snap, state in states:
                want = _model_scan(state, start, end, prefix, reverse, limit)
                # The cut DB picks (spied on) ...
                DB._memtable_cut = spy  # type: ignore[method-assign]
                try:
                    got = list(islice(db.scan(start, end, prefix=prefix, reverse=reverse, snapshot=snap),
                                      limit or None))
                finally:
                    DB._memtable_cut = real_cut  # type: ignore[method-assign]
                assert got == want
                # ... and a forced one, wherever it falls (kept only strictly inside the range).
                DB._memtable_cut = lambda self, v, s, e, r, c=forced: (  # type: ignore[method-assign]
                    c if c is not None and (s is None or c > s) and (e is None or c < e) else None)
                try:
                    got = list(islice(db.scan(start, end, prefix=prefix, reverse=reverse, snapshot=snap),
                                      limit or None))
                finally:
                    DB._memtable_cut = real_cut  # type: ignore[method-assign]
                assert got == want
        for start, end, cut in picked:
            if cut is not None:
                assert (start is None or start < cut) and (end is None or cut < end)
    finally:
        for s, _ in snaps:
            s.release()
        db.close()


def test_memtable_entries_split_equals_unsplit() -> None:
    db = DB.open(MEM_DIR, tiny_options(memtable_size=1 << 20))
    try:
        for i in range(40):
            db.put(b"k%02d" % (i % 25), b"v%d" % i)
        mem = db._mem
        for cut in (b"k00\x00", b"k10", b"k13", b"k24"):
            for lo, hi in ((None, None), (b"k05", b"k20"), (b"k00", b"k99")):
                if (lo is not None and cut <= lo) or (hi is not None and cut >= hi):
                    continue
                for rev in (False, True):
                    whole = list(mem.entries_reverse(lo, hi) if rev else mem.entries(lo, hi))
                    assert list(scan_module._memtable_entries(mem, lo, hi, cut, rev)) == whole
                    assert list(scan_module._memtable_entries(mem, lo, hi, None, rev)) == whole
    finally:
        db.close()


def test_memtable_cut_is_used_and_scans_stay_exact() -> None:
    db = DB.open(MEM_DIR, tiny_options(memtable_size=4096, target_file_size=4000,
                                       max_bytes_for_level_base=8000))
    db._scan_kernel = False  # the cut belongs to the pure-Python merge (the C kernel walks the skiplist)
    model: dict[bytes, bytes] = {}
    try:
        for i in range(200):
            k, v = b"k%03d" % (i * 7 % 100), b"v%d" % i
            db.put(k, v)
            model[k] = v
        db.compact_range()
        for i in range(20):
            k, v = b"k%03d" % (i * 3), b"w%d" % i
            db.put(k, v)
            model[k] = v
        v = db._current
        assert len(db._mem) and v.largest_level >= 1
        assert db._memtable_cut(v, b"k050", None, False) is not None
        assert db._memtable_cut(v, None, b"k050", True) is not None
        assert db._memtable_cut(v, None, None, False) is None
        for k in (b"k000", b"k010", b"k050", b"k090"):
            fwd = sorted(x for x in model if x >= k)
            rev = sorted((x for x in model if x < k), reverse=True)
            assert list(db.scan(k)) == [(x, model[x]) for x in fwd]
            assert list(db.scan(end=k, reverse=True)) == [(x, model[x]) for x in rev]
    finally:
        db.close()
