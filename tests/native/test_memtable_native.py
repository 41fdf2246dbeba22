"""Differential tests: the C skiplist memtable (NativeMemTable) against its pure twin (MemTable).

Both get the same write batches; every read (ordered iteration both ways over random ranges, point
reads at random snapshots, range tombstones, sizes) must agree. Malformed encoded batches must raise
``Corruption`` exactly when ``decode_batch`` does, and leave the memtable unchanged.
"""

from __future__ import annotations

import struct

from _memtable_twin import assert_agree, batch_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine import memtable_native
from lsmmail.engine.batch import WriteBatch, decode_batch
from lsmmail.engine.errors import Corruption
from lsmmail.engine.memtable import MemTable
from lsmmail.engine.memtable_native import NativeMemTable, new_memtable

if not native.BUILT:  # pragma: no cover
    raise RuntimeError("lsmmail._native is not built: run `pip install -e .` (needs a C compiler)")

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_key = st.binary(min_size=1, max_size=3)
_op = st.one_of(
    st.tuples(st.just("put"), _key, st.binary(max_size=40)),
    st.tuples(st.just("del"), _key, st.just(b"")),
    st.tuples(st.just("range"), _key, _key),
)
_bound = st.one_of(st.none(), _key)




@FAST
@given(st.lists(st.lists(_op, max_size=20), max_size=8), st.lists(st.tuples(_bound, _bound), max_size=4))
def test_batches_agree_with_twin(batches, bounds) -> None:  # type: ignore[no-untyped-def]
    a, b = NativeMemTable(7), MemTable(7)
    seq = 1
    for ops in batches:
        wb = batch_of(ops)
        if not len(wb):
            continue
        a.add_batch(seq, wb.entries, wb.encoded_entries())
        b.add_batch(seq, wb.entries)
        seq += len(wb)
    assert_agree(a, b, bounds, range(seq + 2))


@FAST
@given(st.lists(st.tuples(st.sampled_from([0, 1, 3]), _key, st.binary(max_size=8)), max_size=30))
def test_add_per_entry_and_without_rep(entries) -> None:  # type: ignore[no-untyped-def]
    """``add`` and ``add_batch`` without an encoded batch (it is encoded from the entries) agree too."""
    entries = [(k, key, b"" if k == 0 else (key + b"\x00" if k == 3 else v)) for k, key, v in entries]
    a, b, c = NativeMemTable(1), MemTable(1), NativeMemTable(1)
    a.add_batch(5, entries)
    b.add_batch(5, entries)
    for i, (kind, key, value) in enumerate(entries):
        c.add(5 + i, kind, key, value)
    assert_agree(a, b, [], range(6 + len(entries) + 2))
    assert list(c.entries()) == list(b.entries()) and c.range_tombstones == b.range_tombstones


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_large_values_and_many_versions(seed: int) -> None:
    """Versions bigger than the scan buffers, more than one scan or flush chunk, and arena chunks of
    their own."""
    import random

    rng = random.Random(seed)
    a, b = NativeMemTable(1), MemTable(1)
    seq = 1
    for _ in range(3):
        wb = WriteBatch()
        for _ in range(800):
            k = b"k%03d" % rng.randrange(1500)
            size = rng.choice((0, 10, 1000, 70_000, 300_000)) if rng.random() < 0.05 else rng.randrange(50)
            wb.put(k, rng.randbytes(size))
        a.add_batch(seq, wb.entries, wb.encoded_entries())
        b.add_batch(seq, wb.entries)
        seq += len(wb)
    assert_agree(a, b, [(b"k050", b"k250"), (None, b"k1"), (b"k2", None)], range(2))
    for k in (b"k000", b"k150", b"k299", b"zz"):
        for snap in (1, 500, seq):
            assert a.get(k, snap) == b.get(k, snap)
    assert a.memory_usage() > sum(len(k) + len(v) for k, _, _, v in b.entries())


@FAST
@given(st.lists(_op, min_size=1, max_size=10), st.data())
def test_malformed_batches_raise_like_decode_batch(ops, data) -> None:  # type: ignore[no-untyped-def]
    wb = batch_of(ops)
    if not len(wb):
        return
    rep = bytearray(wb.encoded_entries())
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "random"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(rep) - 1))
        rep[i] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del rep[data.draw(st.integers(0, len(rep) - 1)):]
    elif how == "extend":
        rep += data.draw(st.binary(min_size=1, max_size=6))
    else:
        rep = bytearray(data.draw(st.binary(max_size=40)))
    count = len(wb)
    try:
        _, entries = decode_batch(struct.pack("<QI", 10, count) + bytes(rep))
        expected = None
    except Corruption:
        entries, expected = [], Corruption
    a, b = NativeMemTable(1), MemTable(1)
    if expected is not None:
        try:
            a.add_batch(10, wb.entries, bytes(rep))
        except Corruption:
            pass
        else:
            raise AssertionError("malformed batch accepted")
        assert list(a.entries()) == [] and len(a) == 0 and a.approximate_size == 0
        return
    a.add_batch(10, entries, bytes(rep))
    b.add_batch(10, entries)
    assert_agree(a, b, [], range(10 + count + 2))


def test_scan_sees_a_consistent_order_while_a_writer_adds() -> None:
    """A scan interleaved with inserts (as a reader beside the leader) stays in internal order and
    yields every version that existed when it began."""
    a = NativeMemTable(1)
    wb = WriteBatch()
    for i in range(0, 2000, 2):
        wb.put(b"%05d" % i, b"v" * 30)
    a.add_batch(1, wb.entries, wb.encoded_entries())
    before = {k for k, _, _, _ in a.entries()}
    for reverse in (False, True):
        it = a.entries_reverse() if reverse else a.entries()
        got = []
        seq = 10_000 if not reverse else 20_000
        for n, e in enumerate(it):
            got.append(e)
            if n % 100 == 0:
                more = WriteBatch()
                for i in range(1, 2000, 40):
                    more.put(b"%05d" % (i + n % 3), b"w")
                a.add_batch(seq, more.entries, more.encoded_entries())
                seq += len(more)
        order = [(k, -s) for k, s, _, _ in got]
        assert order == sorted(order, reverse=reverse)
        assert before <= {k for k, _, _, _ in got}


def _chunk_ends(first: int, grow: int, top: int, upto: int) -> list[int]:
    """Positions (versions yielded) at which a scan with these chunk settings makes its next C call."""
    out, pos, c = [], 0, first
    while pos < upto:
        pos += c
        out.append(pos)
        c = min(c * grow, top)
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.sampled_from([(16, 4, 256), (1, 2, 8), (3, 3, 20), (16, 2, 256)]),
    st.booleans(),
)
def test_chunks_grow_across_boundaries_beside_a_writer(
    seed: int, chunking: tuple[int, int, int], reverse: bool
) -> None:
    """Chunks growing from a small first one, with a writer adding versions (ahead of and behind the
    cursor) right at each chunk boundary: the scan stays in strict (reverse) internal order, yields
    exactly the versions that existed when it began plus only newer ones, and matches the twin on those
    older versions."""
    import random

    rng = random.Random(seed)
    first, grow, top = chunking
    a, b = NativeMemTable(1), MemTable(1)
    seq = 1
    for _ in range(3):
        wb = WriteBatch()
        for _ in range(rng.randrange(50, 400)):
            wb.put(b"%04d" % rng.randrange(600), rng.randbytes(rng.randrange(20)))
        a.add_batch(seq, wb.entries, wb.encoded_entries())
        b.add_batch(seq, wb.entries)
        seq += len(wb)
    snap = seq - 1
    lo = b"%04d" % rng.randrange(100) if rng.random() < 0.5 else None
    hi = b"%04d" % rng.randrange(500, 650) if rng.random() < 0.5 else None
    want = list(b.entries_reverse(lo, hi) if reverse else b.entries(lo, hi))
    saved = (memtable_native._FIRST_CHUNK, memtable_native._GROW, memtable_native._CHUNK)
    memtable_native._FIRST_CHUNK, memtable_native._GROW, memtable_native._CHUNK = first, grow, top
    try:
        it = a.entries_reverse(lo, hi) if reverse else a.entries(lo, hi)
        boundaries = set(_chunk_ends(first, grow, top, len(want) + 1))
        got = []
        for e in it:
            got.append(e)
            if len(got) in boundaries or len(got) - 1 in boundaries:
                more = WriteBatch()
                for _ in range(rng.randrange(1, 12)):
                    more.put(b"%04d" % rng.randrange(600), b"new")
                a.add_batch(seq, more.entries, more.encoded_entries())
                seq += len(more)
    finally:
        memtable_native._FIRST_CHUNK, memtable_native._GROW, memtable_native._CHUNK = saved
    order = [(k, -s) for k, s, _, _ in got]
    assert order == sorted(set(order), reverse=reverse)
    assert [e for e in got if e[1] <= snap] == want
    assert all(v == b"new" for _, s, _, v in got if s > snap)
    assert all((lo is None or k >= lo) and (hi is None or k < hi) for k, _, _, _ in got)


def test_dropped_memtables_lend_their_chunks_to_new_ones() -> None:
    """Chunks of a freed memtable go to a bounded pool and come back dirty to the next memtables,
    which must read exactly what they were given (nothing may rely on fresh zeroed memory)."""
    import gc
    import random

    rng = random.Random(7)
    for _ in range(3):  # ~3.5 MiB each: several 1 MiB chunks, plus nodes with chunks of their own
        a = NativeMemTable(1)
        wb = WriteBatch()
        for i in range(3000):
            wb.put(b"old%05d" % i, rng.randbytes(1000 if i % 500 else 300_000))
        a.add_batch(1, wb.entries, wb.encoded_entries())
        del a
        gc.collect()
    pooled = memtable_native.pooled_chunk_bytes()
    assert 0 < pooled <= 64 << 20
    a, b = NativeMemTable(2), MemTable(2)
    seq = 1
    for _ in range(4):
        wb = WriteBatch()
        for _ in range(700):
            wb.put(b"k%04d" % rng.randrange(2000), rng.randbytes(rng.choice((0, 7, 1000, 2000))))
            if rng.random() < 0.1:
                wb.delete(b"k%04d" % rng.randrange(2000))
        a.add_batch(seq, wb.entries, wb.encoded_entries())
        b.add_batch(seq, wb.entries)
        seq += len(wb)
    assert memtable_native.pooled_chunk_bytes() < pooled  # the new memtable took chunks from the pool
    assert_agree(a, b, [(b"k0100", b"k0900"), (None, b"k05"), (b"k15", None)], range(2))
    flat = [[(k, v) for ks, vs in m.flush_runs() for k, v in zip(ks, vs, strict=True)] for m in (a, b)]
    assert flat[0] == flat[1]
    memtable_native.release_free_memory()  # a closing DB empties the pool; live memtables are untouched
    assert memtable_native.pooled_chunk_bytes() == 0
    assert_agree(a, b, [(b"k0100", b"k0900")], range(2))


def test_a_forked_child_can_build_memtables() -> None:
    """The chunk pool's lock is held across fork (pthread_atfork): a child forked while memtables are
    built and dropped beside it starts with the lock free and can build its own."""
    import os
    import threading

    stop = threading.Event()

    def churn() -> None:
        wb = WriteBatch()
        for i in range(1500):
            wb.put(b"%05d" % i, b"v" * 1000)
        while not stop.is_set():
            m = NativeMemTable(1)
            m.add_batch(1, wb.entries, wb.encoded_entries())
            del m

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                ok = False
                try:
                    m = NativeMemTable(1)
                    m.add(1, 1, b"k", b"v" * 2_000_000)
                    ok = m.get(b"k", 1) == (1, 1, b"v" * 2_000_000)
                finally:
                    os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        t.join()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_release_free_memory_returns_freed_heap_to_the_os() -> None:
    """Blocks freed in the middle of the malloc heap stay resident until trimmed (glibc returns only
    the top of the heap by itself); release_free_memory gives them back."""
    import platform

    if platform.libc_ver()[0] != "glibc":  # pragma: no cover - other libcs: a no-op that must not fail
        memtable_native.release_free_memory()
        return
    held = [bytearray(60_000) for _ in range(1600)]  # ~92 MiB below the mmap threshold: heap blocks
    for b in held:
        b[::4096] = b"x" * len(b[::4096])  # touch every page
    del held[::2]  # free every other block: holes no top-of-heap trim can reach
    before = _rss_kib()
    memtable_native.release_free_memory()
    after = _rss_kib()
    assert before - after > 20_000  # ~46 MiB were freed; most of it must leave RSS
    del held


def test_factory_follows_native_availability() -> None:
    m = new_memtable(3)
    assert m.log_number == 3
    assert isinstance(m, NativeMemTable) == native.AVAILABLE


def test_the_pool_keeps_only_what_two_memtables_need() -> None:
    """A dropped memtable of n chunks pools them only while pooled + live chunks stay within 2n + 1 (one
    memtable filling, one flushing); the rest are unmapped. Other live memtables in the process only make
    the pool smaller, so the expectation is computed from the live count the C side reports."""
    import gc

    mib = 1 << 20

    def filled(n_kib: int) -> NativeMemTable:
        m = NativeMemTable(1)
        wb = WriteBatch()
        for i in range(n_kib):
            wb.put(b"key%06d" % i, b"v" * 1000)
        m.add_batch(1, wb.entries, wb.encoded_entries())
        return m

    gc.collect()
    memtable_native.release_free_memory()
    assert memtable_native.pooled_chunk_bytes() == 0
    for a_kib, b_kib in ((4000, 7000), (7000, 2000)):  # the budget binds; then it does not
        a, b = filled(a_kib), filled(b_kib)
        live = memtable_native.live_chunk_bytes()
        del a
        gc.collect()
        live_after = memtable_native.live_chunk_bytes()
        n = (live - live_after) // mib
        assert n >= a_kib * 1000 // mib  # the dropped memtable's chunks left the live count
        want = max(0, min(n, 2 * n + 1 - live_after // mib))
        assert memtable_native.pooled_chunk_bytes() == want * mib
        got = [(k, v) for ks, vs in b.flush_runs() for k, v in zip(ks, vs, strict=True)]
        assert len(got) == b_kib and all(v == b"v" * 1000 for _, v in got)
        del b
        gc.collect()
        memtable_native.release_free_memory()
        assert memtable_native.pooled_chunk_bytes() == 0
