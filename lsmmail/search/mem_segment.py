"""The in-memory segment: committed docs not yet in a flushed segment, per user.

Each doc is kept as its forward record (``postings.encode_forward_raw``, format 2: each field's token
stream and specials), the very bytes the delivery batch wrote, not as per-term postings. A flush hands the
records to one C call (``_segment_build.build_segment_fwd``) that reads the streams in place, so neither a
delivery nor a flush does Python work per field, term or posting (an import's main process only keeps a
reference to bytes the worker process made). Queries need the postings
``(field, term) -> {doc: encoded positions}``: :attr:`_MemSegment.postings` builds them on first use and
then keeps them up to date, grouping only the docs added since (so the first query after an import pays
the grouping once, ~50 µs per doc, and a delivery between two queries pays it for one doc).
"""

from __future__ import annotations

from ._group import NO_POSITIONS, group_raw
from .documents import Fields, RawFields
from .postings import decode_forward_raw


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
        #: user -> doc -> (forward record, stream_weight of its streams)
        self.docs: dict[bytes, dict[bytes, tuple[bytes, int]]] = {}
        self.size = 0  # tokens + specials held (an upper bound of the (term, doc) postings)
        self._post: dict[bytes, dict[tuple[str, str], dict[bytes, bytes]]] = {}
        self._grouped: dict[bytes, dict[bytes, Fields]] = {}  # docs whose postings are in _post
        self._ungrouped: list[tuple[bytes, bytes]] = []  # (user, doc) added since _post was last built

    def add(self, user: bytes, doc: bytes, forward: bytes, weight: int) -> None:
        """Hold ``doc``'s forward record (format 2, already checked: the caller made it or decoded it);
        ``weight`` is ``stream_weight`` of its streams."""
        docs = self.docs.get(user)
        if docs is None:
            docs = self.docs[user] = {}
        elif doc in docs:
            self.remove(user, doc)
            docs = self.docs.setdefault(user, {})
        docs[doc] = (forward, weight)
        self.size += weight
        self._ungrouped.append((user, doc))

    def remove(self, user: bytes, doc: bytes) -> None:
        held = self.docs.get(user, {}).pop(doc, None)
        if held is None:
            return
        self.size -= held[1]
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
                held = self.docs.get(user, {}).get(doc)
                grouped_docs = self._grouped.setdefault(user, {})
                if held is None or doc in grouped_docs:
                    continue  # removed since, or re-added and already grouped in this pass
                grouped = grouped_docs[doc] = group_fields(decode_forward_raw(held[0]))
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
