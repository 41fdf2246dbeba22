"""Options that bound the memtables' memory: their validation and their effect on how many memtables
exist at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import lsmmail
from lsmmail.engine.errors import InvalidArgument
from lsmmail.engine.options import Options


def test_no_room_for_an_immutable_memtable_is_refused(tmp_path: Path) -> None:
    # 0 would leave the first writer that fills a memtable stalled forever (found in the base tree).
    with pytest.raises(InvalidArgument):
        lsmmail.DB.open(tmp_path, Options(max_immutable_memtables=0))
    with pytest.raises(InvalidArgument):
        Options(max_immutable_memtables=-1).validate()


def test_a_negative_group_commit_yield_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        lsmmail.DB.open(tmp_path, Options(group_commit_yield_us=-1))
    Options(group_commit_yield_us=0).validate()


@pytest.mark.parametrize("k", [1, 2])
def test_memtables_in_memory_never_exceed_one_plus_the_immutable_limit(tmp_path: Path, k: int) -> None:
    """Writers outpace a flush that is held back: the count of memtables (mutable + waiting) stays at
    ``1 + max_immutable_memtables``, writers wait, and everything is there once the flush resumes."""
    db = lsmmail.DB.open(tmp_path, Options(memtable_size=8 * 1024, max_immutable_memtables=k))
    gate = threading.Event()
    real_flush = db._flush_one

    def held_flush(imm):  # type: ignore[no-untyped-def]
        gate.wait()
        real_flush(imm)

    db._flush_one = held_flush  # type: ignore[method-assign]
    seen: list[int] = []
    done = threading.Event()

    def writer() -> None:
        for i in range(400):
            db.put(b"k%05d" % i, b"v" * 200)
            seen.append(len(db._imms))
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert not done.wait(0.5)  # the writer is stalled behind the held flush
        assert len(db._imms) == k
    finally:
        gate.set()
        t.join()
    assert max(seen) <= k
    assert all(db.get(b"k%05d" % i) == b"v" * 200 for i in range(400))
    db.close()
