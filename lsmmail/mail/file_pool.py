"""Worker processes that take their input and hand back their output through files, not pipes.

Why not ``concurrent.futures.ProcessPoolExecutor``: it moves every task and result through 64 KiB pipes
by a feeder thread and a result thread of this process, and each of those threads needs the GIL again
for every 64 KiB. A bulk import's chunk is ~1.5 MB of raw messages out and ~1.3 MB of prepared records
back (64 messages), i.e. ~45 GIL hand-offs per chunk, while the storing thread keeps the GIL for up to
the 5 ms switch interval: in a py-spy profile of the mail bench's import the worker spent ~45% of its
wall time blocked in those pipe reads and writes, and the storing thread waited on the worker. Here a
payload is one file in a private temporary directory (on tmpfs ``/dev/shm`` when there is one: no disk
I/O), written and read with one call each, and the pipe carries only small control messages, which the
calling thread reads itself: no thread of this process stands between a worker and its next task.

Contract
    ``FilePool(fn, n)`` starts ``n`` ``spawn`` processes (never ``fork``: the caller runs engine threads)
    that run ``fn(*args)`` for each :meth:`submit` ed ``args`` (picklable; ``fn`` a module-level
    function). :meth:`result` returns ``(True, value)``, or ``(False, None)`` when ``fn`` raised in the
    worker (the caller redoes the task itself, so the exception surfaces exactly as in-process), and
    raises :class:`PoolBroken` when a worker died or its pipe broke (the pool is then unusable: close it).
    :meth:`close` stops and joins every worker (terminating one that does not stop within a second)
    and removes the directory; it is safe to call more than once and after a failure.

Protocol, per worker (one duplex pipe): the worker sends ``("ready",)`` once its imports are done, then,
for each task ``(seq, in_path, out_path)`` received, ``(seq, True)`` after writing ``out_path`` or
``(seq, False)`` if ``fn`` raised; ``None`` (or a closed pipe) stops it.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

#: Seconds ``close`` waits for a worker to stop by itself (it finishes the chunk at hand: ~10-30 ms)
#: before terminating it.
_JOIN_SECONDS = 1.0


class PoolBroken(Exception):
    """A worker died or its pipe broke; the tasks it held have no result."""


def _payload_dir() -> str:
    """tmpfs when there is one (payloads never touch a disk), else the system temporary directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data


def _worker_main(conn: Connection, fn: Callable[..., Any]) -> None:
    """Body of a worker process: answer tasks in the order received until told to stop."""
    conn.send(("ready",))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        seq, in_path, out_path = task
        try:
            out = pickle.dumps(fn(*pickle.loads(_read(in_path))), protocol=pickle.HIGHEST_PROTOCOL)
            _write(out_path, out)
            ok = True
        except Exception:  # the caller redoes the task in its own process and sees the error there
            ok = False
        try:
            conn.send((seq, ok))
        except OSError:  # the caller closed the pipe: abandoned
            return


class _Worker:
    __slots__ = ("proc", "conn", "ready", "outstanding", "answers")

    def __init__(self, proc: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.ready = False
        self.outstanding: deque[int] = deque()  # seqs sent, in order
        self.answers: dict[int, bool] = {}  # answers read while waiting for another seq


class FilePool:
    """Worker processes fed through files (see the module docstring)."""

    def __init__(self, fn: Callable[..., Any], workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._dir = tempfile.mkdtemp(prefix="lsmmail-pool-", dir=_payload_dir())
        self._workers: list[_Worker] = []
        self._seq = 0
        self._closed = False
        try:
            for _ in range(workers):
                parent, child = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=_worker_main, args=(child, fn), daemon=True)
                proc.start()
                child.close()  # only the worker holds its end: its exit is EOF here
                self._workers.append(_Worker(proc, parent))
        except BaseException:
            self.close()
            raise

    def ready_worker(self, block: bool = False) -> int | None:
        """Index of a started worker with the fewest tasks outstanding, None if none has started yet
        (``block``: wait until one has). Raises PoolBroken if a worker died before starting."""
        while True:
            waiting = [w for w in self._workers if not w.ready]
            if waiting:
                for conn in wait([w.conn for w in waiting], None if block else 0):
                    w = next(w for w in waiting if w.conn is conn)
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError) as e:
                        raise PoolBroken("import worker exited while starting") from e
                    if msg != ("ready",):
                        raise PoolBroken(f"unexpected message from an import worker: {msg!r}")
                    w.ready = True
            ready = [i for i, w in enumerate(self._workers) if w.ready]
            if ready or not block:
                return min(ready, key=lambda i: len(self._workers[i].outstanding)) if ready else None

    def submit(self, worker: int, args: tuple[Any, ...]) -> int:
        """Send ``args`` to worker number ``worker`` (from :meth:`ready_worker`); returns the task's id."""
        w = self._workers[worker]
        seq = self._seq
        self._seq += 1
        in_path = os.path.join(self._dir, f"{seq}.in")
        _write(in_path, pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL))
        try:
            w.conn.send((seq, in_path, os.path.join(self._dir, f"{seq}.out")))
        except OSError as e:
            raise PoolBroken("import worker pipe closed") from e
        w.outstanding.append(seq)
        return seq

    def result(self, worker: int, seq: int) -> tuple[bool, Any]:
        """Wait for task ``seq`` of worker ``worker``: (True, value) or (False, None) if ``fn`` raised."""
        w = self._workers[worker]
        while seq not in w.answers:
            try:
                got, ok = w.conn.recv()
            except (EOFError, OSError) as e:
                raise PoolBroken("import worker exited") from e
            w.answers[got] = ok
        ok = w.answers.pop(seq)
        w.outstanding.remove(seq)
        if not ok:
            return False, None
        return True, pickle.loads(_read(os.path.join(self._dir, f"{seq}.out")))

    def close(self) -> None:
        """Stop and join every worker, then remove the payload directory."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
            w.conn.close()
        for w in self._workers:
            w.proc.join(_JOIN_SECONDS)
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join()
        shutil.rmtree(self._dir, ignore_errors=True)
