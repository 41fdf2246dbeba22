"""The MailStore surface the service layer builds on: change listeners, user_for_address,
max_message_size, the outbox cursor, open_raw / open_attachment, and the reserved ``K`` tag."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.mail import (
    InvalidCursor,
    MailOptions,
    MailStore,
    MessageTooLarge,
    OutgoingMessage,
    UnknownAttachment,
    UnknownMessage,
    schema,
)

from .helpers import check_user

#: Small limit so the size tests need only a few KB.
LIMIT = 4096


def msg(n: int, to: str = "alice@example.com", extra: str = "") -> bytes:
    return (f"From: s{n}@example.org\r\nTo: {to}\r\nSubject: hook {n}\r\nMessage-ID: <hook{n}@x>\r\n"
            f"{extra}\r\nbody {n}\r\n").encode()


def with_attachment(n: int, data: bytes) -> bytes:
    return (
        f"From: s@x.org\r\nSubject: att {n}\r\nMessage-ID: <hatt{n}@x>\r\n"
        "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nsee\r\n"
        "--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(data).decode()}\r\n--B--\r\n"
    ).encode("ascii")


def _open(path: Path) -> MailStore:
    # sync=False: these tests are about notification semantics, not durability (tests/mail/test_crash.py).
    s = MailStore.open(path, MailOptions(max_message_size=LIMIT, sync=False))
    s.create_user("alice", ["alice@example.com"])
    s.create_user("bob", ["Bob@Example.com", "robert@example.com"])
    return s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MailStore]:
    s = _open(tmp_path / "db")
    yield s
    s.close()


class Recorder:
    """A listener that records its calls and the state the store reports at that moment."""

    def __init__(self, store: MailStore) -> None:
        self.store = store
        self.calls: list[tuple[str, str]] = []
        self.seen_state: list[str] = []

    def __call__(self, user: str, state: str) -> None:
        self.calls.append((user, state))
        self.seen_state.append(self.store.state(user))


# ---- user_for_address, max_message_size -----------------------------------------------------------------

def test_user_for_address_is_case_insensitive(store: MailStore) -> None:
    assert store.user_for_address("alice@example.com") == "alice"
    assert store.user_for_address("ALICE@Example.COM") == "alice"
    assert store.user_for_address("  bob@example.com ") == "bob"  # stored as Bob@Example.com
    assert store.user_for_address("Robert@EXAMPLE.com") == "bob"
    for unknown in ("carol@example.com", "alice@example.org", "alice", "", "   "):
        assert store.user_for_address(unknown) is None
    assert store.user_for_address("a\udcff@example.com") is None  # surrogate-escaped envelope bytes
    assert store.user_for_address(None) is None  # type: ignore[arg-type]


def test_max_message_size_is_the_option_and_read_only(store: MailStore) -> None:
    assert store.max_message_size == LIMIT
    with pytest.raises(AttributeError):
        store.max_message_size = 10  # type: ignore[misc]
    head = msg(1)
    store.deliver("alice", head + b"x" * (LIMIT - len(head)))  # exactly the limit: accepted
    with pytest.raises(MessageTooLarge):
        store.deliver("alice", msg(2) + b"x" * (LIMIT - len(msg(2)) + 1))


# ---- listeners ----------------------------------------------------------------------------------------

def test_listener_sees_each_committed_write_with_its_new_state(store: MailStore) -> None:
    rec = Recorder(store)
    store.add_listener(rec)
    mid = store.deliver("alice", msg(1))
    assert rec.calls == [("alice", "1")]
    assert rec.seen_state == ["1"]  # installed before the listener runs
    store.deliver("alice", msg(1))  # duplicate: nothing committed, no call
    store.mark_read("alice", mid)
    store.mark_read("alice", mid)  # no-op
    store.move("alice", mid, "Archive")
    store.move("alice", mid, "Archive")  # no-op
    store.delete("alice", mid)  # to Trash
    store.delete("alice", mid)  # for good
    assert rec.calls == [("alice", str(s)) for s in range(1, 6)]
    assert rec.seen_state == [c[1] for c in rec.calls]
    f = store.create_folder("alice", "Bills")  # not in the change log: state unchanged
    store.rename_folder("alice", f.id, "Invoices")
    store.delete_folder("alice", f.id)
    assert rec.calls[5:] == [("alice", "5")] * 3
    store.create_user("carol", ["carol@example.com"])
    assert rec.calls[-1] == ("carol", "0")


def test_send_notifies_sender_and_each_local_recipient_once(store: MailStore) -> None:
    rec = Recorder(store)
    store.add_listener(rec)
    store.send("alice", OutgoingMessage(to=["bob@example.com", "robert@example.com"], cc=["x@remote.test"],
                                        subject="hi", text="t"))
    assert sorted(rec.calls) == [("alice", "1"), ("bob", "1")]
    store.outbox_done(store.outbox()[0].id)
    assert len(rec.calls) == 2  # outbox_done changes no mailbox


def test_import_notifies_once_per_stored_batch(store: MailStore) -> None:
    rec = Recorder(store)
    store.add_listener(rec)
    results = list(store.import_messages("bob", [msg(i, "bob@example.com") for i in range(5)], batch_size=2))
    assert [r.status for r in results] == ["stored"] * 5
    assert rec.calls == [("bob", "2"), ("bob", "4"), ("bob", "5")]
    list(store.import_messages("bob", [msg(i, "bob@example.com") for i in range(5)], batch_size=2))
    assert len(rec.calls) == 3  # all duplicates: nothing committed


def test_listener_runs_outside_the_user_lock(store: MailStore) -> None:
    """Another thread can write to the same user while the listener runs (it would block if the
    writer's lock were still held) and the listener may itself write through the store."""
    mid = store.deliver("alice", msg(1))
    outcome: dict[str, object] = {}

    def listener(user: str, state: str) -> None:
        if "other" in outcome:
            return
        t = threading.Thread(target=lambda: outcome.setdefault("other", store.deliver("alice", msg(2))))
        t.start()
        t.join(timeout=60)  # a deadlock shows as a thread still alive, not as a slow test
        outcome["other_done"] = not t.is_alive()
        store.mark_read("alice", mid)  # re-entrant write from inside a listener

    rec = Recorder(store)
    store.add_listener(listener)
    store.add_listener(rec)
    store.move("alice", mid, "Archive")
    assert outcome["other_done"] is True
    assert store.get_summary("alice", mid).is_read and store.folders("alice")[0].total == 1
    # the other thread's deliver and the nested mark_read were announced too, each exactly once
    assert sorted(rec.calls) == [("alice", "2"), ("alice", "3"), ("alice", "4")]
    check_user(store, "alice")


def test_listener_exception_is_logged_not_raised(store: MailStore, caplog: pytest.LogCaptureFixture) -> None:
    def broken(user: str, state: str) -> None:
        raise RuntimeError("listener bug")

    rec = Recorder(store)
    store.add_listener(broken)
    store.add_listener(rec)
    with caplog.at_level(logging.ERROR, logger="lsmmail.mail.store"):
        mid = store.deliver("alice", msg(1))
    assert store.get_summary("alice", mid).folder_id == "INBOX"  # the write stands
    assert rec.calls == [("alice", "1")]  # later listeners still run
    assert any("listener bug" in (r.exc_text or "") or (r.exc_info and "listener bug" in str(r.exc_info[1]))
               for r in caplog.records)


def test_remove_listener(store: MailStore) -> None:
    rec = Recorder(store)
    store.add_listener(rec)
    store.add_listener(rec)  # twice: called twice
    store.deliver("alice", msg(1))
    assert rec.calls == [("alice", "1")] * 2
    store.remove_listener(rec)
    store.deliver("alice", msg(2))
    assert rec.calls[2:] == [("alice", "2")]
    store.remove_listener(rec)
    store.remove_listener(rec)  # not registered: ignored
    store.deliver("alice", msg(3))
    assert len(rec.calls) == 3
    with pytest.raises(TypeError):
        store.add_listener("not callable")  # type: ignore[arg-type]


def test_failed_write_is_not_announced(store: MailStore) -> None:
    rec = Recorder(store)
    store.add_listener(rec)
    with pytest.raises(MessageTooLarge):
        store.deliver("alice", msg(1) + b"x" * LIMIT)
    with pytest.raises(UnknownMessage):
        store.mark_read("alice", "not-an-id")
    assert rec.calls == []


_OPS = st.lists(st.tuples(st.sampled_from(["deliver", "mark", "move", "delete", "send", "folder"]),
                          st.sampled_from(["alice", "bob"]), st.integers(0, 7)), max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_notifications_match_state_changes(tmp_path_factory: pytest.TempPathFactory,
                                           ops: list[tuple[str, str, int]]) -> None:
    """Model: after each operation, the users notified are exactly those whose state changed (plus the
    folder operation's own user), each once, with the state the store now reports."""
    store = _open(tmp_path_factory.mktemp("prop") / "db")
    try:
        rec = Recorder(store)
        store.add_listener(rec)
        ids: dict[str, list[str]] = {"alice": [], "bob": []}
        for op, user, n in ops:
            before = {u: store.state(u) for u in ids}
            rec.calls.clear()
            if op == "deliver":
                ids[user].append(store.deliver(user, msg(n, extra=f"X-U: {user}\r\n")))
            elif op == "send":
                other = "bob" if user == "alice" else "alice"
                store.send(user, OutgoingMessage(to=[f"{other}@example.com"], subject=f"s{n}", text="t"))
            elif op == "folder":
                store.create_folder(user, f"F{n}-{len(store.folders(user))}")
            elif ids[user]:
                mid = ids[user][n % len(ids[user])]
                try:
                    if op == "mark":
                        store.mark_read(user, mid, read=n % 2 == 0)
                    elif op == "move":
                        store.move(user, mid, ["INBOX", "Archive"][n % 2])
                    else:
                        store.delete(user, mid)
                except UnknownMessage:  # deleted for good earlier
                    ids[user].remove(mid)
            after = {u: store.state(u) for u in ids}
            changed = {u for u in ids if after[u] != before[u]}
            notified = [u for u, _ in rec.calls]
            assert len(notified) == len(set(notified))
            assert changed <= set(notified)
            assert set(notified) - changed <= ({user} if op == "folder" else set())
            assert all(state == after[u] for u, state in rec.calls)
    finally:
        store.close()


# ---- outbox cursor ------------------------------------------------------------------------------------

def test_outbox_pages_with_a_cursor(store: MailStore) -> None:
    for i in range(7):
        store.send("alice", OutgoingMessage(to=[f"r{i}@remote.test"], subject=f"o{i}", text="t"))
    everything = store.outbox(limit=100)
    assert [e.recipients for e in everything] == [[f"r{i}@remote.test"] for i in range(7)]
    pages, after = [], None
    while True:
        page = store.outbox(after=after, limit=3)
        pages.append(page)
        if len(page) < 3:
            break
        after = page[-1].id
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e.id for p in pages for e in p] == [e.id for e in everything]
    # a finished entry can still be the cursor: paging continues after it
    store.outbox_done(everything[2].id)
    assert [e.id for e in store.outbox(after=everything[2].id, limit=2)] == [e.id for e in everything[3:5]]
    assert store.outbox(after=everything[-1].id) == []
    for bad in ("nope", "", "zz" * 16):
        with pytest.raises(InvalidCursor):
            store.outbox(after=bad)
    with pytest.raises(ValueError):
        store.outbox(limit=0)


# ---- file-like reads ----------------------------------------------------------------------------------

def test_open_raw_and_attachment_read_in_chunks(store: MailStore) -> None:
    data = bytes(range(256)) * 8
    mid = store.deliver("alice", with_attachment(1, data))
    with store.open_raw("alice", mid) as f:
        chunks = iter(lambda: f.read(100), b"")
        assert b"".join(chunks) == store.get_raw("alice", mid)
    with store.open_attachment("alice", mid, 0) as f:
        first = f.read(1000)
        assert first == data[:1000] and f.read() == data[1000:]
        f.seek(0)
        assert f.read(5) == data[:5]
    with pytest.raises(UnknownAttachment):
        store.open_attachment("alice", mid, 1)
    with pytest.raises(UnknownMessage):
        store.open_raw("bob", mid)  # another user's id


# ---- reserved tags ------------------------------------------------------------------------------------

def test_service_tag_reserved_and_never_written(store: MailStore) -> None:
    assert schema.SERVICE_RESERVED == b"K"
    assert schema.SERVICE_RESERVED not in schema.ALL_TAGS
    assert schema.SERVICE_RESERVED not in schema.SEARCH_RESERVED
    mid = store.deliver("alice", with_attachment(2, b"abc"))
    store.send("alice", OutgoingMessage(to=["bob@example.com", "z@remote.test"], subject="k", text="t"))
    store.mark_read("alice", mid)
    assert list(store.db.scan(prefix=b"K")) == []
