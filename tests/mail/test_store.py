from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lsmmail.mail import (
    FolderExists,
    FolderNotAllowed,
    InvalidAddress,
    InvalidCursor,
    MailOptions,
    MailStore,
    MessageTooLarge,
    OutgoingMessage,
    StateTooOld,
    UnknownFolder,
    UnknownMessage,
    UnknownUser,
    UserExists,
)

from .helpers import check_attachments, check_user


def msg(n: int, *, mid: str | None = None, subject: str | None = None, extra: str = "",
        body: str = "") -> bytes:
    head = f"From: sender{n}@example.org\r\nTo: alice@example.com\r\nSubject: {subject or f'message {n}'}\r\n"
    if mid is not None:
        head += f"Message-ID: <{mid}>\r\n"
    return (head + extra + "\r\n" + (body or f"body of {n}\r\n")).encode("utf-8")


def with_attachment(n: int, data: bytes) -> bytes:
    import base64

    return (
        f"From: s@x.org\r\nSubject: att {n}\r\nMessage-ID: <att{n}@x>\r\n"
        "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nsee file\r\n"
        "--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=f.pdf\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(data).decode()}\r\n--B--\r\n"
    ).encode("ascii")


@pytest.fixture
def store(tmp_path: Path):
    s = MailStore.open(tmp_path / "db")
    s.create_user("alice", ["alice@example.com"])
    s.create_user("bob", ["bob@example.com", "robert@example.com"])
    yield s
    s.close()


def test_users_and_system_folders(store: MailStore) -> None:
    assert [f.id for f in store.folders("alice")] == ["INBOX", "Sent", "Drafts", "Trash", "Spam", "Archive"]
    with pytest.raises(UserExists):
        store.create_user("alice")
    with pytest.raises(UserExists):
        store.create_user("carol", ["BOB@example.com"])
    with pytest.raises(InvalidAddress):
        store.create_user("carol", ["not an address"])
    with pytest.raises(UnknownUser):
        store.folders("nobody")


def test_deliver_dedup_by_message_id_then_content(store: MailStore) -> None:
    a = store.deliver("alice", msg(1, mid="x@y"))
    assert store.deliver("alice", msg(2, mid="x@y")) == a
    b = store.deliver("alice", msg(3))
    assert store.deliver("alice", msg(3)) == b
    assert store.deliver("alice", msg(3, extra="X-Other: 1\r\n")) != b
    assert store.deliver("bob", msg(1, mid="x@y")) != a  # per user
    assert store.folders("alice")[0].total == 3
    check_user(store, "alice")


def test_raw_byte_exact_and_message_fields(store: MailStore) -> None:
    raw = msg(1, mid="m1@x", body="Hello there,\r\nsecond line\r\n")
    mid = store.deliver("alice", raw)
    assert store.get_raw("alice", mid) == raw
    m = store.get_message("alice", mid)
    assert m.summary.subject == "message 1" and m.summary.preview == "Hello there, second line"
    assert m.summary.from_ == [("", "sender1@example.org")] and not m.summary.is_read
    assert m.message_id == "m1@x" and m.summary.size == len(raw)


def test_size_limit(tmp_path: Path) -> None:
    with MailStore.open(tmp_path / "db", MailOptions(max_message_size=1000)) as s:
        s.create_user("u")
        s.deliver("u", b"x" * 1000)
        with pytest.raises(MessageTooLarge):
            s.deliver("u", b"x" * 1001)
        res = list(s.import_messages("u", [b"y" * 2000, b"z" * 10]))
        assert [r.status for r in res] == ["too_large", "stored"]


def test_pagination_stable_under_delivery_and_moves(store: MailStore) -> None:
    ids = [store.deliver("alice", msg(i)) for i in range(25)]
    seen = []
    page = store.list_messages("alice", "INBOX", limit=10)
    seen += [m.id for m in page.items]
    store.deliver("alice", msg(100))  # newer: sorts before the cursor, not repeated
    store.move("alice", ids[5], "Archive")  # not yet seen: leaves the sequence
    store.move("alice", ids[20], "Archive")  # already seen
    while page.next_cursor:
        page = store.list_messages("alice", "INBOX", limit=10, cursor=page.next_cursor)
        seen += [m.id for m in page.items]
    assert seen == [i for i in reversed(ids) if i != ids[5]]
    with pytest.raises(InvalidCursor):
        inbox_cursor = store.list_messages("alice", "INBOX", limit=1).next_cursor
        store.list_messages("alice", "Sent", cursor=inbox_cursor)
    with pytest.raises(InvalidCursor):
        store.list_messages("alice", "INBOX", cursor="!!!")


def test_unread_index_and_counters(store: MailStore) -> None:
    ids = [store.deliver("alice", msg(i)) for i in range(6)]
    store.mark_read("alice", ids[1])
    store.mark_read("alice", ids[1])  # no-op
    store.mark_read("alice", ids[2])
    store.mark_read("alice", ids[2], read=False)
    unread = store.list_messages("alice", "INBOX", unread_only=True).items
    assert [m.id for m in unread] == [i for i in reversed(ids) if i != ids[1]]
    store.move("alice", ids[3], "Archive")
    inbox = store.folders("alice")[0]
    assert (inbox.total, inbox.unread) == (5, 4)
    check_user(store, "alice")


def test_delete_to_trash_then_for_good_and_dedup_released(store: MailStore) -> None:
    mid = store.deliver("alice", msg(1, mid="d@x"))
    store.delete("alice", mid)
    assert store.get_summary("alice", mid).folder_id == "Trash"
    store.delete("alice", mid)
    with pytest.raises(UnknownMessage):
        store.get_message("alice", mid)
    with pytest.raises(UnknownMessage):
        store.get_raw("alice", mid)
    assert store.deliver("alice", msg(1, mid="d@x")) != mid  # deleted for good: a redelivery is new mail
    check_user(store, "alice")


def test_attachments_stored_once_and_reclaimed(store: MailStore) -> None:
    data = bytes(range(256)) * 40
    a = store.deliver("alice", with_attachment(1, data))
    b = store.deliver("bob", with_attachment(1, data))
    c = store.deliver("bob", with_attachment(2, data))
    assert store.get_attachment("alice", a, 0) == data
    info = store.get_message("bob", b).attachments
    assert [(i.filename, i.content_type, i.size) for i in info] == [("f.pdf", "application/pdf", len(data))]
    blobs = list(store.db.scan(prefix=b"X"))
    assert len(blobs) == 1
    for user, mid in [("alice", a), ("bob", b)]:
        store.delete(user, mid)
        store.delete(user, mid)
        check_attachments(store)
        assert len(list(store.db.scan(prefix=b"X"))) == 1
    assert store.get_attachment("bob", c, 0) == data
    store.delete("bob", c)
    store.delete("bob", c)
    check_attachments(store)
    assert list(store.db.scan(prefix=b"X")) == []


def test_send_local_remote_bcc(store: MailStore) -> None:
    sid = store.send("alice", OutgoingMessage(to=["Bob <bob@example.com>"], cc=["x@remote.net"],
                                              bcc=["robert@example.com", "y@remote.net"], subject="hi",
                                              text="hello", attachments=[("a.txt", "text/plain", b"A")]))
    sent = store.get_raw("alice", sid)
    assert b"Bcc:" in sent and store.get_summary("alice", sid).folder_id == "Sent"
    inbox = store.list_messages("bob", "INBOX").items
    assert len(inbox) == 1  # bob has two addresses; one copy
    assert b"Bcc" not in store.get_raw("bob", inbox[0].id)
    (entry,) = store.outbox()
    assert entry.recipients == ["x@remote.net", "y@remote.net"] and b"Bcc" not in entry.raw
    assert store.send("alice", sent) == sid  # same Message-ID: not sent twice
    assert len(store.outbox()) == 1
    store.outbox_done(entry.id)
    assert store.outbox() == []
    with pytest.raises(InvalidAddress):
        store.send("alice", OutgoingMessage(to=["bad address"], text="x"))
    with pytest.raises(InvalidAddress):
        store.send("alice", b"Subject: no recipients\r\n\r\nx")
    check_user(store, "alice")
    check_user(store, "bob")


def test_send_to_self(store: MailStore) -> None:
    sid = store.send("alice", OutgoingMessage(to=["alice@example.com"], subject="note", text="x"))
    folders = {f.id: f.total for f in store.folders("alice")}
    assert folders["Sent"] == 1 and folders["INBOX"] == 1
    assert store.list_messages("alice", "INBOX").items[0].id != sid


def test_user_folders(store: MailStore) -> None:
    f = store.create_folder("alice", "Projects")
    with pytest.raises(FolderExists):
        store.create_folder("alice", "projects")
    with pytest.raises(FolderExists):
        store.create_folder("alice", "inbox")
    mids = [store.deliver("alice", msg(i), folder=f.id) for i in range(3)]
    store.rename_folder("alice", f.id, "Work")
    assert [x.name for x in store.folders("alice")][-1] == "Work"
    with pytest.raises(FolderNotAllowed):
        store.rename_folder("alice", "INBOX", "x")
    with pytest.raises(FolderNotAllowed):
        store.delete_folder("alice", "Trash")
    assert store.delete_folder("alice", f.id) == 3
    with pytest.raises(UnknownFolder):
        store.list_messages("alice", f.id)
    assert {m.id for m in store.list_messages("alice", "Trash").items} == set(mids)
    check_user(store, "alice")


def test_threads_by_reference_and_subject(store: MailStore) -> None:
    a = store.deliver("alice", msg(1, mid="root@x", subject="Plans"))
    b = store.deliver("alice", msg(2, mid="r1@x", subject="Re: Plans", extra="In-Reply-To: <root@x>\r\n"))
    refs = "References: <root@x> <r1@x>\r\n"
    c = store.deliver("alice", msg(3, mid="r2@x", subject="something else", extra=refs))
    d = store.deliver("alice", msg(4, mid="r3@x", subject="RE: plans"))  # no references: by subject
    e = store.deliver("alice", msg(5, mid="o@x", subject="Plans"))  # not a reply: new thread
    t = store.get_summary("alice", a).thread_id
    assert t == a
    assert [m.id for m in store.thread("alice", t)] == [a, b, c, d]
    assert store.get_summary("alice", e).thread_id == e


def test_changes_and_state_too_old(tmp_path: Path) -> None:
    with MailStore.open(tmp_path / "db", MailOptions(change_log_retention=5)) as s:
        s.create_user("u")
        s0 = s.state("u")
        a = s.deliver("u", msg(1))
        s1 = s.state("u")
        b = s.deliver("u", msg(2))
        s.mark_read("u", a)
        ch = s.changes("u", s1)
        assert (ch.created, ch.updated, ch.deleted) == ([b], [a], [])
        assert s.changes("u", s0).created == sorted([a, b])
        s.delete("u", a)
        s.delete("u", a)
        ch = s.changes("u", s1)
        assert ch.deleted == [a] and ch.created == [b] and ch.new_state == s.state("u")
        s.deliver("u", msg(3))
        with pytest.raises(StateTooOld):
            s.changes("u", s0)
        with pytest.raises(StateTooOld):
            s.changes("u", "garbage")
        assert s.changes("u", s.state("u")).created == []


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with MailStore.open(tmp_path / "db") as s:
        s.create_user("u", ["u@x.org"])
        mid = s.deliver("u", msg(1, mid="k@x"))
        s.mark_read("u", mid)
        f = s.create_folder("u", "Keep")
        state = s.state("u")
    with MailStore.open(tmp_path / "db") as s:
        assert s.deliver("u", msg(1, mid="k@x")) == mid
        assert s.get_summary("u", mid).is_read
        assert [x.id for x in s.folders("u")][-1] == f.id
        assert s.state("u") == state
        assert s.create_folder("u", "Other").id != f.id
        check_user(s, "u")


def test_two_users_never_see_each_others_mail(store: MailStore) -> None:
    a = store.deliver("alice", with_attachment(9, b"secret"))
    b = store.deliver("bob", msg(2))
    for user, other in [("bob", a), ("alice", b)]:
        for call in (store.get_message, store.get_raw, store.get_summary):
            with pytest.raises(UnknownMessage):
                call(user, other)
        with pytest.raises(UnknownMessage):
            store.get_attachment(user, other, 0)
        for fn in (store.mark_read, store.delete):
            with pytest.raises(UnknownMessage):
                fn(user, other)
        with pytest.raises(UnknownMessage):
            store.move(user, other, "Archive")
        for f in store.folders(user):
            assert other not in {m.id for m in store.list_messages(user, f.id).items}
        assert other not in store.changes(user, "0").created
        assert store.thread(user, other) == []
    assert [m.id for m in store.search("alice", "secret OR body OR att").items] == [a]
    assert [m.id for m in store.search("bob", "body").items] == [b]


def test_concurrent_deliveries_are_all_counted(store: MailStore) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(15):
            mid = store.deliver("alice" if i % 2 else "bob", msg(t * 100 + i))
            with lock:
                ids.append(mid)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 60
    assert len(check_user(store, "alice")["INBOX"]) + len(check_user(store, "bob")["INBOX"]) == 60
