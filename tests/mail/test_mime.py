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


# --- the fast path (mime_fast) and its fallback -------------------------------------------------------

_NESTED = (
    b"From someone@example.org Mon May  2 16:07:05 2005\r\n"
    b"From: a@b.c\r\nSubject: nested\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\npreamble\r\n"
    b"--o  \r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=E9\r\n\r\n--i\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--i--\r\n"
    b"--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
    b"--o\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERg==\r\n--o--\r\nepilogue\r\n"
)


def test_fast_path_reads_nested_multiparts_like_the_reference() -> None:
    for raw in (_NESTED, _NESTED.replace(b"\r\n", b"\n")):
        fast = mime.parse_fast(raw)
        assert fast is not None and fast == mime.parse_reference(raw)
        assert fast.subject == "nested" and fast.html == "<b>x</b>"
        assert fast.text.splitlines() == ["café", "", "inner body"]  # the message/rfc822 body is text too
        assert [(a.filename, a.data) for a in fast.attachments] == [("r.pdf", b"%PDF")]


def test_fast_path_without_close_delimiter_matches_reference() -> None:
    raw = _NESTED[: _NESTED.index(b"--o--")]
    assert mime.parse_fast(raw) is not None and mime.parse_fast(raw) == mime.parse_reference(raw)


def test_fast_path_declines_what_it_does_not_model() -> None:
    declined = [
        _NESTED.replace(b"caf=E9\r\n", b"caf=E9\r"),  # a lone CR ends a line for the stdlib parser
        _NESTED.replace(b"message/rfc822", b"message/delivery-status"),
        _NESTED.replace(b"boundary=i", b"boundary=o--"),  # "--o--" would end both multiparts
        _NESTED.replace(b"--o  \r\n", b"--o\r\n--o\r\n"),  # two delimiter lines in a row
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno delimiter at all\r\n",
        b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nno boundary parameter\r\n--x--\r\n",
        b" continuation first: x\r\nSubject: y\r\n\r\nbody\r\n",
    ]
    for raw in declined:
        assert mime.parse_fast(raw) is None, raw
        assert mime.parse(raw) == mime.parse_reference(raw)


def test_fast_path_short_boundary_inside_dash_runs() -> None:
    # delimiter "---" occurs inside every body line; only whole lines count (and close is "-----")
    raw = (b'Content-Type: multipart/mixed; boundary="-"\n\n---\nContent-Type: text/plain\n\n'
           + b"------ x\n---- \n" * 50 + b"--- \n\nsecond\n-----\n")
    fast = mime.parse_fast(raw)
    assert fast is not None and fast == mime.parse_reference(raw)
    assert fast.text.endswith("---- \nsecond") and fast.text.count("------ x") == 50
