"""Import pool: the pure per-message work of a bulk import (MIME parse, search analysis, hashing, record
encoding that does not depend on the store) in worker processes, handed back in input order.

Contract
    :func:`prepare` turns one raw message into a :class:`Prepared` (or None above the size limit). It is a
    pure function of its arguments: the in-process import path calls it too, so an import with workers
    stores exactly what one without workers stores (same records, ids order, dedup, threads, search).
    :func:`prepared_chunks` yields, for consecutive chunks of the input, ``(first_index, raws, prepared)``
    in input order; storage stays with the caller (the main process), in that order.

Processes
    Workers are fresh interpreters (``file_pool``): never ``fork`` a process that runs engine threads (a
    forked child inherits their locks in whatever state they were), and they never import ``__main__``.
    Workers only parse and analyse; they never open the store. A chunk whose worker raised or died is
    prepared again in the main process, so a message is handled exactly as in-process (an exception
    ``prepare`` would raise in-process is raised here too); a broken pool ends worker use for the rest of
    the import. The pool is shut down (workers stopped and joined, payload files removed) when the
    generator finishes, raises, or is closed, including on KeyboardInterrupt. Chunks and results travel
    as files (``file_pool``: one write and one read each, no thread of this process in between), not
    through ProcessPoolExecutor's pipes.

Start-up and balance
    A worker starts an interpreter and imports what ``prepare`` needs (~0.1-0.15 s of CPU here) before it
    returns its first chunk. Meanwhile the main process prepares the next chunk in order itself, so a
    small import never waits for a worker. Later, whenever the worker holding the next chunk is still at
    it, the main process prepares the furthest chunk read ahead that no worker holds (work stealing)
    instead of waiting: the two processes share the preparing however the machine's cores happen to be
    shared.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from . import mime, schema
from .file_pool import FilePool, PoolBroken
from .records import details_prefix, encode_body, summary_parts

#: ``workers=None`` uses worker processes only from this many input messages on. Measured (durable
#: import into a fresh store, each run a fresh process, interleaved; docs/benchmarks.md's 2-core machine),
#: on a quiet machine (load < 1), workers=1 vs 2, seconds: 500 messages 0.083-0.090 vs 0.095-0.098; 1,000
#: 0.166-0.178 vs 0.154-0.196 (even); 2,000 0.395-0.492 vs 0.392-0.431; the 3,011-message bench sample
#: 0.675-0.913 vs 0.627-0.653 (4 runs each). A worker's start-up (~0.11-0.15 s of CPU to its first
#: result) and hand-over (~10 µs per message in each process) pay off from a couple of thousand
#: messages. On a busy machine they do not (3,011 messages at load ~2-4: medians 0.87-0.94 s in-process
#: vs 1.19-1.23 s with a worker), which AUTO_MAX_LOAD_PER_CPU below decides.
AUTO_MIN_MESSAGES = 2048

#: ``workers=None`` starts no worker while the 1-minute load average exceeds the usable CPUs: without an
#: idle core a worker only adds its start-up and hand-over to the CPU the machine already lacks (7,011
#: messages at load ~4-7 on 2 cores: medians 2.28 s in-process vs 3.55 s with a worker).
AUTO_MAX_LOAD_PER_CPU = 1.0

#: Automatic worker processes: one less than the usable CPUs (the main process stores), at most this many.
#: The main process spends ~300 µs per message storing, a worker ~190 µs preparing (with pickling), so
#: two workers keep it busy with room for a noisy neighbour; more only add memory and start-up.
AUTO_MAX_WORKERS = 2


#: Prepare chunks in this process while no worker has started yet, and while the worker holding the next
#: chunk is still at it (work stealing). False: every chunk goes to a worker and this process waits for
#: them (tests use it to make sure the workers' results are the ones stored).
PREPARE_WHILE_STARTING = True

#: Niceness of the worker processes. They compute ahead what this process would otherwise compute itself
#: (it steals any chunk a worker has not finished when it needs one), so on a busy core they should yield:
#: to this process's own threads first (the flush, compaction and commit threads share the GIL with the
#: storing thread, and one of them preempted while it holds the GIL stalls the storing thread too), and to
#: other programs, which a worker at full priority slowed for no gain.
WORKER_NICE = 10

#: Chunks a worker holds at a time (being prepared or queued): two keep it busy while this process
#: stores one; the rest of the window stays free for this process to steal.
WORKER_AHEAD = 2


class Prepared(NamedTuple):
    """What the store keeps of one message besides its raw bytes, in the form ``_add_prepared`` writes:
    as much of every record as does not depend on the store (ids, thread, folder, dedup key), already
    encoded, so the storing process only joins bytes.

    A NamedTuple: pickles as a plain tuple (~10 µs for a 20 KB message's fields and streams here)."""

    #: The dedup key after its user key: ``schema.dedup_tail`` of the Message-ID, or, without one, of the
    #: sha256 of the raw bytes.
    dedup_tail: bytes
    #: The dedup key tails of the Message-IDs the message refers to, in the order threading tries them:
    #: In-Reply-To, then References newest first.
    ref_tails: list[bytes]
    #: ``records.summary_parts`` of the message: the unread summary before and after its thread id.
    summary_pre: bytes
    summary_post: bytes
    #: ``records.details_prefix`` of the message's details (Message-ID, In-Reply-To, References, Bcc,
    #: attachments): the details JSON up to the user-dependent dedup key.
    details_pre: bytes
    #: ``records.encode_body(text, html)``, None when the message has neither.
    body: bytes | None
    #: (filename, content type, decoded bytes, sha256 digest) per attachment part, in message order.
    attachments: list[tuple[str, str, bytes, bytes]]
    #: ``schema.digest`` of ``mime.normalise_subject(subject)`` (the subject key's tail), None when that is
    #: empty; and ``mime.is_reply_subject(subject)``.
    subject_digest: bytes | None
    reply_subject: bool
    #: ``lsmmail.search.index.analyse(doc)`` = (forward record, weight), or None without search.
    search: tuple[bytes, int] | None


def prepare_parsed(raw: bytes, parsed: mime.ParsedMessage, search: bool) -> Prepared:
    """:class:`Prepared` of an already parsed message (deliver and send parse themselves)."""
    atts = [(a.filename, a.content_type, a.data, hashlib.sha256(a.data).digest()) for a in parsed.attachments]
    pre, post = summary_parts(
        subject=parsed.subject, preview=parsed.preview, from_=parsed.from_, to=parsed.to, cc=parsed.cc,
        date=parsed.date, size=len(raw), has_attachments=bool(atts),
    )
    details = details_prefix({
        "m": parsed.message_id, "i": parsed.in_reply_to, "r": parsed.references, "b": parsed.bcc,
        "a": [[name, ctype, len(data), sha.hex()] for name, ctype, data, sha in atts],
    })
    analysed = _search_analysis()(parsed) if search else None
    if parsed.message_id:
        dedup = schema.dedup_tail(schema.DEDUP_MESSAGE_ID, parsed.message_id.encode("utf-8", "surrogatepass"))
    else:
        dedup = schema.dedup_tail(schema.DEDUP_CONTENT, hashlib.sha256(raw).digest())
    refs = [_ref_tail(ref) for ref in [*parsed.in_reply_to, *reversed(parsed.references)]]
    subject_digest, reply = _subject_key(parsed.subject)
    return Prepared(
        dedup, refs, pre, post, details,
        encode_body(parsed.text, parsed.html) if parsed.text or parsed.html else None,
        atts, subject_digest, reply, analysed,
    )


_ANALYSE: Callable[[mime.ParsedMessage], tuple[bytes, int]] | None = None


def _search_analysis() -> Callable[[mime.ParsedMessage], tuple[bytes, int]]:
    """``analyse(message_document(parsed))``, imported on first use: a store without search never loads
    the tokenizer, and a worker loads ``lsmmail.search.analysis``, not the index (its queries and
    segments). Kept in a global: two import statements per message cost ~2 µs."""
    global _ANALYSE
    if _ANALYSE is None:
        from lsmmail.search.analysis import analyse
        from lsmmail.search.documents import message_document

        def analyse_parsed(parsed: mime.ParsedMessage) -> tuple[bytes, int]:
            return analyse(message_document(parsed))

        _ANALYSE = analyse_parsed
    return _ANALYSE


#: Referenced Message-ID -> its dedup key tail: a thread's messages repeat their predecessors' ids in
#: References (3.5 per message in the bench sample, 4 of 5 seen before; ~1 us each). Bounded.
_REF_TAILS: dict[str, bytes] = {}
_REF_TAILS_MAX = 16384


def _ref_tail(ref: str) -> bytes:
    tail = _REF_TAILS.get(ref)
    if tail is None:
        tail = schema.dedup_tail(schema.DEDUP_MESSAGE_ID, ref.encode("utf-8", "surrogatepass"))
        if len(_REF_TAILS) >= _REF_TAILS_MAX:
            _REF_TAILS.clear()
        _REF_TAILS[ref] = tail
    return tail


#: Subject -> (digest of its normalised form or None, is it a reply): a pure function of the subject, and
#: a thread's messages repeat their subject. Bounded; cleared when full.
_SUBJECT_KEYS: dict[str, tuple[bytes | None, bool]] = {}
_SUBJECT_KEYS_MAX = 4096


def _subject_key(subject: str) -> tuple[bytes | None, bool]:
    hit = _SUBJECT_KEYS.get(subject)
    if hit is None:
        norm, reply = mime.subject_thread_key(subject)
        hit = (schema.digest(norm.encode("utf-8")) if norm else None, reply)
        if len(_SUBJECT_KEYS) >= _SUBJECT_KEYS_MAX:
            _SUBJECT_KEYS.clear()
        _SUBJECT_KEYS[subject] = hit
    return hit


def prepare(raw: bytes, max_size: int, search: bool) -> Prepared | None:
    """Parse and prepare ``raw``; None when it is over ``max_size`` (the import reports ``too_large``)."""
    if len(raw) > max_size:
        return None
    return prepare_parsed(raw, mime.parse(raw), search)


def prepare_chunk(raws: list[bytes], max_size: int, search: bool) -> list[Prepared | None]:
    """:func:`prepare` of each message (the unit of work sent to a worker)."""
    return [prepare(raw, max_size, search) for raw in raws]


def auto_workers(n_messages: int | None) -> int:
    """``workers`` that ``workers=None`` means for an input of ``n_messages`` (None: unknown length, i.e.
    a stream: assumed large). Counted as ``import_messages`` counts them: processes including this one,
    so 1 means in-process and N means N - 1 worker processes: in-process below ``AUTO_MIN_MESSAGES``, on
    one CPU, or while the load average shows no idle CPU (``AUTO_MAX_LOAD_PER_CPU``)."""
    if n_messages is not None and n_messages < AUTO_MIN_MESSAGES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        if os.getloadavg()[0] > AUTO_MAX_LOAD_PER_CPU * cpus:
            return 1
    except (AttributeError, OSError):  # no load average on this platform: decide by the CPUs alone
        pass
    return max(1, min(cpus - 1, AUTO_MAX_WORKERS) + 1)


def _chunks(raws: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for raw in raws:
        chunk.append(bytes(raw))  # no copy for bytes; a memoryview would not pickle
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prepared_chunks(
    raws: Iterable[bytes], chunk_size: int, max_size: int, search: bool, workers: int
) -> Iterator[tuple[int, list[bytes], list[Prepared | None]]]:
    """``(index of the chunk's first message, its raws, their Prepared)`` for consecutive chunks of
    ``chunk_size`` input messages, in input order, using ``workers`` worker processes (0: none, all in
    this process). The input is read lazily, at most a window of chunks ahead."""
    chunks = _chunks(raws, chunk_size)
    start = 0
    if workers <= 0:
        for chunk in chunks:
            yield start, chunk, prepare_chunk(chunk, max_size, search)
            start += len(chunk)
        return
    # Chunks read ahead: each worker gets at most WORKER_AHEAD of them, and this process steals from the
    # far end of the rest while it would wait (each chunk is ~64 messages, ~1.5 MB raw + ~1.3 MB prepared).
    window = (WORKER_AHEAD + 1) * workers + 3
    pool: FilePool | None
    try:
        pool = FilePool(prepare_chunk, workers, window, nice=WORKER_NICE)
    except OSError:  # no process could be started (limits, no executable): everything in this process
        pool = None
    # [raws, worker index or None, task id or None, Prepared list once prepared here] per chunk read
    # ahead, in input order.
    inflight: deque[list[Any]] = deque()
    try:
        exhausted = False
        while True:
            while not exhausted and len(inflight) < window:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                inflight.append([chunk, None, None, None])
            if not inflight:
                return
            if pool is not None:
                try:
                    _assign(pool, inflight, max_size, search)
                except PoolBroken:
                    pool = _drop(pool, inflight)
            head = inflight[0]
            # Work stealing: while the worker holding the next chunk is still at it, prepare here the
            # furthest chunk read ahead that no worker holds, rather than wait. The storing and the
            # preparing then share both processes' time: measured, this process otherwise waited for the
            # worker ~30% of an import's wall time on the shared 2-core machine, and a worker never
            # runs dry meanwhile (it holds WORKER_AHEAD chunks, ~2 x 15 ms, against one stolen chunk).
            while (pool is not None and PREPARE_WHILE_STARTING and head[1] is not None
                   and not pool.done(head[1], head[2])):
                spare = next((e for e in reversed(inflight) if e[1] is None and e[3] is None), None)
                if spare is None:
                    break
                spare[3] = prepare_chunk(spare[0], max_size, search)
            chunk, worker, seq, prepared = inflight.popleft()
            if prepared is None and pool is not None and worker is not None:
                try:
                    ok, value = pool.result(worker, seq)
                    if ok:
                        prepared = value
                except PoolBroken:
                    pool = _drop(pool, inflight)
            if prepared is None:  # prepared here: not given to a worker, or it failed there
                prepared = prepare_chunk(chunk, max_size, search)
            yield start, chunk, prepared
            start += len(chunk)
    finally:
        if pool is not None:
            pool.close()


def _assign(pool: FilePool, inflight: deque[list[Any]], max_size: int, search: bool) -> None:
    """Give the chunks read ahead that nobody holds yet, in input order, to the least busy started worker
    while it holds fewer than WORKER_AHEAD. Until a worker has started (~0.2-0.3 s of imports) the next
    chunk in order stays here to be prepared in this process (``PREPARE_WHILE_STARTING``) rather than
    waited for; without that flag, wait for a worker."""
    first = 1 if PREPARE_WHILE_STARTING and inflight[0][1] is None else 0
    for entry in list(inflight)[first:]:
        if entry[1] is not None or entry[3] is not None:
            continue
        worker = pool.ready_worker(block=not PREPARE_WHILE_STARTING)
        if worker is None or pool.outstanding(worker) >= WORKER_AHEAD:
            return
        seq = pool.submit(worker, entry[0], (max_size, search))
        if seq is None:  # the payload could not be written (a full tmpfs?): this process prepares it
            continue
        entry[1], entry[2] = worker, seq


def _drop(pool: FilePool, inflight: deque[list[Any]]) -> None:
    """Close a broken pool; every chunk it held is prepared in this process instead."""
    pool.close()
    for entry in inflight:
        entry[1] = entry[2] = None
    return None
