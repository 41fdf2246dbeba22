"""The C memtable's point-get filter (``native/memtable.c`` ``mem_filter_*``): a get of a key the memtable
does not hold may skip the skiplist search, but a key it holds is always found.

The filter is invisible in results, so these tests check gets against the pure twin (and a dict model)
where the filter decides: keys of every length (the hash reads 8 bytes at a time, then a tail), keys
sharing long prefixes, a memtable holding far more keys than the filter is sized for (a saturated
filter must still never hide a key), and a reader racing a writer (a key whose insert returned is
found by every later get).
"""

from __future__ import annotations

import random
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT
from lsmmail.engine.memtable import MemTable
from lsmmail.engine.memtable_native import NativeMemTable

if not native.BUILT:  # pragma: no cover
    raise RuntimeError("lsmmail._native is not built: run `pip install -e .` (needs a C compiler)")

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_prefix = st.sampled_from([b"", b"user/0000/", b"x" * 31, b"\x00" * 8])
_key = st.builds(lambda p, s: p + s, _prefix, st.binary(min_size=1, max_size=20))


@FAST
@given(st.lists(st.tuples(_key, st.booleans()), min_size=1, max_size=60), st.lists(_key, max_size=30))
def test_gets_agree_with_twin_for_held_and_absent_keys(ops, probes) -> None:  # type: ignore[no-untyped-def]
    a, b = NativeMemTable(1), MemTable(1)
    for seq, (k, is_put) in enumerate(ops, start=1):
        kind = KIND_PUT if is_put else KIND_DELETE
        v = b"v%d" % seq if is_put else b""
        a.add(seq, kind, k, v)
        b.add(seq, kind, k, v)
    top = len(ops)
    for k in {k for k, _ in ops} | set(probes):
        for snap in (0, top // 2, top, top + 5):
            assert a.get(k, snap) == b.get(k, snap)


def test_every_length_is_found_and_neighbours_are_not() -> None:
    m = NativeMemTable(1)
    held = [bytes([(i * 7 + j) % 256 for j in range(n)]) for i, n in enumerate(range(1, 70))]
    for seq, k in enumerate(held, start=1):
        m.add(seq, KIND_PUT, k, k)
    for k in held:
        assert m.get(k, len(held)) == (held.index(k) + 1, KIND_PUT, k)
        # one byte changed, added or removed: a different key, which the memtable does not hold
        assert m.get(k[:-1] + bytes([k[-1] ^ 1]), len(held)) is None
        assert m.get(k + b"\x00", len(held)) is None
        if len(k) > 1 and k[:-1] not in held:
            assert m.get(k[:-1], len(held)) is None


def test_a_saturated_filter_never_hides_a_key() -> None:
    # 300k keys: ~3.5 filter bits each (it is sized for ~30-150k), so many absent keys pass the filter
    # and are searched; every held key must still be found, every absent one answered None.
    rnd = random.Random(5)
    m = NativeMemTable(1)
    n = 300_000
    keys = [b"%016d" % (2 * i) for i in range(n)]
    rnd.shuffle(keys)
    for s in range(0, n, 5000):
        m.add_batch(s + 1, [(KIND_PUT, k, b"") for k in keys[s : s + 5000]])
    for i in rnd.sample(range(n), 20_000):
        k = keys[i]
        assert m.get(k, n) == (i + 1, KIND_PUT, b"")
        assert m.get(k, i) is None  # older than its only version
    for i in rnd.sample(range(n), 20_000):
        assert m.get(b"%016d" % (2 * i + 1), n) is None


def test_a_key_whose_insert_returned_is_found_by_a_racing_reader() -> None:
    m = NativeMemTable(1)
    published = [0]
    stop = threading.Event()
    missed: list[int] = []

    def reader() -> None:
        rnd = random.Random(9)
        while not stop.is_set():
            top = published[0]
            if top:
                i = rnd.randrange(1, top + 1)
                if m.get(b"k%07d" % i, top) is None:
                    missed.append(i)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for s in range(1, 40_001, 100):
            m.add_batch(s, [(KIND_PUT, b"k%07d" % (s + j), b"v") for j in range(100)])
            published[0] = s + 99
    finally:
        stop.set()
        t.join()
    assert missed == []


def test_many_versions_read_at_every_snapshot() -> None:
    # A key's slot names its newest version; a get at an older snapshot walks down to the version it sees.
    a, b = NativeMemTable(1), MemTable(1)
    seq = 0
    for r in range(40):
        for k in (b"hot", b"hot\x00", b"other%02d" % r):
            seq += 1
            kind = KIND_DELETE if r % 7 == 3 and k == b"hot" else KIND_PUT
            v = b"" if kind == KIND_DELETE else b"%d" % seq
            a.add(seq, kind, k, v)
            b.add(seq, kind, k, v)
    for snap in range(seq + 2):
        for k in (b"hot", b"hot\x00", b"other05", b"other39", b"ho"):
            assert a.get(k, snap) == b.get(k, snap)


def test_a_racing_reader_sees_the_newest_version_at_its_snapshot() -> None:
    # Keys are overwritten over and over (each insert repoints the key's slot): a get at a published
    # snapshot returns exactly the newest version at or below it.
    m = NativeMemTable(1)
    published = [0]
    stop = threading.Event()
    wrong: list[tuple[int, int, object]] = []

    def reader() -> None:
        rnd = random.Random(3)
        while not stop.is_set():
            top = published[0]
            if top < 100:
                continue
            j = rnd.randrange(100)
            want = top - (top - j) % 100 if j else top - top % 100
            got = m.get(b"k%03d" % j, top)
            if got is None or got[0] != want or got[2] != b"%d" % want:
                wrong.append((j, top, got))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for s in range(1, 30_001, 50):
            m.add_batch(s, [(KIND_PUT, b"k%03d" % ((s + i) % 100), b"%d" % (s + i)) for i in range(50)])
            published[0] = s + 49
    finally:
        stop.set()
        t.join()
    assert wrong == []
