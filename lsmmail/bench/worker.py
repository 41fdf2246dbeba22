"""One engine's run of the workloads, in its own process (so peak RSS and I/O counters are its own).

Usage: ``python -m lsmmail.bench.worker ENGINE DIR CONFIG_JSON WORKLOADS`` -> one JSON object on stdout.

Sequence (db_bench style, one database reused where the workloads need a filled one):
fillseq (own db) | fillrandom -> readrandom, readmissing, seekscan, seekscanrev -> overwrite -> close
(write amplification, bytes on disk) -> reopen -> deleterandom | fillrandom1 (own db, single puts) |
fillsync1, fillsyncN (own dbs, synced single puts from 1 and N threads).
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import sys

from .engines import ENGINES
from .workloads import (
    KEY_SIZE,
    SCAN_LENGTH,
    Config,
    dir_bytes,
    fill,
    fill_single,
    fill_threads,
    key,
    missing_key,
    timed_ops,
)

MAIN_CHAIN = (
    "fillrandom", "readrandom", "readmissing", "seekscan", "seekscanrev", "overwrite", "deleterandom",
)


def write_bytes() -> tuple[int, str]:
    """Bytes this process caused to be written to storage (/proc/self/io write_bytes, which counts every
    thread, including an engine's background compaction threads), or -1 where that is unavailable."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1]), "proc_io"
    except OSError:
        pass
    return -1, "none"


def run(engine: str, base: str, cfg: Config, wanted: list[str]) -> dict:
    cls = ENGINES[engine][0]
    out: dict = {"engine": engine, "results": {}}
    res = out["results"]
    rnd = random.Random(cfg.seed)
    order = list(range(cfg.num))
    shuffled = order[:]
    rnd.shuffle(shuffled)

    def fresh(name: str, sync: bool = False):  # type: ignore[no-untyped-def]
        path = os.path.join(base, f"{engine}-{name}")
        shutil.rmtree(path, ignore_errors=True)
        return cls(path, sync), path

    def label(w: str) -> str:
        return f"{engine} {w}"

    if "fillseq" in wanted:
        db, path = fresh("fillseq")
        res["fillseq"] = fill(db, order, cfg, label("fillseq"))
        db.close()
        shutil.rmtree(path, ignore_errors=True)

    if any(w in wanted for w in MAIN_CHAIN):
        io0, src = write_bytes()
        db, path = fresh("main")
        r = fill(db, shuffled, cfg, label("fillrandom"))
        if "fillrandom" in wanted:
            res["fillrandom"] = r
        nr = cfg.n_reads
        probe = [rnd.randrange(cfg.num) for _ in range(nr)]
        if "readrandom" in wanted:
            get = db.get
            found = [0]

            def read(j: int) -> None:
                if get(key(probe[j])) is not None:
                    found[0] += 1

            res["readrandom"] = timed_ops(read, nr, cfg, label("readrandom"), sample=8)
            res["readrandom"]["found"] = found[0]
        if "readmissing" in wanted:
            get = db.get
            res["readmissing"] = timed_ops(
                lambda j: get(missing_key(probe[j])), nr, cfg, label("readmissing"), sample=8
            )
        ns = cfg.n_seeks
        for w, rev in (("seekscan", False), ("seekscanrev", True)):
            if w in wanted:
                got = [0]

                def seek(j: int, rev: bool = rev, got: list[int] = got) -> None:
                    got[0] += db.scan(key(probe[j % nr]), SCAN_LENGTH, rev)

                res[w] = timed_ops(seek, ns, cfg, label(w), sample=4)
                res[w]["entries"] = got[0]
        logical = cfg.num * (KEY_SIZE + cfg.value_size)
        if "overwrite" in wanted:
            ow = shuffled[:]
            random.Random(cfg.seed + 1).shuffle(ow)
            res["overwrite"] = fill(db, ow, cfg, label("overwrite"))
            logical *= 2
        db.close()
        io1, _ = write_bytes()
        out["write_amp"] = (io1 - io0) / logical if io0 >= 0 else None
        out["write_amp_source"] = src
        out["write_amp_workload"] = "fillrandom+overwrite" if "overwrite" in wanted else "fillrandom"
        out["disk_bytes"] = dir_bytes(path)
        out["logical_bytes"] = cfg.num * (KEY_SIZE + cfg.value_size)
        if "deleterandom" in wanted:
            db = cls(path, False)
            dl = shuffled[:]
            random.Random(cfg.seed + 2).shuffle(dl)
            res["deleterandom"] = _delete(db, dl, cfg, label("deleterandom"))
            db.close()
        shutil.rmtree(path, ignore_errors=True)

    if "fillrandom1" in wanted:
        db, path = fresh("fill1")
        res["fillrandom1"] = fill_single(db, shuffled, cfg, label("fillrandom1"))
        db.close()
        shutil.rmtree(path, ignore_errors=True)

    for w, threads in (("fillsync1", 1), ("fillsyncN", cfg.threads)):
        if w in wanted:
            db, path = fresh(w, sync=True)
            res[w] = fill_threads(db, cfg.sync_num, threads, cfg, label(w))
            res[w]["threads"] = threads
            db.close()
            shutil.rmtree(path, ignore_errors=True)

    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for r in res.values():
        r["ops_per_sec"] = r["ops"] / r["seconds"] if r["seconds"] > 0 else 0.0
    return out


def _delete(db, order: list[int], cfg: Config, label: str) -> dict:  # type: ignore[no-untyped-def]
    import time

    from .workloads import Progress

    prog = Progress(label, len(order), cfg.progress)
    t0 = time.perf_counter()
    for s in range(0, len(order), cfg.batch):
        db.write([(key(i), None) for i in order[s : s + cfg.batch]])
        prog.update(s)
    dt = time.perf_counter() - t0
    prog.done()
    return {"ops": len(order), "seconds": dt}


def main(argv: list[str]) -> int:
    engine, base, cfg_json, workloads = argv
    cfg = Config(**json.loads(cfg_json))
    out = run(engine, base, cfg, workloads.split(","))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
