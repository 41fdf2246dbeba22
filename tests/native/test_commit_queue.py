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


def _w():  # noqa: ANN202
    return ffi.gc(lib.lsm_cqw_new(), lib.lsm_cqw_free)


_SPEC = st.tuples(st.integers(1, 400), st.booleans(), st.integers(0, 9).map(lambda k: k == 0))


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(_SPEC, min_size=1, max_size=30), max_bytes=st.sampled_from([1, 300, 1000, 1 << 20]))
def test_groups_equal_the_pure_twin(specs: list[tuple[int, bool, bool]], max_bytes: int) -> None:
    """Push writers (size, sync, alone), then repeatedly take the head's group and finish it: the C queue
    and ``pick_group`` cut the same groups, with the same need-sync, until the queue is empty."""
    q = _q()
    slots = [_w() for _ in specs]
    addr = {int(ffi.cast("uintptr_t", s)): i for i, s in enumerate(slots)}
    for s, (size, sync, alone) in zip(slots, specs, strict=True):
        lib.lsm_cq_push(q, s, b"", 0, 0, size, sync, alone)
    twins = [_Writer([], sync, size, force_flush=alone) for size, sync, alone in specs]
    addrs = ffi.new("uint64_t[]", MAXN)
    need = ffi.new("int *")
    head = 0
    while head < len(specs):
        assert lib.lsm_cq_len(q) == len(specs) - head
        n = lib.lsm_cq_group(q, max_bytes, addrs, MAXN, need, 0, 0)
        want = pick_group(twins[head:], max_bytes)
        assert n == want
        assert [addr[addrs[i]] for i in range(n)] == list(range(head, head + n))
        assert bool(need[0]) == any(t.sync for t in twins[head : head + n])
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


def test_followers_wait_in_c_and_get_the_leaders_status() -> None:
    """Eight threads join one queue; the head leads (finishing its group with a status), followers
    return that status without leading, every thread returns exactly once."""
    q = _q()
    n_threads = 8
    rounds = 200
    results: list[list[int]] = [[] for _ in range(n_threads)]
    led = [0] * n_threads
    commits: list[int] = []
    mu = threading.Lock()

    def run(i: int) -> None:
        w = _w()
        addrs = ffi.new("uint64_t[]", MAXN)
        need = ffi.new("int *")
        for r in range(rounds):
            n = lib.lsm_cq_join(q, w, b"", 0, 0, 1, r % 2, 0, 1 << 20, addrs, MAXN, need, 0, 0)
            if n > 0:
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
       first_seq=st.integers(1, 1 << 50), solo=st.booleans())
def test_c_framing_equals_encode_record(batches: list[list[tuple[int, bytes, bytes]]], block_offset: int,
                                        first_seq: int, solo: bool) -> None:
    """lsm_cq_commit_framed frames exactly what LogWriter.encode_record frames (block padding, FULL and
    FIRST/MIDDLE/LAST fragments, checksums), from any block offset, for a group or a solo batch."""
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
        rc = lib.lsm_cq_commit_framed(q, fd, 0, block_offset, 0, mem._m, first_seq, 0 if solo else len(reps),
                                      reps[0], len(reps[0]), len(batches[0]), out)
        got = os.pread(fd, len(want) + 1, 0)
    finally:
        os.close(fd)
    assert rc == 0
    assert got == want and out[4] == len(want) <= bound
    assert (block_offset + len(want)) % 32768 == writer._block_offset % 32768
    assert sorted(k for k, _, _, _ in mem.entries(None, None)) == sorted(
        k for b in batches for _, k, _ in b)


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
