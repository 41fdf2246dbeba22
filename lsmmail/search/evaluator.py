"""Query evaluation: one query against one snapshot, over the memory segment and the flushed segments."""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import postings as P
from ._group import decode_positions
from .documents import DocState, doc_time_ms
from .postings import ANY
from .query import All, And, DateBound, HasAttachment, InFolder, IsRead, Node, Not, Or, Term
from .segment_reads import _SEG_CACHE_ENTRIES
from .tokenizer import ADDRESS_FIELDS, MAX_TOKEN_BYTES, META, SPECIAL_FIELDS, TEXT_FIELDS, normalize

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

    def _blocks(self, field: str, term: str) -> Iterable[tuple[list[bytes], bytes]]:
        for _, table, value in self.ix._blocks(self.user, field, term, self.snap):
            yield table, value

    def docs(self, field: str, term: str) -> set[bytes]:
        ck = (field, term, False)
        hit = self.cache.get(ck)
        if hit is not None:
            return hit  # type: ignore[return-value]
        out: set[bytes] = set()
        if len(term.encode("utf-8")) <= MAX_TOKEN_BYTES:
            mem = self.mem_post.get((field, term))
            if mem:
                out.update(mem)
            sk = (self.user, field, term)
            seg_docs = self.ix._seg_docs.get(sk)
            if seg_docs is None:
                found: set[bytes] = set()
                for table, block in self._blocks(field, term):
                    ords = P.decode_ordinals(block, len(table))
                    found.update([table[o] for o in ords])
                seg_docs = frozenset(found)
                if len(self.ix._seg_docs) >= _SEG_CACHE_ENTRIES:
                    self.ix._seg_docs.clear()
                self.ix._seg_docs[sk] = seg_docs
            out.update(seg_docs)
        self.cache[ck] = out
        return out

    def positions(self, field: str, term: str) -> dict[bytes, list[int]]:
        ck = (field, term, True)
        hit = self.cache.get(ck)
        if hit is not None:
            return hit  # type: ignore[return-value]
        out: dict[bytes, list[int]] = {}
        if len(term.encode("utf-8")) <= MAX_TOKEN_BYTES:
            mem = self.mem_post.get((field, term))
            if mem:
                for d, run in mem.items():
                    out[d] = decode_positions(run)
            for table, block in self._blocks(field, term):
                for o, pos in P.decode_block(block, len(table)):
                    out[table[o]] = pos
        self.cache[ck] = out
        return out

    def phrase(self, field: str, tokens: tuple[str, ...]) -> set[bytes]:
        if len(tokens) == 1:
            return self.docs(field, tokens[0])
        sets = sorted((self.docs(field, t) for t in set(tokens)), key=len)
        cand = set(sets[0]).intersection(*sets[1:])
        if not cand:
            return cand
        plists = [self.positions(field, t) for t in tokens]
        out = set()
        for d in cand:
            first = plists[0][d]
            rest = [set(pl[d]) for pl in plists[1:]]
            if any(all(p + i in s for i, s in enumerate(rest, 1)) for p in first):
                out.add(d)
        return out

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
            got = self.term(node) if isinstance(node, Term) else self.docs(META, "attachment")
            self.leaf[node] = got
        return got

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

    # -- fast path: a leaf, or an AND of leaves and negated leaves (the common search-box shapes)

    def leaf_keys(self, node: Node) -> list[tuple[str, str]] | None:
        """(field, term) keys whose doc sets' union is exactly ``node``'s matches, or None if ``node`` is
        not such a leaf (phrases, multi-token words, ``@`` values searched in every field)."""
        if isinstance(node, HasAttachment):
            return [(META, "attachment")]
        if not isinstance(node, Term) or len(node.tokens) != 1:
            return None
        tok, sp = node.tokens[0], node.special
        if node.field is None:
            if sp is not None and "@" in sp:
                return None  # address fields then match only the special, other fields the word
            terms = [tok] if sp is None or sp == tok else [tok, sp]
            if self.ix._combined:
                return [(ANY, t) for t in terms]
            keys = [(f, tok) for f in TEXT_FIELDS]
            if sp is not None and sp != tok:
                keys += [(f, sp) for f in TEXT_FIELDS if f in SPECIAL_FIELDS]
            return keys
        keys = []
        special = sp if node.field in SPECIAL_FIELDS else None
        if special is not None:
            keys.append((node.field, special))
        if not (special is not None and node.field in ADDRESS_FIELDS and "@" in special):
            if special != tok:
                keys.append((node.field, tok))
        return keys

    def _mem_docs(self, keys: list[tuple[str, str]]) -> set[bytes]:
        out: set[bytes] = set()
        mem = self.mem_post
        if not mem:
            return out
        for field, term in keys:
            for f in TEXT_FIELDS if field == ANY else (field,):
                got = mem.get((f, term))
                if got:
                    out.update(got)
        return out

    def _seg_union(self, keys: list[tuple[str, str]]) -> dict[int, list[int]]:
        parts = [self.ix._seg_ords(self.user, f, t, self.snap) for f, t in keys]
        if len(parts) == 1:
            return parts[0]
        out: dict[int, set[int]] = {}
        for part in parts:
            for seg, ords in part.items():
                out.setdefault(seg, set()).update(ords)
        return {seg: sorted(o) for seg, o in out.items()}

    def fast(self, node: Node, want: int, after: bytes | None) -> list[bytes] | None:
        """Newest ``want`` matches of a leaf or an AND of leaves (at least one not negated), or None.

        Per flushed segment, walks the shortest positive ordinal list from its highest ordinal down and
        probes the others by bisection, stopping at ``want`` hits: a page costs O(want log n) per segment
        after the (cached) decode, never a materialised set of every match.
        """
        children = node.children if isinstance(node, And) else (node,)
        pos_keys: list[list[tuple[str, str]]] = []
        neg_keys: list[list[tuple[str, str]]] = []
        for c in children:
            neg = isinstance(c, Not)
            keys = self.leaf_keys(c.child if neg else c)  # type: ignore[union-attr]
            if keys is None:
                return None
            (neg_keys if neg else pos_keys).append(keys)
        if not pos_keys:
            return None
        deleted = self.deleted
        # memory segment: small, plain sets
        mem_sets = [self._mem_docs(k) for k in pos_keys]
        found: list[bytes] = []
        if all(mem_sets):
            mem_sets.sort(key=len)
            cand = mem_sets[0].intersection(*mem_sets[1:])
            for k in neg_keys:
                cand -= self._mem_docs(k)
            found = [d for d in cand if d not in deleted and (after is None or d < after)]
            if len(found) > want:
                found = heapq.nlargest(want, found)
        # flushed segments
        pos_segs = [self._seg_union(k) for k in pos_keys]
        neg_segs = [self._seg_union(k) for k in neg_keys]
        for seg, table in self.tables.items():
            lists = []
            for ps in pos_segs:
                ords = ps.get(seg)
                if not ords:
                    break
                lists.append(ords)
            else:
                lists.sort(key=len)
                probes = lists[1:] + [ords for ns in neg_segs if (ords := ns.get(seg))]
                npos = len(lists) - 1
                first = lists[0]
                i = len(first) if after is None else bisect_left(first, bisect_left(table, after))
                if not probes:  # one list: its top ordinals are the answer, modulo deleted docs
                    need = want
                    while i > 0 and need > 0:
                        lo = max(0, i - need)
                        page = [table[o] for o in first[lo:i]]
                        if deleted:
                            page = [d for d in page if d not in deleted]
                        found += page
                        need -= len(page)
                        i = lo
                    continue
                his = [len(p) for p in probes]
                got = 0
                while i > 0 and got < want:
                    i -= 1
                    o = first[i]
                    ok = True
                    for j, probe in enumerate(probes):
                        k = bisect_right(probe, o, 0, his[j])
                        his[j] = k
                        if (k > 0 and probe[k - 1] == o) != (j < npos):
                            ok = False
                            break
                    if ok:
                        d = table[o]
                        if d not in deleted:
                            found.append(d)
                            got += 1
        found.sort(reverse=True)
        del found[want:]
        return found

    def run(self, node: Node, want: int, after: bytes | None) -> list[bytes]:
        if not isinstance(node, All):
            hits = self.fast(node, want, after)
            if hits is not None:
                return hits
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
