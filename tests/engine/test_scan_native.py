"""``DB.scan`` on the C scan kernel against the pure-Python merge of the same DB and a dict model: random
puts, deletes, overwrites and range deletes spread over the memtable, immutable memtables (flushes held
back), L0 tables and deeper levels, with blob values, snapshots, bounds, prefixes, early stops, both
directions; and the kernel is what ``DB.scan`` runs when the extension is loaded."""

from __future__ import annotations

from itertools import islice

import pytest
from _helpers import MEM_DIR, apply_step, tiny_options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native_lib
from lsmmail.engine import scan as scan_module
from lsmmail.engine.db import DB
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL

KEYS = [b"a", b"ab", b"b", b"b\x00", b"c", b"c\xff", b"d"] + [b"k%02d" % i for i in range(12)]
bounds = st.one_of(st.none(), st.sampled_from(KEYS + [b"0", b"k", b"k05x", b"zz"]))
values = st.one_of(st.binary(max_size=12), st.binary(min_size=40, max_size=90))  # 40+: blob files
entries = st.one_of(
    st.tuples(st.just(KIND_PUT), st.sampled_from(KEYS), values),
    st.tuples(st.just(KIND_PUT), st.sampled_from(KEYS), values),
    st.tuples(st.just(KIND_DELETE), st.sampled_from(KEYS), st.just(b"")),
    st.tuples(st.just(KIND_RANGE_DEL), st.sampled_from(KEYS), st.sampled_from(KEYS + [b"zz"])).filter(
        lambda e: e[1] < e[2]),
)
ops = st.one_of(
    st.tuples(st.just("write"), st.lists(entries, min_size=1, max_size=8)),
    st.tuples(st.just("write"), st.lists(entries, min_size=1, max_size=8)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("compact"), st.none()),
    st.tuples(st.just("snapshot"), st.none()),
    st.tuples(st.just("hold"), st.booleans()),
)
scans = st.tuples(bounds, bounds, st.sampled_from([None, b"k", b"b", b"k0"]), st.booleans(),
                  st.sampled_from([None, 1, 2, 5, 50]))


def model_scan(model: dict[bytes, bytes], start: bytes | None, end: bytes | None, prefix: bytes | None,
               reverse: bool) -> list[tuple[bytes, bytes]]:
    ks = sorted(k for k in model if (start is None or k >= start) and (end is None or k < end)
                and (prefix is None or k.startswith(prefix)))
    return [(k, model[k]) for k in (ks[::-1] if reverse else ks)]


@pytest.mark.skipif(not native_lib.AVAILABLE, reason="the C extension is not loaded (LSMMAIL_PURE=1?)")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=8, max_size=60), st.lists(scans, min_size=1, max_size=6))
def test_kernel_scans_match_pure_scans_and_model(history: list, queries: list) -> None:
    db = DB.open(MEM_DIR, tiny_options(memtable_size=400, max_immutable_memtables=1000))
    model: dict[bytes, bytes] = {}
    snaps = []
    held = False
    inline = db._run_inline_work
    try:
        for op, arg in history:
            if op == "compact" and held:
                continue
            if op == "hold":
                # Held: full memtables queue up as immutable memtables instead of being flushed.
                held = arg
                db._run_inline_work = (lambda: None) if held else inline  # type: ignore[method-assign]
            elif not apply_step(db, model, op, arg):
                snaps.append((db.snapshot(), dict(model)))
        for start, end, prefix, reverse, limit in queries:
            for snap, state in [(None, model)] + snaps:
                want = model_scan(state, start, end, prefix, reverse)[:limit]
                db._scan_kernel = True
                got = list(islice(db.scan(start, end, prefix=prefix, reverse=reverse, snapshot=snap), limit))
                db._scan_kernel = False
                pure = list(islice(db.scan(start, end, prefix=prefix, reverse=reverse, snapshot=snap), limit))
                assert got == want
                assert pure == want
    finally:
        db._run_inline_work = inline  # type: ignore[method-assign]
        for s, _ in snaps:
            s.release()
        db.close()


@pytest.mark.skipif(not native_lib.AVAILABLE, reason="the C extension is not loaded (LSMMAIL_PURE=1?)")
def test_scan_runs_the_kernel_over_memtables_and_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    db = DB.open(MEM_DIR, tiny_options(memtable_size=4096))
    calls: list[int] = []
    real = scan_module.native_scan

    def spy(mems, table_sources, *rest):  # type: ignore[no-untyped-def]
        calls.append(len(mems) + len(table_sources))
        return real(mems, table_sources, *rest)

    monkeypatch.setattr(scan_module, "native_scan", spy)
    try:
        for i in range(300):
            db.put(b"k%03d" % (i % 150), b"v%d" % i)
        db.compact_range()
        for i in range(10):
            db.put(b"k%03d" % (i * 5), b"w%d" % i)
        got = list(islice(db.scan(b"k040"), 50))
        assert [k for k, _ in got] == [b"k%03d" % i for i in range(40, 90)]
        assert dict(got)[b"k045"] == b"w9"
        assert calls and calls[-1] >= 2  # the memtable and at least one level
    finally:
        db.close()


@pytest.mark.skipif(not native_lib.AVAILABLE, reason="the C extension is not loaded (LSMMAIL_PURE=1?)")
def test_kernel_scans_at_a_snapshot_while_a_writer_inserts() -> None:
    """The kernel walks the live skiplist while the writer links nodes in: scans at a snapshot see
    exactly its state, both directions (reverse memtable runs are collected ahead of use)."""
    import threading

    db = DB.open(MEM_DIR, tiny_options(memtable_size=1 << 22))
    try:
        for i in range(0, 400, 2):
            db.put(b"k%04d" % i, b"old%d" % i)
        snap = db.snapshot()
        want = [(b"k%04d" % i, b"old%d" % i) for i in range(0, 400, 2)]
        stop = threading.Event()

        def writer() -> None:
            n = 0
            while not stop.is_set():
                db.put(b"k%04d" % (n % 400), b"new%d" % n)
                n += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(30):
                assert list(db.scan(snapshot=snap)) == want
                assert list(db.scan(reverse=True, snapshot=snap)) == want[::-1]
                assert list(islice(db.scan(end=b"k0101", reverse=True, snapshot=snap), 7)) == want[50::-1][:7]
        finally:
            stop.set()
            t.join()
        snap.release()
    finally:
        db.close()


@pytest.mark.skipif(not native_lib.AVAILABLE, reason="the C extension is not loaded (LSMMAIL_PURE=1?)")
def test_reverse_scans_of_any_length_over_a_large_memtable() -> None:
    """Reverse scans take the memtable's nodes in runs (one skiplist search, then a walk on level 0 that
    keeps every node it passes, up to the ring): over a memtable of thousands of versions beside a table,
    scans from random ends taking 1-300 entries return the model's entries, none skipped or repeated, at
    every run boundary."""
    import random

    rnd = random.Random(11)
    db = DB.open(MEM_DIR, tiny_options(memtable_size=1 << 24, min_blob_size=None))
    try:
        model: dict[bytes, bytes] = {}
        for i in range(0, 6000, 3):  # a third of the keys in a table
            db.put(b"k%05d" % i, b"t%d" % i)
            model[b"k%05d" % i] = b"t%d" % i
        db.flush()
        for i in rnd.sample(range(6000), 4000):  # the rest, and overwrites, in the memtable
            db.put(b"k%05d" % i, b"m%d" % i)
            model[b"k%05d" % i] = b"m%d" % i
        keys = sorted(model)
        for _ in range(150):
            end = b"k%05d" % rnd.randrange(6100)
            n = rnd.choice([1, 2, 7, 8, 9, 16, 17, 40, 64, 65, 300])
            want = [(k, model[k]) for k in reversed(keys) if k < end][:n]
            assert list(islice(db.scan(end=end, reverse=True), n)) == want
    finally:
        db.close()
