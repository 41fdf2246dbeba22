"""mark_read against a plain model: random read/unread flips over messages in two folders keep the
list and unread indexes, counters, message records and change log equal to a recount, a flip to the
same value writes nothing, and the state survives a reopen. Plus the one-byte record rewrite itself, the
direct batch of mark_read against the general transaction's, and a failed write."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import DB, WriteBatch
from lsmmail.engine.errors import LsmError, ReadOnlyError
from lsmmail.engine.fs import OsFileSystem
from lsmmail.engine.fs_fault import FaultInjectingFileSystem
from lsmmail.engine.options import Options
from lsmmail.mail import MailOptions, MailStore, records, schema
from lsmmail.mail.errors import StateTooOld
from lsmmail.mail.txn import FolderState

from .helpers import check_user


def _msg(n: int) -> bytes:
    return (f"From: s{n}@example.org\r\nTo: u@example.com\r\nSubject: m{n}\r\nMessage-ID: <m{n}@x>\r\n\r\n"
            f"body {n}\r\n").encode()


@given(st.sampled_from([records.INBOX, 99]), st.booleans(), st.text(max_size=20),
       st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3), st.booleans())
def test_message_with_read_flips_only_the_flag(folder: int, read: bool, subject: str, to: list,
                                               new: bool) -> None:
    sm = records.encode_summary(subject=subject, preview="p", from_=[], to=to, cc=[], date=1.0, size=3,
                                has_attachments=False, read=read, thread=bytes(16))
    rec = records.encode_message(folder, sm, {"m": None, "i": [], "r": [], "b": [], "a": [], "k": None})
    out = records.message_with_read(rec, new)
    assert out == records.message_with(rec, folder, records.summary_with_read(sm, new))
    assert records.decode_message_head(out) == (folder, records.summary_with_read(sm, new))
    assert records.decode_message_details(out) == records.decode_message_details(rec)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=25))
def test_mark_read_matches_a_model(tmp_path_factory: object, ops: list[tuple[int, bool]]) -> None:
    path: Path = tmp_path_factory.mktemp("mark")  # type: ignore[attr-defined]
    with MailStore.open(path / "m") as store:
        store.create_user("u", addresses=["u@example.com"])
        f = store.create_folder("u", "Work")
        ids = [store.deliver("u", _msg(i)) for i in range(6)]
        for mid in ids[3:]:
            store.move("u", mid, f.id)
        model = {mid: False for mid in ids}
        state = int(store.state("u"))
        for i, read in ops:
            mid = ids[i]
            store.mark_read("u", mid, read)
            if model[mid] != read:  # a flip logs one change; a same-value mark writes nothing
                state += 1
            model[mid] = read
            assert store.get_summary("u", mid).is_read is read
            assert store.get_message("u", mid).summary.is_read is read
            assert int(store.state("u")) == state
        check_user(store, "u")
        unread = {m for m, r in model.items() if not r}
        listed_unread = {s.id for fid in ("INBOX", f.id)
                         for s in store.list_messages("u", fid, unread_only=True, limit=50).items}
        assert listed_unread == unread
        counts = {x.id: x.unread for x in store.folders("u")}
        assert counts["INBOX"] == len(unread & set(ids[:3])) and counts[f.id] == len(unread & set(ids[3:]))
    with MailStore.open(path / "m") as store:  # what was installed in memory is what is on disk
        check_user(store, "u")
        assert int(store.state("u")) == state
        assert {x.id: x.unread for x in store.folders("u")} == counts
        assert all(store.get_summary("u", m).is_read is r for m, r in model.items())


@given(st.text(), st.integers(0, 2**40), st.integers(0, 2**40))
def test_folder_record_is_the_json_of_dumps(name: str, total: int, unread: int) -> None:
    f = FolderState(name, total, unread)
    try:
        expected = records.dumps({"n": name, "t": total, "u": unread})
    except UnicodeEncodeError:  # a lone surrogate: both refuse it alike
        with pytest.raises(UnicodeEncodeError):
            f.record()
        return
    assert f.record() == expected
    assert records.loads(f.record()) == {"n": name, "t": total, "u": unread}


class _Recorder:
    """A WriteBatch factory that keeps every batch it made (MailStore's ``batch_factory`` seam)."""

    def __init__(self) -> None:
        self.batches: list[WriteBatch] = []

    def __call__(self) -> WriteBatch:
        b = WriteBatch()
        self.batches.append(b)
        return b


def _txn_mark_batch(store: MailStore, user_id: str, mid: str, read: bool) -> list[tuple[int, bytes, bytes]]:
    """The batch the general transaction (Txn) makes for a mark, from the store's current state: the
    reference the direct batch of mark_read must equal (built, not written)."""
    u = store._user(user_id)
    m = store._mid(mid)
    rec = store._message_record(u, m)
    folder, sm = records.decode_message_head(rec)
    txn = store._txn()
    ut = txn.user(u)
    new_sm = records.summary_with_read(sm, read)
    txn.put(schema.message_key(u.uk, m), records.message_with(rec, folder, new_sm))
    txn.put(schema.listing_key(u.uk, folder, m), new_sm)
    if read:
        txn.delete(schema.unread_key(u.uk, folder, m))
    else:
        txn.put(schema.unread_key(u.uk, folder, m), new_sm)
    ut.count(folder, 0, -1 if read else 1)
    txn.log_change(ut, schema.CHANGE_UPDATED, m)
    txn.finish()
    return list(txn.batch.entries)  # type: ignore[attr-defined]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=20), st.integers(1, 4))
def test_mark_read_batch_equals_the_transaction_batch(tmp_path_factory: object, ops: list[tuple[int, bool]],
                                                      retention: int) -> None:
    """Entry for entry, the batch mark_read writes is the one a Txn makes (message, listing, unread,
    change log with the retention's trimming, folder counter, user state), and a same-value mark writes
    no batch; counters still equal a recount and StateTooOld follows the retention."""
    path: Path = tmp_path_factory.mktemp("markb")  # type: ignore[attr-defined]
    rec = _Recorder()
    db = DB.open(path / "m")
    store = MailStore(db, MailOptions(change_log_retention=retention), batch_factory=rec)
    try:
        store.create_user("u", addresses=["u@example.com"])
        ids = [store.deliver("u", _msg(i)) for i in range(5)]
        store.move("u", ids[4], "Archive")
        for i, read in ops:
            mid = ids[i]
            same = store.get_summary("u", mid).is_read is read
            expected = None if same else _txn_mark_batch(store, "u", mid, read)
            before = len(rec.batches)
            store.mark_read("u", mid, read)
            if same:
                assert len(rec.batches) == before
            else:
                assert rec.batches[-1].entries == expected
            check_user(store, "u")
        state = int(store.state("u"))
        assert store.changes("u", str(state - retention)).new_state == str(state)
        if state - retention - 1 >= 0:
            with pytest.raises(StateTooOld):
                store.changes("u", str(state - retention - 1))
    finally:
        store.close()


def test_failed_mark_read_installs_nothing(tmp_path: Path) -> None:
    """A mark whose WAL write fails raises, and leaves the in-memory counters and state as they were
    (equal to what is on disk); after a reopen the counters equal a recount."""
    fs = FaultInjectingFileSystem(OsFileSystem())
    store = MailStore.open(tmp_path / "m", MailOptions(db_options=Options(fs=fs)))
    store.create_user("u", addresses=["u@example.com"])
    mid = store.deliver("u", _msg(1))
    folders, state = store.folders("u"), store.state("u")
    fs.fail_always(("write", "sync"))
    with pytest.raises(LsmError):
        store.mark_read("u", mid)
    assert store.folders("u") == folders and store.state("u") == state
    assert store.get_summary("u", mid).is_read is False
    fs.heal()
    # The database now refuses writes until reopened: close skips persisting the search segment (it is
    # rebuilt from the durable records at the next open) and succeeds.
    with pytest.raises(ReadOnlyError):
        store.deliver("u", _msg(2))
    store.close()
    with MailStore.open(tmp_path / "m") as store:
        check_user(store, "u")
        assert [m.id for m in store.search("u", "subject:m1").items] == [mid]
