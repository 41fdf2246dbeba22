"""The C memtable's sorted batch insert (``lsm_mem_add_rep`` with a search finger) against the pure twin.

Batches of ``SORTED_MIN`` (8) entries or more are sorted into internal order in C and inserted through
one splice; smaller ones go entry by entry. Whatever the path, the memtable must hold exactly what the
twin holds: the same versions in the same order both ways, the same answer to every get at every
snapshot (through the point slots: a batch with several versions of one key inserts the newest first,
and its slot must still name it), the same range tombstones and sizes.
"""

from __future__ import annotations

import random
import struct
import threading

import pytest
from _memtable_twin import assert_agree, batch_of, visibility_changes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.batch import WriteBatch, decode_batch
from lsmmail.engine.errors import Corruption
from lsmmail.engine.memtable import MemTable
from lsmmail.engine.memtable_native import NativeMemTable

if not native.BUILT:  # pragma: no cover
    raise RuntimeError("lsmmail._native is not built: run `pip install -e .` (needs a C compiler)")

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Short keys over a small alphabet: prefixes of each other ("a", "a\x00", "ab"), many versions of one key,
# long shared prefixes (the sort's 6-byte prefix words tie and the full comparison decides).
_short = st.binary(min_size=1, max_size=3).map(lambda b: bytes(c % 4 for c in b))
_long = st.tuples(st.sampled_from([b"", b"user/0000000000/", b"x" * 20]), _short).map(lambda t: t[0] + t[1])
_key = st.one_of(_short, _long)
_op = st.one_of(
    st.tuples(st.just("put"), _key, st.binary(max_size=12)),
    st.tuples(st.just("del"), _key, st.just(b"")),
    st.tuples(st.just("range"), _key, _key),
)



def _apply(a: NativeMemTable, b: MemTable, seq: int, wb: WriteBatch) -> int:
    a.add_batch(seq, wb.entries, wb.encoded_entries())
    b.add_batch(seq, wb.entries)
    return seq + len(wb)



@FAST
@given(
    st.lists(st.lists(_op, min_size=1, max_size=120), min_size=1, max_size=5),
    st.lists(st.tuples(_key, _key), max_size=3),
)
def test_sorted_batches_agree_with_twin(batches, bounds) -> None:  # type: ignore[no-untyped-def]
    """Random batches on both sides of the sorting threshold, applied one after another (later batches
    overlap the keys earlier ones left in the memtable)."""
    a, b = NativeMemTable(3), MemTable(3)
    seq = 1
    for ops in batches:
        wb = batch_of(ops)
        if len(wb):
            seq = _apply(a, b, seq, wb)
    assert_agree(a, b, bounds, visibility_changes(b, seq))


@FAST
@given(st.lists(_short, min_size=1, max_size=6, unique=True), st.data())
def test_versions_of_a_key_in_one_batch_leave_the_newest_in_its_slot(keys, data) -> None:  # type: ignore[no-untyped-def]
    """Several versions of a few keys in one big batch (sorted: the newest of each key is inserted first),
    on top of older versions already held: a get at the latest snapshot, which the key's point slot
    answers, must return the batch's last version of the key; gets at every older snapshot walk on from
    it to the right version."""
    a, b = NativeMemTable(1), MemTable(1)
    seq = 1
    pre = WriteBatch()
    for k in keys:
        pre.put(k, b"old")
    if len(keys) >= 2:
        seq = _apply(a, b, seq, pre)
    wb = WriteBatch()
    last: dict[bytes, tuple[int, bytes]] = {}
    for i in range(data.draw(st.integers(16, 80))):
        k = data.draw(st.sampled_from(keys))
        if data.draw(st.booleans()):
            v = b"v%d" % i
            wb.put(k, v)
            last[k] = (1, v)
        else:
            wb.delete(k)
            last[k] = (0, b"")
    top = _apply(a, b, seq, wb) - 1
    for k, (kind, v) in last.items():
        got = a.get(k, top)
        assert got is not None and got[1:] == (kind, v)
    assert_agree(a, b, [], visibility_changes(b, top))


@FAST
@given(st.lists(_op, min_size=8, max_size=60), st.data())
def test_malformed_sorted_batches_are_rejected_whole(ops, data) -> None:  # type: ignore[no-untyped-def]
    """A damaged batch big enough to be sorted raises Corruption exactly when decode_batch does, and
    leaves a memtable that already held versions unchanged; an intact one agrees with the twin."""
    wb = batch_of(ops)
    if len(wb) < 8:
        return
    rep = bytearray(wb.encoded_entries())
    how = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(rep) - 1))
        rep[i] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del rep[data.draw(st.integers(0, len(rep) - 1)) :]
    else:
        rep += data.draw(st.binary(min_size=1, max_size=6))
    a, b = NativeMemTable(1), MemTable(1)
    pre = WriteBatch()
    for i in range(20):
        pre.put(b"%d" % i, b"p")
    seq = _apply(a, b, 1, pre)
    before = list(a.entries())
    try:
        _, entries = decode_batch(struct.pack("<QI", seq, len(wb)) + bytes(rep))
    except Corruption:
        with pytest.raises(Corruption):
            a.add_batch(seq, wb.entries, bytes(rep))
        assert list(a.entries()) == before and len(a) == 20
        return
    a.add_batch(seq, entries, bytes(rep))
    b.add_batch(seq, entries)
    assert_agree(a, b, [], visibility_changes(b, seq + len(entries)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_into_a_big_memtable_agree_with_twin(seed: int) -> None:
    """A memtable of ~20k versions (big enough that the batch search walks its upper levels with one
    finger and the lower ones many entries at a time), then batches of every kind of entry, among them
    keys between, equal to and prefixes of keys it holds, and versions of one key."""
    rng = random.Random(seed)
    a, b = NativeMemTable(1), MemTable(1)
    seq = 1
    for _ in range(20):
        wb = WriteBatch()
        for _ in range(1000):
            wb.put(b"%06d" % rng.randrange(0, 1_000_000, 7), b"v")
        seq = _apply(a, b, seq, wb)
    held = [k for k, _, _, _ in b.entries()]
    touched: set[bytes] = set()
    for _ in range(12):
        wb = WriteBatch()
        for _ in range(rng.choice((8, 9, 30, 500, 2000))):
            r = rng.random()
            k = rng.choice(held)
            if r < 0.3:
                k = b"%06d" % rng.randrange(1_000_000)
            elif r < 0.4:
                k = k[: rng.randrange(1, 6)]
            elif r < 0.5:
                k = k + b"\x00"
            touched.add(k)
            if r < 0.05:
                wb.delete_range(k, k + b"5")
            elif rng.random() < 0.5:
                wb.delete(k)
            else:
                wb.put(k, rng.randbytes(rng.randrange(8)))
        seq = _apply(a, b, seq, wb)
    assert list(a.entries()) == list(b.entries())
    assert list(a.entries_reverse(b"3", b"6")) == list(b.entries_reverse(b"3", b"6"))
    for k in touched | set(rng.sample(held, 300)):
        for snap in (seq, seq - 1, seq - 700, 20_000, 19_999, 10_000):
            assert a.get(k, snap) == b.get(k, snap)
    assert a.range_tombstones == b.range_tombstones
    assert (len(a), a.approximate_size, a.largest_seq) == (len(b), b.approximate_size, b.largest_seq)


def test_a_batch_bigger_than_one_sort_run() -> None:
    """More than 65,536 entries (sorted and inserted in runs of that many, in sequence order), with
    versions of the same keys in both runs: the slot ends on the newest, everything agrees."""
    rng = random.Random(5)
    a, b = NativeMemTable(1), MemTable(1)
    wb = WriteBatch()
    for i in range(70_000):
        k = b"%06d" % rng.randrange(40_000) if i % 50 else b"hot%d" % (i % 7)
        if i % 3:
            wb.put(k, b"%d" % i)
        else:
            wb.delete(k)
    top = _apply(a, b, 1, wb) - 1
    assert list(a.entries()) == list(b.entries())
    for k in [b"hot%d" % j for j in range(7)] + [b"%06d" % rng.randrange(40_000) for _ in range(300)]:
        for snap in (top, top // 2, 65_536, 65_537, 10):
            assert a.get(k, snap) == b.get(k, snap)
    assert (len(a), a.approximate_size) == (len(b), b.approximate_size)


def test_readers_see_a_sorted_list_and_every_acknowledged_entry_while_batches_insert() -> None:
    """Scans in another thread (the C calls release the GIL) while sorted batches go in: every scan is in
    strict internal order and holds every version whose batch was acknowledged before the scan began."""
    a = NativeMemTable(1)
    rng = random.Random(11)
    acked = [0]  # the last sequence number of an acknowledged batch
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            upto = acked[0]
            got = [(k, s) for k, s, _, _ in a.entries()]
            order = [(k, -s) for k, s in got]
            if order != sorted(set(order)):
                errors.append("scan out of order")
                return
            if sum(1 for _, s in got if s <= upto) != upto:
                errors.append(f"scan missed acknowledged versions (upto {upto})")
                return

    t = threading.Thread(target=reader)
    t.start()
    seq = 1
    try:
        for _ in range(60):
            wb = WriteBatch()
            for _ in range(rng.randrange(16, 300)):
                wb.put(b"%05d" % rng.randrange(20_000), b"v")
            a.add_batch(seq, wb.entries, wb.encoded_entries())
            seq += len(wb)
            acked[0] = seq - 1
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert len(list(a.entries())) == seq - 1


def _seeded(seed: int) -> NativeMemTable:
    """A memtable whose skiplist heights come from ``seed`` (NativeMemTable seeds its C side from
    ``random``), so two of them fed the same keys draw the same multiset of node heights."""
    state = random.getstate()
    random.seed(seed)
    try:
        return NativeMemTable(1)
    finally:
        random.setstate(state)


def _deletes(keys: list[bytes]) -> WriteBatch:
    wb = WriteBatch()
    for k in keys:
        wb.delete(k)
    return wb


def test_usage_counts_the_sort_scratch_while_it_is_held() -> None:
    """The sorted path's scratch arrays (kept between batches up to 2,048 entries' worth, freed after a
    bigger batch) are counted in ``memory_usage`` while held. Twin memtable: same seed, same keys, in
    batches of 4 (one insert per entry, no scratch). Equal-length keys in one arena chunk: the nodes cost
    both the same bytes, so the difference is the scratch alone."""
    rng = random.Random(5)
    keys = [b"k%015d" % rng.randrange(10**15) for _ in range(5000)]
    a, b = _seeded(11), _seeded(11)
    seq = 1

    def feed(part: list[bytes]) -> None:
        nonlocal seq
        wb = _deletes(part)
        a.add_batch(seq, wb.entries, wb.encoded_entries())
        for i in range(0, len(part), 4):
            small = _deletes(part[i : i + 4])
            b.add_batch(seq + i, small.entries, small.encoded_entries())
        seq += len(part)

    assert a.memory_usage() == b.memory_usage()
    feed(keys[:1000])
    held = a.memory_usage() - b.memory_usage()
    # Per entry at least its up-to-16 predecessor pointers (128 bytes), at most a few hundred bytes.
    assert 1000 * 128 <= held <= 1000 * 400
    feed(keys[1000:1500])  # fits the scratch already held: nothing more is counted
    assert a.memory_usage() - b.memory_usage() == held
    feed(keys[1500:2500])  # the same 1,000 entries' worth again
    assert a.memory_usage() - b.memory_usage() == held
    feed(keys[2500:5000])  # 2,500 entries: more than is kept, so freed (and uncounted) after the batch
    assert a.memory_usage() == b.memory_usage()
    feed(keys[:8])  # the smallest sorted batch: a small scratch again
    assert 8 * 128 <= a.memory_usage() - b.memory_usage() <= 8 * 400
