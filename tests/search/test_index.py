"""SearchIndex behaviour on the real engine: delivery path, flush, merge, deletion, states, paging."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsmmail
from lsmmail.engine.batch import WriteBatch
from lsmmail.engine.errors import InvalidArgument
from lsmmail.search import DocState, IndexedDocument, QuerySyntaxError, SearchIndex, analyze, parse

from .docgen import BASE_MS, FOLDERS, doc_id, queries, random_doc
from .model import brute_force, search_all

U1 = b"\x00\x00\x00\x01"
U2 = b"\x00\x00\x00\x02"


class Mail:
    """The smallest honest stand-in for the mail layer: states in a dict, one batch per operation."""

    def __init__(self, db: object, **kw: int) -> None:
        self.db = db
        self.states: dict[tuple[bytes, bytes], DocState] = {}
        self.kw = kw
        self.ix = SearchIndex(db, self.lookup, **kw)

    def lookup(self, user: bytes, doc: bytes, snapshot: object) -> DocState | None:
        return self.states.get((user, doc))

    def deliver(self, user: bytes, did: bytes, doc: IndexedDocument, folder: str = "INBOX") -> None:
        batch = WriteBatch()
        batch.put(b"m" + user + did, b"message")  # the mail layer's own records ride in the same batch
        pending = self.ix.index(batch, user, did, doc)
        self.db.write(batch, sync=False)
        self.ix.committed(pending)
        self.states[(user, did)] = DocState(folder, False)

    def delete(self, user: bytes, did: bytes) -> None:
        batch = WriteBatch()
        batch.delete(b"m" + user + did)
        pending = self.ix.unindex(batch, user, did)
        self.db.write(batch, sync=False)
        self.ix.committed(pending)
        del self.states[(user, did)]

    def reopen(self) -> None:
        self.ix = SearchIndex(self.db, self.lookup, **self.kw)


def test_word_found_before_and_after_flush(db: object) -> None:
    m = Mail(db)
    a, b = doc_id(BASE_MS, 1), doc_id(BASE_MS + 1, 2)
    m.deliver(U1, a, IndexedDocument(subject="Quarterly report", body_text="numbers inside"))
    m.deliver(U1, b, IndexedDocument(subject="lunch", body_text="quarterly numbers"))
    assert m.ix.search(U1, "quarterly") == ([b, a], None)
    assert m.ix.search(U2, "quarterly") == ([], None)
    m.ix.flush()
    assert m.ix.stats()["mem_docs"] == 0
    assert m.ix.search(U1, "quarterly") == ([b, a], None)
    assert m.ix.search(U1, '"quarterly report"') == ([a], None)
    assert m.ix.search(U1, 'subject:"quarterly report"') == ([a], None)
    assert m.ix.search(U1, 'body:"quarterly report"') == ([], None)  # unknown field: a plain phrase
    assert m.ix.search(U1, '"report quarterly"') == ([], None)  # true adjacency, in order
    assert m.ix.search(U1, "-lunch") == ([a], None)


def test_addresses_and_attachments(db: object) -> None:
    m = Mail(db)
    a, b = doc_id(BASE_MS, 1), doc_id(BASE_MS + 1, 2)
    m.deliver(
        U1,
        a,
        IndexedDocument(
            from_=[("Alice Smith", "Alice@Example.com")],
            to=[("", "bob@x.org")],
            attachment_names=["Invoice 2024.PDF"],
            has_attachment=True,
        ),
    )
    m.deliver(U1, b, IndexedDocument(from_=[("", "alice@example.com.evil.net")], cc=[("Bob", "bob@x.org")]))
    assert m.ix.search(U1, "from:alice@example.com")[0] == [a]
    assert m.ix.search(U1, "from:example.com")[0] == [b, a]  # domain special, and the words of a subdomain
    assert m.ix.search(U1, "from:alice")[0] == [b, a]
    assert m.ix.search(U1, 'from:"alice smith"')[0] == [a]
    assert m.ix.search(U1, "to:bob@x.org")[0] == [a]
    assert m.ix.search(U1, "cc:bob")[0] == [b]
    assert m.ix.search(U1, "bob@x.org")[0] == [b, a]
    assert m.ix.search(U1, "has:attachment")[0] == [a]
    assert m.ix.search(U1, "filename:pdf")[0] == [a]
    assert m.ix.search(U1, 'filename:"invoice 2024.pdf"')[0] == [a]
    assert m.ix.search(U1, "filename:2024")[0] == [a]


def test_unindex_move_read_and_dates(db: object) -> None:
    m = Mail(db, flush_postings=5)
    ids = [doc_id(BASE_MS + i * 86_400_000, i) for i in range(6)]  # one per day from 2020-09-13
    for i, d in enumerate(ids):
        m.deliver(U1, d, IndexedDocument(subject=f"hello {i}"))
    assert search_all(m.ix, U1, "hello", page=4) == ids[::-1]
    m.delete(U1, ids[2])
    m.states[(U1, ids[3])] = DocState("Archive", True)
    assert search_all(m.ix, U1, "hello", page=2) == [ids[5], ids[4], ids[3], ids[1], ids[0]]
    assert m.ix.search(U1, "in:archive")[0] == [ids[3]]
    assert m.ix.search(U1, "hello is:read")[0] == [ids[3]]
    assert m.ix.search(U1, "is:unread -in:inbox")[0] == []
    assert m.ix.search(U1, "after:2020-09-15 before:2020-09-17")[0] == [ids[3]]
    m.ix.flush()
    m.ix.merge(U1)
    assert m.ix.segment_count(U1) == 1
    m.reopen()
    assert search_all(m.ix, U1, "hello", page=2) == [ids[5], ids[4], ids[3], ids[1], ids[0]]
    assert list(db.scan(prefix=b"sD")) == []  # merge purged the deletion marker with the doc


def test_errors(db: object) -> None:
    m = Mail(db)
    with pytest.raises(QuerySyntaxError) as e:
        m.ix.search(U1, 'subject:"open')
    assert e.value.position == 8
    with pytest.raises(InvalidArgument):
        m.ix.search(U1, "x", cursor="garbage")
    with pytest.raises(InvalidArgument):
        m.ix.search(U1, "x", limit=0)
    with pytest.raises(InvalidArgument):
        m.ix.index(WriteBatch(), U1, b"short", IndexedDocument())


def test_rebuild_gives_identical_results(db: object) -> None:
    r = random.Random(7)
    m = Mail(db, flush_postings=50, max_segments=2, merge_fanin=2)
    docs = {doc_id(BASE_MS + i * 3_600_000, i): random_doc(r) for i in range(60)}
    for d, doc in docs.items():
        m.deliver(U1, d, doc)
    for d in list(docs)[::5]:
        m.delete(U1, d)
        del docs[d]
    qs = ["alpha", "gamma -beta", '"alpha beta"', "from:alice OR to:bob@example.org", "has:attachment 42"]
    before = {q: search_all(m.ix, U1, q, page=7) for q in qs}
    m.ix.rebuild(U1, sorted(docs.items()))
    assert {q: search_all(m.ix, U1, q, page=7) for q in qs} == before
    fields = {d: analyze(doc) for d, doc in docs.items()}
    assert {q: brute_force(parse(q), fields) for q in qs} == before


def check(m: Mail, live: dict[bytes, dict[bytes, object]], q: str) -> None:
    node = parse(q)
    for user in (U1, U2):
        states = {d: m.states[(user, d)] for d in live[user]}
        want = brute_force(node, live[user], states)  # type: ignore[arg-type]
        assert search_all(m.ix, user, q, page=3) == want, q


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    ops=st.lists(
        st.sampled_from(["deliver"] * 6 + ["delete", "state", "flush", "merge", "reopen", "query"]),
        min_size=1,
        max_size=60,
    ),
    qs=st.lists(queries, min_size=1, max_size=6),
    flush_postings=st.sampled_from([10, 40, 100_000]),
)
def test_matches_model(seed: int, ops: list[str], qs: list[str], flush_postings: int) -> None:
    r = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        db = lsmmail.DB.open(Path(tmp) / "db")
        try:
            m = Mail(db, flush_postings=flush_postings, max_segments=2, merge_fanin=2)
            live: dict[bytes, dict[bytes, object]] = {U1: {}, U2: {}}
            n = 0
            for op in ops:
                user = U1 if r.random() < 0.8 else U2
                if op == "deliver":
                    n += 1
                    d = doc_id(BASE_MS + r.randint(0, 3) * 43_200_000 + n, r.getrandbits(80))
                    doc = random_doc(r)
                    m.deliver(user, d, doc, r.choice(FOLDERS))
                    live[user][d] = analyze(doc)
                elif op == "delete" and live[user]:
                    d = r.choice(sorted(live[user]))
                    m.delete(user, d)
                    del live[user][d]
                elif op == "state" and live[user]:
                    d = r.choice(sorted(live[user]))
                    m.states[(user, d)] = DocState(r.choice(FOLDERS), r.random() < 0.5)
                elif op == "flush":
                    m.ix.flush()
                elif op == "merge":
                    m.ix.merge(user)
                elif op == "reopen":
                    m.reopen()
                elif op == "query":  # mid-sequence queries fill caches that later flushes must invalidate
                    check(m, live, r.choice(qs))
            for q in qs:
                check(m, live, q)
        finally:
            db.close()
