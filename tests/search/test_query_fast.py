"""The query fast path and its caches: plans (parsed queries) and decoded posting lists must answer exactly
as the general set evaluator and the brute-force model do, across deliveries, deletions, flushes, merges
and reopenings that happen between repeated queries (a stale cache entry would show up as a difference)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsmmail
from lsmmail.search import DocState, IndexedDocument, QuerySyntaxError, analyze, parse
from lsmmail.search.evaluator import _Evaluator, make_plan, plan_for

from .docgen import ADDRS, BASE_MS, FOLDERS, WORDS, doc_id, random_doc
from .model import brute_force, search_all
from .test_index import U1, U2, Mail

#: Single-token words (multi-token ones are phrases, outside the fast path); "alpha." also has a special.
_word = st.sampled_from([w for w in WORDS if w not in ("foo_bar", "don't")] + ["missing", "éPÉE", "alpha."])
_addr_leaf = st.sampled_from(
    ["from:alice", "from:alice@example.com", "to:bob@example.org", "cc:danvers", "from:dimitris@example.gr",
     "filename:pdf", "has:attachment", "to:carol.danvers@mail.example.com"]
)
_leaf = st.one_of(_word, _addr_leaf)
#: Dates (docs span 2020-09-13 to 2020-09-14 here) and states: checked per candidate on the fast path.
_other = st.sampled_from(["is:read", "is:unread", "in:inbox", "in:ARCHIVE", "after:2020-09-13",
                          "before:2020-09-14", "after:2020-09-14", "before:1960-01-01", "after:9999-01-01",
                          "before:2020-09-13", "after:1969-12-31"])
#: The fast-path shapes: an AND of leaves, dates and states, each maybe negated (with no positive leaf
#: the walk is over every doc).
_part = st.tuples(st.booleans(), st.one_of(_leaf, _leaf, _other))
fast_queries = st.lists(_part, min_size=1, max_size=4).map(
    lambda t: " ".join(("-" if neg else "") + q for neg, q in t)
)


def general(m: Mail, user: bytes, query: str, want: int, after: bytes | None) -> list[bytes]:
    """The same query through the general (set) evaluator, which the fast path must agree with."""
    with m.ix._lock, m.db.snapshot() as snap:  # type: ignore[attr-defined]
        return _Evaluator(m.ix, user, snap).run(parse(query), want, after)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    ops=st.lists(st.sampled_from(["deliver"] * 5 + ["delete", "state", "flush", "merge", "reopen", "query"]),
                 min_size=1, max_size=50),
    qs=st.lists(fast_queries, min_size=1, max_size=5),
    flush_postings=st.sampled_from([15, 60, 100_000]),
)
def test_fast_path_matches_model_across_changes(
    seed: int, ops: list[str], qs: list[str], flush_postings: int
) -> None:
    r = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        db = lsmmail.DB.open(Path(tmp) / "db")
        try:
            m = Mail(db, flush_postings=flush_postings, max_segments=2, merge_fanin=2)
            live: dict[bytes, dict[bytes, object]] = {U1: {}, U2: {}}
            n = 0

            def check() -> None:
                for q in qs:
                    for user in (U1, U2):
                        plan = plan_for(m.ix, q)
                        assert plan.pos is not None, q  # these shapes take the fast path
                        states = {d: m.states.get((user, d)) for d in live[user]}
                        want = brute_force(parse(q), live[user], states)  # type: ignore[arg-type]
                        assert search_all(m.ix, user, q, page=3) == want, q
                        assert m.ix.search(user, q, limit=7)[0] == want[:7], q
                        assert general(m, user, q, 7, None) == want[:7], q
                        if len(want) > 2:  # resume after a cursor in the middle of the list
                            page = m.ix.search(user, q, limit=50, cursor=_cursor(m, user, q, 2))[0]
                            assert page == want[2:52], q

            for op in ops:
                user = U1 if r.random() < 0.8 else U2
                if op == "deliver":
                    n += 1
                    d = doc_id(BASE_MS + r.randint(0, 3) * 43_200_000 + n, r.getrandbits(80))
                    doc = random_doc(r) if r.random() < 0.9 else IndexedDocument()  # no terms at all
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
                elif op == "query":
                    check()
            check()
        finally:
            db.close()


def _cursor(m: Mail, user: bytes, q: str, k: int) -> str:
    """The cursor after the first ``k`` results of ``q``."""
    _, cursor = m.ix.search(user, q, limit=k)
    assert cursor is not None
    return cursor


def test_deleted_doc_leaves_cached_results_at_once(db: object) -> None:
    m = Mail(db)
    docs = [doc_id(BASE_MS + i, i) for i in range(6)]
    for i, d in enumerate(docs):
        m.deliver(U1, d, IndexedDocument(subject=f"budget item{i}", body_text="plan"))
    m.ix.flush()
    assert m.ix.search(U1, "budget plan")[0] == docs[::-1]  # now cached, decoded
    m.delete(U1, docs[4])
    m.delete(U1, docs[0])
    assert m.ix.search(U1, "budget plan")[0] == [docs[5], docs[3], docs[2], docs[1]]
    assert m.ix.search(U1, "budget")[0] == [docs[5], docs[3], docs[2], docs[1]]
    assert m.ix.search(U1, "budget -item3")[0] == [docs[5], docs[2], docs[1]]
    late = doc_id(BASE_MS + 100, 99)  # in the memory segment, newer than every flushed doc
    m.deliver(U1, late, IndexedDocument(subject="budget"))
    assert m.ix.search(U1, "budget", limit=2) == ([late, docs[5]], m.ix.search(U1, "budget", limit=2)[1])
    assert m.ix.search(U1, "budget plan")[0] == [docs[5], docs[3], docs[2], docs[1]]
    m.ix.merge(U1)  # rewrites the segments: the cache must not answer from the old ones
    assert m.ix.search(U1, "budget")[0] == [late, docs[5], docs[3], docs[2], docs[1]]
    m.ix.flush()
    assert m.ix.search(U1, "budget")[0] == [late, docs[5], docs[3], docs[2], docs[1]]


def test_memory_docs_older_than_flushed_ones_are_merged_in_order(db: object) -> None:
    m = Mail(db)
    new = [doc_id(BASE_MS + 1000 + i, i) for i in range(3)]
    for d in new:
        m.deliver(U1, d, IndexedDocument(subject="status"))
    m.ix.flush()
    old = doc_id(BASE_MS + 500, 7)  # delivered after the flush but with an older id (e.g. an import)
    m.deliver(U1, old, IndexedDocument(subject="status"))
    assert m.ix.search(U1, "status")[0] == [new[2], new[1], new[0], old]
    ids, cursor = m.ix.search(U1, "status", limit=3)
    assert ids == [new[2], new[1], new[0]]
    assert m.ix.search(U1, "status", cursor=cursor) == ([old], None)


def test_plan_cache_follows_the_index_format_and_rejects_bad_queries(db: object) -> None:
    m = Mail(db)
    m.deliver(U1, doc_id(BASE_MS, 1), IndexedDocument(subject="alpha", from_=[ADDRS[0]]))
    first = plan_for(m.ix, "alpha")
    assert plan_for(m.ix, "alpha") is first  # cached
    m.ix._combined = not m.ix._combined  # what mark_current() changes: the plan is rebuilt
    second = plan_for(m.ix, "alpha")
    assert second is not first and second.pos != first.pos
    assert second.pos == make_plan(parse("alpha"), m.ix._combined).pos
    for bad in ['"open', "(", "a OR", ""]:
        with pytest.raises(QuerySyntaxError):
            m.ix.search(U1, bad)
        with pytest.raises(QuerySyntaxError):  # errors are not cached as plans
            m.ix.search(U1, bad)
    with pytest.raises(QuerySyntaxError):
        m.ix.search(U1, 12)  # type: ignore[arg-type]
    assert m.ix.search(U1, "alpha")[0] == [doc_id(BASE_MS, 1)]


def test_general_shapes_do_not_take_the_fast_path(db: object) -> None:
    m = Mail(db)
    for q in ['"alpha beta"', "alice@example.com", "(alpha beta) OR gamma", "&", "x1.42",
              '-"alpha beta"', "alpha OR -beta"]:
        assert plan_for(m.ix, q).pos is None, q
    # an OR of leaves is one leaf (the union of their keys), negated or not
    for q in ["alpha OR beta", "-(alpha OR beta)", "(alpha OR beta) gamma", "alpha", "alpha beta",
              "alpha -beta", "from:alice@example.com -has:attachment", ".alpha", "is:read alpha",
              "alpha -in:trash after:2020-01-01 -before:2021-01-01", "-alpha", "is:read",
              "in:inbox", "-alpha -beta", "before:2021-01-01"]:
        assert plan_for(m.ix, q).pos is not None, q


def test_doc_without_terms_is_in_every_walk_over_all_docs(db: object) -> None:
    m = Mail(db)
    empty = doc_id(BASE_MS, 1)
    m.deliver(U1, empty, IndexedDocument())  # no subject, body, address or attachment: no postings
    for q in ("-alpha", "in:inbox", "is:unread", "after:2020-01-01", "-has:attachment"):
        assert m.ix.search(U1, q)[0] == [empty], q
    m.ix.flush()
    for q in ("-alpha", "in:inbox", "is:unread", "after:2020-01-01", "-has:attachment"):
        assert m.ix.search(U1, q)[0] == [empty], q
