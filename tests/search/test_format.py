"""Segments without the any-field blocks (written before they existed): bare words fall back to the
six-field union, and results equal those of an index that has the blocks."""

from __future__ import annotations

import random
from pathlib import Path

import lsmmail
from lsmmail.engine.batch import WriteBatch
from lsmmail.search import SearchIndex, analyze
from lsmmail.search import postings as P

from .docgen import doc_id, random_doc

USER = b"u1"


def _all(ix: SearchIndex, q: str) -> list[bytes]:
    return ix.search(USER, q, limit=10_000)[0]


def test_legacy_segments_answer_like_current(tmp_path: Path) -> None:
    r = random.Random(3)
    docs = [(doc_id(1_600_000_000_000 + i, i), random_doc(r)) for i in range(120)]
    words = sorted({t for _, d in docs for f in analyze(d).values() for t in f})
    queries = r.sample(words, min(60, len(words)))
    queries += [f"{a} {b}" for a, b in zip(words[::7], words[3::7], strict=False)]
    db = lsmmail.DB.open(tmp_path / "db")
    try:
        ix = SearchIndex(db, lambda u, d, s: None, flush_postings=400)
        for i, (d, doc) in enumerate(docs):
            b = WriteBatch()
            p = ix.index(b, USER, d, doc)
            db.write(b)
            ix.committed(p)
            if i % 17 == 0:
                b = WriteBatch()
                p = ix.unindex(b, USER, docs[i // 2][0])
                db.write(b)
                ix.committed(p)
        ix.flush()
        assert ix.segment_count(USER) > 1
        current = {q: _all(ix, q) for q in queries}
        assert sum(map(len, current.values())) > 100
        # Make it look like an index written before the any-field blocks: no marker, no `*` blocks.
        b = WriteBatch()
        b.delete(P.META_FORMAT)
        for key, _ in db.scan(prefix=P.segment_user_prefix(USER) + b"*"):
            b.delete(key)
        db.write(b)
        legacy = SearchIndex(db, lambda u, d, s: None)
        assert not legacy._combined
        assert {q: _all(legacy, q) for q in queries} == current
        legacy.mark_current()
        assert SearchIndex(db, lambda u, d, s: None)._combined
    finally:
        db.close()
