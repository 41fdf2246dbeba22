"""Crash behaviour: every committed doc is findable after reopen or SIGKILL, no unindexed doc ever returns.

The index keeps recent docs only in memory plus their forward records; these tests kill or drop that memory
at arbitrary points (including inside flushes and merges) and check the recovered index.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import lsmmail
from lsmmail.engine.batch import WriteBatch
from lsmmail.search import IndexedDocument, SearchIndex

from .docgen import doc_id

USER = b"\x00\x00\x00\x03"
REPO = Path(__file__).parents[2]


def make_doc(i: int) -> tuple[bytes, IndexedDocument]:
    r = random.Random(i)
    words = " ".join(
        r.choice(["alpha", "beta", "gamma", "delta", "omega"]) + str(r.randint(0, 30)) for _ in range(40)
    )
    return doc_id(1_700_000_000_000 + i, i), IndexedDocument(
        subject=f"message uniq{i}", from_=[("", f"sender{i % 5}@example.com")], body_text=words
    )


CHILD = """
import sys
from lsmmail import DB
from lsmmail.engine.batch import WriteBatch
from lsmmail.search import SearchIndex
from tests.search.test_crash import USER, make_doc
db = DB.open(sys.argv[1])
ix = SearchIndex(db, lambda u, d, s: None, flush_postings=300, max_segments=3, merge_fanin=2)
start = int(sys.argv[2])
for i in range(start, start + 100000):
    d, doc = make_doc(i)
    b = WriteBatch()
    p = ix.index(b, USER, d, doc)
    db.write(b, sync=True)
    ix.committed(p)
    print("I", i, flush=True)
    if i % 7 == 3:
        b = WriteBatch()
        p = ix.unindex(b, USER, make_doc(i - 2)[0])
        db.write(b, sync=True)
        ix.committed(p)
        print("D", i - 2, flush=True)
"""


def check(db_path: Path, indexed: set[int], deleted: set[int], maybe: set[int]) -> None:
    """Every acknowledged live doc is found by its unique word; nothing deleted or never written is."""
    with lsmmail.DB.open(db_path) as db:
        ix = SearchIndex(db, lambda u, d, s: None)
        for i in indexed - deleted - maybe:
            assert ix.search(USER, f"uniq{i}")[0] == [make_doc(i)[0]], i
        for i in deleted:
            assert ix.search(USER, f"uniq{i}")[0] == [], i
        allowed = {make_doc(i)[0] for i in (indexed | maybe) - deleted}
        every: list[bytes] = []
        cursor = None
        while True:
            ids, cursor = ix.search(USER, "message", limit=500, cursor=cursor)
            every += ids
            if cursor is None:
                break
        assert set(every) <= allowed
        assert set(every) >= {make_doc(i)[0] for i in indexed - deleted - maybe}


def test_reopen_without_flush_keeps_everything(db_path: Path) -> None:
    with lsmmail.DB.open(db_path) as db:
        ix = SearchIndex(db, lambda u, d, s: None, flush_postings=500, max_segments=2, merge_fanin=2)
        for i in range(60):
            d, doc = make_doc(i)
            b = WriteBatch()
            p = ix.index(b, USER, d, doc)
            db.write(b, sync=False)
            ix.committed(p)
        b = WriteBatch()
        p = ix.unindex(b, USER, make_doc(5)[0])
        db.write(b, sync=False)
        ix.committed(p)
        assert ix.stats()["mem_docs"] > 0  # some docs live only in memory + forward records
        # a doc whose batch committed but whose committed() never ran (crash in between) is still found
        d, doc = make_doc(60)
        b = WriteBatch()
        ix.index(b, USER, d, doc)
        db.write(b, sync=False)
    check(db_path, set(range(61)), {5}, set())


def _kill_cycle(db_path: Path, start: int, kill_after: int) -> tuple[set[int], set[int], set[int]]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path), str(start)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    indexed: set[int] = set()
    deleted: set[int] = set()
    assert proc.stdout is not None
    acks = 0
    for line in proc.stdout:
        kind, n = line.split()
        (indexed if kind == "I" else deleted).add(int(n))
        acks += 1
        if acks >= kill_after:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Acknowledged lines are a lower bound: the child may have committed one more step before dying.
    # After "I i" the child may have committed the unindex of i-2 (when i % 7 == 3) and then index i+1.
    last = max(indexed)
    maybe = {last + 1}
    if last % 7 == 3 and last - 2 not in deleted:
        maybe.add(last - 2)
    return indexed, deleted, maybe


@pytest.mark.parametrize("kill_after", [5, 37, 90])
def test_sigkill_mid_indexing(db_path: Path, kill_after: int) -> None:
    indexed, deleted, maybe = _kill_cycle(db_path, 0, kill_after)
    check(db_path, indexed, deleted, maybe)


@pytest.mark.slow
def test_sigkill_many_cycles(db_path: Path) -> None:
    r = random.Random(5)
    indexed: set[int] = set()
    deleted: set[int] = set()
    maybes: set[int] = set()
    start = 0
    for _ in range(40):
        got, gone, maybe = _kill_cycle(db_path, start, r.randint(1, 120))
        indexed |= got
        deleted |= gone
        maybes |= maybe
        check(db_path, indexed, deleted, maybes)
        start = max(indexed | maybe) + 10  # never reuse an id that might have been written
