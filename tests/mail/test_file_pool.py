"""file_pool.FilePool: results per task (in any order of asking), errors reported for an in-process redo,
a dead worker reported as PoolBroken, payload files reused, and nothing left behind (processes, files)
after close."""

from __future__ import annotations

import multiprocessing
import operator
import os
import sys

import pytest

from lsmmail.mail import file_pool
from lsmmail.mail.file_pool import FilePool, PoolBroken


def test_results_errors_slots_and_cleanup() -> None:
    pool = FilePool(operator.add, 2, slots=4)  # fn(blobs, x) = blobs + x
    try:
        first = pool.ready_worker(block=True)
        assert first is not None
        got = {}
        for round_ in range(3):  # 12 tasks through 4 slots: every payload file is rewritten in place
            tasks = []
            for i in range(4):
                w = pool.ready_worker()
                assert w is not None
                blobs = [bytes([i]) * (1000 * (4 - i + round_)), b"", b"end"]  # shorter than the last use
                tasks.append((w, pool.submit(w, blobs, ([b"!"],)), blobs))
            with pytest.raises(RuntimeError):
                pool.submit(first, [b"x"], ([],))  # all 4 slots held
            # Answers are kept until asked for, so results can be taken in any order.
            for w, seq, blobs in reversed(tasks):
                got[seq] = pool.result(w, seq)
                assert got[seq] == (True, [*blobs, b"!"])
        assert len(got) == 12
        bad = pool.submit(first, [b"x"], (1,))  # list + int raises TypeError in the worker
        assert pool.result(first, bad) == (False, None)
        big = bytes(range(256)) * 8192  # 2 MiB: larger than a pipe buffer
        seq = pool.submit(first, [big] * 3, ([b"?"],))
        assert pool.result(first, seq) == (True, [big, big, big, b"?"])
        many = [bytes([i % 251]) for i in range(1500)]  # more buffers than one pwritev takes
        seq = pool.submit(first, many, ([],))
        assert pool.result(first, seq) == (True, many)
        payload_dir = pool._dir
        assert len(os.listdir(payload_dir)) <= 8  # 4 slots x (in, out)
    finally:
        pool.close()
    pool.close()  # idempotent
    assert not os.path.exists(payload_dir)
    assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0


def test_dead_worker_is_pool_broken() -> None:
    pool = FilePool(sys.exit, 1, slots=2)  # SystemExit is not an error to redo: the worker process ends
    try:
        w = pool.ready_worker(block=True)
        assert w is not None
        seq = pool.submit(w, [b"bye"], ())
        with pytest.raises(PoolBroken):
            pool.result(w, seq)
    finally:
        pool.close()
    assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0


def test_close_with_tasks_outstanding() -> None:
    pool = FilePool(operator.mul, 1, slots=4)
    w = pool.ready_worker(block=True)
    assert w is not None
    for _ in range(4):
        pool.submit(w, [b"ab"], (1 << 12,))
    pool.close()  # abandoned: nothing waits for the answers
    assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0


def test_unwritable_payload_is_declined() -> None:
    """A payload that cannot be written (here: its directory is gone) is declined, not raised: the caller
    does that task itself, and the pool keeps working for later tasks once files can be written."""
    import shutil

    pool = FilePool(operator.add, 1, slots=2)
    try:
        w = pool.ready_worker(block=True)
        assert w is not None
        shutil.rmtree(pool._dir)
        assert pool.submit(w, [b"a"], ([b"b"],)) is None
        assert pool.submit(w, [b"a"], ([b"b"],)) is None  # the slot was given back
        os.mkdir(pool._dir)
        seq = pool.submit(w, [b"a"], ([b"b"],))
        assert seq is not None
        assert pool.result(w, seq) == (True, [b"a", b"b"])
    finally:
        pool.close()
    assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0


def test_stale_payload_dirs_of_dead_processes_are_removed(tmp_path: os.PathLike[str]) -> None:
    proc = multiprocessing.get_context("spawn").Process(target=operator.add, args=(1, 2))
    proc.start()
    proc.join()
    dead = os.path.join(tmp_path, f"{file_pool._PREFIX}{proc.pid}-abc")
    live = os.path.join(tmp_path, f"{file_pool._PREFIX}{os.getpid()}-abc")
    other = os.path.join(tmp_path, "lsmmail-poolish")
    for d in (dead, live, other):
        os.mkdir(d)
        with open(os.path.join(d, "0.in"), "wb") as f:
            f.write(b"x")
    file_pool._remove_stale(str(tmp_path))
    assert not os.path.exists(dead)
    assert os.path.exists(live) and os.path.exists(other)


def test_workers_never_run_the_main_script(tmp_path: os.PathLike[str]) -> None:
    """A worker imports only ``fn``'s module: a ``__main__`` script without the ``if __name__ ==
    "__main__":`` guard runs once (``multiprocessing``'s spawn would run it again in the worker)."""
    import subprocess
    from pathlib import Path

    log = Path(tmp_path) / "runs.txt"
    script = Path(tmp_path) / "unguarded.py"
    script.write_text(
        "import operator\n"
        "from lsmmail.mail.file_pool import FilePool\n"
        f"open({str(log)!r}, 'a').write('run\\n')\n"
        "pool = FilePool(operator.add, 1, slots=2)\n"
        "w = pool.ready_worker(block=True)\n"
        "print(pool.result(w, pool.submit(w, [b'a'], ([b'b'],))))\n"
        "pool.close()\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(True, [b'a', b'b'])"
    assert log.read_text() == "run\n"
