"""The binary value encodings of records.py: round trips against the plain values, and corruption is
reported (never decoded into different mail)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsmmail.engine.errors import Corruption
from lsmmail.mail import records
from lsmmail.mail.ids import IdGenerator, id_to_str

# Any code point except lone surrogates; the encoder also round-trips those (surrogatepass), tested apart.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
ADDRS = st.lists(st.tuples(TEXT, TEXT), max_size=6)
THREAD = st.binary(min_size=16, max_size=16)


def summary_args(**kw: object) -> dict:
    base: dict = dict(subject="s", preview="p", from_=[], to=[], cc=[], date=None, size=1,
                      has_attachments=False, read=False, thread=bytes(16))
    base.update(kw)
    return base


@given(TEXT, TEXT, ADDRS, ADDRS, ADDRS, st.one_of(st.none(), st.floats(0, 2**40)), st.integers(0, 2**63),
       st.booleans(), st.booleans(), THREAD)
def test_summary_round_trip(subject: str, preview: str, f: list, t: list, c: list, date: float | None,
                            size: int, att: bool, read: bool, thread: bytes) -> None:
    data = records.encode_summary(subject=subject, preview=preview, from_=f, to=t, cc=c, date=date,
                                  size=size, has_attachments=att, read=read, thread=thread)
    flags, size2, date2, thread2, s2, p2, f2, t2, c2 = records.decode_summary(data)
    assert (size2, date2, thread2, s2, p2, f2, t2, c2) == (size, date, thread, subject, preview, f, t, c)
    assert records.summary_is_read(data) is read
    assert bool(flags & records.FLAG_ATTACHMENTS) is att
    assert records.summary_thread(data) == thread
    flipped = records.summary_with_read(data, not read)
    assert records.summary_is_read(flipped) is (not read)
    assert records.decode_summary(flipped)[1:] == records.decode_summary(data)[1:]


def test_summary_to_message_summary() -> None:
    mid = IdGenerator(clock_ms=lambda: 1_700_000_000_123).new()
    thread = IdGenerator(clock_ms=lambda: 5).new()
    data = records.encode_summary(**summary_args(subject="Grüße", from_=[("Ann", "a@x")], date=12.5,
                                                 size=99, has_attachments=True, read=True, thread=thread))
    s = records.summary_from(mid, records.INBOX, data)
    assert s == records.MessageSummary(
        id=id_to_str(mid), folder_id="INBOX", thread_id=id_to_str(thread), subject="Grüße",
        from_=[("Ann", "a@x")], to=[], cc=[], date=12.5, received=1_700_000_000.123, preview="p", size=99,
        has_attachments=True, is_read=True,
    )
    with pytest.raises(AttributeError):  # still frozen
        s.subject = "x"  # type: ignore[misc]


def test_strings_with_nul_switch_to_lengths() -> None:
    subject = "a\x00b" + "x" * 70_000
    data = records.encode_summary(**summary_args(subject=subject, to=[("", "b@y")] * 3))
    assert data[records.SUMMARY_FLAGS_AT] & records.FLAG_LENGTHS
    assert records.decode_summary(data)[4] == subject
    assert records.decode_summary(data)[7] == [("", "b@y")] * 3
    plain = records.encode_summary(**summary_args(subject="ab"))
    assert not plain[records.SUMMARY_FLAGS_AT] & records.FLAG_LENGTHS


def test_lone_surrogates_round_trip() -> None:
    data = records.encode_summary(**summary_args(subject="a\udcffb"))
    assert records.decode_summary(data)[4] == "a\udcffb"
    assert records.decode_body(records.encode_body("\ud800", "h")) == ("\ud800", "h")


@given(TEXT, TEXT)
def test_body_round_trip(text: str, html: str) -> None:
    assert records.decode_body(records.encode_body(text, html)) == (text, html)


def test_message_record_round_trip_and_rewrite() -> None:
    sm = records.encode_summary(**summary_args(subject="hello"))
    details = {"m": "a@b", "i": [], "r": ["x@y"], "b": [["", "c@d"]], "a": [], "k": None}
    rec = records.encode_message(records.INBOX, sm, details)
    assert records.decode_message_head(rec) == (records.INBOX, sm)
    assert records.decode_message_details(rec) == details
    sm2 = records.summary_with_read(sm, True)
    rec2 = records.message_with(rec, records.TRASH, sm2)
    assert records.decode_message_head(rec2) == (records.TRASH, sm2)
    assert records.decode_message_details(rec2) == details


@pytest.mark.parametrize("cut", [0, 1, 10, 45, 47, 50, 55])
def test_truncated_summary_is_corruption(cut: int) -> None:
    data = records.encode_summary(**summary_args(subject="subject", from_=[("N", "n@x")]))
    with pytest.raises(Corruption):
        records.decode_summary(data[:cut])


def test_damaged_values_are_corruption() -> None:
    data = bytearray(records.encode_summary(**summary_args(subject="subject")))
    bad_format = bytes([9]) + bytes(data[1:])
    bad_flags = bytes(data[:1]) + bytes([0x80]) + bytes(data[2:])
    bad_utf8 = bytes(data[:-1]) + b"\xff"
    for bad in (bad_format, bad_flags, bad_utf8, bytes(data) + b"extra"):
        with pytest.raises(Corruption):
            records.decode_summary(bad)
    rec = records.encode_message(1, bytes(data), {"a": []})
    with pytest.raises(Corruption):
        records.decode_message_head(rec[:20])
    with pytest.raises(Corruption):
        records.decode_message_details(rec[:-1])
    with pytest.raises(Corruption):
        records.decode_body(b"\x00\x00\x01\x00abc")


# ---- split encoders: the import workers encode what depends on the message alone ---------------------------

DETAIL_TEXT = st.one_of(st.none(), TEXT)
DETAILS = st.fixed_dictionaries({
    "m": DETAIL_TEXT, "i": st.lists(TEXT, max_size=3), "r": st.lists(TEXT, max_size=3),
    "b": st.lists(st.lists(TEXT, min_size=2, max_size=2), max_size=3),
    "a": st.lists(st.tuples(TEXT, TEXT, st.integers(0, 2**40), st.text("0123456789abcdef", min_size=64,
                                                                         max_size=64)).map(list), max_size=3),
})


@given(TEXT, TEXT, ADDRS, ADDRS, ADDRS, st.one_of(st.none(), st.floats(0, 2**40)), st.integers(0, 2**63),
       st.booleans(), st.booleans(), THREAD)
def test_summary_parts_join_to_encode_summary(subject: str, preview: str, f: list, t: list, c: list,
                                              date: float | None, size: int, att: bool, read: bool,
                                              thread: bytes) -> None:
    kw = dict(subject=subject, preview=preview, from_=f, to=t, cc=c, date=date, size=size,
              has_attachments=att)
    pre, post = records.summary_parts(**kw)
    assert records.join_summary(pre, thread, post, read) == records.encode_summary(**kw, read=read,
                                                                                    thread=thread)


@given(DETAILS, st.one_of(st.none(), st.binary(min_size=1, max_size=80)), st.integers(0, 2**32 - 1),
       st.binary(max_size=60))
def test_message_record_equals_encode_message(details: dict, dkey: bytes | None, folder: int,
                                              summary: bytes) -> None:
    want = records.encode_message(folder, summary, {**details, "k": dkey.hex() if dkey is not None else None})
    got = records.message_record(folder, summary, records.details_prefix(details), dkey)
    assert got == want
    assert records.decode_message_details(got) == {**details, "k": dkey.hex() if dkey is not None else None}


def test_details_prefix_refuses_a_dedup_key() -> None:
    with pytest.raises(ValueError):
        records.details_prefix({"m": None, "k": "00"})
