"""Micro-benchmark: lsmmail's SearchIndex vs SQLite FTS5 on the same corpus documents, same run.

    python benchmarks/search_bench.py [--every 2] [--queries 300]

Both sides get the same analysed token text (lsmmail's tokenizer); FTS5 tokenizes it again with its
default unicode61 tokenizer. Ingest: one durable (fsync'd) transaction per document on both sides, both
timed including lsmmail's tokenizer.
Queries ask for the newest 50 matches. Prints p50/p99 latency per query kind and bytes on disk; each kind
runs twice, the "(again)" rows with every cache (engine blocks, decoded postings, SQLite pages) warm.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lsmmail  # noqa: E402
from lsmmail.engine.batch import WriteBatch  # noqa: E402
from lsmmail.search import SearchIndex, analyze  # noqa: E402
from lsmmail.search.tokenizer import TEXT_FIELDS  # noqa: E402
from tests.search.corpus import read_mbox_xz, to_document  # noqa: E402
from tests.search.docgen import doc_id  # noqa: E402

USER = b"\x00\x00\x00\x01"


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=2, help="take every N-th SpamAssassin message")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    raws = read_mbox_xz("spamassassin.mbox.xz", every=args.every)
    raws += read_mbox_xz("usrp-users-attachments.mbox.xz")
    docs = [to_document(r) for r in raws]
    ids = [doc_id(1_262_304_000_000 + i * 60_000, i) for i in range(len(docs))]
    fields = [analyze(d) for d in docs]
    print(f"{len(docs)} documents")
    tmp = Path(tempfile.mkdtemp(prefix="search_bench_"))

    # ---- lsmmail ingest
    db = lsmmail.DB.open(tmp / "lsm")
    ix = SearchIndex(db, lambda u, d, s: None)
    t0 = time.perf_counter()
    for d, doc in zip(ids, docs, strict=True):
        b = WriteBatch()
        p = ix.index(b, USER, d, doc)
        db.write(b, sync=True)
        ix.committed(p)
    lsm_ingest = len(docs) / (time.perf_counter() - t0)
    ix.flush()
    db.flush()
    db.compact_range()

    # ---- FTS5 ingest (same token text, column per field)
    cols = ", ".join("f_" + f for f in TEXT_FIELDS)
    con = sqlite3.connect(tmp / "fts.sqlite", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(f"CREATE VIRTUAL TABLE m USING fts5({cols})")
    t0 = time.perf_counter()
    for i, doc in enumerate(docs):
        f = analyze(doc)  # timed on this side too: both stores pay for the same tokenizer
        texts = [
            " ".join(t for _, t in sorted((p, t) for t, ps in f.get(c, {}).items() for p in ps))
            for c in TEXT_FIELDS
        ]
        con.execute("BEGIN")
        con.execute(f"INSERT INTO m(rowid, {cols}) VALUES (?,?,?,?,?,?,?)", [i, *texts])
        con.execute("COMMIT")
    fts_ingest = len(docs) / (time.perf_counter() - t0)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("INSERT INTO m(m) VALUES('optimize')")

    # ---- queries
    r = random.Random(1)
    body_words = [t for f in fields for t, ps in f.get("b", {}).items() if ps and t.isalpha() and len(t) > 3]
    senders = [t for f in fields for t, ps in f.get("f", {}).items() if not ps and "@" in t]
    kinds = {
        "one word": [(w, w) for w in r.sample(body_words, args.queries)],
        "sender": [
            (f'from:"{a}"', 'f_f : "' + " ".join(lsmmail.search.tokenize(a)) + '"')
            for a in r.sample(senders, min(args.queries, len(senders)))
        ],
        "two-word AND": [
            (f"{a} {b}", f"{a} {b}")
            for a, b in zip(
                r.sample(body_words, args.queries), r.sample(body_words, args.queries), strict=True
            )
        ],
    }
    print(f"{'query':22} {'lsmmail p50':>12} {'p99':>9} {'FTS5 p50':>10} {'p99':>9}   (µs, newest 50)")
    for kind, qs in [*kinds.items(), *((k + " (again)", q) for k, q in kinds.items())]:
        lt, ft = [], []
        for q, fq in qs:
            t0 = time.perf_counter()
            ix.search(USER, q, limit=50)
            lt.append((time.perf_counter() - t0) * 1e6)
            t0 = time.perf_counter()
            con.execute("SELECT rowid FROM m WHERE m MATCH ? ORDER BY rowid DESC LIMIT 50", [fq]).fetchall()
            ft.append((time.perf_counter() - t0) * 1e6)
        print(
            f"{kind:22} {statistics.median(lt):12.0f} {pct(lt, 0.99):9.0f} "
            f"{statistics.median(ft):10.0f} {pct(ft, 0.99):9.0f}"
        )
    db.close()
    con.close()
    lsm_bytes = dir_size(tmp / "lsm")
    fts_bytes = sum(os.path.getsize(p) for p in tmp.glob("fts.sqlite*"))
    print(f"ingest (fsync per doc): lsmmail {lsm_ingest:.0f} docs/s, FTS5 {fts_ingest:.0f} docs/s")
    print(f"index bytes/doc: lsmmail {lsm_bytes / len(docs):.0f}, FTS5 {fts_bytes / len(docs):.0f}")


if __name__ == "__main__":
    main()
