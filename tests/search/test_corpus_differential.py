"""Differential test on real mail: SearchIndex == brute force (same tokenizer) == SQLite FTS5.

~1,000 messages of ../shared/corpus are indexed through the real engine with small segments (so flushes and
merges happen), some are deleted and some change state; hundreds of generated queries must give exactly the
brute-force result set (every query kind), and for plain words, phrases and subject-scoped ones exactly what
SQLite FTS5 returns over the same token text.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

import lsmmail
from lsmmail.engine.batch import WriteBatch
from lsmmail.search import DocState, SearchIndex, analyze, parse
from lsmmail.search.tokenizer import BODY, SUBJECT, TEXT_FIELDS

from .corpus import CORPUS, sample
from .docgen import doc_id
from .model import brute_force, search_all

if not (CORPUS / "spamassassin.mbox.xz").exists():
    pytest.skip(f"corpus not found at {CORPUS}", allow_module_level=True)

USER = b"\x00\x00\x00\x07"
BASE = 1_262_304_000_000  # 2010-01-01; message i arrives 1 h after message i-1
FOLDERS = ["INBOX", "Archive", "Lists"]


def _sequence(terms: dict[str, list[int]]) -> dict[int, str]:
    return {p: t for t, ps in terms.items() for p in ps}


def _fts_text(terms: dict[str, list[int]]) -> str:
    """Token text for FTS5: each token hex-encoded (so FTS5 splits exactly at our boundaries) and a filler
    token in every position gap (so FTS5 adjacency equals ours)."""
    seq = _sequence(terms)
    if not seq:
        return ""
    return " ".join("x" + seq[p].encode().hex() if p in seq else "g" for p in range(max(seq) + 1))


def _fts_phrase(tokens: tuple[str, ...]) -> str:
    return '"' + " ".join("x" + t.encode().hex() for t in tokens) + '"'


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    docs = sample()
    r = random.Random(20240601)
    ids = [doc_id(BASE + i * 3_600_000, r.getrandbits(80)) for i in range(len(docs))]
    states = {d: DocState(r.choice(FOLDERS), r.random() < 0.5) for d in ids}
    db = lsmmail.DB.open(Path(tmp_path_factory.mktemp("corpus")) / "db")
    ix = SearchIndex(db, lambda u, d, s: states.get(d), flush_postings=25_000, max_segments=3, merge_fanin=2)
    for d, doc in zip(ids, docs, strict=True):
        batch = WriteBatch()
        pending = ix.index(batch, USER, d, doc)
        db.write(batch, sync=False)
        ix.committed(pending)
    live = {d: analyze(doc) for d, doc in zip(ids, docs, strict=True)}
    for d in ids[::23]:  # delete some for good, in memory and in flushed segments alike
        batch = WriteBatch()
        pending = ix.unindex(batch, USER, d)
        db.write(batch, sync=False)
        ix.committed(pending)
        del live[d]
        del states[d]
    fts = sqlite3.connect(":memory:")
    fts.execute(f"CREATE VIRTUAL TABLE m USING fts5({', '.join('f_' + f for f in TEXT_FIELDS)})")
    rowid = {}
    for i, (d, fields) in enumerate(sorted(live.items())):
        rowid[i] = d
        cols = [_fts_text(fields.get(f, {})) for f in TEXT_FIELDS]
        fts.execute(
            f"INSERT INTO m(rowid, {', '.join('f_' + f for f in TEXT_FIELDS)}) VALUES (?,?,?,?,?,?,?)",
            [i, *cols],
        )
    yield ix, live, states, fts, rowid
    db.close()


def _queries(live: dict[bytes, dict[str, dict[str, list[int]]]]) -> tuple[list[str], list[tuple[str, ...]]]:
    """(query strings of every kind, token tuples usable as FTS5 phrases)."""
    r = random.Random(99)
    docs = sorted(live.items())
    qs: list[str] = []
    phrases: list[tuple[str, ...]] = []

    def word(field: str = BODY) -> str | None:
        for _ in range(20):
            _, f = r.choice(docs)
            terms = [t for t, ps in f.get(field, {}).items() if ps]
            if terms:
                return r.choice(sorted(terms))
        return None

    def run(field: str, n: int) -> tuple[str, ...] | None:
        for _ in range(20):
            _, f = r.choice(docs)
            seq = _sequence(f.get(field, {}))
            if len(seq) > n:
                start = r.choice(sorted(seq))
                toks = tuple(seq.get(start + i) for i in range(n))
                if None not in toks:
                    return toks  # type: ignore[return-value]
        return None

    for _ in range(120):
        w = word(r.choice([BODY, BODY, SUBJECT]))
        if w:
            qs.append(w)
            phrases.append((w,))
    for _ in range(80):
        toks = run(r.choice([BODY, SUBJECT]), r.choice([2, 2, 3]))
        if toks:
            qs.append('"' + " ".join(toks) + '"')
            phrases.append(toks)
    for _ in range(40):
        toks = run(SUBJECT, r.choice([1, 2]))
        if toks:
            qs.append('subject:"' + " ".join(toks) + '"')
    for _ in range(60):
        _, f = r.choice(docs)
        addr_field = r.choice(["f", "t", "c"])
        specials = sorted(t for t, ps in f.get(addr_field, {}).items() if not ps)
        name = {"f": "from", "t": "to", "c": "cc"}[addr_field]
        if specials:
            qs.append(f'{name}:"{r.choice(specials)}"')
        w = word(addr_field)
        if w:
            qs.append(f"{name}:{w}")
    for _ in range(60):
        a, b = word(), word(r.choice([BODY, SUBJECT]))
        if a and b:
            qs += [f"{a} {b}", f"{a} OR {b}", f"{a} -{b}", f"-{a} -{b}", f"({a} OR {b}) -{word() or 'x'}"]
    for _ in range(30):
        w = word("a")
        if w:
            qs.append(f"filename:{w}")
        w2 = word()
        qs.append(f"has:attachment {w2}" if w2 else "has:attachment")
    for _ in range(30):
        w = word() or "the"
        y, mth = r.choice([2010, 2011]), r.randint(1, 12)
        qs += [
            f"{w} after:{y}-{mth:02d}-01",
            f"before:{y}-{mth:02d}-15 {w}",
            f"{w} is:unread",
            f"in:{r.choice(FOLDERS).lower()} {w}",
            f"-is:read ({w} OR has:attachment)",
        ]
    return qs, phrases


def test_index_equals_brute_force_and_fts5(world) -> None:  # type: ignore[no-untyped-def]
    ix, live, states, fts, rowid = world
    qs, phrases = _queries(live)
    assert len(qs) >= 500
    nonempty = 0
    for q in qs:
        want = brute_force(parse(q), live, states)
        got = search_all(ix, USER, q, page=100)
        assert got == want, q
        nonempty += bool(want)
    assert nonempty >= len(qs) // 2  # the generator mostly asks for words that exist
    for toks in phrases:
        fts_ids = sorted(
            (rowid[i] for (i,) in fts.execute("SELECT rowid FROM m WHERE m MATCH ?", [_fts_phrase(toks)])),
            reverse=True,
        )
        assert search_all(ix, USER, '"' + " ".join(toks) + '"', page=100) == fts_ids, toks
    for toks in phrases[:60]:
        fts_ids = sorted(
            (
                rowid[i]
                for (i,) in fts.execute("SELECT rowid FROM m WHERE m MATCH ?", ["f_s : " + _fts_phrase(toks)])
            ),
            reverse=True,
        )
        assert search_all(ix, USER, 'subject:"' + " ".join(toks) + '"', page=100) == fts_ids, toks
