from __future__ import annotations

import email
import email.policy
from pathlib import Path

from lsmmail.mail import mime

from .helpers import edge_cases, read_mbox_file


def test_every_edge_case_parses_without_raising_and_keeps_what_it_can(tmp_path: Path) -> None:
    msgs = dict(edge_cases(tmp_path))
    assert len(msgs) == 123
    for name, raw in msgs.items():
        p = mime.parse(raw)
        assert isinstance(p.subject, str) and isinstance(p.text, str), name
        for a in p.attachments:
            assert isinstance(a.data, bytes)


def test_group_syntax_to_does_not_raise(tmp_path: Path) -> None:
    msgs = dict(edge_cases(tmp_path))
    wanted = ("mimekit__delivery-status.txt:", "mimekit__delivery-status-no-blank-line.txt:")
    ds = [raw for name, raw in msgs.items() if name.startswith(wanted)]
    assert len(ds) == 2
    for raw in ds:
        with_default = email.message_from_bytes(raw, policy=email.policy.default)
        try:
            with_default.items()
            raised = False
        except AttributeError:
            raised = True
        assert raised, "the stdlib default policy no longer raises here; update the test"
        p = mime.parse(raw)
        assert p.to == []  # an empty group has no members
        assert p.from_ and p.subject


def test_empty_message_id_is_no_message_id() -> None:
    raw = b"From: a@b.c\r\nMessage-Id: <>\r\nSubject: x\r\n\r\nbody\r\n"
    p = mime.parse(raw)
    assert p.message_id is None and p.subject == "x" and p.text == "body\r\n"


def test_spamassassin_5006_empty_message_id() -> None:
    raw = read_mbox_file("spamassassin.mbox.xz")[5006]
    assert b"Message-Id: <>" in raw
    p = mime.parse(raw)
    assert p.message_id is None and p.subject


def test_encoded_words_addresses_and_dates() -> None:
    raw = (
        "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jm@example.de>\r\n"
        "To: a@x.org, \"Last, First\" <b@y.org>, undisclosed:;\r\n"
        "Cc: =?iso-8859-1?b?UmVu6Q==?= <r@z.fr>\r\n"
        "Subject: =?utf-8?b?SGVsbG8g8J+Mjg==?= world\r\n"
        "Date: Tue, 22 Aug 2002 12:07:35 +0800\r\n"
        "Message-ID: < abc@host >\r\nIn-Reply-To: <p@h>\r\nReferences: <r1@h> <p@h>\r\n"
        "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        "Gr=FC=DFe\r\n"
    ).encode("ascii")
    p = mime.parse(raw)
    assert p.from_ == [("Jörg Müller", "jm@example.de")]
    assert p.to == [("", "a@x.org"), ("Last, First", "b@y.org")]
    assert p.cc == [("René", "r@z.fr")]
    assert p.subject == "Hello 🌎 world"
    assert p.message_id == "abc@host" and p.in_reply_to == ["p@h"] and p.references == ["r1@h", "p@h"]
    assert p.date == 1029989255.0  # 2002-08-22 04:07:35 UTC
    assert p.text == "Grüße\r\n"
    assert p.preview == "Grüße"


def test_year_102_date_is_unusable_not_an_error() -> None:
    p = mime.parse(b"Date: Tue, 22 Aug 0102 12:07:35 +0800\r\n\r\nx")
    assert p.date is None


def test_attachment_rules_and_unknown_charset() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        b"Content-Type: text/plain; charset=chinesebig5\r\n\r\nhello\r\n--XX\r\n"
        b"Content-Type: text/html\r\n\r\n<p>hi &amp; bye</p>\r\n--XX\r\n"
        b"Content-Type: application/pgp-signature\r\n\r\nsig\r\n--XX\r\n"
        b"Content-Type: text/plain; name=log.txt\r\nContent-Disposition: attachment; filename=log.txt\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nbG9nIGRhdGE=\r\n--XX\r\n"
        b"Content-Type: image/png\r\n\r\nPNG\r\n--XX--\r\n"
    )
    p = mime.parse(raw)
    assert p.text == "hello"
    assert "hi &amp; bye" in p.html
    assert [(a.filename, a.content_type, a.data) for a in p.attachments] == [
        ("log.txt", "text/plain", b"log data"), ("", "image/png", b"PNG")]


def test_garbage_never_raises() -> None:
    for raw in [b"", b"\x00\xff" * 100, b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
                b"Subject: =?bogus?q?x?=\r\nFrom: <<<@@@>>>\r\n\r\n", b"\r\n\r\n\r\n"]:
        mime.parse(raw)


def test_attachment_counts_match_corpus_readme() -> None:
    # README verification table: messages with attachments per file (same rule as mime.parse).
    for name, expected in [("spamassassin.mbox.xz", 43), ("usrp-users-attachments.mbox.xz", 211)]:
        msgs = read_mbox_file(name)
        assert sum(1 for r in msgs if mime.parse(r).attachments) == expected


def test_normalise_subject() -> None:
    assert mime.normalise_subject("Re: [USRP-users] RE: Fwd:  B210  issue") == "b210 issue"
    assert mime.is_reply_subject("AW: hallo") and not mime.is_reply_subject("hallo")
