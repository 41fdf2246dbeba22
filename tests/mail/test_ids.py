from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from lsmmail.mail.ids import IdGenerator, check_id, id_at, id_from_str, id_time_ms, id_to_str, new_id


def test_layout_is_rfc9562_v7() -> None:
    mid = new_id()
    u = uuid.UUID(bytes=mid)
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert abs(id_time_ms(mid) - time.time() * 1000) < 5_000


def test_monotonic_within_one_millisecond_and_overflow() -> None:
    gen = IdGenerator(clock_ms=lambda: 1_700_000_000_000)
    ids = [gen.new() for _ in range(10_000)]  # > 4,096: forces counter overflow into the next ms
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert id_time_ms(ids[0]) == 1_700_000_000_000
    assert id_time_ms(ids[-1]) > 1_700_000_000_000


def test_clock_going_backwards_keeps_order() -> None:
    times = iter([5_000, 4_000, 3_000, 6_000])
    gen = IdGenerator(clock_ms=lambda: next(times))
    ids = [gen.new() for _ in range(4)]
    assert ids == sorted(ids)
    assert [id_time_ms(i) for i in ids] == [5_000, 5_000, 5_000, 6_000]


def test_thread_safe_strictly_increasing_per_thread_and_unique() -> None:
    gen = IdGenerator()
    out: list[list[bytes]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        out[i] = [gen.new() for _ in range(3_000)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ids in out:
        assert ids == sorted(ids)
    assert len({i for ids in out for i in ids}) == 12_000


def test_text_round_trip_and_validation() -> None:
    mid = new_id()
    assert id_from_str(id_to_str(mid)) == mid
    assert id_at(1234) [:6] == (1234).to_bytes(6, "big") and check_id(id_at(1234))
    with pytest.raises(ValueError):
        id_from_str(str(uuid.uuid4()))
    with pytest.raises(ValueError):
        id_from_str("nope")


def test_forked_child_does_not_reuse_the_parents_random_bytes() -> None:
    # The generator draws random bits from a pool (one os.urandom per 512 ids); a child forked with a
    # half-used pool must draw fresh bytes, else parent and child make the same ids in one millisecond.
    gen = IdGenerator(clock_ms=lambda: 1000)
    gen.new()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, gen.new())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 16)
    os.close(r)
    os.close(w)
    assert child[8:] != gen.new()[8:]
