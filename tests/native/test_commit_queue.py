"""The C group-commit queue (native/commit.c) against its pure twin in lsmmail/engine/commit_queue.py.

Differential: the groups ``lsm_cq_join``/``lsm_cq_group`` pick equal ``pick_group`` on the same queue;
``lsm_cq_commit`` writes the bytes it is given and leaves the memtable as ``NativeMemTable.add_batch``
does; its failures report the errno and the step. Threaded: followers wait in C and get the leader's
status.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine import commit_queue
from lsmmail.engine.batch import WriteBatch, decode_batch, encode_batch, encode_header
from lsmmail.engine.commit_queue import _account, _Writer, pick_group
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL
from lsmmail.engine.memtable_native import NativeMemTable
from lsmmail.engine.wal import LogWriter

lib, ffi = native._lib, native._ffi
pytestmark = pytest.mark.skipif(lib is None, reason="the C extension is not built")

MAXN = 64


def _q():  # noqa: ANN202
    return ffi.gc(lib.lsm_cq_new(), lib.lsm_cq_free)


def _w(q=None):  # noqa: ANN001, ANN202
    """A writer slot; one that threads join ``q`` with is freed through the queue (a finish may still
    be signalling it after its thread returned)."""
    if q is None:
        return ffi.gc(lib.lsm_cqw_new(), lib.lsm_cqw_free)
    return ffi.gc(lib.lsm_cqw_new_for(q), lambda p: lib.lsm_cq_drop_writer(q, p))


_SPEC = st.tuples(st.integers(1, 400), st.booleans(), st.integers(0, 9).map(lambda k: k == 0))


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(_SPEC, min_size=1, max_size=30), max_bytes=st.sampled_from([1, 300, 1000, 1 << 20]))
def test_groups_equal_the_pure_twin(specs: list[tuple[int, bool, bool]], max_bytes: int) -> None:
    """Push writers (size, sync, alone), then repeatedly take the head's group and finish it: the C queue
    and ``pick_group`` cut the same groups, with the same need-sync, until the queue is empty; the
    group's size and entry totals are its writers' sums."""
    q = _q()
    slots = [_w() for _ in specs]
    addr = {int(ffi.cast("uintptr_t", s)): i for i, s in enumerate(slots)}
    for k, (s, (size, sync, alone)) in enumerate(zip(slots, specs, strict=True)):
        lib.lsm_cq_push(q, s, b"", 0, k % 5, size, sync, alone)  # k % 5 entries in the batch
    twins = [_Writer([], sync, size, force_flush=alone) for size, sync, alone in specs]
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    totals = ffi.new("uint64_t[2]")
    head = 0
    while head < len(specs):
        assert lib.lsm_cq_len(q) == len(specs) - head
        n = lib.lsm_cq_group(q, max_bytes, addrs, MAXN, need, 0, 0)
        want = pick_group(twins[head:], max_bytes)
        assert n == want
        assert [addr[addrs[i]] for i in range(n)] == list(range(head, head + n))
        assert bool(need[0]) == any(t.sync for t in twins[head : head + n])
        # What the leader's bookkeeping reads instead of its group's Python records.
        lib.lsm_cq_group_totals(q, n, totals)
        assert list(totals) == [sum(sz for sz, _, _ in specs[head : head + n]),
                                sum(k % 5 for k in range(head, head + n))]
        left = lib.lsm_cq_finish(q, n, 0)
        head += n
        assert left == len(specs) - head
    assert lib.lsm_cq_group(q, max_bytes, addrs, MAXN, need, 0, 0) == 0


def test_group_respects_max_writers() -> None:
    q = _q()
    slots = [_w() for _ in range(10)]
    for s in slots:
        lib.lsm_cq_push(q, s, b"", 0, 0, 1, 0, 0)
    addrs = ffi.new("uint64_t[]", 4)
    need = ffi.new("int *")
    assert lib.lsm_cq_group(q, 1 << 20, addrs, 4, need, 0, 0) == 4


def test_join_of_the_head_returns_its_group_at_once() -> None:
    q = _q()
    w = _w()
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    n = lib.lsm_cq_join(q, w, b"rep", 3, 1, 15, 1, 0, 1 << 20, addrs, MAXN, need, 0, 0)
    assert n == 1 and need[0] == 1
    assert addrs[0] == int(ffi.cast("uintptr_t", w))
    # A timed wait for a fuller group returns after the timeout when nobody comes.
    assert lib.lsm_cq_group(q, 1 << 20, addrs, MAXN, need, 8, 2_000_000) == 1
    assert lib.lsm_cq_finish(q, 1, 0) == 0


def test_waiting_leader_wakes_when_its_group_is_complete() -> None:
    """A head waiting (up to an hour) for a group of three is woken by the push that makes three -- the
    only push that signals it -- and takes all three."""
    q = _q()
    got: list[int] = []

    def leader() -> None:
        w = _w()
        addrs = ffi.new("uint64_t[]", MAXN)
        need = ffi.new("int *")
        got.append(lib.lsm_cq_join(q, w, b"", 0, 0, 1, 1, 0, 1 << 20, addrs, MAXN, need, 3, 3600 * 10**9))
        lib.lsm_cq_finish(q, got[-1], 0)

    t = threading.Thread(target=leader)
    t.start()
    while lib.lsm_cq_len(q) < 1:
        threading.Event().wait(0.001)
    others = [_w() for _ in range(2)]
    lib.lsm_cq_push(q, others[0], b"", 0, 0, 1, 1, 0)
    threading.Event().wait(0.01)
    assert t.is_alive()  # two queued: still waiting
    lib.lsm_cq_push(q, others[1], b"", 0, 0, 1, 1, 0)
    t.join(60)
    assert not t.is_alive() and got == [3]
    assert lib.lsm_cq_len(q) == 0


def _join_in_thread(q, w, got: list[tuple[int, list[int]]], wait_for: int = 0,  # noqa: ANN001
                    wait_ns: int = 0) -> threading.Thread:
    """Start a thread whose writer ``w`` joins ``q`` synced; it appends (status, its group's slot
    addresses) to ``got`` on return."""
    def run() -> None:
        addrs = ffi.new("uint64_t[]", MAXN)
        need = ffi.new("int *")
        n = lib.lsm_cq_join(q, w, b"", 0, 0, 1, 1, 0, 1 << 20, addrs, MAXN, need, wait_for, wait_ns)
        got.append((n, [int(addrs[i]) for i in range(max(n, 0))]))

    t = threading.Thread(target=run)
    t.start()
    return t


def _wait_len(q, n: int) -> None:  # noqa: ANN001
    while lib.lsm_cq_len(q) < n:
        threading.Event().wait(0.001)


def _addr(w) -> int:  # noqa: ANN001
    return int(ffi.cast("uintptr_t", w))


def test_the_push_that_completes_the_group_leads_it() -> None:
    """A synced head waits (up to an hour) for a group of three; the writer whose join makes three leads
    the group (the head first, itself last) instead of waking the head, which returns the leader's
    status as a follower. The counters record one fill wait, completed by that push."""
    q = _q()
    slots = [_w(q) for _ in range(3)]
    got: list[tuple[int, list[int]]] = []
    head = _join_in_thread(q, slots[0], got, wait_for=3, wait_ns=3600 * 10**9)
    _wait_len(q, 1)
    second = _join_in_thread(q, slots[1], got)
    _wait_len(q, 2)
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    n = lib.lsm_cq_join(q, slots[2], b"", 0, 0, 1, 1, 0, 1 << 20, addrs, MAXN, need, 0, 0)
    assert n == 3 and need[0] == 1
    assert [int(addrs[i]) for i in range(3)] == [_addr(s) for s in slots]
    assert head.is_alive() and second.is_alive()
    assert lib.lsm_cq_finish(q, 3, -7) == 0
    head.join(60)
    second.join(60)
    assert sorted(got) == [(-7, []), (-7, [])]
    counters = ffi.new("uint64_t[7]")
    lib.lsm_cq_counters(q, counters)
    assert list(counters)[:3] == [1, 1, 0]


def test_a_head_waits_for_as_many_writers_as_the_last_finish_saw() -> None:
    """wait_for -1: the target is what the last finish saw (its group plus writers still queued), read
    when the head starts waiting. A group of two finishes with one writer queued behind it: the next
    synced head (that writer) waits for three, and the third join leads."""
    q = _q()
    slots = [_w(q) for _ in range(3)]
    for s in slots[:2]:
        lib.lsm_cq_push(q, s, b"", 0, 0, 1, 1, 0)
    got: list[tuple[int, list[int]]] = []
    head = _join_in_thread(q, slots[2], got, wait_for=-1, wait_ns=3600 * 10**9)
    _wait_len(q, 3)
    assert lib.lsm_cq_finish(q, 2, 0) == 1  # saw 2 + 1: the head now waits for 3
    second = _join_in_thread(q, slots[0], got, wait_for=-1, wait_ns=3600 * 10**9)
    _wait_len(q, 2)
    threading.Event().wait(0.01)
    assert head.is_alive() and second.is_alive() and got == []
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    n = lib.lsm_cq_join(q, slots[1], b"", 0, 0, 1, 1, 0, 1 << 20, addrs, MAXN, need, -1, 3600 * 10**9)
    assert n == 3 and [int(addrs[i]) for i in range(3)] == [_addr(slots[2]), _addr(slots[0]), _addr(slots[1])]
    assert lib.lsm_cq_finish(q, 3, 0) == 0
    head.join(60)
    second.join(60)
    assert got == [(0, []), (0, [])]


def test_a_push_outside_the_waited_for_group_wakes_the_head() -> None:
    """The completing push cannot lead a group it is not in (an unsynced head's group stops before a
    synced writer; here: a writer past max_bytes): the head leads what fits."""
    q = _q()
    slots = [_w(q) for _ in range(2)]
    got: list[tuple[int, list[int]]] = []
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")

    def head() -> None:
        n = lib.lsm_cq_join(q, slots[0], b"", 0, 0, 600, 1, 0, 1000, addrs, MAXN, need, 2, 3600 * 10**9)
        got.append((n, [int(addrs[i]) for i in range(n)]))
        lib.lsm_cq_finish(q, n, 0)

    t = threading.Thread(target=head)
    t.start()
    _wait_len(q, 1)
    a2 = ffi.new("uint64_t[]", MAXN)
    # 600 + 600 > max_bytes 1000: the second writer is cut; it waits, then leads its own group.
    n = lib.lsm_cq_join(q, slots[1], b"", 0, 0, 600, 1, 0, 1000, a2, MAXN, need, 0, 0)
    t.join(60)
    assert got == [(1, [_addr(slots[0])])]
    assert n == 1 and int(a2[0]) == _addr(slots[1])
    assert lib.lsm_cq_finish(q, 1, 0) == 0


def test_abandon_by_a_leader_behind_the_head() -> None:
    """A leader that is not the head abandons its group (its own write failed first): it leaves the
    queue, the head's group stays, and the head leads it once its wait for a fuller group times out."""
    q = _q()
    slots = [_w(q) for _ in range(3)]
    got: list[tuple[int, list[int]]] = []
    head = _join_in_thread(q, slots[0], got, wait_for=3, wait_ns=50_000_000)
    _wait_len(q, 1)
    second = _join_in_thread(q, slots[1], got)
    _wait_len(q, 2)
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    assert lib.lsm_cq_join(q, slots[2], b"", 0, 0, 1, 1, 0, 1 << 20, addrs, MAXN, need, 0, 0) == 3
    assert lib.lsm_cq_abandon(q, slots[2]) == 2
    head.join(60)
    assert got == [(2, [_addr(slots[0]), _addr(slots[1])])]
    assert second.is_alive()
    assert lib.lsm_cq_finish(q, 2, 0) == 0
    second.join(60)
    assert got[1] == (0, [])
    counters = ffi.new("uint64_t[7]")
    lib.lsm_cq_counters(q, counters)
    assert list(counters) == [1, 1, 1, 0, 0, 0, 0]  # a queue yields only once lsm_cq_set_yield asks it to


def _rep(entries: list[tuple[int, bytes, bytes]]) -> bytes:
    return encode_batch(0, entries)[12:]


_KEY = st.binary(min_size=1, max_size=12)
_ENTRY = st.one_of(
    st.tuples(st.just(KIND_PUT), _KEY, st.binary(max_size=40)),
    st.tuples(st.just(KIND_DELETE), _KEY, st.just(b"")),
    _KEY.map(lambda k: (KIND_RANGE_DEL, k, k + b"\x00")),  # the end sorts after the start
)


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(st.lists(_ENTRY, min_size=1, max_size=6), min_size=1, max_size=6),
       first_seq=st.integers(1, 1 << 40))
def test_commit_equals_add_batch(tmp_path_factory: pytest.TempPathFactory,
                                 batches: list[list[tuple[int, bytes, bytes]]], first_seq: int) -> None:
    """One lsm_cq_commit of a group = the bytes written at the offset + add_batch of each batch in turn
    (then ``_account``'s bookkeeping): same memtable contents, sizes, counts and range tombstones."""
    path = tmp_path_factory.mktemp("c") / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        q = _q()
        slots = [_w() for _ in batches]
        reps = [_rep(b) for b in batches]
        for s, rep, b in zip(slots, reps, batches, strict=True):
            lib.lsm_cq_push(q, s, ffi.from_buffer("uint8_t[]", rep), len(rep), len(b), len(rep) + 12, 0, 0)
        got = NativeMemTable(1)
        out = ffi.new("uint64_t[4]")
        payload = b"".join(reps)
        rc = lib.lsm_cq_commit(q, fd, payload, len(payload), 5, 1, got._m, first_seq, len(batches), out)
        assert (rc, out[2], out[3]) == (0, len(payload), 0)
        assert os.pread(fd, len(payload) + 5, 0) == bytes(5) + payload
        group = [_Writer(b, False, 0, rep=r) for b, r in zip(batches, reps, strict=True)]
        _account(got, first_seq, group, out[1], out[0])
        want = NativeMemTable(1)
        seq = first_seq
        for b, r in zip(batches, reps, strict=True):
            want.add_batch(seq, b, r)
            seq += len(b)
        assert list(got.entries(None, None)) == list(want.entries(None, None))
        assert got.range_tombstones == want.range_tombstones
        assert (got.approximate_size, got.num_entries, got.largest_seq) == (
            want.approximate_size, want.num_entries, want.largest_seq)
        lib.lsm_cq_finish(q, len(batches), 0)
    finally:
        os.close(fd)


def test_commit_reports_the_failed_step(tmp_path: Path) -> None:
    q = _q()
    s = _w()
    rep = _rep([(KIND_PUT, b"k", b"v")])
    lib.lsm_cq_push(q, s, ffi.from_buffer("uint8_t[]", rep), len(rep), 1, 20, 1, 0)
    mem = NativeMemTable(1)
    out = ffi.new("uint64_t[4]")
    # A write to a descriptor opened read-only: -EBADF at step 1, nothing inserted.
    fd = os.open(tmp_path / "r", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        assert lib.lsm_cq_commit(q, fd, b"abc", 3, 0, 1, mem._m, 1, 1, out) == -9
        assert out[3] == 1 and out[2] == 0 and len(list(mem.entries(None, None))) == 0
    finally:
        os.close(fd)
    # fdatasync of a character device fails (EINVAL) after the write succeeded: step 2.
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        assert lib.lsm_cq_commit(q, fd, b"abc", 3, 0, 1, mem._m, 1, 1, out) == -22
        assert out[3] == 2 and out[2] == 3 and len(list(mem.entries(None, None))) == 0
        # A malformed batch: the memtable step reports corruption.
        s2 = _w()
        lib.lsm_cq_finish(q, 1, 0)
        lib.lsm_cq_push(q, s2, b"\x01\xff", 2, 1, 20, 0, 0)
        assert lib.lsm_cq_commit(q, fd, b"", 0, 0, 0, mem._m, 1, 1, out) == -1
        assert out[3] == 3
    finally:
        os.close(fd)


@pytest.mark.parametrize("yield_ns", [0, 200_000])
@pytest.mark.parametrize("wait_for", [0, 8])
def test_followers_wait_in_c_and_get_the_leaders_status(wait_for: int, yield_ns: int) -> None:
    """Eight threads join one queue; a leader (the head, or with ``wait_for`` the writer whose push
    completed the group a synced head waited for) gets a group that holds itself and finishes it with a
    status; followers return that status without leading, every thread returns exactly once. With
    ``yield_ns`` the waits yield the CPU before they sleep (the counters show yields happened) and
    nothing else changes."""
    q = _q()
    lib.lsm_cq_set_yield(q, yield_ns)
    n_threads = 8
    rounds = 200
    results: list[list[int]] = [[] for _ in range(n_threads)]
    led = [0] * n_threads
    commits: list[int] = []
    mu = threading.Lock()

    def run(i: int) -> None:
        w = _w(q)
        me = int(ffi.cast("uintptr_t", w))
        addrs = ffi.new("uint64_t[]", MAXN)
        need = ffi.new("int *")
        for r in range(rounds):
            n = lib.lsm_cq_join(q, w, b"", 0, 0, 1, r % 2, 0, 1 << 20, addrs, MAXN, need, wait_for, 2_000_000)
            if n > 0:
                assert me in [addrs[k] for k in range(n)]
                led[i] += 1
                with mu:
                    commits.append(n)
                    status = -len(commits)  # a distinct status per group
                lib.lsm_cq_finish(q, n, status)
                results[i].append(status)
            else:
                results[i].append(n)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(commits) == n_threads * rounds
    assert lib.lsm_cq_len(q) == 0
    seen: dict[int, int] = {}
    for res in results:
        assert len(res) == rounds
        for st_ in res:
            seen[st_] = seen.get(st_, 0) + 1
    # Each group's status went to exactly its members.
    assert seen == {-(k + 1): n for k, n in enumerate(commits)}
    counters = ffi.new("uint64_t[7]")
    lib.lsm_cq_counters(q, counters)
    assert (counters[3] + counters[4] > 0) == (yield_ns > 0)
    # Return turns (yields on only): the followers' turns were released by the next joins.
    assert (counters[5] > 0) == (yield_ns > 0)


def test_yields_that_run_out_stop_until_a_probe_pays() -> None:
    """A follower's wait is far longer than the yield budget (the leader holds its group 2 ms, the budget
    is 1 us): every yield runs out. After three misses the moving average of paying yields is below 3/4
    (1024 -> 896 -> 784 -> 686), and from then on only every 8th wait yields (a probe); the rest sleep
    at once, so a slow device costs little CPU."""
    q = _q()
    lib.lsm_cq_set_yield(q, 1_000)
    leader, follower = _w(q), _w(q)
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    rounds = 40
    for _ in range(rounds):
        assert lib.lsm_cq_join(q, leader, b"", 0, 0, 1, 1, 0, 1 << 20, addrs, MAXN, need, 0, 0) == 1
        got: list[tuple[int, list[int]]] = []
        t = _join_in_thread(q, follower, got)  # queued behind a busy leader: it waits
        _wait_len(q, 2)
        threading.Event().wait(0.002)
        assert lib.lsm_cq_finish(q, 1, 0) == 1
        t.join(60)
        assert got == [(1, [_addr(follower)])]  # woken as the head: it leads its own group
        assert lib.lsm_cq_finish(q, 1, 0) == 0
    counters = ffi.new("uint64_t[7]")
    lib.lsm_cq_counters(q, counters)
    paid, ran_out = counters[3], counters[4]
    assert paid == 0
    assert 3 <= ran_out <= 3 + rounds // 8 + 1


def test_writebatch_rep_is_what_commit_reads() -> None:
    b = WriteBatch()
    b.put(b"a", b"1")
    b.delete(b"b")
    rep = b.encoded_entries()
    seq, entries = decode_batch(encode_batch(7, list(b.entries)))
    assert seq == 7 and rep == _rep(list(b.entries)) and len(entries) == 2


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(_ENTRY, min_size=1, max_size=8), seq=st.integers(1, 1 << 40))
def test_commit_one_equals_add_batch(tmp_path_factory: pytest.TempPathFactory,
                                     batch: list[tuple[int, bytes, bytes]], seq: int) -> None:
    """The solo lane's lsm_wal_commit_one = the bytes written + add_batch of the one batch."""
    fd = os.open(tmp_path_factory.mktemp("o") / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        rep = _rep(batch)
        got = NativeMemTable(1)
        out = ffi.new("uint64_t[4]")
        framed = b"F" * 9
        assert lib.lsm_wal_commit_one(fd, framed, 9, 3, 0, got._m, rep, len(rep), seq, len(batch), out) == 0
        assert (out[2], out[3]) == (9, 0)
        assert os.pread(fd, 20, 0) == bytes(3) + framed
        _account(got, seq, [_Writer(batch, False, 0, rep=rep)], out[1], out[0])
        want = NativeMemTable(1)
        want.add_batch(seq, batch, rep)
        assert list(got.entries(None, None)) == list(want.entries(None, None))
        assert got.range_tombstones == want.range_tombstones
        assert (got.approximate_size, got.num_entries, got.largest_seq) == (
            want.approximate_size, want.num_entries, want.largest_seq)
    finally:
        os.close(fd)


def test_commit_one_reports_the_failed_step() -> None:
    mem = NativeMemTable(1)
    out = ffi.new("uint64_t[4]")
    rep = _rep([(KIND_PUT, b"k", b"v")])
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        assert lib.lsm_wal_commit_one(fd, b"abc", 3, 0, 1, mem._m, rep, len(rep), 1, 1, out) == -22
        assert out[3] == 2 and len(list(mem.entries(None, None))) == 0
        assert lib.lsm_wal_commit_one(fd, b"abc", 3, 0, 0, mem._m, b"\x01\xff", 2, 1, 1, out) == -1
        assert out[3] == 3
    finally:
        os.close(fd)
    assert lib.lsm_wal_commit_one(-1, b"abc", 3, 0, 0, mem._m, rep, len(rep), 1, 1, out) == -9
    assert out[3] == 1


class _NoFile:
    def append(self, data: object) -> None:
        pass


@pytest.mark.skipif(not commit_queue._C_FRAMING, reason="XXH3 could not be handed to C")
@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.just(KIND_PUT), _KEY, st.one_of(
           st.binary(max_size=40), st.integers(0, 70000).map(lambda n: b"v" * n))), min_size=1, max_size=3),
           min_size=1, max_size=5),
       block_offset=st.one_of(st.integers(0, 32767), st.integers(32760, 32768)),
       first_seq=st.integers(1, 1 << 50), solo=st.booleans(), sync=st.booleans())
def test_c_framing_equals_encode_record(batches: list[list[tuple[int, bytes, bytes]]], block_offset: int,
                                        first_seq: int, solo: bool, sync: bool) -> None:
    """lsm_cq_commit_framed frames exactly what LogWriter.encode_record frames (block padding, FULL and
    FIRST/MIDDLE/LAST fragments, checksums), from any block offset, for a group or a solo batch; synced
    (writeback started, batches inserted, then fdatasync) or not, the same bytes and entries."""
    if solo:
        batches = batches[:1]
    reps = [_rep(b) for b in batches]
    writer = LogWriter(_NoFile(), block_offset % 32768)
    want = b""
    seq = first_seq
    for b, r in zip(batches, reps, strict=True):
        want += writer.encode_record(encode_header(seq, len(b)) + r)
        seq += len(b)
    q = _q()
    slots = [_w() for _ in batches]
    if not solo:
        for s, r, b in zip(slots, reps, batches, strict=True):
            lib.lsm_cq_push(q, s, ffi.from_buffer("uint8_t[]", r), len(r), len(b), len(r) + 12, 0, 0)
    mem = NativeMemTable(1)
    out = ffi.new("uint64_t[5]")
    fd = os.memfd_create("frame-test")
    try:
        bound = lib.lsm_cq_frame_bound(sum(len(r) for r in reps), len(reps))
        rc = lib.lsm_cq_commit_framed(q, fd, 0, block_offset, sync, mem._m, first_seq,
                                      0 if solo else len(reps), reps[0], len(reps[0]), len(batches[0]), out)
        got = os.pread(fd, len(want) + 1, 0)
    finally:
        os.close(fd)
    assert rc == 0
    assert got == want and out[4] == len(want) <= bound
    assert (block_offset + len(want)) % 32768 == writer._block_offset % 32768
    assert sorted(k for k, _, _, _ in mem.entries(None, None)) == sorted(
        k for b in batches for _, k, _ in b)


@pytest.mark.skipif(not commit_queue._C_FRAMING, reason="XXH3 could not be handed to C")
@pytest.mark.parametrize("solo", [False, True])
def test_synced_framed_commit_inserts_before_its_fdatasync(solo: bool) -> None:
    """A synced lsm_cq_commit_framed inserts the batches while the device writes them, before its
    fdatasync: when that fails (a character device: EINVAL after the write succeeded) it reports step 2
    with the bytes written, and the batches are in the memtable, under sequence numbers the caller does
    not publish. Unsynced, the same commit succeeds."""
    batches = [[(KIND_PUT, b"a", b"1")], [(KIND_PUT, b"b", b"2"), (KIND_DELETE, b"c", b"")]]
    if solo:
        batches = batches[:1]
    reps = [_rep(b) for b in batches]
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        for sync, want_rc in ((1, -22), (0, 0)):
            q = _q()
            slots = [_w() for _ in batches]
            if not solo:
                for s, r, b in zip(slots, reps, batches, strict=True):
                    lib.lsm_cq_push(q, s, ffi.from_buffer("uint8_t[]", r), len(r), len(b), len(r) + 12,
                                    sync, 0)
            mem = NativeMemTable(1)
            out = ffi.new("uint64_t[5]")
            rc = lib.lsm_cq_commit_framed(q, fd, 0, 0, sync, mem._m, 7, 0 if solo else len(reps), reps[0],
                                          len(reps[0]), len(batches[0]), out)
            assert rc == want_rc
            assert out[3] == (2 if sync else 0) and out[2] == out[4] > 0
            assert sorted(k for k, _, _, _ in mem.entries(None, None)) == sorted(
                k for b in batches for _, k, _ in b)
    finally:
        os.close(fd)


@pytest.mark.skipif(not commit_queue._C_FRAMING, reason="XXH3 could not be handed to C")
@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([KIND_PUT, KIND_DELETE]),
       key=st.one_of(st.binary(min_size=1, max_size=200), st.integers(1, 65535).map(lambda n: b"k" * n)),
       value=st.one_of(st.binary(max_size=200), st.sampled_from([127, 128, 16383, 16384, 70_000]).map(bytes)),
       block_offset=st.one_of(st.integers(0, 32767), st.integers(32760, 32768)),
       seq=st.integers(1, (1 << 56) - 1))
def test_commit_kv_equals_write_batch(kind: int, key: bytes, value: bytes, block_offset: int,
                                      seq: int) -> None:
    """lsm_cq_commit_kv of one entry = framing WriteBatch's encoding of it (LogWriter.encode_record)
    + NativeMemTable.add_batch: same log bytes, memtable contents and sizes; out[5] is the entries'
    length, so 12 + out[5] is the batch's byte_size."""
    b = WriteBatch()
    if kind == KIND_PUT:
        b.put(key, value)
    else:
        b.delete(key)
    rep = b.encoded_entries()
    want_log = LogWriter(_NoFile(), block_offset % 32768).encode_record(encode_header(seq, 1) + rep)
    want = NativeMemTable(1)
    want.add_batch(seq, list(b.entries), rep)
    got = NativeMemTable(1)
    out = ffi.new("uint64_t[6]")
    fd = os.memfd_create("kv-test")
    try:
        bound = commit_queue.frame_bound(len(key) + len(value) + commit_queue._KV_OVERHEAD, 1)
        rc = lib.lsm_cq_commit_kv(_q(), fd, 5, block_offset, 0, got._m, seq, kind, key, len(key), value,
                                  len(value), out)
        log = os.pread(fd, len(want_log) + 6, 0)
    finally:
        os.close(fd)
    assert rc == 0
    assert log == bytes(5) + want_log and out[2] == out[4] == len(want_log) <= bound
    assert out[5] + 12 == b.byte_size
    _account(got, seq, [_Writer(list(b.entries), False, 0, rep=rep)], out[1], out[0])
    assert list(got.entries(None, None)) == list(want.entries(None, None))
    assert (got.approximate_size, got.num_entries, got.largest_seq) == (
        want.approximate_size, want.num_entries, want.largest_seq)


@pytest.mark.skipif(not commit_queue._C_FRAMING, reason="XXH3 could not be handed to C")
@settings(max_examples=150, deadline=None)
@given(kinds=st.lists(st.sampled_from([KIND_PUT, KIND_DELETE]), min_size=1, max_size=4),
       keys=st.lists(st.one_of(st.binary(min_size=1, max_size=200),
                               st.integers(1, 65535).map(lambda n: b"k" * n)), min_size=4, max_size=4),
       values=st.lists(st.one_of(st.binary(max_size=200),
                                 st.sampled_from([127, 128, 16383, 16384, 70_000]).map(bytes)),
                       min_size=4, max_size=4),
       block_offset=st.integers(0, 32767), seq=st.integers(1, 1 << 40))
def test_join_kv_equals_write_batch(kinds: list[int], keys: list[bytes], values: list[bytes],
                                    block_offset: int, seq: int) -> None:
    """Writers queued by lsm_cq_join_kv (each entry encoded in its slot) and committed as one group =
    framing each WriteBatch's encoding (LogWriter.encode_record) + NativeMemTable.add_batch; the sizes
    the Python side computes (``_Writer.size``) are the batches' byte_size."""
    q = _q()
    slots = [_w(q) for _ in kinds]
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    writer = LogWriter(_NoFile(), block_offset % 32768)
    want_log = b""
    want = NativeMemTable(1)
    followers: list[threading.Thread] = []
    got_status: list[int] = []

    def follow(i: int, vn: int) -> None:
        fa = ffi.new("uint64_t[]", MAXN)
        fn = ffi.new("int *")
        got_status.append(lib.lsm_cq_join_kv(q, slots[i], kinds[i], keys[i], len(keys[i]), values[i], vn, 0,
                                             1 << 30, fa, MAXN, fn, 0, 0))

    s = seq
    for i, kind in enumerate(kinds):
        b = WriteBatch()
        if kind == KIND_PUT:
            b.put(keys[i], values[i])
        else:
            b.delete(keys[i])
        rep = b.encoded_entries()
        want_log += writer.encode_record(encode_header(s, 1) + rep)
        want.add_batch(s, list(b.entries), rep)
        s += 1
        assert lib.lsm_cqw_reserve(slots[i], len(keys[i]) + len(values[i]) + 21) == 0
        vn = len(values[i]) if kind == KIND_PUT else 0
        if i == 0:  # alone in the queue: leads at once (and stays busy until its finish)
            assert lib.lsm_cq_join_kv(q, slots[0], kind, keys[0], len(keys[0]), values[0], vn, 0, 1 << 30,
                                      addrs, MAXN, need, 0, 0) == 1
        else:  # queued behind it, in order
            followers.append(threading.Thread(target=follow, args=(i, vn)))
            followers[-1].start()
            _wait_len(q, i + 1)
    got = NativeMemTable(1)
    out = ffi.new("uint64_t[5]")
    fd = os.memfd_create("join-kv-test")
    try:
        rc = lib.lsm_cq_commit_framed(q, fd, 0, block_offset, 0, got._m, seq, len(kinds), b"", 0, 0, out)
        log = os.pread(fd, len(want_log) + 1, 0)
    finally:
        os.close(fd)
    assert rc == 0 and log == want_log
    assert list(got.entries(None, None)) == list(want.entries(None, None))
    assert lib.lsm_cq_finish(q, len(kinds), 0) == 0
    for t in followers:
        t.join(60)
    assert got_status == [0] * (len(kinds) - 1)


def test_join_kv_refuses_without_room_or_for_another_kind() -> None:
    q = _q()
    slot = _w(q)
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    refused = -(1 << 62)
    args = (1, 1 << 20, addrs, MAXN, need, 0, 0)
    assert lib.lsm_cq_join_kv(q, slot, KIND_PUT, b"k", 1, b"v", 1, *args) == refused
    assert lib.lsm_cqw_reserve(slot, 100) == 0
    assert lib.lsm_cq_join_kv(q, slot, KIND_RANGE_DEL, b"k", 1, b"v", 1, *args) == refused
    assert lib.lsm_cq_len(q) == 0


@pytest.mark.skipif(not commit_queue._C_FRAMING, reason="XXH3 could not be handed to C")
def test_commit_kv_refuses_before_writing() -> None:
    """A kind other than PUT/DELETE, or a sequence number of 0 or past 56 bits, is refused with
    nothing written or inserted; a failed write reports its errno and step."""
    mem = NativeMemTable(1)
    out = ffi.new("uint64_t[6]")
    fd = os.memfd_create("kv-refuse")
    try:
        for kind, seq in ((KIND_RANGE_DEL, 1), (7, 1), (KIND_PUT, 0), (KIND_PUT, 1 << 56)):
            assert lib.lsm_cq_commit_kv(_q(), fd, 0, 0, 0, mem._m, seq, kind, b"k", 1, b"v", 1, out) == -3
            assert out[2] == out[3] == out[4] == 0
        assert os.fstat(fd).st_size == 0 and len(list(mem.entries(None, None))) == 0
    finally:
        os.close(fd)
    assert lib.lsm_cq_commit_kv(_q(), -1, 0, 0, 0, mem._m, 1, KIND_PUT, b"k", 1, b"v", 1, out) == -9
    assert out[3] == 1 and len(list(mem.entries(None, None))) == 0


def test_queue_outlives_its_writer_slots_whatever_the_finalization_order() -> None:
    """The garbage collector may finalize a queue before the writer slots made for it (one cycle holds
    both): the queue's free then only drops the owner's reference, and the last slot's drop frees it.
    Run here in that order, by hand; under AddressSanitizer (docs/benchmarks.md's recipe) the old code,
    which freed the queue at once, failed with a heap-use-after-free in lsm_cq_drop_writer."""
    q = lib.lsm_cq_new()
    slots = [lib.lsm_cqw_new_for(q) for _ in range(3)]
    lib.lsm_cq_free(q)  # the owner goes first
    for w in slots[:2]:
        lib.lsm_cq_drop_writer(q, w)
    assert lib.lsm_cq_len(q) == 0  # still a live queue: one slot holds it
    lib.lsm_cq_drop_writer(q, slots[2])  # the last reference: freed here


def _group_with_waiting_followers(q, n_followers: int) -> list:  # noqa: ANN001
    """A group whose followers wait in ``lsm_cq_join``: a synced head waits (up to an hour) for
    ``n_followers + 1`` writers, the others join behind it, and this thread's join completes the group and
    leads it. After 2 ms the group finishes; the followers' threads are returned (joined)."""
    slots = [_w(q) for _ in range(n_followers + 1)]
    got: list[tuple[int, list[int]]] = []
    threads = [_join_in_thread(q, slots[0], got, wait_for=n_followers + 1, wait_ns=3600 * 10**9)]
    _wait_len(q, 1)
    for k in range(1, n_followers):
        threads.append(_join_in_thread(q, slots[k], got))
        _wait_len(q, k + 1)
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    n = lib.lsm_cq_join(q, slots[-1], b"", 0, 0, 1, 1, 0, 1 << 20, addrs, MAXN, need, 0, 0)
    assert n == n_followers + 1
    threading.Event().wait(0.002)
    assert lib.lsm_cq_finish(q, n, 0) == 0
    for t in threads:
        t.join(60)
    assert got == [(0, [])] * n_followers
    return threads


def test_a_return_turn_nobody_releases_times_out() -> None:
    """The finished group's waiting followers get return turns in queue order; each is released by the
    next join (the thread before it is back in C, off the GIL). Here nobody joins after the finish: the
    turns run out one after the other and both followers still return (released by the timeout)."""
    q = _q()
    lib.lsm_cq_set_yield(q, 5_000_000)
    _group_with_waiting_followers(q, 2)
    counters = ffi.new("uint64_t[7]")
    lib.lsm_cq_counters(q, counters)
    assert (counters[5], counters[6]) == (0, 2)


def test_return_turns_stop_while_they_only_time_out() -> None:
    """Threads that never come back to write make every turn time out. After six timeouts the moving
    average of turns released by a join is below 1/2 (1024 -> ... -> 460), and a finish gives turns only
    at every 8th call (a probe); without a turn a follower returns as soon as its group is done."""
    q = _q()
    lib.lsm_cq_set_yield(q, 5_000_000)
    rounds = 40
    for _ in range(rounds):
        _group_with_waiting_followers(q, 1)
    counters = ffi.new("uint64_t[7]")
    lib.lsm_cq_counters(q, counters)
    assert counters[5] == 0
    assert 6 <= counters[6] <= 6 + rounds // 8 + 1


@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, 20_000), length=st.integers(0, 20_000))
def test_write_zero_pages_equals_the_python_loop(tmp_path_factory: pytest.TempPathFactory, start: int,
                                                 length: int) -> None:
    """``lsm_write_zero_pages`` (the WAL's zero-ahead in C) leaves the file as fs._OsWritable's Python
    loop does: zeros over [start, start + length), every other byte as it was, the file grown to cover
    the range."""
    base = bytes(range(1, 256)) * 100  # no zero byte, 25,500 bytes
    got_path = tmp_path_factory.mktemp("zp") / "c"
    got_path.write_bytes(base)
    fd = os.open(got_path, os.O_RDWR)
    try:
        assert lib.lsm_write_zero_pages(fd, start, start + length) == 0
    finally:
        os.close(fd)
    want = bytearray(base)
    if length:
        want[len(want):] = bytes(max(0, start + length - len(want)))
        want[start:start + length] = bytes(length)
    assert got_path.read_bytes() == bytes(want)


def test_write_zero_pages_reports_the_errno() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert lib.lsm_write_zero_pages(w, 0, 4096) == -9  # EBADF
