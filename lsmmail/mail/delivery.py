"""Delivery: the write path that stores incoming messages (deliver, bulk import).

``_add_message`` puts one message's records (message, raw bytes, body, list and unread indexes, dedup,
thread, attachment holders, change log, search record) into a transaction; send builds on it too.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from . import mime, schema
from .errors import MessageTooLarge
from .ids import ID_LEN, id_to_str
from .import_pool import Prepared, auto_workers, prepare_parsed, prepared_chunks
from .listeners import _notifies
from .records import ImportResult, join_summary, message_record
from .store_core import StoreCore
from .txn import Txn, UserState

#: Import batches per pipeline round (``Delivery._import_round``): their results are yielded together, once
#: the last one is durable. Within a round, each batch's write (WAL append + fdatasync: ~19% of the
#: storing thread's wall time in an import, fdatasync alone ~13%) runs while the next batch is taken and
#: built, so 7 of 8 writes overlap. 8 batches of 64 = 512 messages, ~0.2-0.3 s between acknowledgements.
PIPELINE_BATCHES = 8

#: CPython's generation-0 collection threshold while an import runs (its default is 700 allocations). An
#: import allocates many short-lived containers (parsed messages, their hand-over from the workers, batch
#: entries), and every 10th young collection is a generation-1 one, every ~10th of those may scan the whole
#: heap: garbage-collector CPU in the main process, bench sample, thread CPU in the collector (gc.callbacks),
#: 2 runs each: 700 -> 6-17 us per message (one process) and ~11-12 (with the worker), 5,000 -> ~4-6 and
#: ~4; 2,000 and 20,000 gave no more. Only timing changes: cyclic garbage is freed as before, later by at
#: most 5,000 allocations.
IMPORT_GC_THRESHOLD0 = 5000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextmanager
def _import_gc() -> Iterator[None]:
    """While inside (nestable, any thread): generation-0 threshold ``IMPORT_GC_THRESHOLD0`` instead of a
    lower one; the previous thresholds come back when the last import leaves, unless someone changed them
    meanwhile. A threshold of 0 (automatic collection off) or above ours is left alone. Process-wide, as
    the collector is: other threads collect less often meanwhile too."""
    global _gc_users, _gc_saved
    with _gc_lock:
        _gc_users += 1
        if _gc_users == 1:
            cur = gc.get_threshold()
            if 0 < cur[0] < IMPORT_GC_THRESHOLD0:
                _gc_saved = cur
                gc.set_threshold(IMPORT_GC_THRESHOLD0, *cur[1:])
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                if gc.get_threshold()[0] == IMPORT_GC_THRESHOLD0:
                    gc.set_threshold(*_gc_saved)
                _gc_saved = None


@dataclass
class _InFlight:
    """A batch of a pipelined import whose write was started: its transaction, the write, whether it holds
    the attachment lock, and the values of the per-user keys it read or wrote (``_build_batch``)."""

    txn: Txn
    future: Future[None]
    att_locked: bool
    seen: dict[bytes, bytes | None]


class Delivery(StoreCore):
    """Mixin of MailStore: deliver and import_messages, and the records of one new message."""

    @_notifies
    def deliver(self, user_id: str, raw: bytes, folder: str = "INBOX", *, read: bool = False) -> str:
        """Store ``raw`` (kept byte-exact) in ``folder`` and return the message id.

        Idempotent: a message whose Message-ID (or, without one, whose exact bytes) this user already
        has is not stored again; the first message's id is returned. Durable before returning (one
        WriteBatch written with fdatasync; concurrent deliveries share fsyncs through group commit).
        Malformed messages are stored with whatever could be parsed. Raises MessageTooLarge above
        ``max_message_size``, UnknownUser, UnknownFolder."""
        self._check_size(raw)
        parsed = mime.parse(raw)
        u = self._user(user_id)
        with u.lock:
            n = self._folder_num(u, folder)
            txn = self._txn()
            mid, created = self._add_message(txn, u, raw, parsed, n, read=read)
            if created:
                self._commit_with_attachments(txn)
            return id_to_str(mid)

    def import_messages(
        self, user_id: str, raws: Iterable[bytes], folder: str = "INBOX", *, read: bool = False,
        batch_size: int | None = None, workers: int | None = None,
    ) -> Iterator[ImportResult]:
        """Bulk import: like deliver for each message, but ``batch_size`` messages (default
        ``import_batch_size``, 64) share ONE WriteBatch and one fdatasync. Results are yielded only after
        their batch is durable, in rounds of up to ``PIPELINE_BATCHES`` batches (512 messages): within a
        round, the next batch is prepared while the previous one is written and synced. A crash loses at
        most the batches not yet acknowledged, never part of a message (each batch is atomic, and a batch
        is written only after the one before it is durable). Oversized messages yield status
        ``too_large`` instead of raising.

        ``workers``: processes sharing the import, counting this one: N >= 2 starts N - 1 worker
        processes that parse and analyse messages ahead (``import_pool``) while this process stores them,
        in input order, with the same batches; 0 or 1: everything in this process. None (default):
        ``import_workers`` of the options, whose None means automatic (``import_pool.auto_workers``: one
        worker per CPU beyond the first, at most 2, and only for at least ``AUTO_MIN_MESSAGES`` messages
        or a stream of unknown length). The results are identical either way."""
        size = batch_size or self._opts.import_batch_size
        u = self._user(user_id)
        n = self._folder_num(u, folder)
        if workers is None:
            workers = self._opts.import_workers
        if workers is None:
            workers = auto_workers(len(raws) if isinstance(raws, Sized) else None)
        chunks = prepared_chunks(raws, size, self._opts.max_message_size, self._search is not None,
                                 max(0, workers - 1))
        with _import_gc():  # fewer young collections while importing
            try:
                if PIPELINE_BATCHES <= 1 or (isinstance(raws, Sized) and len(raws) <= size):
                    # One batch (or pipelining off): nothing to overlap, no writer thread to start.
                    for start, chunk, prepared in chunks:
                        yield from self._import_batch(u, n, start, chunk, prepared, read)
                    return
                ahead: list[tuple[int, list[bytes], list[Prepared | None]] | None] = []
                with ThreadPoolExecutor(1, thread_name_prefix="lsmmail-import-write") as writer:
                    while True:
                        results = self._import_round(u, n, chunks, read, writer, ahead)
                        if results is None:
                            return
                        yield from results
            finally:
                chunks.close()  # stops the worker processes now, also when the caller abandons the import

    @_notifies
    def _import_batch(
        self, u: UserState, folder: int, start: int, raws: list[bytes], prepared: list[Prepared | None],
        read: bool,
    ) -> list[ImportResult]:
        """Store one chunk as one batch, written before this returns (``PIPELINE_BATCHES`` = 1)."""
        with u.lock:
            txn = self._txn()
            results, created, _ = self._build_batch(txn, u, folder, start, raws, prepared, read, None)
            if created:
                self._commit_with_attachments(txn)
        return results

    @_notifies
    def _import_round(
        self, u: UserState, folder: int, chunks: Iterator[tuple[int, list[bytes], list[Prepared | None]]],
        read: bool, writer: ThreadPoolExecutor,
        ahead: list[tuple[int, list[bytes], list[Prepared | None]] | None],
    ) -> list[ImportResult] | None:
        """Store up to PIPELINE_BATCHES chunks, one batch each, and return their results once every one
        is durable (None when ``chunks`` is exhausted). While batch k is written (WAL append +
        fdatasync on ``writer``'s thread), this thread takes chunk k+1 (parsing it itself when the
        workers are behind) and builds batch k+1 on top of batch k's state (``_build_batch``); batch k+1
        is written only after batch k is durable, and batch k is installed (``_written``: counters,
        search, whose flush may take ~30 ms) while batch k+1 is being written.

        ``ahead`` carries the first chunk of the next round (or None: the input is exhausted): a full
        round takes it while its last batch is being written, so that the wait for that write (WAL
        append + fdatasync) overlaps the chunk's hand-over from a worker, or its parsing here when the
        workers are behind. A chunk is only data (parsed messages): nothing in it depends on the store.

        Why a round and not an endless pipeline: nothing may be in flight when the caller gets control
        (at a yield), since the caller may call the store from this very thread, and the user's (re-
        entrant) lock would not stop it from building on state that a write in flight is about to
        replace. A write's error is raised here after its batch's successor was dropped unwritten;
        memory stays equal to what is on disk."""
        results: list[ImportResult] = []
        got_any = False
        with u.lock:
            inflight: _InFlight | None = None
            try:
                for _ in range(PIPELINE_BATCHES):
                    # while ``inflight`` is being written
                    item = ahead.pop() if ahead else next(chunks, None)
                    if item is None:
                        break
                    got_any = True
                    start, raws, prepared = item
                    txn = self._txn()
                    res, created, seen = self._build_batch(txn, u, folder, start, raws, prepared, read,
                                                           inflight)
                    results += res
                    if inflight is None:
                        if created:
                            inflight = self._start_write(txn, seen, writer)
                        continue
                    done, inflight = inflight, None
                    self._wait_write(done)  # raises if it failed: then this batch is dropped unwritten
                    try:
                        if created:
                            inflight = self._start_write(txn, seen, writer)
                    finally:
                        self._written(done.txn)  # done is durable: installed whatever happens next
                else:
                    if inflight is not None:
                        ahead.append(next(chunks, None))
            finally:
                if inflight is not None:
                    self._finish_write(inflight)
        return results if got_any else None

    def _start_write(
        self, txn: Txn, seen: dict[bytes, bytes | None], writer: ThreadPoolExecutor
    ) -> _InFlight:
        """Resolve ``txn``'s attachments and start writing it on ``writer``. The attachment lock, when the
        batch needs it, stays held until :meth:`_finish_write` (as ``_commit_with_attachments`` holds it
        over the check and the write)."""
        locked = bool(txn.holders_added or txn.holders_removed)
        if locked:
            self._att_lock.acquire()
        try:
            if locked:
                self._resolve_attachments(txn)
            txn.finish()
            future = writer.submit(self._db.write, txn.batch, sync=self._opts.sync)
        except BaseException:
            if locked:
                self._att_lock.release()
            raise
        return _InFlight(txn, future, locked, seen)

    def _finish_write(self, f: _InFlight) -> None:
        """Wait until ``f``'s batch is durable (or raise its write's error), then install it."""
        self._wait_write(f)
        self._written(f.txn)

    def _wait_write(self, f: _InFlight) -> None:
        """Wait until ``f``'s batch is durable (or raise its write's error); release its attachment lock."""
        try:
            f.future.result()
        finally:
            if f.att_locked:
                f.att_locked = False
                self._att_lock.release()

    def _build_batch(
        self, txn: Txn, u: UserState, folder: int, start: int, raws: list[bytes],
        prepared: list[Prepared | None], read: bool, prev: _InFlight | None,
    ) -> tuple[list[ImportResult], bool, dict[bytes, bytes | None]]:
        """Put a chunk's messages into ``txn``: (results, whether any was created, the values of the
        per-user keys the batch read or wrote). With ``prev``, a batch whose write may still be in
        flight, the new batch is built as if ``prev`` were installed: its counters start from
        ``prev``'s, and every dedup and subject key ``prev`` read or wrote is looked up in ``prev``'s
        values, not in the DB (which may or may not show ``prev`` yet). Exact because the caller holds
        the user's lock, and every write of these per-user keys takes it."""
        results = []
        any_created = False
        dkeys, known = self._prefetch(u, prepared)
        if prev is not None:
            known.update(prev.seen)
            prev_ut = prev.txn.users.get(u.uk)
            if prev_ut is not None:
                txn.users[u.uk] = prev_ut.successor()
        for i, (raw, prep, dkey) in enumerate(zip(raws, prepared, dkeys, strict=True), start):
            if prep is None:
                results.append(ImportResult(i, "too_large", None))
                continue
            mid, created = self._add_prepared(txn, u, raw, prep, folder, read=read, dkey=dkey, known=known)
            any_created |= created
            results.append(ImportResult(i, "stored" if created else "duplicate", id_to_str(mid)))
        known.update(txn.dedup)
        return results, any_created, known

    def _check_size(self, raw: bytes) -> None:
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError("raw message must be bytes")
        if len(raw) > self._opts.max_message_size:
            raise MessageTooLarge(f"message of {len(raw)} bytes exceeds the limit of "
                                  f"{self._opts.max_message_size} bytes")

    def _prefetch(
        self, u: UserState, items: list[Prepared | None]
    ) -> tuple[list[bytes | None], dict[bytes, bytes | None]]:
        """The dedup key of each item (None for a skipped one) and, read in one ``get_many``, the stored
        values of the keys ``_add_message`` will look up: each dedup key, the first thread candidate
        (In-Reply-To, else the last Reference) and, for a reply without references, its subject key.

        Why: inside an import the memtable is large and cold (each message's 20+ KB of records went
        through the caches since the last lookup), so one lookup per message cost ~25 us (measured
        in-process on the bench sample); back to back, the skiplist's upper levels stay cached
        (import of the bench sample without search: 5-14 us per message less). Exact: the caller holds
        the user's lock, every write of these per-user keys takes that lock, and the transaction's own
        entries are consulted before these values (see ``_lookup``). ``_add_message`` records the subject
        keys it writes in ``known`` too, so a reply threads by subject with an earlier message of the same
        batch exactly as it would after delivering that message on its own."""
        dkeys: list[bytes | None] = []
        wanted: list[bytes] = []
        uk = u.uk
        for parsed in items:
            if parsed is None:
                dkeys.append(None)
                continue
            dkey = self._dedup_key(u, parsed)
            dkeys.append(dkey)
            wanted.append(dkey)
            if parsed.ref_tails:
                wanted.append(schema.DEDUP + uk + parsed.ref_tails[0])
            elif parsed.reply_subject and parsed.subject_digest is not None:
                wanted.append(schema.SUBJECT + uk + parsed.subject_digest)
        return dkeys, dict(zip(wanted, self._db.get_many(wanted), strict=True))

    def _lookup(self, txn: Txn, key: bytes, known: dict[bytes, bytes | None] | None) -> bytes | None:
        """``_lookup_dedup`` (the transaction's own entries first) with ``known`` values before the DB."""
        if key in txn.dedup:
            return txn.dedup[key]
        if key in txn.dedup_removed:
            return None
        if known is not None and key in known:
            return known[key]
        return self._db.get(key)

    def _dedup_key(self, u: UserState, prep: Prepared) -> bytes:
        return schema.DEDUP + u.uk + prep.dedup_tail

    def _add_message(
        self, txn: Txn, u: UserState, raw: bytes, parsed: mime.ParsedMessage, folder: int, *,
        read: bool, register_dedup: bool = True,
    ) -> tuple[bytes, bool]:
        """Add one message's records to ``txn``. Returns (id, created); created is False for a duplicate."""
        raw = bytes(raw)
        return self._add_prepared(txn, u, raw, prepare_parsed(raw, parsed, self._search is not None),
                                  folder, read=read, register_dedup=register_dedup)

    def _add_prepared(
        self, txn: Txn, u: UserState, raw: bytes, parsed: Prepared, folder: int, *,
        read: bool, register_dedup: bool = True, dkey: bytes | None = None,
        known: dict[bytes, bytes | None] | None = None,
    ) -> tuple[bytes, bool]:
        """``_add_message`` of a prepared message (``import_pool.prepare``). ``dkey`` is the message's
        dedup key if already computed; ``known`` holds stored values read ahead under the same user lock
        (``_prefetch``)."""
        if dkey is None:
            dkey = self._dedup_key(u, parsed)
        if register_dedup:
            hit = self._lookup(txn, dkey, known)
            if hit is not None:
                return hit[:ID_LEN], False
        mid = self._ids.new()
        thread = self._find_thread(txn, u, parsed, known) or mid
        ut = txn.user(u)
        uk = u.uk
        put = txn.put  # the batch's own put (see Txn): ~10 per message
        sm = join_summary(parsed.summary_pre, thread, parsed.summary_post, read)
        put(schema.message_key(uk, mid),
            message_record(folder, sm, parsed.details_pre, dkey if register_dedup else None))
        put(schema.listing_key(uk, folder, mid), sm)
        if not read:
            put(schema.unread_key(uk, folder, mid), sm)
        put(schema.raw_key(uk, mid), raw)
        if parsed.body is not None:
            put(schema.body_key(uk, mid), parsed.body)
        if register_dedup:
            value = mid + thread
            put(dkey, value)
            txn.dedup[dkey] = value
            txn.dedup_removed.discard(dkey)
        put(schema.thread_key(uk, thread, mid), b"")
        if parsed.subject_digest is not None:
            skey = schema.SUBJECT + uk + parsed.subject_digest
            put(skey, thread)
            if known is not None:
                # Later messages of this import batch see it, as they would after a deliver() of this one.
                known[skey] = thread
        for part, (_, _, data, sha) in enumerate(parsed.attachments):
            hk = schema.holder_key(sha, uk, mid, part)
            put(hk, b"")
            txn.holders_added[sha] = txn.holders_added.get(sha, 0) + 1
            txn.holders_removed.discard(hk)
            # The blob itself is written (once) in _resolve_attachments, under the attachment lock.
            txn.att_data[sha] = data
        ut.count(folder, 1, 0 if read else 1)
        txn.log_change(ut, schema.CHANGE_CREATED, mid)
        if self._search is not None:
            if parsed.search is None:
                raise AssertionError("prepared without search analysis for a store with search")
            forward, weight = parsed.search
            txn.search_pending.append(self._search.index_analysed(txn.batch, uk, mid, forward, weight))
        return mid, True

    def _find_thread(
        self, txn: Txn, u: UserState, parsed: Prepared,
        known: dict[bytes, bytes | None] | None = None,
    ) -> bytes | None:
        """Thread of the first known message this one refers to (In-Reply-To, then References newest
        first); else, for a reply-style subject ("Re: ..."), the thread last seen with that subject."""
        for tail in parsed.ref_tails:
            hit = self._lookup(txn, schema.DEDUP + u.uk + tail, known)
            if hit is not None:
                return hit[ID_LEN:]
        if parsed.reply_subject and parsed.subject_digest is not None:
            key = schema.SUBJECT + u.uk + parsed.subject_digest  # known: stored or this batch's value
            return known[key] if known is not None and key in known else self._db.get(key)
        return None
