"""import_messages with worker processes (import_pool) == without: every observable result, and no leaked
processes whether the import finishes, fails in a worker, or is abandoned."""

from __future__ import annotations

import multiprocessing
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.mail import MailOptions, MailStore, delivery, file_pool, import_pool
from lsmmail.mail.import_pool import auto_workers, prepare, prepared_chunks

WORDS = ["alpha", "beta", "gamma", "delta", "release", "patch", "Re: patch", "fpga", "usrp"]


def _message(i: int, subject: str, body: str, mid: bool, reply_to: int | None, attach: bool) -> bytes:
    m = EmailMessage()
    m["From"] = f"Sender {i % 3} <s{i % 3}@example.com>"
    m["To"] = "u@example.com"
    m["Subject"] = subject
    if mid:
        m["Message-ID"] = f"<m{i}@example.com>"
    if reply_to is not None:
        m["In-Reply-To"] = f"<m{reply_to}@example.com>"
    m.set_content(body)
    if attach:
        m.add_attachment(body.encode()[:50] or b"x", maintype="application", subtype="octet-stream",
                         filename=f"f{i % 2}.bin")
        # Not the generator's random boundary: hypothesis forbids `random` in strategies.
        m.set_boundary(f"=={i}==")
    return m.as_bytes()


messages = st.lists(
    st.tuples(st.sampled_from(WORDS), st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join),
              st.booleans(), st.one_of(st.none(), st.integers(0, 20)), st.booleans()),
    min_size=1, max_size=40,
).map(lambda specs: [_message(i % 25, *s) for i, s in enumerate(specs)])  # i % 25: some duplicates


def _observe(store: MailStore, ids: list[str | None]) -> dict:
    """Everything a client can see, with each message id replaced by its position in the import."""
    pos = {mid: n for n, mid in enumerate(ids) if mid is not None}

    def norm(mid: str) -> int:
        return pos[mid]

    page = store.list_messages("u", "INBOX", limit=1000)
    unread = store.list_messages("u", "INBOX", limit=1000, unread_only=True)
    out: dict = {
        "list": [(norm(s.id), s.subject, s.preview, s.size, s.has_attachments) for s in page.items],
        "unread": [norm(s.id) for s in unread.items],
        "read": [(norm(s.id), s.is_read) for s in page.items],
        "folders": [(f.id, f.total, f.unread) for f in store.folders("u")],
        "threads": sorted(sorted(norm(x.id) for x in store.thread("u", s.thread_id))
                          for s in page.items),
        "search": {q: [norm(m) for m in store.search_ids("u", q, limit=1000).items]
                   for q in [*WORDS[:6], "from:s1@example.com", "has:attachment", "subject:patch"]},
    }
    for mid in pos:
        m = store.get_message("u", mid)
        sm = m.summary
        out[f"get{norm(mid)}"] = (
            sm.folder_id, sm.subject, sm.from_, sm.to, sm.cc, sm.date, sm.preview, sm.size,
            m.message_id, m.in_reply_to, m.references, m.bcc, m.text, m.html,
            [(a.part, a.filename, a.content_type, a.size, a.sha256) for a in m.attachments],
            store.get_raw("u", mid))
    return out


def _import(
    path: Path, raws: list[bytes], workers: int, batch: int = 8, read: bool = False
) -> tuple[list, dict]:
    with MailStore.open(str(path), MailOptions(sync=False)) as s:
        s.create_user("u", ["u@example.com"])
        res = list(s.import_messages("u", raws, batch_size=batch, workers=workers, read=read))
        return [(r.index, r.status, r.id is not None) for r in res], _observe(s, [r.id for r in res])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raws=messages, batch=st.integers(1, 16), read=st.booleans())
def test_workers_equal_in_process(
    tmp_path_factory: pytest.TempPathFactory, raws: list[bytes], batch: int, read: bool
) -> None:
    a = _import(tmp_path_factory.mktemp("a"), raws, 1, batch, read)
    # Every chunk from a worker (not prepared here while they start), so their results are what is stored.
    import_pool.PREPARE_WHILE_STARTING = False
    try:
        b = _import(tmp_path_factory.mktemp("b"), raws, 2, batch, read)
    finally:
        import_pool.PREPARE_WHILE_STARTING = True
    assert a == b
    assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0


def test_prepared_chunks_order_and_sizes() -> None:
    raws = [_message(i, "s", f"body {i}", True, None, False) for i in range(50)]
    raws[7] = b"x" * 5000  # over the size limit below
    got = list(prepared_chunks(iter(raws), 16, 4000, True, 2))
    import_pool.PREPARE_WHILE_STARTING = False
    try:
        assert list(prepared_chunks(iter(raws), 16, 4000, True, 2)) == got
    finally:
        import_pool.PREPARE_WHILE_STARTING = True
    assert [(start, len(chunk)) for start, chunk, _ in got] == [(0, 16), (16, 16), (32, 16), (48, 2)]
    flat = [p for _, _, preps in got for p in preps]
    assert flat == [prepare(r, 4000, True) for r in raws]
    assert sum(p is None for p in flat) == 1
    assert flat[7] is None
    assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0


def test_worker_failure_is_handled_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk whose worker raised is prepared again here: the same exception as in-process, no leak."""
    raws = [_message(i, "s", "b", True, None, False) for i in range(10)]
    # max_size of a wrong type makes prepare raise TypeError in the worker and in-process alike.
    with pytest.raises(TypeError):
        list(prepared_chunks(raws, 4, "not a size", False, 2))  # type: ignore[arg-type]
    assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0


def test_abandoned_import_leaks_no_process(tmp_path: Path) -> None:
    raws = [_message(i, "subject", f"body {i}", True, None, False) for i in range(300)]
    with MailStore.open(str(tmp_path), MailOptions(sync=False)) as s:
        s.create_user("u", ["u@example.com"])
        it = s.import_messages("u", raws, batch_size=16, workers=3)
        first = [next(it) for _ in range(20)]
        assert [r.index for r in first] == list(range(20))
        it.close()  # the consumer stops (as after an exception in its loop)
        assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0
        # The batches yielded so far are stored; of the abandoned rest, at most the rest of their
        # pipeline round (delivery.PIPELINE_BATCHES batches are durable before a round's results).
        assert s.folders("u")[0].total in range(20, 16 * max(2, delivery.PIPELINE_BATCHES) + 1)


def test_auto_workers_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_pool.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(import_pool.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert auto_workers(import_pool.AUTO_MIN_MESSAGES - 1) == 1
    assert auto_workers(import_pool.AUTO_MIN_MESSAGES) == 1 + import_pool.AUTO_MAX_WORKERS
    assert auto_workers(None) == 1 + import_pool.AUTO_MAX_WORKERS
    monkeypatch.setattr(import_pool.os, "sched_getaffinity", lambda _pid: {0})
    assert auto_workers(None) == 1
    monkeypatch.setattr(import_pool.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert auto_workers(10_000) == 2
    # No idle CPU in the last minute (load above the CPUs): in-process, whatever the size.
    monkeypatch.setattr(import_pool.os, "getloadavg", lambda: (2.5, 1.0, 1.0))
    assert auto_workers(10_000) == 1
    assert auto_workers(None) == 1
    monkeypatch.setattr(import_pool.os, "getloadavg", lambda: (1.9, 3.0, 3.0))  # only the last minute counts
    assert auto_workers(10_000) == 2


def test_work_stealing_keeps_order_and_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one chunk per worker at a time, this process prepares the chunks read ahead whenever the
    worker is behind; whichever side prepares a chunk, the chunks come out in input order, identical."""
    monkeypatch.setattr(import_pool, "WORKER_AHEAD", 1)
    raws = [_message(i, "s", f"body {i} " * (i % 7), True, None, False) for i in range(120)]
    got = list(prepared_chunks(iter(raws), 4, 1 << 20, True, 1))
    assert [start for start, _, _ in got] == list(range(0, 120, 4))
    assert [p for _, _, preps in got for p in preps] == [prepare(r, 1 << 20, True) for r in raws]
    assert multiprocessing.active_children() == [] and file_pool.live_workers() == 0
