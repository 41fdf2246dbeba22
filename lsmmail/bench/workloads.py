"""db_bench-style workloads, run inside one worker process per engine (see :mod:`lsmmail.bench.worker`).

Keys are 16 bytes (``%016d`` of the key number); values come from a pool that compresses to about half
(each 100-byte stretch is 50 random bytes written twice), like db_bench's default ``compression_ratio``.
Batched workloads write ``batch`` entries per atomic batch. Every workload returns ``ops`` and
``seconds`` (and, for per-operation workloads, latency percentiles).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .engines import Engine

KEY_SIZE = 16
SCAN_LENGTH = 50  # "seek, then next 50": one folder page


def key(i: int) -> bytes:
    return b"%016d" % i


def missing_key(i: int) -> bytes:
    # "%015d." sorts just before key(10 * i): between existing keys, so a seek lands inside the data
    # and only the bloom filter (not the key range) can rule it out.
    return b"%015d." % i


@dataclass
class Config:
    num: int = 200_000
    value_size: int = 1024
    batch: int = 1000
    threads: int = 8
    reads: int = 0  # 0: same as num
    seeks: int = 0  # 0: num // 20
    # Synced puts per writer thread of a fillsync run, as db_bench's --threads runs its count in every
    # thread (fsyncs are slow; 2,000 keeps it to seconds). Until the ninth session fillsyncN split it
    # over its threads: 250 puts each, a ~40 ms run in which the threads' start and uneven finish (the
    # last groups smaller than 8) weighed; 16,000 puts measured ~7% more puts/s (3 of 4 pairs).
    sync_num: int = 2000
    seed: int = 301
    progress: bool = True

    @property
    def n_reads(self) -> int:
        return self.reads or self.num

    @property
    def n_seeks(self) -> int:
        return self.seeks or max(1, self.num // 20)


class ValuePool:
    def __init__(self, size: int, seed: int) -> None:
        rnd = random.Random(seed)
        chunks = []
        total = 0
        while total < max(1 << 20, 4 * size):
            half = rnd.randbytes(50)
            chunks.append(half + half)
            total += 100
        self.data = b"".join(chunks)
        self.size = size
        self.pos = 0

    def next(self) -> bytes:
        if self.pos + self.size > len(self.data):
            self.pos = 0
        v = self.data[self.pos : self.pos + self.size]
        self.pos += self.size
        return v


class Progress:
    """A one-line progress indicator on stderr, shown only once a phase has run for a second."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.start = self.last = time.perf_counter()
        self.shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.5 or now - self.start < 1.0:
            return
        self.last = now
        self.shown = True
        sys.stderr.write(f"\r  {self.label}: {100 * done // max(1, self.total):3d}% ({done}/{self.total})   ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


def _percentiles(lat_ns: list[int]) -> dict[str, float]:
    if not lat_ns:
        return {}
    s = sorted(lat_ns)
    return {"p50_us": s[len(s) // 2] / 1000, "p99_us": s[min(len(s) - 1, len(s) * 99 // 100)] / 1000}


def fill(db: Engine, order: list[int], cfg: Config, label: str) -> dict:
    """Write ``order``'s keys in batches of ``cfg.batch``."""
    pool = ValuePool(cfg.value_size, cfg.seed)
    prog = Progress(label, len(order), cfg.progress)
    t0 = time.perf_counter()
    for s in range(0, len(order), cfg.batch):
        db.write([(key(i), pool.next()) for i in order[s : s + cfg.batch]])
        prog.update(s)
    dt = time.perf_counter() - t0
    prog.done()
    return {"ops": len(order), "seconds": dt}


def fill_single(db: Engine, order: list[int], cfg: Config, label: str) -> dict:
    pool = ValuePool(cfg.value_size, cfg.seed)
    prog = Progress(label, len(order), cfg.progress)
    put = db.put
    t0 = time.perf_counter()
    for j, i in enumerate(order):
        put(key(i), pool.next())
        if not j & 1023:
            prog.update(j)
    dt = time.perf_counter() - t0
    prog.done()
    return {"ops": len(order), "seconds": dt}


def fill_threads(db: Engine, n: int, threads: int, cfg: Config, label: str) -> dict:
    """``n`` single puts (synced if the engine was opened so) spread over ``threads`` threads."""
    per = n // threads
    lat: list[list[int]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    prog = Progress(label, per * threads, cfg.progress)
    done = [0] * threads

    def run(t: int) -> None:
        # Keys and values made before the barrier: formatting a key and slicing a value per put is Python
        # that runs under the GIL, serially with the writers measured, and is no engine's cost: the loop's
        # own Python per put fell from ~430 to ~145 ns (no-op engine, 250k puts), of the ~3 us a synced
        # writer holds the GIL per put. Same keys and values, same order, for every engine. The pool
        # repeats with a period of len(data) // size values, so one period is kept, not one per put.
        pool = ValuePool(cfg.value_size, cfg.seed + t)
        values = [pool.next() for _ in range(min(per, len(pool.data) // pool.size))]
        nv = len(values)
        items = [(key(t * per + j), values[j % nv]) for j in range(per)]
        mine = lat[t]
        put = db.put
        now = time.perf_counter_ns
        barrier.wait()
        for j, (k, v) in enumerate(items):
            a = now()
            put(k, v)
            mine.append(now() - a)
            done[t] = j

    ths = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    # Wait in join on a thread still running: once the first thread has ended, joining it again returned
    # at once, and this loop spun for the GIL against the writers it measures (each then waited up to the
    # 5 ms switch interval to get it back after its fdatasync).
    for th in ths:
        while th.is_alive():
            th.join(0.25)
            prog.update(sum(done))
    for th in ths:
        th.join()
    dt = time.perf_counter() - t0
    prog.done()
    return {"ops": per * threads, "seconds": dt, **_percentiles([x for m in lat for x in m])}


def timed_ops(op: Callable[[int], object], count: int, cfg: Config, label: str, sample: int = 1) -> dict:
    """Run ``op(j)`` for j in 0..count-1, timing every ``sample``-th call for the latency percentiles."""
    prog = Progress(label, count, cfg.progress)
    lat: list[int] = []
    now = time.perf_counter_ns
    t0 = time.perf_counter()
    for j in range(count):
        if j % sample:
            op(j)
        else:
            a = now()
            op(j)
            lat.append(now() - a)
        if not j & 1023:
            prog.update(j)
    dt = time.perf_counter() - t0
    prog.done()
    return {"ops": count, "seconds": dt, **_percentiles(lat)}


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total
