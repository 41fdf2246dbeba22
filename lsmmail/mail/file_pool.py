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
    ``FilePool(fn, n, slots, nice=0)`` starts ``n`` fresh interpreter processes (never ``fork``: the
    caller runs engine threads; see "Processes" below), each at ``os.nice(nice)``, that run ``fn(blobs,
    *args)`` for each :meth:`submit` ted list of bytes ``blobs`` and tuple ``args`` (picklable; ``fn`` a
    module-level function of an importable module), at most ``slots`` tasks outstanding.
    :meth:`result` returns ``(True, value)``, or ``(False, None)`` when ``fn`` raised in the
    worker (the caller redoes the task itself, so the exception surfaces exactly as in-process), and
    raises :class:`PoolBroken` when a worker died or its pipe broke (the pool is then unusable: close it).
    :meth:`close` stops and joins every worker (terminating one that does not stop within a second)
    and removes the directory; it is safe to call more than once and after a failure.

Payloads: a task is ``[u64 header length][pickled (blob lengths, args)][blobs...]``, written with one
``pwritev`` (the blobs, e.g. raw messages, are not copied into a pickle first); a result is its pickle.
Each outstanding task holds one of ``slots`` pairs of files, rewritten in place by later tasks (see
``_write_file``); the pipe says how many bytes are valid.

Processes: ``sys.executable -c`` with the interpreter's flags, this process's ``sys.path``, working
directory and environment, started by ``subprocess`` (fork + exec in C, as ``multiprocessing``'s
``spawn`` does). Not ``multiprocessing``'s ``spawn`` itself: its child first imports this program's
``__main__`` module again (as ``__mp_main__``; ``python -m lsmmail.bench.mail``: ~19 ms of CPU per
worker here) and then the ``multiprocessing`` bootstrap, and a ``__main__`` script without an
``if __name__ == "__main__":`` guard would run again in every worker. Here a worker imports only
``fn``'s module.

Protocol, per worker (one duplex socket pair, ``multiprocessing.connection.Connection`` framing): this
process sends ``fn`` first; the worker sends ``("ready",)`` once it has imported it, then, for each task
``(seq, in_path, in_size, out_path)`` received, ``(seq, result size)`` after writing ``out_path``, or
``(seq, -1)`` if ``fn`` raised; ``None`` (or a closed pipe) stops it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

#: Seconds ``close`` waits for a worker to stop by itself (it finishes the chunk at hand: ~10-30 ms, then
#: exits without the interpreter's shutdown: see ``_worker_process``) before terminating it.
_JOIN_SECONDS = 1.0


class PoolBroken(Exception):
    """A worker died or its pipe broke; the tasks it held have no result."""


def _payload_dir() -> str:
    """tmpfs when there is one (payloads never touch a disk), else the system temporary directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


#: Buffers per ``os.pwritev`` call (Linux's IOV_MAX is 1024).
_IOV = 512


#: Payload directories are named ``lsmmail-pool-<pid of the storing process>-<random>``.
_PREFIX = "lsmmail-pool-"


def _remove_stale(base: str) -> None:
    """Remove payload directories left in ``base`` by storing processes that no longer run (killed
    before ``close``: tmpfs keeps them until reboot otherwise)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        pid_text = name[len(_PREFIX):].partition("-")[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _pwrite_all(fd: int, buffers: list[bytes], offset: int = 0) -> int:
    """Write ``buffers`` back to back at ``offset`` (few calls; no joined copy); returns the end offset."""
    for i in range(0, len(buffers), _IOV):
        group = buffers[i : i + _IOV]
        want = sum(map(len, group))
        done = os.pwritev(fd, group, offset)
        if done != want:  # a short write (not seen on tmpfs or ext4): finish the rest piece by piece
            rest = memoryview(b"".join(group))[done:]
            while rest:
                n = os.pwrite(fd, rest, offset + done)
                rest = rest[n:]
                done += n
        offset += want
    return offset


def _pread_all(path: str, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, size, 0)
        while len(data) < size:  # short read: only on odd file systems
            more = os.pread(fd, size - len(data), len(data))
            if not more:
                raise OSError(f"payload file {path} is shorter than {size} bytes")
            data += more
        return data
    finally:
        os.close(fd)


def _write_file(path: str, buffers: list[bytes]) -> int:
    # No O_TRUNC: a slot's file is rewritten in place (pages already allocated), ~0.2 ms per 1.5 MB
    # chunk on tmpfs instead of ~1.1 ms for a truncated or new file, whose pages are freed and
    # allocated (and zeroed) again. Readers read only the length they are told.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return _pwrite_all(fd, buffers)
    finally:
        os.close(fd)


def _encode_task(blobs: list[bytes], args: tuple[Any, ...]) -> list[bytes]:
    head = pickle.dumps(([len(b) for b in blobs], args), protocol=pickle.HIGHEST_PROTOCOL)
    return [_LEN.pack(len(head)), head, *blobs]


def _decode_task(data: bytes) -> tuple[list[bytes], tuple[Any, ...]]:
    (hlen,) = _LEN.unpack_from(data, 0)
    pos = _LEN.size + hlen
    lens, args = pickle.loads(data[_LEN.size : pos])
    blobs = []
    for n in lens:
        blobs.append(data[pos : pos + n])
        pos += n
    return blobs, args


_LEN = struct.Struct("<Q")


def _worker_main(conn: Connection) -> None:
    """Body of a worker process: receive ``fn``, then answer tasks in the order received until told to
    stop."""
    try:
        fn = conn.recv()
        conn.send(("ready",))
    except (EOFError, OSError):  # the pool was closed while this worker started: nothing to do
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        seq, in_path, in_size, out_path = task
        try:
            blobs, args = _decode_task(_pread_all(in_path, in_size))
            out = pickle.dumps(fn(blobs, *args), protocol=pickle.HIGHEST_PROTOCOL)
            size = _write_file(out_path, [out])
        except Exception:  # the caller redoes the task in its own process and sees the error there
            size = -1
        try:
            conn.send((seq, size))
        except OSError:  # the caller closed the pipe: abandoned
            return


def _worker_process() -> None:
    """A worker process's entry (``python -c``; argv: the socket's fd, this process's ``sys.path`` as
    JSON): :func:`_worker_main`, then exit at once. Why ``os._exit``: a worker holds the search and MIME
    modules and the last chunk's objects, and the interpreter's normal shutdown (module teardown, GC,
    atexit) kept ``close``, i.e. the end of every pooled import, waiting ~165-210 ms here (measured:
    join of the worker after it was told to stop). Nothing is lost: every result was written with
    ``pwrite`` and announced on the unbuffered pipe before the worker reads its next task, and a worker
    opens no other resource."""
    # Ctrl-C reaches the whole process group: the storing process handles it and closes the pool (EOF
    # here), so a worker does not print a KeyboardInterrupt traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    niceness = int(sys.argv[3])
    if niceness:
        try:
            os.nice(niceness)
        except OSError:  # not allowed here: run at the caller's priority
            pass
    try:
        _worker_main(Connection(int(sys.argv[1])))
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(0)


#: What a worker runs: set its ``sys.path`` (argv[2]) as this process's, then import this module (by
#: name, through that path: the package need not be installed) and serve.
_BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[2]); "
    "from lsmmail.mail.file_pool import _worker_process; _worker_process()"
)

#: Worker processes started and not yet reaped by ``close`` (tests check that none is left behind).
_LIVE: set[subprocess.Popen[bytes]] = set()


def live_workers() -> int:
    """How many worker processes of this process's pools are running or unreaped (0 after every
    ``close``)."""
    for proc in list(_LIVE):
        if proc.poll() is not None:
            _LIVE.discard(proc)
    return len(_LIVE)


def _start_worker(fn: Callable[..., Any], nice: int) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start one worker process (``os.nice(nice)`` first) and send it ``fn``; (process, this end of its
    socket)."""
    if not sys.executable:
        raise OSError("no Python executable to start import workers with")
    ours, theirs = socket.socketpair()
    try:
        # Pickled before the process starts: an unpicklable ``fn`` raises here, not in the worker.
        fn_pickle = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        cmd = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", _BOOT,
               str(theirs.fileno()), json.dumps([p for p in sys.path if isinstance(p, str)]), str(nice)]
        proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    theirs.close()  # only the worker holds its end: its exit is EOF here
    _LIVE.add(proc)
    conn = Connection(ours.detach())
    try:
        conn.send_bytes(fn_pickle)
    except OSError:
        pass  # the worker already exited: ready_worker reports it
    return proc, conn


class _Worker:
    __slots__ = ("proc", "conn", "ready", "outstanding", "answers")

    def __init__(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.ready = False
        self.outstanding: deque[int] = deque()  # seqs sent, in order
        self.answers: dict[int, int] = {}  # answers (result size, -1: fn raised) read ahead


class FilePool:
    """Worker processes fed through files (see the module docstring)."""

    def __init__(self, fn: Callable[..., Any], workers: int, slots: int, nice: int = 0) -> None:
        base = _payload_dir()
        _remove_stale(base)
        self._dir = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base)
        self._workers: list[_Worker] = []
        self._seq = 0
        self._free = list(range(slots))  # payload file pairs not held by an outstanding task
        self._slot_of: dict[int, int] = {}
        self._closed = False
        try:
            for _ in range(workers):
                self._workers.append(_Worker(*_start_worker(fn, nice)))
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

    def submit(self, worker: int, blobs: list[bytes], args: tuple[Any, ...]) -> int | None:
        """Have worker number ``worker`` (from :meth:`ready_worker`) run ``fn(blobs, *args)``; returns the
        task's id, or None if its payload could not be written (e.g. a full tmpfs: the caller does the
        task itself). At most ``slots`` tasks may be outstanding (submitted, result not yet taken); each
        holds one pair of payload files, which later tasks rewrite."""
        if not self._free:
            raise RuntimeError("FilePool: more tasks outstanding than slots")
        w = self._workers[worker]
        seq = self._seq
        self._seq += 1
        slot = self._free.pop()
        in_path, out_path = self._paths(slot)
        try:
            size = _write_file(in_path, _encode_task(blobs, args))
        except OSError:
            self._free.append(slot)
            return None
        self._slot_of[seq] = slot
        try:
            w.conn.send((seq, in_path, size, out_path))
        except OSError as e:
            raise PoolBroken("import worker pipe closed") from e
        w.outstanding.append(seq)
        return seq

    def _paths(self, slot: int) -> tuple[str, str]:
        return os.path.join(self._dir, f"{slot}.in"), os.path.join(self._dir, f"{slot}.out")

    def done(self, worker: int, seq: int) -> bool:
        """Whether :meth:`result` of task ``seq`` would return without waiting for the worker."""
        w = self._workers[worker]
        try:
            while seq not in w.answers and w.conn.poll(0):
                got, size = w.conn.recv()
                w.answers[got] = size
        except (EOFError, OSError):
            return True  # result() reports it
        return seq in w.answers

    def outstanding(self, worker: int) -> int:
        """Tasks of worker ``worker`` whose results have not been taken yet."""
        return len(self._workers[worker].outstanding)

    def result(self, worker: int, seq: int) -> tuple[bool, Any]:
        """Wait for task ``seq`` of worker ``worker``: (True, value) or (False, None) if ``fn`` raised."""
        w = self._workers[worker]
        while seq not in w.answers:
            try:
                got, size = w.conn.recv()
            except (EOFError, OSError) as e:
                raise PoolBroken("import worker exited") from e
            w.answers[got] = size
        size = w.answers.pop(seq)
        w.outstanding.remove(seq)
        slot = self._slot_of.pop(seq)
        try:
            if size < 0:
                return False, None
            return True, pickle.loads(_pread_all(self._paths(slot)[1], size))
        finally:
            self._free.append(slot)

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
            try:
                w.proc.wait(_JOIN_SECONDS)
            except subprocess.TimeoutExpired:
                w.proc.terminate()
                try:
                    w.proc.wait(_JOIN_SECONDS)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
            _LIVE.discard(w.proc)
        shutil.rmtree(self._dir, ignore_errors=True)
