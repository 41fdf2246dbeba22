"""get_message's result (records.message_from, a Message whose body and details decode on first read)
against a plain Message built from the same values: every field, equality both ways, repr, pickle,
copy, replace, concurrent first reads, and corruption reported from the field that reads it."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.errors import Corruption
from lsmmail.mail import MailStore, Message, OutgoingMessage, records, schema
from lsmmail.mail.ids import IdGenerator

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
BODY = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
ADDRS = st.lists(st.tuples(TEXT, TEXT), max_size=3)
ATTS = st.lists(st.tuples(TEXT, TEXT, st.integers(0, 2**40), st.binary(min_size=32, max_size=32)), max_size=3)
LAZY = ("text", "html", "message_id", "in_reply_to", "references", "bcc", "attachments")


def _records(text: str, html: str, mid_hdr: str | None, irt: list, refs: list, bcc: list, atts: list,
             with_body: bool) -> tuple[bytes, bytes, bytes | None, Message]:
    """(id, message record, body record, the plain Message they stand for)."""
    mid = IdGenerator(clock_ms=lambda: 1_700_000_000_000).new()
    sm = records.encode_summary(subject="s", preview="p", from_=[("A", "a@x")], to=[], cc=[], date=None,
                                size=10, has_attachments=bool(atts), read=False, thread=mid)
    details = {"m": mid_hdr, "i": irt, "r": refs, "b": [list(b) for b in bcc],
               "a": [[a[0], a[1], a[2], a[3].hex()] for a in atts], "k": None}
    rec = records.encode_message(records.INBOX, sm, details)
    body = records.encode_body(text, html) if with_body else None
    expected = Message(
        summary=records.summary_from(mid, records.INBOX, sm), message_id=mid_hdr, in_reply_to=irt,
        references=refs, bcc=[tuple(b) for b in bcc], text=text if with_body else "",
        html=html if with_body else "",
        attachments=[records.AttachmentInfo(i, a[0], a[1], a[2], a[3].hex()) for i, a in enumerate(atts)],
    )
    return mid, rec, body, expected


@settings(max_examples=150, deadline=None)
@given(BODY, BODY, st.one_of(st.none(), TEXT), st.lists(TEXT, max_size=3), st.lists(TEXT, max_size=3), ADDRS,
       ATTS, st.booleans(), st.permutations(LAZY))
def test_fields_equal_the_plain_message(text: str, html: str, mid_hdr: str | None, irt: list, refs: list,
                                        bcc: list, atts: list, with_body: bool, order: list) -> None:
    mid, rec, body, expected = _records(text, html, mid_hdr, irt, refs, bcc, atts, with_body)
    m = records.message_from(mid, rec, body)
    assert isinstance(m, Message)
    for name in order:  # any first-read order gives the plain values
        assert getattr(m, name) == getattr(expected, name), name
    assert m == expected and expected == m and not (m != expected)
    fresh = records.message_from(mid, rec, body)
    assert fresh == expected and expected == fresh  # equality itself decodes an untouched one
    assert repr(records.message_from(mid, rec, body)) == repr(expected)
    assert dataclasses.asdict(records.message_from(mid, rec, body)) == dataclasses.asdict(expected)


def test_pickle_copy_replace_give_plain_values() -> None:
    mid, rec, body, expected = _records("hi", "<p>hi</p>", "x@y", ["a@b"], ["a@b"], [("B", "b@c")],
                                        [("f.txt", "text/plain", 3, bytes(32))], True)
    m = records.message_from(mid, rec, body)
    back = pickle.loads(pickle.dumps(records.message_from(mid, rec, body)))
    assert type(back) is Message and back == expected
    assert copy.copy(records.message_from(mid, rec, body)) == expected
    assert copy.deepcopy(records.message_from(mid, rec, body)) == expected
    r = dataclasses.replace(m, text="other")
    assert r.text == "other" and r.html == "<p>hi</p>" and r.attachments == expected.attachments
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.text = "x"  # type: ignore[misc]
    assert m.text == "hi"


def test_concurrent_first_reads_see_the_same_values() -> None:
    text = "ü" * 50_000
    mid, rec, body, expected = _records(text, "<b>x</b>", "m@x", [], [], [], [], True)
    for _ in range(20):
        m = records.message_from(mid, rec, body)
        seen: list[tuple] = []
        barrier = threading.Barrier(4)

        def read(m: Message = m, seen: list = seen, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            seen.append((m.html, m.text, m.message_id, m.attachments))

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [("<b>x</b>", text, "m@x", [])] * 4


@pytest.mark.parametrize("bad_body", [b"\x00\x00\x00\x09abc", b"\x00\x00\x00\x01\xff", b"\x00\x00"])
def test_corrupt_body_is_reported_by_the_fields_that_read_it(bad_body: bytes) -> None:
    mid, rec, _, expected = _records("t", "h", None, [], [], [], [], True)
    m = records.message_from(mid, rec, bad_body)
    assert m.summary == expected.summary and m.message_id is None  # the other groups still read
    for name in ("text", "html"):
        with pytest.raises(Corruption):
            getattr(m, name)
    with pytest.raises(Corruption):
        _ = m == expected


@pytest.mark.parametrize("details", [b"{not json", b'{"m": null}', b'{"m":null,"i":[],"r":[],"b":[[1]],'
                                     b'"a":[],"k":null}', b"[]"])
def test_corrupt_details_are_reported(details: bytes) -> None:
    mid, rec, body, _ = _records("t", "h", None, [], [], [], [], True)
    _, sm = records.decode_message_head(rec)
    bad = rec[:records.MESSAGE_HEAD_LEN + len(sm)] + details
    m = records.message_from(mid, bad, body)
    assert m.text == "t"
    for name in ("message_id", "in_reply_to", "references", "bcc", "attachments"):
        with pytest.raises(Corruption):
            getattr(m, name)


def test_corrupt_head_is_reported_by_get(tmp_path: Path) -> None:
    with MailStore.open(tmp_path / "m") as store:
        store.create_user("u", addresses=["u@example.com"])
        mid = store.deliver("u", b"From: a@x\r\nSubject: s\r\n\r\nbody\r\n")
        u = store._user("u")
        store._db.put(schema.message_key(u.uk, bytes.fromhex(mid.replace("-", ""))), b"\x09garbage")
        with pytest.raises(Corruption):
            store.get_message("u", mid)


def test_store_get_message_matches_delivered_fields(tmp_path: Path) -> None:
    with MailStore.open(tmp_path / "m") as store:
        store.create_user("u", addresses=["u@example.com"])
        sent = store.send("u", OutgoingMessage(to=["x@remote.example"], bcc=["b@remote.example"],
                                               subject="hello", text="plain ü", html="<p>html</p>",
                                               attachments=[("a.bin", "application/octet-stream", b"123")]))
        m = store.get_message("u", sent)
        assert (m.text.strip(), m.html.strip()) == ("plain ü", "<p>html</p>")
        assert [a.filename for a in m.attachments] == ["a.bin"] and m.attachments[0].size == 3
        assert [addr for _, addr in m.bcc] == ["b@remote.example"]
        assert m.message_id and m.summary.subject == "hello" and m.summary.folder_id == "Sent"
        assert store.get_attachment("u", sent, 0) == b"123"
        plain = pickle.loads(pickle.dumps(m))
        assert plain == m == store.get_message("u", sent)
