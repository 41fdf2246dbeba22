"""Posting lists as rank arrays (segment_reads._Universe, search/_postings_read.py): the universe of a user's
flushed docs, with segments that own disjoint id ranges (ranks = base + ordinal) and with merged segments
that interleave (ranks mapped one by one); AND, negation, OR-of-leaves and phrase queries over both, with
deletions, the memory segment and cursors, against the brute-force model."""

from __future__ import annotations

import random

from lsmmail.search import analyze, parse
from lsmmail.search.evaluator import plan_for

from .docgen import BASE_MS, doc_id, random_doc
from .model import brute_force, search_all
from .test_index import U1, Mail

QUERIES = [
    "alpha", "alpha beta", "alpha -beta", "-alpha", "alpha OR gamma", "(alpha OR gamma) -beta",
    "-(alpha OR x1) gamma", '"alpha beta"', '"beta alpha gamma"', 'subject:"alpha alpha"', "alpha beta -42",
    "from:alice alpha", "has:attachment OR 42", '"alpha beta" OR gamma', "épée straße", "-alpha -beta",
]


def _check(m: Mail, live: dict[bytes, object]) -> None:
    for q in QUERIES:
        want = brute_force(parse(q), live)  # type: ignore[arg-type]
        assert search_all(m.ix, U1, q, page=4) == want, q
        assert m.ix.search(U1, q, limit=3)[0] == want[:3], q


def _deliver_many(m: Mail, r: random.Random, live: dict[bytes, object], start: int, n: int) -> None:
    for i in range(start, start + n):
        did = doc_id(BASE_MS + i, r.getrandbits(40))
        doc = random_doc(r)
        m.deliver(U1, did, doc)
        live[did] = analyze(doc)


def test_disjoint_and_interleaved_segments(db: object) -> None:
    r = random.Random(7)
    m = Mail(db, max_segments=10)
    live: dict[bytes, object] = {}
    for k in range(3):  # three flushes: three segments owning consecutive id ranges
        _deliver_many(m, r, live, 40 * k, 40)
        m.ix.flush()
    uni = m.ix._universe(U1)
    assert len(uni.base) == 3 and not uni.maps
    _check(m, live)
    for did in sorted(live)[::7]:
        m.delete(U1, did)
        del live[did]
    _deliver_many(m, r, live, 200, 15)  # some docs stay in the memory segment
    _check(m, live)
    segs = sorted(m.ix._tables_for(U1))
    m.ix.merge(U1, [segs[0], segs[2]])  # the merged segment's ids interleave with the middle one's
    uni = m.ix._universe(U1)
    assert uni.maps and uni.ids == sorted(uni.ids)
    _check(m, live)
    for did in sorted(live)[1::5]:
        m.delete(U1, did)
        del live[did]
    _check(m, live)
    m.reopen()
    _check(m, live)


def test_or_of_leaves_is_one_fast_leaf(db: object) -> None:
    m = Mail(db)
    plan = plan_for(m.ix, "(alpha OR gamma OR alpha) -beta")
    assert plan.pos is not None and len(plan.pos) == 1 and len(plan.neg) == 1
    assert len(set(plan.pos[0])) == len(plan.pos[0])  # a key repeated in the OR is read once
    assert plan_for(m.ix, 'alpha OR "beta gamma"').pos is None  # a phrase is not a union of lists
