"""``fill_threads`` (fillsync1 / fillsyncN): each thread puts its own keys, in order, with the values the
value pool hands out, however the harness prepares them; one latency sample per put."""

from __future__ import annotations

import threading

from lsmmail.bench.engines import Engine
from lsmmail.bench.workloads import Config, ValuePool, fill_threads, key


class _Recorder(Engine):
    """An engine that only records what each thread put, in order."""

    def __init__(self) -> None:
        self.puts: dict[int, list[tuple[bytes, bytes]]] = {}
        self._mu = threading.Lock()

    def put(self, key: bytes, value: bytes) -> None:
        with self._mu:
            self.puts.setdefault(threading.get_ident(), []).append((key, value))


def _pool_values(cfg: Config, t: int, n: int) -> list[bytes]:
    pool = ValuePool(cfg.value_size, cfg.seed + t)
    return [pool.next() for _ in range(n)]


def test_each_thread_puts_its_keys_in_order_with_the_pools_values() -> None:
    # value_size 70,000: the pool (>= 1 MiB) repeats every 14 values, so 40 puts per thread wrap it.
    cfg = Config(value_size=70_000, progress=False)
    threads, n = 3, 120
    per = n // threads
    eng = _Recorder()
    res = fill_threads(eng, n, threads, cfg, "fill")
    assert res["ops"] == n and res["seconds"] > 0 and "p50_us" in res
    seqs = list(eng.puts.values())
    assert len(seqs) == threads
    want = {t: [(key(t * per + j), v) for j, v in enumerate(_pool_values(cfg, t, per))]
            for t in range(threads)}
    got = {int(s[0][0]) // per: s for s in seqs}
    assert got == want
