"""SearchIndex: segment-buffered postings over the engine (design and crash argument in docs/search.md).

Delivery path
    :meth:`SearchIndex.index` tokenises the document and puts ONE key into the caller's batch: the doc's
    *forward record* (every term with its positions). After the batch commits, :meth:`committed` adds the
    doc's postings to the in-memory segment. Cost on the delivery path: one key of ~1-3 bytes per token,
    instead of one engine key per (term, message).

Flush
    When the in-memory segment holds :attr:`flush_postings` postings (or on :meth:`flush`), it is written as
    one immutable segment per user in ONE atomic batch: a doc table (sorted doc ids; postings refer to docs
    by ordinal), one delta-encoded posting block per (field, term), the deletion of the flushed docs'
    forward records, and the new next-segment counter. Either all of it is durable or none of it is, so each
    doc is at every instant in exactly one of: a forward record (replayed into memory at open) or a segment.

Merge
    When a user has more than :attr:`max_segments` segments, the :attr:`merge_fanin` smallest are rewritten as
    one, dropping unindexed docs and their deletion markers, in one atomic batch.

Queries
    Leaves (words, phrases, ``has:``) are resolved to sets of doc ids from the memory segment plus one prefix
    scan per (field, term) over the flushed blocks; AND/OR/NOT are set operations; ``is:``/``in:`` ask
    ``state_lookup`` (the mail layer's truth) per candidate, newest first, stopping once the page is full;
    dates come from the UUIDv7 id. Unindexed docs are removed with the per-user deleted set.

Thread safety: every public method may be called from any thread; one lock serialises the index's own
state (queries, commits, flushes and merges). The engine provides the atomicity of each batch.
"""

from __future__ import annotations

import base64
import heapq
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, NamedTuple

from ..engine.batch import WriteBatch
from ..engine.errors import Corruption, InvalidArgument
from . import postings as P
from ._group import decode_positions
from .query import All, And, DateBound, HasAttachment, InFolder, IsRead, Node, Not, Or, Term, parse
from .tokenizer import (
    ADDRESS_FIELDS,
    MAX_TOKEN_BYTES,
    META,
    SPECIAL_FIELDS,
    TEXT_FIELDS,
    analyze_streams,
    group_encoded,
    normalize,
)

#: field -> term -> encoded position run (``_group.encode_positions``): the memory segment's form.
Fields = dict[str, dict[str, bytes]]

#: Bound of the flushed-term cache: 20,000 terms x a few hundred ids ~ tens of MB at most.
_SEG_CACHE_ENTRIES = 20_000
#: Budget of the decoded-ordinals cache, in cached ordinals summed over entries: 1M ordinals is ~10-40 MB
#: of Python lists (ints < 256 are shared), i.e. every term of ~2,000 typical mailboxes' worth of hot words.
_ORDS_CACHE_BUDGET = 1_000_000

#: The virtual "any text field" code: per segment, one ordinals-only block per term holding the union of
#: the term's docs over TEXT_FIELDS, so a bare word is ONE prefix scan instead of six (docs/search.md).
ANY = "*"
_TEXT_FIELD_SET = frozenset(TEXT_FIELDS)


@dataclass(frozen=True)
class IndexedDocument:
    """What the mail layer extracts from a message for indexing (see docs/search.md, "Fields")."""

    subject: str = ""
    from_: list[tuple[str, str]] = dc_field(default_factory=list)  # (display name, address) pairs
    to: list[tuple[str, str]] = dc_field(default_factory=list)
    cc: list[tuple[str, str]] = dc_field(default_factory=list)
    body_text: str = ""  # the text/plain parts joined
    body_html: str = ""  # the text/html parts joined (stripped here; indexed only if body_text is blank)
    attachment_names: list[str] = dc_field(default_factory=list)
    has_attachment: bool = False


class DocState(NamedTuple):
    """The mail layer's current view of a message, for ``is:`` and ``in:``."""

    folder_id: str
    is_read: bool


StateLookup = Callable[[bytes, bytes, Any], DocState | None]


@dataclass(frozen=True)
class _Pending:
    kind: str  # "index" | "unindex"
    user: bytes
    doc: bytes
    fields: Fields | None


def doc_time_ms(doc_id: bytes) -> int:
    """The UUIDv7 timestamp: the first 48 bits, big-endian Unix milliseconds."""
    return int.from_bytes(doc_id[:6], "big")


def _check_doc(doc_id: bytes) -> bytes:
    if not isinstance(doc_id, bytes) or len(doc_id) != P.DOC_ID_LEN:
        raise InvalidArgument("doc_id must be 16 bytes (a UUIDv7)")
    return doc_id


def encode_cursor(doc_id: bytes) -> str:
    return "1" + base64.urlsafe_b64encode(doc_id).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> bytes:
    """The doc id a cursor resumes after. ``InvalidArgument`` (a ValueError) if it is not one of ours."""
    try:
        if not cursor.startswith("1"):
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor[1:] + "==")
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"not a search cursor: {cursor!r}") from None
    if len(raw) != P.DOC_ID_LEN or encode_cursor(raw) != cursor:
        raise InvalidArgument(f"not a search cursor: {cursor!r}")
    return raw


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (prefix never all 0xff here)."""
    p = bytearray(prefix)
    while p[-1] == 0xFF:
        p.pop()
    p[-1] += 1
    return bytes(p)


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


class SearchIndex:
    """The search index of every user of one ``lsmmail.DB`` (see the module docstring).

    ``state_lookup(user_key, doc_id, snapshot)`` returns the message's :class:`DocState`, or None when the
    message no longer exists. It is called only for queries with ``is:`` or ``in:``, for candidates in
    newest-first order, with the snapshot the query reads under.
    """

    def __init__(
        self,
        db: Any,
        state_lookup: StateLookup,
        *,
        flush_postings: int = 300_000,
        max_segments: int = 8,
        merge_fanin: int = 4,
        flush_sync: bool = False,
    ) -> None:
        if flush_postings < 1 or max_segments < 1 or merge_fanin < 2:
            raise InvalidArgument("flush_postings >= 1, max_segments >= 1 and merge_fanin >= 2 required")
        self.db = db
        self.state_lookup = state_lookup
        #: 300k postings ~ 1,000 typical messages ~ 60 MB of Python dicts at most; a flush then writes
        #: one batch of a few MB, which keeps the segment count (and prefix scans per term) low.
        self.flush_postings = flush_postings
        self.max_segments = max_segments
        self.merge_fanin = merge_fanin
        #: Flushes need no fsync of their own: the WAL is recovered as a prefix, so a lost flush batch
        #: leaves the forward records it would have deleted, and the next synced write makes it durable.
        self.flush_sync = flush_sync
        self._lock = threading.RLock()
        self._mem = _MemSegment()
        self._tables: dict[bytes, dict[int, list[bytes]]] = {}  # per user, loaded lazily
        self._deleted: dict[bytes, set[bytes]] = {}  # per user, loaded lazily
        #: (user, field, term) -> doc ids in flushed segments. Segments are immutable, so entries stay valid
        #: until the next flush, merge or rebuild, which clear it. Helps paging (each page repeats the query).
        self._seg_docs: dict[tuple[bytes, str, str], frozenset[bytes]] = {}
        #: (user, field, term) -> {segment: ascending ordinals}: decoded flushed postings, valid until the
        #: next flush/merge/rebuild (segments are immutable). FIFO-evicted past _ORDS_CACHE_BUDGET ordinals.
        self._ords: dict[tuple[bytes, str, str], dict[int, list[int]]] = {}
        self._ords_size = 0
        raw = db.get(P.META_NEXT_SEGMENT)
        self._next_seg = P.decode_u64(raw) if raw is not None else 1
        # Segments written before the any-field blocks existed lack them: then bare words take the
        # six-field path until `reindex` has rebuilt every user (mark_current()).
        if db.get(P.META_FORMAT) is not None:
            self._combined = True
        else:
            self._combined = next(iter(db.scan(prefix=P.TAG_SEGMENT)), None) is None
        for key, value in db.scan(prefix=P.TAG_SMALL + P.FORWARD):
            user, doc = P.split_user_key(key, 2)
            if len(doc) != P.DOC_ID_LEN:
                raise Corruption(f"forward record key with a bad doc id: {key[:40]!r}")
            self._mem.add(user, doc, P.decode_forward_encoded(value))

    def _drop_caches(self) -> None:
        self._seg_docs.clear()
        self._ords.clear()
        self._ords_size = 0

    def mark_current(self) -> None:
        """Record that every user's segments carry the any-field blocks (after rebuilding every user)."""
        with self._lock:
            batch = WriteBatch()
            batch.put(P.META_FORMAT, P.encode_u64(P.INDEX_FORMAT))
            self.db.write(batch, sync=True)
            self._combined = True

    def _blocks(self, user: bytes, field: str, term: str, snap: Any) -> list[tuple[int, list[bytes], bytes]]:
        """``(segment, doc table, block)`` of (field, term) in each of ``user``'s flushed segments.

        One point get per segment rather than a prefix scan: gets are bloom-filtered (an absent term costs
        ~2 µs per segment) and measured ~4 µs against ~10-70 µs for a scan (docs/search.md); the segment
        count stays at most ``max_segments``.
        """
        prefix = P.term_prefix(user, field, term)
        out = []
        for seg, table in self._tables_for(user).items():
            value = self.db.get(prefix + P.encode_u64(seg), snapshot=snap)
            if value is not None:
                out.append((seg, table, value))
        return out

    def _seg_ords(self, user: bytes, field: str, term: str, snap: Any) -> dict[int, list[int]]:
        """``{segment: ascending ordinals}`` of (field, term) in ``user``'s flushed segments (cached)."""
        ck = (user, field, term)
        got = self._ords.get(ck)
        if got is not None:
            return got
        got = {}
        size = 0
        if len(term) * 4 <= MAX_TOKEN_BYTES or len(term.encode("utf-8")) <= MAX_TOKEN_BYTES:
            for seg, table, value in self._blocks(user, field, term, snap):
                ords = P.decode_ordinals(value, len(table))
                got[seg] = ords
                size += len(ords)
        self._ords_size += size + 1
        while self._ords and self._ords_size > _ORDS_CACHE_BUDGET:
            old = self._ords.pop(next(iter(self._ords)))
            self._ords_size -= sum(len(v) for v in old.values()) + 1
        self._ords[ck] = got
        return got

    # ------------------------------------------------------------------ delivery path

    def index(self, batch: WriteBatch, user_key: bytes, doc_id: bytes, doc: IndexedDocument) -> _Pending:
        """Add ``doc``'s forward record to ``batch``; call :meth:`committed` with the result after commit.

        Doc ids are never reused: index a doc id once (re-indexing a doc id that is still in the memory
        segment replaces it; after :meth:`unindex` an id stays deleted).
        """
        streams = analyze_streams(doc)
        batch.put(P.forward_key(user_key, _check_doc(doc_id)), P.encode_forward_streams(streams))
        fields = group_encoded(streams)
        return _Pending("index", user_key, doc_id, fields)

    def unindex(self, batch: WriteBatch, user_key: bytes, doc_id: bytes) -> _Pending:
        """Make ``doc_id`` unfindable once ``batch`` commits (a deletion marker + forward-record delete)."""
        batch.put(P.deleted_key(user_key, _check_doc(doc_id)), b"")
        batch.delete(P.forward_key(user_key, doc_id))
        return _Pending("unindex", user_key, doc_id, None)

    def committed(self, pending: object) -> None:
        """The batch holding ``pending`` was written: update memory (and flush if the segment is full)."""
        if not isinstance(pending, _Pending):
            raise InvalidArgument("committed() takes what index() or unindex() returned")
        with self._lock:
            if pending.kind == "index":
                assert pending.fields is not None
                self._mem.add(pending.user, pending.doc, pending.fields)
            else:
                self._mem.remove(pending.user, pending.doc)
                deleted = self._deleted.get(pending.user)
                if deleted is not None:
                    deleted.add(pending.doc)
            if self._mem.size >= self.flush_postings:
                self.flush()

    # ------------------------------------------------------------------ segments

    def _tables_for(self, user: bytes) -> dict[int, list[bytes]]:
        tables = self._tables.get(user)
        if tables is None:
            tables = {}
            for key, value in self.db.scan(prefix=P.segment_user_prefix(user) + P.DOC_TABLE):
                _, rest = P.split_user_key(key, 1)
                _, _, seg = P.parse_segment_key(rest)
                tables[seg] = P.decode_doc_table(value)
            self._tables[user] = tables
        return tables

    def _deleted_for(self, user: bytes) -> set[bytes]:
        deleted = self._deleted.get(user)
        if deleted is None:
            prefix = P.TAG_SMALL + P.DELETED + P.user_prefix(user)
            deleted = {key[len(prefix) :] for key, _ in self.db.scan(prefix=prefix)}
            self._deleted[user] = deleted
        return deleted

    def flush(self) -> None:
        """Persist the memory segment as one segment per user in one atomic batch, then merge if needed."""
        with self._lock:
            if not self._mem.docs:
                return
            seg = self._next_seg
            batch = WriteBatch()
            written: dict[bytes, list[bytes]] = {}
            for user, docs in self._mem.docs.items():
                ids = sorted(docs)
                ordinal = {d: i for i, d in enumerate(ids)}
                batch.put(P.doc_table_key(user, seg), P.encode_doc_table(ids))
                anyf: dict[str, list[int]] = {}
                head, tail = P.segment_user_prefix(user), b"\x00" + P.encode_u64(seg)
                for (field, term), plist in self._mem.postings[user].items():
                    items = sorted(plist.items()) if len(plist) > 1 else plist.items()
                    ords = [ordinal[d] for d, _ in items]
                    block = P.encode_block_runs(ords, [run for _, run in items])
                    batch.put(head + (field + term).encode("utf-8") + tail, block)  # == P.block_key(...)
                    if field in _TEXT_FIELD_SET:
                        got = anyf.get(term)
                        # most terms occur in one field: their ordinals are the any-field list as they are
                        anyf[term] = ords if got is None else sorted(set(got).union(ords))
                for term, ords in anyf.items():
                    batch.put(head + (ANY + term).encode("utf-8") + tail, P.encode_ordinals(ords))
                for d in ids:
                    batch.delete(P.forward_key(user, d))
                written[user] = ids
            batch.put(P.META_NEXT_SEGMENT, P.encode_u64(seg + 1))
            if self._combined:
                batch.put(P.META_FORMAT, P.encode_u64(P.INDEX_FORMAT))
            self.db.write(batch, sync=self.flush_sync)
            self._drop_caches()
            self._next_seg = seg + 1
            self._mem = _MemSegment()
            for user, ids in written.items():
                if user in self._tables:
                    self._tables[user][seg] = ids
            for user in written:
                self.maybe_merge(user)

    def maybe_merge(self, user_key: bytes) -> bool:
        """Merge the smallest segments of ``user_key`` while it has more than ``max_segments``."""
        merged = False
        with self._lock:
            while len(self._tables_for(user_key)) > self.max_segments:
                tables = self._tables_for(user_key)
                victims = sorted(tables, key=lambda s: (len(tables[s]), s))[: self.merge_fanin]
                self.merge(user_key, victims)
                merged = True
        return merged

    def merge(self, user_key: bytes, segments: Iterable[int] | None = None) -> None:
        """Rewrite ``segments`` (default: all) of one user as one segment without unindexed docs."""
        with self._lock:
            tables = self._tables_for(user_key)
            victims = set(tables if segments is None else segments)
            if not victims or not victims <= set(tables):
                return
            deleted = self._deleted_for(user_key)
            old_docs = [d for s in victims for d in tables[s]]
            new_ids = sorted(d for d in old_docs if d not in deleted)
            ordinal = {d: i for i, d in enumerate(new_ids)}
            seg = self._next_seg
            batch = WriteBatch()
            acc: dict[tuple[str, str], list[tuple[int, list[int]]]] = {}
            for key, value in self.db.scan(prefix=P.segment_user_prefix(user_key)):
                _, rest = P.split_user_key(key, 1)
                field, term, s = P.parse_segment_key(rest)
                if s not in victims:
                    continue
                batch.delete(key)
                if field == "#":
                    continue
                table = tables[s]
                for o, positions in P.decode_block(value, len(table)):
                    n = ordinal.get(table[o])
                    if n is not None:
                        acc.setdefault((field, term), []).append((n, positions))
            if new_ids:
                batch.put(P.doc_table_key(user_key, seg), P.encode_doc_table(new_ids))
                for (field, term), entries in acc.items():
                    entries.sort()
                    if field == ANY:
                        block = P.encode_ordinals([n for n, _ in entries])
                    else:
                        block = P.encode_block(entries)
                    batch.put(P.block_key(user_key, field, term, seg), block)
            # Deletion markers are needed only while some segment still holds the doc.
            remaining = {d for s, ids in tables.items() if s not in victims for d in ids}
            remaining.update(self._mem.docs.get(user_key, {}))
            purged = {d for d in deleted if d not in remaining}
            for d in purged:
                batch.delete(P.deleted_key(user_key, d))
            batch.put(P.META_NEXT_SEGMENT, P.encode_u64(seg + 1))
            self.db.write(batch, sync=self.flush_sync)
            self._drop_caches()
            self._next_seg = seg + 1
            for s in victims:
                del tables[s]
            if new_ids:
                tables[seg] = new_ids
            deleted -= purged

    def rebuild(self, user_key: bytes, docs: Iterable[tuple[bytes, IndexedDocument]]) -> None:
        """Drop every search key of ``user_key`` and index ``docs`` afresh (``lsmmail reindex``).

        Not atomic as a whole (a crash midway leaves a partial index: run it again); each step is. Callers
        must not deliver to this user meanwhile.
        """
        with self._lock:
            batch = WriteBatch()
            for prefix in (
                P.segment_user_prefix(user_key),
                P.TAG_SMALL + P.FORWARD + P.user_prefix(user_key),
                P.TAG_SMALL + P.DELETED + P.user_prefix(user_key),
            ):
                batch.delete_range(prefix, _prefix_end(prefix))
            self.db.write(batch, sync=True)
            self._drop_caches()
            for doc in list(self._mem.docs.get(user_key, {})):
                self._mem.remove(user_key, doc)
            self._tables[user_key] = {}
            self._deleted[user_key] = set()
            batch = WriteBatch()
            pending: list[_Pending] = []
            for doc_id, doc in docs:
                pending.append(self.index(batch, user_key, doc_id, doc))
                if len(pending) >= 256:
                    self._write_pending(batch, pending)
                    batch, pending = WriteBatch(), []
            self._write_pending(batch, pending)
            self.flush()

    def _write_pending(self, batch: WriteBatch, pending: list[_Pending]) -> None:
        if pending:
            self.db.write(batch, sync=False)
            for p in pending:
                self.committed(p)

    def stats(self) -> dict[str, int]:
        """Memory-segment size and the loaded users' segment counts (for tests and ``lsmmail stats``)."""
        with self._lock:
            return {
                "mem_docs": sum(len(d) for d in self._mem.docs.values()),
                "mem_postings": self._mem.size,
                "next_segment": self._next_seg,
                "loaded_segments": sum(len(t) for t in self._tables.values()),
            }

    def segment_count(self, user_key: bytes) -> int:
        with self._lock:
            return len(self._tables_for(user_key))

    # ------------------------------------------------------------------ queries

    def search(
        self, user_key: bytes, query: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[bytes], str | None]:
        """Doc ids matching ``query``, newest first, at most ``limit``, and the cursor of the next page.

        Raises :class:`QuerySyntaxError` for a malformed query and ``InvalidArgument`` (a ValueError) for a
        bad ``limit`` or a cursor this index did not hand out. The cursor is None on the last page.
        """
        node = parse(query)
        if not isinstance(limit, int) or limit < 1:
            raise InvalidArgument("limit must be a positive integer")
        after = decode_cursor(cursor) if cursor is not None else None
        with self._lock, self.db.snapshot() as snap:
            ev = _Evaluator(self, user_key, snap)
            hits = ev.run(node, limit + 1, after)
        if len(hits) > limit:
            return hits[:limit], encode_cursor(hits[limit - 1])
        return hits, None


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
