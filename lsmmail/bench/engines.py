"""Adapters that give every benchmarked engine one small surface.

``lsmmail`` is always available; the peers are optional extras (``pip install rocksdict plyvel lmdb``;
SQLite is the stdlib's). Durability is matched across engines: ``sync=False`` means "survives a process
crash" (the OS has the bytes) and ``sync=True`` means "survives power loss" (fdatasync before return):

* RocksDB / LevelDB: ``WriteOptions.sync`` per write, as lsmmail.
* LMDB: the environment is opened with ``sync=False`` for unsynced workloads (commits still reach the
  OS through write/mmap) and ``sync=True`` for synced ones; its setting is per environment, not per write.
* SQLite: WAL journal mode, ``synchronous=NORMAL`` (process-crash safe) or ``FULL`` (power-loss safe).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

#: Upper bound on a settle wait (s). After a 200k x 1 KiB fill every engine here settles in a few
#: seconds; the bound only keeps a stuck engine from hanging the run.
SETTLE_TIMEOUT = 120.0


def _poll_until(done: Any, timeout: float, every: float) -> float:
    """Call ``done()`` every ``every`` seconds until it is true or ``timeout`` passes; seconds waited."""
    t0 = time.monotonic()
    while not done() and time.monotonic() - t0 < timeout:
        time.sleep(every)
    return time.monotonic() - t0


class Engine:
    """One open database. Subclasses implement every method; ``name`` is the engine's label."""

    name = "?"

    def __init__(self, path: str, sync: bool, blobs: bool = False) -> None:
        self.path = path
        self.sync = sync

    def put(self, key: bytes, value: bytes) -> None:
        raise NotImplementedError

    def write(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Apply puts (value) and deletes (``None``) atomically."""
        raise NotImplementedError

    def delete(self, key: bytes) -> None:
        raise NotImplementedError

    def get(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def scan(self, key: bytes, n: int, reverse: bool) -> int:
        """Seek to ``key`` (forward: first key >= it; reverse: last key < it), read up to ``n`` entries."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def compact(self) -> bool:
        """Compact the whole key space as far as the engine can (drop overwritten versions); False if it
        has no such operation (then the ``space`` row shows "-")."""
        return False

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> float:
        """Wait until the engine's own background work (flushes, compactions) has caught up, so the read
        rows measure a steady state (as db_bench's read benchmarks on an existing database do) rather
        than the tail of the fill. Returns the seconds waited. Engines without background work return
        at once."""
        return 0.0


class LsmmailEngine(Engine):
    name = "lsmmail"

    def __init__(self, path: str, sync: bool, blobs: bool = False) -> None:
        super().__init__(path, sync)
        import lsmmail

        self._mod = lsmmail
        # Values of >= 4 KiB go to blob files by default (Options.min_blob_size), so ``blobs`` is a no-op.
        self.db = lsmmail.DB.open(path)

    def compact(self) -> bool:
        self.db.compact_range()
        return True

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> float:
        t0 = time.monotonic()
        self.db.wait_until_idle(timeout)
        return time.monotonic() - t0

    def put(self, key: bytes, value: bytes) -> None:
        self.db.put(key, value, sync=self.sync)

    def write(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        b = self._mod.WriteBatch()
        for k, v in items:
            if v is None:
                b.delete(k)
            else:
                b.put(k, v)
        self.db.write(b, sync=self.sync)

    def delete(self, key: bytes) -> None:
        self.db.delete(key, sync=self.sync)

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def scan(self, key: bytes, n: int, reverse: bool) -> int:
        it = self.db.scan(end=key, reverse=True) if reverse else self.db.scan(start=key)
        count = 0
        for _ in it:
            count += 1
            if count >= n:
                break
        return count

    def close(self) -> None:
        self.db.close()


class RocksEngine(Engine):
    name = "rocksdb"

    def __init__(self, path: str, sync: bool, blobs: bool = False) -> None:
        super().__init__(path, sync)
        import rocksdict as r

        self._r = r
        opts = r.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_compression_type(r.DBCompressionType.lz4())
        if blobs:
            # BlobDB with lsmmail's threshold, so the mail mix compares like with like.
            opts.set_enable_blob_files(True)
            opts.set_min_blob_size(4096)
            opts.set_blob_compression_type(r.DBCompressionType.lz4())
            opts.set_enable_blob_gc(True)
        self.db = r.Rdict(path, options=opts)
        self.wo = r.WriteOptions()
        self.wo.sync = sync

    def put(self, key: bytes, value: bytes) -> None:
        self.db.put(key, value, self.wo)

    def write(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        wb = self._r.WriteBatch(raw_mode=True)
        for k, v in items:
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self.db.write(wb, self.wo)

    def compact(self) -> bool:
        self.db.compact_range(None, None)
        return True

    #: RocksDB's own counters of pending and running background work (all 0 when it is idle).
    _BUSY = ("rocksdb.num-running-compactions", "rocksdb.num-running-flushes",
             "rocksdb.compaction-pending", "rocksdb.mem-table-flush-pending")

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> float:
        prop = self.db.property_int_value
        return _poll_until(lambda: not any(prop(p) for p in self._BUSY), timeout, 0.01)

    def delete(self, key: bytes) -> None:
        self.db.delete(key, self.wo)

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def scan(self, key: bytes, n: int, reverse: bool) -> int:
        it = self.db.iter()
        count = 0
        if reverse:
            it.seek_for_prev(key)
            if it.valid() and it.key() >= key:
                it.prev()
            while it.valid() and count < n:
                it.value()
                count += 1
                it.prev()
        else:
            it.seek(key)
            while it.valid() and count < n:
                it.value()
                count += 1
                it.next()
        del it
        return count

    def close(self) -> None:
        self.db.close()


class LevelEngine(Engine):
    name = "leveldb"

    def __init__(self, path: str, sync: bool, blobs: bool = False) -> None:
        super().__init__(path, sync)
        import plyvel

        self.db = plyvel.DB(path, create_if_missing=True, compression="snappy")

    def compact(self) -> bool:
        self.db.compact_range()
        return True

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> float:
        # LevelDB exposes no "busy" counter; its stats text changes when a compaction finishes. Idle = the
        # text unchanged for 1 s (a compaction of this bench's 2 MiB tables takes well under that).
        seen = [self.db.get_property(b"leveldb.stats"), time.monotonic()]

        def quiet() -> bool:
            now = self.db.get_property(b"leveldb.stats")
            if now != seen[0]:
                seen[0], seen[1] = now, time.monotonic()
            return time.monotonic() - seen[1] >= 1.0

        return _poll_until(quiet, timeout, 0.05)

    def put(self, key: bytes, value: bytes) -> None:
        self.db.put(key, value, sync=self.sync)

    def write(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        with self.db.write_batch(sync=self.sync) as wb:
            for k, v in items:
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)

    def delete(self, key: bytes) -> None:
        self.db.delete(key, sync=self.sync)

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def scan(self, key: bytes, n: int, reverse: bool) -> int:
        it = self.db.iterator(stop=key, reverse=True) if reverse else self.db.iterator(start=key)
        count = 0
        with it:
            for _ in it:
                count += 1
                if count >= n:
                    break
        return count

    def close(self) -> None:
        self.db.close()


class LmdbEngine(Engine):
    name = "lmdb"

    def __init__(self, path: str, sync: bool, blobs: bool = False) -> None:
        super().__init__(path, sync)
        import lmdb

        # 64 GiB of address space: LMDB maps the whole file; the map only reserves, it does not allocate.
        self.env = lmdb.open(path, map_size=64 << 30, sync=sync, metasync=sync, max_spare_txns=16,
                             lock=True, writemap=False)
        self._local = threading.local()

    def put(self, key: bytes, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key, value)

    def write(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        with self.env.begin(write=True) as txn:
            for k, v in items:
                if v is None:
                    txn.delete(k)
                else:
                    txn.put(k, v)

    def delete(self, key: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.delete(key)

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(buffers=False) as txn:
            return txn.get(key)

    def scan(self, key: bytes, n: int, reverse: bool) -> int:
        count = 0
        with self.env.begin() as txn, txn.cursor() as cur:
            if reverse:
                ok = cur.set_range(key)
                ok = cur.prev() if ok else cur.last()
                while ok and count < n:
                    cur.value()
                    count += 1
                    ok = cur.prev()
            else:
                ok = cur.set_range(key)
                while ok and count < n:
                    cur.value()
                    count += 1
                    ok = cur.next()
        return count

    def close(self) -> None:
        self.env.close()


class SqliteEngine(Engine):
    name = "sqlite"

    def __init__(self, path: str, sync: bool, blobs: bool = False) -> None:
        super().__init__(path, sync)
        os.makedirs(path, exist_ok=True)
        self.file = os.path.join(path, "kv.sqlite")
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._conn().execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def _conn(self) -> Any:
        c = getattr(self._local, "c", None)
        if c is None:
            import sqlite3

            c = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False, timeout=60)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(f"PRAGMA synchronous={'FULL' if self.sync else 'NORMAL'}")
            self._local.c = c
            with self._lock:
                self._all.append(c)
        return c

    def put(self, key: bytes, value: bytes) -> None:
        self._conn().execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def write(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [(k, v) for k, v in items if v is not None])
        c.executemany("DELETE FROM kv WHERE k = ?", [(k,) for k, v in items if v is None])
        c.execute("COMMIT")

    def delete(self, key: bytes) -> None:
        self._conn().execute("DELETE FROM kv WHERE k = ?", (key,))

    def compact(self) -> bool:
        c = self._conn()
        c.execute("VACUUM")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

    def get(self, key: bytes) -> bytes | None:
        row = self._conn().execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def scan(self, key: bytes, n: int, reverse: bool) -> int:
        q = (
            "SELECT k, v FROM kv WHERE k < ? ORDER BY k DESC LIMIT ?"
            if reverse
            else "SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?"
        )
        return len(self._conn().execute(q, (key, n)).fetchall())

    def close(self) -> None:
        for c in self._all:
            c.close()
        self._all.clear()


ENGINES: dict[str, tuple[type[Engine], str | None]] = {
    "lsmmail": (LsmmailEngine, None),
    "rocksdb": (RocksEngine, "rocksdict"),
    "leveldb": (LevelEngine, "plyvel"),
    "lmdb": (LmdbEngine, "lmdb"),
    "sqlite": (SqliteEngine, None),
}


def installed_engines() -> list[str]:
    """Engine names whose Python package is importable here (lsmmail first)."""
    return [n for n, (_, mod) in ENGINES.items() if mod is None or importlib.util.find_spec(mod) is not None]
