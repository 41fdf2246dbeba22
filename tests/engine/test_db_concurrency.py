"""Many threads on one DB: group commit, and readers that run beside writers and background work."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from _helpers import MEM_DIR, db_state, tiny_options

from lsmmail.engine.db import DB
from lsmmail.engine.fs import FaultInjectingFileSystem, MemFileSystem, OsFileSystem


class SlowSyncFs(FaultInjectingFileSystem):
    """Real files whose fsync takes at least 2 ms more, so writers queue up behind a syncing leader
    (on a fast disk or tmpfs they might otherwise never overlap). The test asserts on what the DB did
    (how many writes shared a commit), not on how long anything took."""

    def _op(self, kind: str, path: str) -> None:
        super()._op(kind, path)
        if kind == "sync":
            time.sleep(0.002)


def run_threads(n: int, target) -> None:  # noqa: ANN001
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def wrap(i: int) -> None:
        try:
            start.wait()
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_sync_writers_group_commit(tmp_path: Path) -> None:
    opts = tiny_options(SlowSyncFs(OsFileSystem()), memtable_size=1 << 20, background=True)
    per = 40
    with DB.open(str(tmp_path), opts) as db:
        def writer(t: int) -> None:
            for i in range(per):
                db.put(b"t%d-%03d" % (t, i), b"value %d %d" % (t, i), sync=True)

        run_threads(8, writer)
        st = db.stats()
        assert st["grouped_writes"] == 8 * per
        # Group commit happened: fewer commits (one WAL write + one fsync each) than writes.
        assert st["group_commits"] < st["grouped_writes"]
        assert st["wal_syncs"] == st["group_commits"]
    with DB.open(str(tmp_path), tiny_options(OsFileSystem())) as db:
        got = db_state(db)
    assert got == {b"t%d-%03d" % (t, i): b"value %d %d" % (t, i) for t in range(8) for i in range(per)}


def test_readers_beside_writers_and_background_work() -> None:
    """Writers overwrite their keys with increasing counters while background threads flush and compact;
    readers must only ever see values that were written, never going backwards for a key."""
    fs = MemFileSystem()
    rounds = 60
    with DB.open(MEM_DIR, tiny_options(fs, background=True)) as db:
        done = threading.Event()

        def worker(t: int) -> None:
            if t < 4:
                for r in range(rounds):
                    for k in range(10):
                        db.put(b"w%d-%d" % (t, k), b"%d" % r + (b"." * 50 if r % 3 == 0 else b""))
                return
            last: dict[bytes, int] = {}
            while not done.is_set():
                for key, v in db.scan(prefix=b"w"):
                    n = int(v.rstrip(b"."))
                    assert 0 <= n < rounds and last.get(key, -1) <= n, (key, v)
                    last[key] = n
                v = db.get(b"w0-3")
                assert v is None or int(v.rstrip(b".")) < rounds

        writers_done = threading.Barrier(5)

        def role(t: int) -> None:
            if t < 4:
                worker(t)
                writers_done.wait()
            elif t == 4:
                writers_done.wait()
                done.set()
            else:
                worker(t)

        run_threads(7, role)
        db.flush()
        want = {b"w%d-%d" % (t, k): b"%d" % (rounds - 1) + (b"." * 50 if (rounds - 1) % 3 == 0 else b"")
                for t in range(4) for k in range(10)}
        assert db_state(db) == want
        assert db.stats()["flushes"] > 0
