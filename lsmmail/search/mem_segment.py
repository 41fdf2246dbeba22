"""The in-memory segment: postings of committed docs not yet in a flushed segment, per user."""

from __future__ import annotations

from .documents import Fields


class _MemSegment:
    """Postings of committed docs not yet in a flushed segment, per user."""

    def __init__(self) -> None:
        self.postings: dict[bytes, dict[tuple[str, str], dict[bytes, bytes]]] = {}
        self.docs: dict[bytes, dict[bytes, Fields]] = {}
        self.size = 0  # number of (term, doc) postings held

    def add(self, user: bytes, doc: bytes, fields: Fields) -> None:
        docs = self.docs.setdefault(user, {})
        if doc in docs:
            self.remove(user, doc)
            docs = self.docs.setdefault(user, {})
        docs[doc] = fields
        post = self.postings.setdefault(user, {})
        get = post.get
        for field, terms in fields.items():
            # ~250 terms per corpus message: no setdefault (it would build a throw-away dict per term)
            for term, run in terms.items():
                key = (field, term)
                d = get(key)
                if d is None:
                    post[key] = {doc: run}
                else:
                    d[doc] = run
            self.size += len(terms)

    def remove(self, user: bytes, doc: bytes) -> None:
        fields = self.docs.get(user, {}).pop(doc, None)
        if fields is None:
            return
        post = self.postings[user]
        for field, terms in fields.items():
            for term in terms:
                d = post[(field, term)]
                del d[doc]
                if not d:
                    del post[(field, term)]
                self.size -= 1
        if not self.docs[user]:
            del self.docs[user]
            del self.postings[user]

