"""import_messages (batched, with the per-batch read-ahead of dedup and thread keys) against deliver (one
message at a time, no read-ahead): the same statuses, the same duplicates, the same thread partition and
the same counters, for messages that reply to each other within a batch, across batches and out of order,
repeat Message-IDs, carry no Message-ID (content dedup) or only a reply-style subject."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.engine.errors import IOFailure
from lsmmail.mail import MailOptions, MailStore, delivery

from .helpers import check_user

_IDS = [f"m{i}@x" for i in range(6)]
_SUBJECTS = ["plan", "Re: plan", "RE: [list] plan", "other", "Fwd: other", "Re: unknown"]


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    head = "From: a@x.org\r\nTo: u@x.org\r\n"
    mid = draw(st.none() | st.sampled_from(_IDS))
    if mid is not None:
        head += f"Message-ID: <{mid}>\r\n"
    irt = draw(st.none() | st.sampled_from(_IDS))
    if irt is not None:
        head += f"In-Reply-To: <{irt}>\r\n"
    refs = draw(st.lists(st.sampled_from(_IDS), max_size=3))
    if refs:
        head += "References: " + " ".join(f"<{r}>" for r in refs) + "\r\n"
    head += f"Subject: {draw(st.sampled_from(_SUBJECTS))}\r\n"
    return (head + "\r\n" + draw(st.sampled_from(["a\r\n", "b\r\n"]))).encode()


def _shape(store: MailStore) -> tuple[list[int], list[str], list[tuple[int, int]]]:
    """Thread partition (threads numbered by first appearance) and subjects, oldest first; counters."""
    items = store.list_messages("u", "INBOX", limit=1000).items[::-1]
    first: dict[str, int] = {}
    threads = [first.setdefault(s.thread_id, len(first)) for s in items]
    counts = [(f.total, f.unread) for f in store.folders("u")]
    return threads, [s.subject for s in items], counts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(_message(), min_size=1, max_size=14), batch=st.integers(1, 5))
def test_batched_import_equals_one_by_one_delivery(raws: list[bytes], batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        opts = MailOptions(sync=False)
        with MailStore.open(Path(tmp) / "a", opts) as a, MailStore.open(Path(tmp) / "b", opts) as b:
            a.create_user("u")
            b.create_user("u")
            results = list(a.import_messages("u", raws, batch_size=batch))
            ids = [b.deliver("u", raw) for raw in raws]
            # duplicates point at the first copy, in both stores alike
            first_a = {r.id: k for k, r in enumerate(results) if r.status == "stored"}
            first_b: dict[str, int] = {}
            for k, mid in enumerate(ids):
                first_b.setdefault(mid, k)
            assert [first_a[r.id] for r in results] == [first_b[mid] for mid in ids]
            assert _shape(a) == _shape(b)
            check_user(a, "u")


def test_reply_in_the_same_batch_joins_the_parent_thread(tmp_path: Path) -> None:
    parent = b"Message-ID: <p@x>\r\nSubject: plan\r\n\r\nx\r\n"
    child = b"Message-ID: <c@x>\r\nIn-Reply-To: <p@x>\r\nSubject: Re: plan\r\n\r\ny\r\n"
    late = b"Message-ID: <d@x>\r\nReferences: <p@x> <c@x>\r\nSubject: Re: plan\r\n\r\nz\r\n"
    with MailStore.open(tmp_path / "db", MailOptions(sync=False)) as s:
        s.create_user("u")
        first = list(s.import_messages("u", [parent, child, parent], batch_size=8))
        assert [r.status for r in first] == ["stored", "stored", "duplicate"]
        (third,) = list(s.import_messages("u", [late]))
        threads = {s.get_summary("u", r.id).thread_id for r in [*first, third]}
        assert threads == {first[0].id}


class _SlowWrites:
    """The store's DB with every write delayed (so the next batch of a pipelined import is built while
    the DB does not show the previous one yet) and, optionally, the ``fail_at``-th write refused."""

    def __init__(self, db: object, fail_at: int | None = None) -> None:
        self._db = db
        self._fail_at = fail_at
        self.writes = 0

    def write(self, batch: object, *, sync: bool | None = None) -> None:
        self.writes += 1
        time.sleep(0.01)
        if self.writes == self._fail_at:
            raise IOFailure(5, "injected write failure")
        self._db.write(batch, sync=sync)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(_message(), min_size=1, max_size=14), batch=st.integers(1, 4),
       rounds=st.sampled_from([1, 2, 8]))
def test_pipelined_import_builds_on_the_batch_in_flight(raws: list[bytes], batch: int, rounds: int) -> None:
    # Each batch of a round is built while the previous one is still being written (delayed writes):
    # duplicates, threads and counters must still be those of one-by-one delivery.
    with tempfile.TemporaryDirectory() as tmp:
        opts = MailOptions(sync=False)
        with MailStore.open(Path(tmp) / "a", opts) as a, MailStore.open(Path(tmp) / "b", opts) as b:
            a.create_user("u")
            b.create_user("u")
            a._db = _SlowWrites(a._db)
            saved = delivery.PIPELINE_BATCHES
            delivery.PIPELINE_BATCHES = rounds
            try:
                results = list(a.import_messages("u", raws, batch_size=batch))
            finally:
                delivery.PIPELINE_BATCHES = saved
            ids = [b.deliver("u", raw) for raw in raws]
            first_a = {r.id: k for k, r in enumerate(results) if r.status == "stored"}
            first_b: dict[str, int] = {}
            for k, mid in enumerate(ids):
                first_b.setdefault(mid, k)
            assert [first_a[r.id] for r in results] == [first_b[mid] for mid in ids]
            assert _shape(a) == _shape(b)
            check_user(a, "u")


def test_failed_write_in_a_round_leaves_memory_equal_to_disk(tmp_path: Path) -> None:
    # The 3rd batch's write fails while the 4th is built on top of it: the import raises, nothing of the
    # 3rd or 4th batch is stored or counted, and a second import stores exactly the rest.
    raws = [f"Message-ID: <m{i}@x>\r\nSubject: s{i % 3}\r\n\r\nbody {i}\r\n".encode() for i in range(12)]
    with MailStore.open(tmp_path / "db", MailOptions(sync=False)) as s:
        s.create_user("u")
        real = s._db
        s._db = _SlowWrites(real, fail_at=3)
        got = []
        with pytest.raises(IOFailure):
            for r in s.import_messages("u", raws, batch_size=2):
                got.append(r)
        assert got == []  # the round's results come only once all of its batches are durable
        s._db = real
        check_user(s, "u")
        assert [f.total for f in s.folders("u") if f.name == "INBOX"] == [4]
        again = list(s.import_messages("u", raws, batch_size=2))
        assert [r.status for r in again] == ["duplicate"] * 4 + ["stored"] * 8
        check_user(s, "u")
        assert [f.total for f in s.folders("u") if f.name == "INBOX"] == [12]


def test_chunk_taken_ahead_of_a_round_sees_deliveries_made_at_the_yield(tmp_path: Path) -> None:
    # A full round takes the next round's first chunk (parsed only) while its last batch is written; the
    # caller may deliver to the same user at the yield in between. Whether a message of that chunk is a
    # duplicate is decided when its batch is built, after the yield: as for an import not taken ahead.
    raws = [f"Message-ID: <m{i}@x>\r\nSubject: s{i}\r\n\r\nbody {i}\r\n".encode() for i in range(7)]
    saved = delivery.PIPELINE_BATCHES
    delivery.PIPELINE_BATCHES = 2
    try:
        with MailStore.open(tmp_path / "db", MailOptions(sync=False)) as s:
            s.create_user("u")
            statuses = []
            for r in s.import_messages("u", raws, batch_size=1, workers=1):
                statuses.append(r.status)
                if r.index == 1:  # the first round (m0, m1) is durable; m2 was taken ahead
                    s.deliver("u", raws[2])
                    s.deliver("u", raws[5])
            assert statuses == ["stored", "stored", "duplicate", "stored", "stored", "duplicate", "stored"]
            check_user(s, "u")
            assert [f.total for f in s.folders("u") if f.name == "INBOX"] == [7]
    finally:
        delivery.PIPELINE_BATCHES = saved
