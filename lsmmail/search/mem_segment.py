"""The in-memory segment: committed docs not yet in a flushed segment, per user.

Each doc is kept as it was analysed: its fields' token streams in stored form (``tokenizer.RawStream``,
the same bytes as its forward record), not as per-term postings. A flush inverts them in C
(``_segment_build``), so a bulk import adds no Python object per (term, doc). Queries need the postings
``(field, term) -> {doc: encoded positions}``: :attr:`_MemSegment.postings` builds them on first use and
then keeps them up to date, grouping only the docs added since (so the first query after an import pays
the grouping once, ~50 µs per doc, and a delivery between two queries pays it for one doc).
"""

from __future__ import annotations

from ._group import NO_POSITIONS, group_raw
from .documents import Fields, RawFields


def group_fields(fields: RawFields) -> Fields:
    """``field -> term -> encoded position run`` of one doc's streams (what ``tokenizer.group_encoded``
    gives for the same streams as lists)."""
    out: Fields = {}
    for code, (raw, n, specials) in fields.items():
        f = group_raw(raw, n)
        for special in specials:
            if special not in f:
                f[special] = NO_POSITIONS
        if f:
            out[code] = f
    return out


def stream_weight(fields: RawFields) -> int:
    """Tokens + specials of one doc: an upper bound of its postings, what ``size`` counts."""
    return sum(n + len(specials) for _, n, specials in fields.values())


class _MemSegment:
    """Docs of committed index updates not yet in a flushed segment, per user (see the module docstring)."""

    def __init__(self) -> None:
        self.docs: dict[bytes, dict[bytes, RawFields]] = {}
        self.size = 0  # tokens + specials held (an upper bound of the (term, doc) postings)
        self._post: dict[bytes, dict[tuple[str, str], dict[bytes, bytes]]] = {}
        self._grouped: dict[bytes, dict[bytes, Fields]] = {}  # docs whose postings are in _post
        self._ungrouped: list[tuple[bytes, bytes]] = []  # (user, doc) added since _post was last built

    def add(self, user: bytes, doc: bytes, fields: RawFields) -> None:
        docs = self.docs.get(user)
        if docs is None:
            docs = self.docs[user] = {}
        elif doc in docs:
            self.remove(user, doc)
            docs = self.docs.setdefault(user, {})
        docs[doc] = fields
        self.size += stream_weight(fields)
        self._ungrouped.append((user, doc))

    def remove(self, user: bytes, doc: bytes) -> None:
        fields = self.docs.get(user, {}).pop(doc, None)
        if fields is None:
            return
        self.size -= stream_weight(fields)
        grouped = self._grouped.get(user, {}).pop(doc, None)
        if grouped is not None:
            post = self._post[user]
            for field, terms in grouped.items():
                for term in terms:
                    d = post[(field, term)]
                    del d[doc]
                    if not d:
                        del post[(field, term)]
        if not self.docs[user]:
            del self.docs[user]
            self._post.pop(user, None)
            self._grouped.pop(user, None)

    @property
    def postings(self) -> dict[bytes, dict[tuple[str, str], dict[bytes, bytes]]]:
        """user -> (field, term) -> {doc: encoded positions} of every doc held (built lazily)."""
        if self._ungrouped:
            for user, doc in self._ungrouped:
                fields = self.docs.get(user, {}).get(doc)
                grouped_docs = self._grouped.setdefault(user, {})
                if fields is None or doc in grouped_docs:
                    continue  # removed since, or re-added and already grouped in this pass
                grouped = grouped_docs[doc] = group_fields(fields)
                post = self._post.setdefault(user, {})
                get = post.get
                for field, terms in grouped.items():
                    # ~250 terms per corpus message: no setdefault (it would build a dict per term)
                    for term, run in terms.items():
                        key = (field, term)
                        d = get(key)
                        if d is None:
                            post[key] = {doc: run}
                        else:
                            d[doc] = run
            self._ungrouped.clear()
        return self._post
