"""A brute-force model of the search semantics, written independently of the index's evaluator.

It scans every document's analysed fields (the tokenizer's output) and evaluates the query AST directly,
so a difference from SearchIndex points at postings, segments, merging, deletion or set evaluation.
"""

from __future__ import annotations

from lsmmail.search.index import DocState, doc_time_ms
from lsmmail.search.query import All, And, DateBound, HasAttachment, InFolder, IsRead, Node, Not, Or, Term
from lsmmail.search.tokenizer import ADDRESS_FIELDS, SPECIAL_FIELDS, TEXT_FIELDS, normalize

Fields = dict[str, dict[str, list[int]]]


def phrase_in(terms: dict[str, list[int]], tokens: tuple[str, ...]) -> bool:
    if len(tokens) == 1:
        return tokens[0] in terms
    if any(t not in terms for t in tokens):
        return False
    return any(all(p + i in terms[t] for i, t in enumerate(tokens)) for p in terms[tokens[0]])


def term_matches(fields: Fields, node: Term) -> bool:
    for f in [node.field] if node.field else TEXT_FIELDS:
        terms = fields.get(f, {})
        special = node.special if f in SPECIAL_FIELDS else None
        if special is not None and special in terms:
            return True
        only_exact = special is not None and f in ADDRESS_FIELDS and "@" in special
        if node.tokens and not only_exact and phrase_in(terms, node.tokens):
            return True
    return False


def needs_state(node: Node) -> bool:
    if isinstance(node, (IsRead, InFolder)):
        return True
    if isinstance(node, (And, Or)):
        return any(needs_state(c) for c in node.children)
    return isinstance(node, Not) and needs_state(node.child)


def matches(node: Node, doc_id: bytes, fields: Fields, state: DocState | None) -> bool:
    if isinstance(node, Term):
        return term_matches(fields, node)
    if isinstance(node, HasAttachment):
        return "attachment" in fields.get("h", {})
    if isinstance(node, All):
        return True
    if isinstance(node, And):
        return all(matches(c, doc_id, fields, state) for c in node.children)
    if isinstance(node, Or):
        return any(matches(c, doc_id, fields, state) for c in node.children)
    if isinstance(node, Not):
        return not matches(node.child, doc_id, fields, state)
    if isinstance(node, DateBound):
        t = doc_time_ms(doc_id)
        return t < node.ms if node.before else t >= node.ms
    if state is None:
        return False
    if isinstance(node, IsRead):
        return state.is_read == node.read
    assert isinstance(node, InFolder)
    return normalize(state.folder_id) == node.folder


def brute_force(
    node: Node, docs: dict[bytes, Fields], states: dict[bytes, DocState | None] | None = None
) -> list[bytes]:
    """Every matching doc id, newest first."""
    states = states or {}
    stateful = needs_state(node)
    out = []
    for doc_id, fields in docs.items():
        st = states.get(doc_id)
        if stateful and st is None:
            continue
        if matches(node, doc_id, fields, st):
            out.append(doc_id)
    return sorted(out, reverse=True)


def search_all(index, user: bytes, query: str, page: int = 50) -> list[bytes]:
    """Every result of ``query``, following cursors page by page."""
    out: list[bytes] = []
    cursor = None
    while True:
        ids, cursor = index.search(user, query, limit=page, cursor=cursor)
        out.extend(ids)
        if cursor is None:
            return out
        assert len(ids) == page
