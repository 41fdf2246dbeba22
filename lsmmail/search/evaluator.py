"""Query evaluation: one query against one snapshot, over the memory segment and the flushed segments."""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import dropwhile, filterfalse, islice, repeat, takewhile
from typing import TYPE_CHECKING, Any

from . import postings as P
from ._postings_read import DISPATCH as RANKS
from ._postings_read import post_and, post_phrase
from .documents import DocState, doc_time_ms
from .postings import ANY
from .query import All, And, DateBound, HasAttachment, InFolder, IsRead, Node, Not, Or, Term, parse
from .segment_reads import _PLAN_CACHE_ENTRIES, Keys
from .tokenizer import ADDRESS_FIELDS, MAX_TOKEN_BYTES, META, SPECIAL_FIELDS, TEXT_FIELDS, normalize

#: The end of UUIDv7 time: ids hold 48-bit milliseconds.
_TIME_END = 1 << 48

if TYPE_CHECKING:
    from .index import SearchIndex


class _Evaluator:
    """One query's evaluation against one snapshot (holding the index lock)."""

    def __init__(self, index: SearchIndex, user: bytes, snap: Any) -> None:
        self.ix = index
        self.user = user
        self.snap = snap
        self.tables = index._tables_for(user)
        self.deleted = index._deleted_for(user)
        self.mem_post = index._mem.postings.get(user, {})
        self.leaf: dict[Node, set[bytes]] = {}
        self.states: dict[bytes, DocState | None] = {}
        self.cache: dict[tuple[str, str, bool], dict[bytes, list[int]] | set[bytes]] = {}

    # -- postings

    def docs(self, field: str, term: str) -> set[bytes]:
        ck = (field, term, False)
        hit = self.cache.get(ck)
        if hit is not None:
            return hit  # type: ignore[return-value]
        out: frozenset[bytes] = frozenset()
        if len(term.encode("utf-8")) <= MAX_TOKEN_BYTES:
            # the cached frozenset itself when the memory segment has nothing: no copy (never mutated)
            out = self.ix._flushed_docs(self.user, ((field, term),)).members()
            mem = self.mem_post.get((field, term))
            if mem:
                out = out.union(mem)
        self.cache[ck] = out  # type: ignore[assignment]
        return out  # type: ignore[return-value]

    def phrase(self, field: str, tokens: tuple[str, ...]) -> set[bytes]:
        """Docs having ``tokens`` at adjacent positions of ``field``: the flushed docs having every token (one
        native AND of their rank lists), then, per flushed segment, one native walk over the tokens' blocks
        that decodes only those docs' positions (``_postings_read.post_phrase``); memory-segment docs from
        their held runs."""
        if len(tokens) == 1:
            return self.docs(field, tokens[0])
        uniq = set(tokens)
        # Memory segment: the docs holding every token there, checked from their runs.
        mem = [self.mem_post.get((field, t)) for t in uniq]
        out: set[bytes] = set()
        if all(mem):
            first = min(mem, key=len)  # type: ignore[arg-type]
            in_mem = set(first).intersection(*mem)  # type: ignore[arg-type]
            if in_mem:
                out = self._phrase_mem(field, tokens, in_mem)
        # Flushed segments: the ranks holding every token (one native AND over the cached rank lists),
        # then per segment one native walk over the tokens' blocks for those docs' ordinals.
        ix, user = self.ix, self.user
        if any(len(t.encode("utf-8")) > MAX_TOKEN_BYTES for t in uniq):
            return out  # a token too long to be indexed: no flushed doc has it
        lists = [ix._flushed_docs(user, ((field, t),)) for t in uniq]
        if not all(td.ranks for td in lists):
            return out
        uni = ix._universe(user)
        ids = uni.ids
        most = min(len(td.ranks) for td in lists)  # the intersection is no longer than the shortest list
        ranks = sorted(post_and(lists, [], 0, len(ids), most))
        if not ranks:
            return out
        blocks = {t: ix._term_blocks(user, field, t) for t in uniq}
        wanted: set[bytes] | None = None
        for seg, table in self.tables.items():
            blks = [blocks[t].get(seg) for t in tokens]
            if None in blks:
                continue  # a token absent from the segment: no doc of it has the phrase
            n = len(table)
            base = uni.base.get(seg)
            if base is not None:  # the segment's ranks are base .. base + n - 1
                i, j = bisect_left(ranks, base), bisect_left(ranks, base + n)
                if i == j:
                    continue
                ords = [r - base for r in ranks[i:j]]
            else:  # interleaved (merged) segments: find the docs in the doc table
                if wanted is None:
                    wanted = set(map(ids.__getitem__, ranks))
                ords = [o for o in map(bisect_left, repeat(table), wanted) if o < n and table[o] in wanted]
                if not ords:
                    continue
            out.update(map(table.__getitem__, post_phrase(blks, n, ords)))  # type: ignore[arg-type]
        return out

    def _phrase_mem(self, field: str, tokens: tuple[str, ...], docs: Iterable[bytes]) -> set[bytes]:
        """The memory-segment docs of ``docs`` (each holds every token) having the phrase: their held runs
        are encoded as in a block, so each token's runs behind one block header make a block of ordinals
        0..n-1 for the same native walk as the flushed side."""
        order = sorted(docs)
        n = len(order)
        ords = list(range(n))
        blocks = []
        for t in tokens:
            held = self.mem_post[(field, t)]
            blocks.append(P.encode_block_runs(ords, [held[d] for d in order]))
        return set(map(order.__getitem__, post_phrase(blocks, n, ords)))

    def term(self, node: Term) -> set[bytes]:
        out: set[bytes] = set()
        for field in (node.field,) if node.field else TEXT_FIELDS:
            special = node.special if field in SPECIAL_FIELDS else None
            if special is not None:
                out |= self.docs(field, special)
            if node.tokens and not (special is not None and field in ADDRESS_FIELDS and "@" in special):
                out |= self.phrase(field, node.tokens)
        return out

    def leaf_set(self, node: Node) -> set[bytes]:
        got = self.leaf.get(node)
        if got is None:
            keys = leaf_keys(node, self.ix._combined)
            if keys is not None:  # a union of posting lists (a bare word: its one any-field list)
                got = self.ix._flushed_docs(self.user, keys).members()  # type: ignore[assignment]
                if self.mem_post:
                    got = got.union(self.ix._mem_leaf(self.user, _mem_keys(keys)))
            else:
                got = self.term(node) if isinstance(node, Term) else self.docs(META, "attachment")
            self.leaf[node] = got
        return got  # type: ignore[return-value]

    def universe(self) -> set[bytes]:
        out: set[bytes] = set()
        for ids in self.tables.values():
            out.update(ids)
        out.update(self.ix._mem.docs.get(self.user, {}))
        return out

    # -- set evaluation (trees of words, phrases and has: only)

    def as_set(self, node: Node) -> tuple[bool, set[bytes]]:
        """``(complemented, s)``: the matches are ``s``, or everything but ``s`` when complemented."""
        if isinstance(node, (Term, HasAttachment)):
            return False, self.leaf_set(node)
        if isinstance(node, All):
            return True, set()
        if isinstance(node, Not):
            neg, s = self.as_set(node.child)
            return not neg, s
        parts = [self.as_set(c) for c in node.children]  # type: ignore[union-attr]
        pos = sorted((s for n, s in parts if not n), key=len)
        neg = [s for n, s in parts if n]
        if isinstance(node, And):
            if pos:
                return False, set(pos[0]).intersection(*pos[1:]).difference(*neg)
            return True, set().union(*neg)
        if not neg:
            return False, set().union(*pos)
        return True, set(neg[0]).intersection(*neg[1:]).difference(*pos)

    # -- per-document evaluation (trees with is:, in:, before:, after:)

    def candidates(self, node: Node) -> set[bytes] | None:
        """A superset of the matches, or None for "every document"."""
        if isinstance(node, (Term, HasAttachment)):
            return self.leaf_set(node)
        if isinstance(node, And):
            sets = [s for s in (self.candidates(c) for c in node.children) if s is not None]
            return set(min(sets, key=len)).intersection(*sets) if sets else None
        if isinstance(node, Or):
            sets = [self.candidates(c) for c in node.children]
            return None if any(s is None for s in sets) else set().union(*sets)  # type: ignore[arg-type]
        return None

    def state(self, doc: bytes) -> DocState | None:
        if doc not in self.states:
            self.states[doc] = self.ix.state_lookup(self.user, doc, self.snap)
        return self.states[doc]

    def match(self, node: Node, doc: bytes) -> bool:
        if isinstance(node, (Term, HasAttachment)):
            return doc in self.leaf_set(node)
        if isinstance(node, And):
            return all(self.match(c, doc) for c in node.children)
        if isinstance(node, Or):
            return any(self.match(c, doc) for c in node.children)
        if isinstance(node, Not):
            return not self.match(node.child, doc)
        if isinstance(node, All):
            return True
        if isinstance(node, DateBound):
            t = doc_time_ms(doc)
            return t < node.ms if node.before else t >= node.ms
        st = self.state(doc)
        if st is None:
            return False
        if isinstance(node, IsRead):
            return st.is_read == node.read
        assert isinstance(node, InFolder)
        return normalize(st.folder_id) == node.folder

    def run(self, node: Node, want: int, after: bytes | None) -> list[bytes]:
        """The newest ``want`` matches of ``node`` older than ``after`` (the general path: sets)."""
        dynamic = _has_dynamic(node)
        if not dynamic:
            neg, s = self.as_set(node)
            matches = self.universe() - s if neg else s
        else:
            cand = self.candidates(node)
            matches = self.universe() if cand is None else cand
        if self.deleted:
            matches = matches - self.deleted
        if after is not None:
            matches = [d for d in matches if d < after]  # type: ignore[assignment]
        if not dynamic:
            return heapq.nlargest(want, matches)
        state_needed = _needs_state(node)
        out: list[bytes] = []
        for d in sorted(matches, reverse=True):
            if state_needed and self.state(d) is None:
                continue  # the message is gone for good: never a result
            if self.match(node, d):
                out.append(d)
                if len(out) >= want:
                    break
        return out


def _has_dynamic(node: Node) -> bool:
    if isinstance(node, (IsRead, InFolder, DateBound)):
        return True
    if isinstance(node, (And, Or)):
        return any(_has_dynamic(c) for c in node.children)
    if isinstance(node, Not):
        return _has_dynamic(node.child)
    return False


def _needs_state(node: Node) -> bool:
    if isinstance(node, (IsRead, InFolder)):
        return True
    if isinstance(node, (And, Or)):
        return any(_needs_state(c) for c in node.children)
    if isinstance(node, Not):
        return _needs_state(node.child)
    return False


# --------------------------------------------------------------------------- plans and the fast path
#
# The common search-box shapes (a word, a sender, two words, a word minus another) are a leaf or an AND
# of leaves and negated leaves, where each leaf is exactly a union of (field, term) posting lists. Those
# are answered without sets of every match: the newest hits come from walking the shortest cached posting
# list from its newest doc down and probing the others' frozensets, through C iterators (reversed, filter,
# filterfalse, islice) that stop after ``want`` hits; no Python code runs per candidate doc. Date bounds
# in the same AND are a range of ids (UUIDv7: the first 48 bits are the time); is:/in: leaves are checked
# per candidate, newest first, against the mail layer's state, until the page is full.


class Plan:
    """What a query text compiles to: its AST and, for fast-path shapes, the key sets of its positive and
    negated leaves (``pos`` is None otherwise). ``combined``: the index's ``_combined`` it was made for.
    ``mem_pos``/``mem_neg``: the same key sets as the memory segment's (field, term) keys (it has no
    any-field postings: ``*`` stands for every text field there). ``lo``/``hi``: the ids a date bound
    admits, ``lo <= id < hi`` (None: unbounded); ``empty``: the dates admit nothing. ``states``: the
    ``is:``/``in:`` leaves, as ``(leaf, negated)``."""

    __slots__ = ("node", "pos", "neg", "combined", "mem_pos", "mem_neg", "lo", "hi", "empty", "states")

    def __init__(self, node: Node, pos: tuple[Keys, ...] | None, neg: tuple[Keys, ...], combined: bool,
                 dates: tuple[tuple[DateBound, bool], ...] = (),
                 states: tuple[tuple[IsRead | InFolder, bool], ...] = ()) -> None:
        self.node = node
        self.pos = pos
        self.neg = neg
        self.combined = combined
        self.mem_pos = tuple(_mem_keys(k) for k in pos or ())
        self.mem_neg = tuple(_mem_keys(k) for k in neg)
        self.states = states
        # before:D is t < ms, after:D (and -before:D) is t >= ms; ids compare like their 48-bit time
        # prefix (an id longer than an equal prefix sorts after it), so the bounds are id prefixes.
        lo = max((b.ms for b, negd in dates if b.before == negd), default=None)
        hi = min((b.ms for b, negd in dates if b.before != negd), default=None)
        self.empty = (hi is not None and hi <= 0) or (lo is not None and lo >= _TIME_END) or (
            lo is not None and hi is not None and lo >= hi)
        self.lo = lo.to_bytes(6, "big") if lo is not None and 0 < lo < _TIME_END else None
        self.hi = hi.to_bytes(6, "big") if hi is not None and 0 < hi < _TIME_END else None


def plan_for(ix: SearchIndex, query: str) -> Plan:
    """The plan of ``query`` (cached per index: parsing is ~3-10 µs, a cache hit ~0.1 µs). Raises
    :class:`QuerySyntaxError` as :func:`parse` does (errors are not cached). Caller holds the index lock."""
    plans = ix._plans
    combined = ix._combined
    plan = plans.get(query) if isinstance(query, str) else None
    if plan is not None and plan.combined == combined:
        return plan
    node = parse(query)
    plan = make_plan(node, combined)
    if len(plans) >= _PLAN_CACHE_ENTRIES:
        del plans[next(iter(plans))]  # oldest first: repeated queries are re-inserted soon enough
    plans[query] = plan
    return plan


def make_plan(node: Node, combined: bool) -> Plan:
    if isinstance(node, All):
        return Plan(node, None, (), combined)
    children = node.children if isinstance(node, And) else (node,)
    pos: list[Keys] = []
    neg: list[Keys] = []
    dates: list[tuple[DateBound, bool]] = []
    states: list[tuple[IsRead | InFolder, bool]] = []
    for c in children:
        negated = isinstance(c, Not)
        leaf = c.child if negated else c  # type: ignore[union-attr]
        if isinstance(leaf, DateBound):
            dates.append((leaf, negated))
            continue
        if isinstance(leaf, (IsRead, InFolder)):
            states.append((leaf, negated))
            continue
        keys = leaf_keys(leaf, combined)
        if keys is None:
            return Plan(node, None, (), combined)
        (neg if negated else pos).append(keys)
    # No positive word (``-spam``, ``is:unread``, ``in:inbox before:2024-01-01``): the walk is over every
    # doc, newest first (``pos == ()``: the universe list).
    return Plan(node, tuple(pos), tuple(neg), combined, tuple(dates), tuple(states))


def leaf_keys(node: Node, combined: bool) -> Keys | None:
    """(field, term) keys whose doc sets' union is exactly ``node``'s matches, or None if ``node`` is not
    such a leaf (phrases, multi-token words, ``@`` values searched in every field). ``combined``: bare
    words may use the any-field (``*``) blocks."""
    if isinstance(node, HasAttachment):
        return ((META, "attachment"),)
    if isinstance(node, Or):
        # an OR of such leaves is one too: the union of their keys (``a OR b`` walks one merged list)
        out: list[tuple[str, str]] = []
        for c in node.children:
            keys = leaf_keys(c, combined)
            if keys is None:
                return None
            out += (k for k in keys if k not in out)
        return tuple(out)
    if not isinstance(node, Term):
        return None
    sp = node.special
    if node.field in ADDRESS_FIELDS and sp is not None and "@" in sp:
        return ((node.field, sp),)  # a whole address, exactly (from:bob@x.org): one special
    if len(node.tokens) != 1:
        return None
    tok = node.tokens[0]
    if node.field is None:
        if sp is not None and "@" in sp:
            return None  # address fields then match only the special, other fields the word
        terms = [tok] if sp is None or sp == tok else [tok, sp]
        if combined:
            return tuple((ANY, t) for t in terms)
        keys = [(f, tok) for f in TEXT_FIELDS]
        if sp is not None and sp != tok:
            keys += [(f, sp) for f in TEXT_FIELDS if f in SPECIAL_FIELDS]
        return tuple(keys)
    keys = []
    special = sp if node.field in SPECIAL_FIELDS else None
    if special is not None:
        keys.append((node.field, special))
    if not (special is not None and node.field in ADDRESS_FIELDS and "@" in special):
        if special != tok:
            keys.append((node.field, tok))
    return tuple(keys)


def _mem_keys(keys: Keys) -> Keys:
    return tuple((f, term) for field, term in keys for f in (TEXT_FIELDS if field == ANY else (field,)))


def _mem_docs(mem: dict[tuple[str, str], dict[bytes, bytes]], keys: Keys) -> set[bytes]:
    """The memory segment's docs having any of ``keys`` (a fresh set: callers may change it)."""
    found = list(filter(None, map(mem.get, keys)))  # C loop: ~6 keys for a bare word
    if len(found) == 1:
        return set(found[0])
    return set().union(*found)


def fast_ids(ix: SearchIndex, user: bytes, plan: Plan, want: int, after: bytes | None) -> list[bytes]:
    """Newest ``want`` docs older than ``after`` having every ``plan.pos`` key set and no ``plan.neg`` key
    set, inside the plan's date range and states, not deleted. Caller holds the index lock (the memory
    segment, caches and segment set are stable)."""
    pos = plan.pos
    assert pos is not None
    if plan.empty:
        return []
    hi = plan.hi
    if hi is not None and (after is None or hi < after):
        after = hi  # both are exclusive upper bounds
    lo = plan.lo
    deleted = ix._deleted_for(user)
    if RANKS and (len(pos) > 1 or plan.neg) and not plan.states:
        # A single list is a slice of its cached ids (below); an AND or a negation is one native walk.
        return _merge_mem(ix._rank_hits(user, pos, plan.neg, deleted, want, after, lo),
                          _mem_hits(ix, user, plan, deleted, after, lo, want), want)
    flushed = ix._flushed_docs
    lists = [flushed(user, k) for k in pos] if pos else [ix._all_flushed(user)]
    if len(lists) > 1:
        lists.sort(key=lambda td: len(td.asc))
    first = lists[0].asc
    it: Iterator[bytes] = iter(())
    if first and (len(lists) == 1 or all(td.asc for td in lists)):
        it = reversed(first)
        if after is not None:
            it = islice(it, len(first) - bisect_left(first, after), None)
        if lo is not None:
            it = takewhile(lo.__le__, it)  # lo <= id: the walk ends at the date bound
        for td in lists[1:]:
            it = filter(td.members().__contains__, it)
        for k in plan.neg:
            td = flushed(user, k)
            if td.asc:
                it = filterfalse(td.members().__contains__, it)
        if deleted:
            it = filterfalse(deleted.__contains__, it)
    mem_hits = _mem_hits(ix, user, plan, deleted, after, lo, None if plan.states else want)
    if plan.states:
        # Newest first over both parts, each candidate checked against the mail layer's state under one
        # snapshot, until the page is full.
        stream = heapq.merge(mem_hits, it, reverse=True) if mem_hits else it
        with ix.db.snapshot() as snap:
            return _with_states(ix, user, snap, plan.states, iter(stream), want)
    return _merge_mem(list(islice(it, want)), mem_hits, want)


def _merge_mem(hits: list[bytes], mem_hits: list[bytes], want: int) -> list[bytes]:
    """The newest ``want`` of two newest-first lists of distinct docs (flushed hits, memory hits)."""
    if not mem_hits:
        return hits
    got = mem_hits
    if hits and got[-1] < hits[0]:  # the two parts interleave (usually every memory doc is newer)
        got += hits
        got.sort(reverse=True)
    else:
        got += hits
    del got[want:]
    return got


def _mem_hits(
    ix: SearchIndex, user: bytes, plan: Plan, deleted: set[bytes], after: bytes | None, lo: bytes | None,
    want: int | None = None,
) -> list[bytes]:
    """The plan's newest ``want`` matches (all if None; at least ``want`` when there are) in the memory
    segment (recent docs not flushed yet: a few hundred at most), newest first, states not checked. A doc
    is in memory or in one flushed segment, never both, so each side is filtered by its own negated
    postings."""
    if user not in ix._mem.docs:
        return []
    leaf = ix._mem_leaf
    if len(plan.mem_pos) < 2:
        # One leaf (or none: every held doc): its cached newest-first list, filtered through C iterators
        # that stop at ``want`` (no set built, nothing sorted); unfiltered, a slice of it.
        newest = ix._mem_newest(user, plan.mem_pos[0] if plan.mem_pos else ())
        if after is None and lo is None and not deleted and not plan.mem_neg:
            return newest[:want]
        it: Iterator[bytes] = iter(newest)
        if after is not None:
            it = dropwhile(after.__le__, it)  # ids >= after: on earlier pages
        if lo is not None:
            it = takewhile(lo.__le__, it)
        for k in plan.mem_neg:
            it = filterfalse(leaf(user, k).__contains__, it)
        if deleted:
            it = filterfalse(deleted.__contains__, it)
        return list(it if want is None else islice(it, want))
    # Two or more positive leaves: intersect their cached sets (a few dozen docs each), then sort.
    cand: frozenset[bytes] | set[bytes] = leaf(user, plan.mem_pos[0])
    for k in plan.mem_pos[1:]:
        if not cand:
            return []
        cand = cand & leaf(user, k)  # & iterates over the smaller set
    for k in plan.mem_neg:
        cand = cand - leaf(user, k)
    if after is not None:
        cand = set(filter(after.__gt__, cand))  # d < after, at C speed
    if lo is not None:
        cand = set(filter(lo.__le__, cand))
    if deleted:
        cand = cand - deleted  # C set operations: no Python code per doc
    return sorted(cand, reverse=True)


def _with_states(
    ix: SearchIndex, user: bytes, snap: Any, states: tuple[tuple[IsRead | InFolder, bool], ...],
    stream: Iterator[bytes], want: int,
) -> list[bytes]:
    """The first ``want`` docs of ``stream`` whose state satisfies every ``(leaf, negated)``. States are
    looked up in chunks of exactly the hits still missing (``ix.state_lookup_many`` when the mail layer
    provides it: one batched engine read), so no doc is looked up that a one-by-one walk would not."""
    lookup = ix.state_lookup
    many = ix.state_lookup_many
    folders: dict[str, str] = {}  # folder id -> normalised, per query
    out: list[bytes] = []
    while len(out) < want:
        chunk = list(islice(stream, want - len(out)))
        if not chunk:
            break
        found = many(user, chunk, snap) if many is not None else [lookup(user, d, snap) for d in chunk]
        for d, st in zip(chunk, found, strict=True):
            if st is None:
                continue  # the message is gone for good: never a result
            for leaf, negated in states:
                if isinstance(leaf, IsRead):
                    ok = st.is_read == leaf.read
                else:
                    f = folders.get(st.folder_id)
                    if f is None:
                        f = folders[st.folder_id] = normalize(st.folder_id)
                    ok = f == leaf.folder
                if ok == negated:
                    break
            else:
                out.append(d)
    return out


def evaluate(ix: SearchIndex, user: bytes, plan: Plan, want: int, after: bytes | None) -> list[bytes]:
    """The newest ``want`` matches of ``plan`` older than ``after``. Caller holds the index lock."""
    if plan.pos is not None:
        return fast_ids(ix, user, plan, want, after)
    with ix.db.snapshot() as snap:
        return _Evaluator(ix, user, snap).run(plan.node, want, after)
