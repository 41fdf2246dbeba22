"""One engine's run of the workloads, in its own process (so peak RSS and I/O counters are its own).

Usage: ``python -m lsmmail.bench.worker ENGINE DIR CONFIG_JSON WORKLOADS`` -> one JSON object on stdout.

Sequence (db_bench style, one database reused where the workloads need a filled one):
fillseq (own db) | fillrandom -> settle (each engine's background work caught up) -> readrandom,
readmissing, seekscan, seekscanrev -> overwrite -> close
(write amplification, bytes on disk) -> reopen, compact everything, close (space) -> reopen ->
deleterandom | fillrandom1 (own db, single puts) | fillsync1, fillsyncN (own dbs, synced single puts
from 1 and N threads) | peak RSS | mailmix (own db: 1 KiB records + 20 KiB bodies, then half the records
rewritten; write amplification).
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
    "fillrandom", "readrandom", "readmissing", "seekscan", "seekscanrev", "overwrite", "space",
    "deleterandom",
)

#: The mail mix: per message a 1 KiB record and a 20 KiB body (lsmmail keeps values >= 4 KiB in blob
#: files), delivered in batches of 64 messages (MailStore's import batch), then half of the records
#: rewritten once (flag changes), like a mailbox's life in miniature.
MAIL_RECORD = 1024
MAIL_BODY = 20 * 1024
MAIL_BATCH = 64


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


def fsync_p50_us(base: str, n: int = 200) -> float:
    """Median fdatasync latency (µs) of a 1 KiB append in ``base``: the device's cost of one synced put,
    which bounds fillsync1 and which group commit shares across fillsyncN's writers."""
    import time

    path = os.path.join(base, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    lat = []
    try:
        block = b"x" * 1024
        for _ in range(n):
            os.write(fd, block)
            t = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.remove(path)
    lat.sort()
    return lat[len(lat) // 2] * 1e6


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
        if any(w in wanted for w in ("readrandom", "readmissing", "seekscan", "seekscanrev")):
            out["settle_s"] = round(db.settle(), 3)  # reads on the settled database, in every engine
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
        if "space" in wanted and "overwrite" in wanted:
            # Space after a full compaction of the overwrite workload: every key was written twice, so
            # half the versions are garbage that compaction must drop. Ratio to the live key+value bytes.
            db = cls(path, False)
            if db.compact():
                db.close()
                out["space_bytes"] = dir_bytes(path)
                out["space_ratio"] = out["space_bytes"] / out["logical_bytes"]
            else:
                db.close()
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

    if "fillsync1" in wanted or "fillsyncN" in wanted:
        out["fsync_p50_us"] = fsync_p50_us(base)
    for w, threads in (("fillsync1", 1), ("fillsyncN", cfg.threads)):
        if w in wanted:
            db, path = fresh(w, sync=True)
            res[w] = fill_threads(db, cfg.sync_num * threads, threads, cfg, label(w))
            res[w]["threads"] = threads
            db.close()
            shutil.rmtree(path, ignore_errors=True)

    # Peak RSS of the db_bench workloads only: the mail mix runs last (CPython keeps freed heap, so a
    # later phase would add to, not replace, the earlier peak).
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if "mailmix" in wanted:
        res["mailmix"], out["mailmix_write_amp"] = _mailmix(cls, base, engine, cfg, label("mailmix"))
    for r in res.values():
        r["ops_per_sec"] = r["ops"] / r["seconds"] if r["seconds"] > 0 else 0.0
    return out


def _mailmix(cls, base: str, engine: str, cfg: Config, label: str) -> tuple[dict, float | None]:  # type: ignore[no-untyped-def]
    """Deliver ``num // 20`` messages (record + body), then rewrite half the records; return the
    delivery's messages/s and the write amplification (write_bytes from open to close ÷ logical bytes)."""
    import time

    from .workloads import Progress, ValuePool

    path = os.path.join(base, f"{engine}-mailmix")
    shutil.rmtree(path, ignore_errors=True)
    m = max(MAIL_BATCH, cfg.num // 20)
    records = ValuePool(MAIL_RECORD, cfg.seed + 3)
    bodies = ValuePool(MAIL_BODY, cfg.seed + 4)
    io0, _ = write_bytes()
    db = cls(path, False, blobs=True)
    prog = Progress(label, m, cfg.progress)
    t0 = time.perf_counter()
    for s in range(0, m, MAIL_BATCH):
        items = []
        for i in range(s, min(m, s + MAIL_BATCH)):
            items.append((b"r%015d" % i, records.next()))
            items.append((b"b%015d" % i, bodies.next()))
        db.write(items)
        prog.update(s)
    dt = time.perf_counter() - t0
    prog.done()
    again = random.Random(cfg.seed + 5).sample(range(m), m // 2)
    for s in range(0, len(again), MAIL_BATCH):
        db.write([(b"r%015d" % i, records.next()) for i in again[s : s + MAIL_BATCH]])
    db.close()
    io1, _ = write_bytes()
    shutil.rmtree(path, ignore_errors=True)
    logical = m * (2 * KEY_SIZE + MAIL_RECORD + MAIL_BODY) + len(again) * (KEY_SIZE + MAIL_RECORD)
    return {"ops": m, "seconds": dt}, ((io1 - io0) / logical if io0 >= 0 else None)


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
