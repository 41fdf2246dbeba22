"""Paired durable rows of ``lsmmail bench mail``: MailStore and the SQLite store in ONE process, call by call.

Why: a durable delivery or ``mark_read`` is mostly one fdatasync, and on a shared machine the device's
fsync latency drifts between ~0.1 ms and ~4 ms over tens of seconds. The main bench runs each store in
its own process, one after the other, so each store's durable rows measure whichever fsync period it
happened to land in (one run measured lsmmail's mark_read at 3.8 ms and SQLite's at 0.3 ms, the same code
that tied at ~4 ms in another). Here both stores live in one process on the same device and take turns
call by call (the order flips every pair), so both see the same fsync weather; the ratio of their
latencies is then a property of the stores.

Sequence: import the same ``--paired-base`` messages into both (untimed; durable batches as in the main
bench), then alternate the held-back single deliveries, then ``mark_read`` of ``--marks`` random ids.
Output (stdout, one JSON line): ``{"lsmmail": {"deliver_paired": lat, "mark_read_paired": lat},
"sqlite": {...}}`` with ``lat`` as from ``mail._latencies``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict
from typing import Any

#: Messages imported into both stores before the timed calls: enough for realistic key and table
#: counts (several memtable flushes), few enough to keep the paired stage under ~10 s here.
PAIRED_BASE = 600


def _stats(lat: list[float]) -> dict[str, float]:
    from .mail import _pct

    total = sum(lat)
    return {"n": len(lat), "p50_us": _pct(lat, 0.5) * 1e6, "p99_us": _pct(lat, 0.99) * 1e6,
            "ops_per_sec": len(lat) / total if total > 0 else 0.0}


def _alternate(calls: list[tuple[Any, Any, Any, Any]]) -> tuple[list[float], list[float]]:
    """Time ``fa(a)`` and ``fb(b)`` for each ``(fa, a, fb, b)``; the first to run flips every pair."""
    clock = time.perf_counter
    la: list[float] = []
    lb: list[float] = []
    for i, (fa, a, fb, b) in enumerate(calls):
        order = ((fa, a, la), (fb, b, lb)) if i % 2 == 0 else ((fb, b, lb), (fa, a, la))
        for fn, arg, out in order:
            t0 = clock()
            fn(arg)
            out.append(clock() - t0)
    return la, lb


def run_paired(base: str, cfg: Any) -> dict[str, dict[str, dict[str, float]]]:
    """Both stores in directories under ``base``; returns their paired latency rows."""
    from .mail import STORES, load_sample, split_sample

    raws = load_sample(cfg)
    bulk, single = split_sample(raws, cfg.single)
    bulk = bulk[:PAIRED_BASE]
    stores = {}
    ids: dict[str, list[Any]] = {}
    for name in ("lsmmail", "sqlite"):
        path = os.path.join(base, f"paired-{name}")
        shutil.rmtree(path, ignore_errors=True)
        st = STORES[name](path)
        st.create_user()
        ids[name] = st.bulk(bulk)
        stores[name] = st
    lsm, sql = stores["lsmmail"], stores["sqlite"]
    out: dict[str, dict[str, dict[str, float]]] = {"lsmmail": {}, "sqlite": {}}

    def deliver_into(name: str) -> Any:
        return lambda raw: ids[name].append(stores[name].deliver(raw))

    la, lb = _alternate([(deliver_into("lsmmail"), r, deliver_into("sqlite"), r) for r in single])
    out["lsmmail"]["deliver_paired"], out["sqlite"]["deliver_paired"] = _stats(la), _stats(lb)
    rnd = random.Random(cfg.seed)
    n = min(cfg.marks, len(ids["lsmmail"]), len(ids["sqlite"]))
    picks = rnd.sample(range(min(len(ids["lsmmail"]), len(ids["sqlite"]))), n)
    la, lb = _alternate([(lsm.mark_read, ids["lsmmail"][i], sql.mark_read, ids["sqlite"][i]) for i in picks])
    out["lsmmail"]["mark_read_paired"], out["sqlite"]["mark_read_paired"] = _stats(la), _stats(lb)
    for name, st in stores.items():
        st.close()
        shutil.rmtree(os.path.join(base, f"paired-{name}"), ignore_errors=True)
    return out


def main(argv: list[str]) -> int:
    from .mail import MailConfig

    base, cfg_json = argv[:2]
    cfg = MailConfig(**json.loads(cfg_json))
    sys.stdout.write(json.dumps(run_paired(base, cfg)) + "\n")
    return 0


def command(base: str, cfg: Any) -> list[str]:
    """The subprocess command line that runs the paired stage (its own process: its own fds and memory)."""
    return [sys.executable, "-m", "lsmmail.bench.mail_paired", base, json.dumps(asdict(cfg))]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
