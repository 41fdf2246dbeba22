"""mark_read against a plain model: random read/unread flips over messages in two folders keep the
list and unread indexes, counters, message records and change log equal to a recount, a flip to the
same value writes nothing, and the state survives a reopen. Plus the one-byte record rewrite itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.mail import MailStore, records
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
