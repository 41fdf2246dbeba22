"""file_pool.FilePool: results in order per task, errors reported for an in-process redo, a dead worker
reported as PoolBroken, and nothing left behind (processes, payload files) after close."""

from __future__ import annotations

import multiprocessing
import operator
import os

import pytest

from lsmmail.mail.file_pool import FilePool, PoolBroken


def test_results_errors_and_cleanup() -> None:
    pool = FilePool(operator.add, 2)
    try:
        first = pool.ready_worker(block=True)
        assert first is not None
        tasks = []
        for i in range(6):
            w = pool.ready_worker()
            assert w is not None
            tasks.append((w, pool.submit(w, (i, 100)), i))
        bad = pool.submit(first, (b"x", 1))  # bytes + int raises TypeError in the worker
        # Read out of submission order: answers of other tasks are kept until asked for.
        for w, seq, i in reversed(tasks):
            assert pool.result(w, seq) == (True, i + 100)
        assert pool.result(first, bad) == (False, None)
        big = bytes(range(256)) * 8192  # 2 MiB: larger than a pipe buffer
        seq = pool.submit(first, (big, b"!"))
        assert pool.result(first, seq) == (True, big + b"!")
        payload_dir = pool._dir
        assert os.listdir(payload_dir) == []  # every payload file is removed once read
    finally:
        pool.close()
    pool.close()  # idempotent
    assert not os.path.exists(payload_dir)
    assert multiprocessing.active_children() == []


def test_dead_worker_is_pool_broken() -> None:
    pool = FilePool(os._exit, 1)
    try:
        w = pool.ready_worker(block=True)
        assert w is not None
        seq = pool.submit(w, (3,))  # the worker exits with status 3 inside the task
        with pytest.raises(PoolBroken):
            pool.result(w, seq)
    finally:
        pool.close()
    assert multiprocessing.active_children() == []


def test_close_with_tasks_outstanding() -> None:
    pool = FilePool(operator.mul, 1)
    w = pool.ready_worker(block=True)
    assert w is not None
    for _ in range(4):
        pool.submit(w, (b"ab", 1 << 16))
    pool.close()  # abandoned: nothing waits for the answers
    assert multiprocessing.active_children() == []
