"""mime_fast.Part against email.message.Message, method by method, and the address memo of mime.

The corpus differential (test_mime_differential.py) compares whole parse results; these tests pin the
pieces: every Message method mime calls gives the same answer (or raises the same exception type) on a
Part holding the same raw headers and payload, including when the parameter cache already holds the value
from another part; and the memoised address reader returns fresh lists equal to the uncached reader."""

from __future__ import annotations

import base64
import quopri

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.mail import mime, mime_fast
from lsmmail.mail.mime_fast import Part

# Parameter syntax pieces (quotes, escapes, RFC 2231 stars and charsets, semicolons inside quotes, 8-bit
# bytes as surrogate escapes) so the stdlib's parameter code takes all of its branches.
_PIECES = st.sampled_from([
    "text/plain", "TEXT/HTML", "multipart/mixed", "application/pdf", "image", "a/b/c", "attachment", "inline",
    ";", " ; ", "=", '"', '\\"', "*", "*0", "*1", "*0*", "'", "''", "us-ascii", "utf-8'en'", "%E2%82%AC",
    "charset", "CHARSET", "boundary", "filename", "name", "x;y", "a b", " ", "\t", "(c)", "\udce9",
    "=?utf-8?q?a?=", "<", ">", "==", "--=_b",
])
_VALUES = st.lists(_PIECES, max_size=12).map("".join)
_METHODS = ("get_content_type", "get_content_maintype", "get_content_disposition", "get_filename",
            "get_content_charset", "get_boundary", "is_multipart")


def _answer(obj: object, method: str) -> object:
    try:
        return ("ok", getattr(obj, method)())
    except Exception as exc:  # the same failure is part of the contract (mime records it as a defect)
        return ("raise", type(exc))


def _pair(ctype: str | None, disp: str | None, default: str = "text/plain") -> tuple[Part, object]:
    from email.message import Message

    part, msg = Part(default), Message()
    msg.set_default_type(default)
    for name, value in (("Content-Type", ctype), ("Content-Disposition", disp)):
        if value is not None:
            part._fields.setdefault(name.lower(), []).append((name, value))
            msg.set_raw(name, value)
    return part, msg


@settings(max_examples=400, deadline=None)
@given(ctype=st.none() | _VALUES, disp=st.none() | _VALUES, digest=st.booleans())
def test_part_methods_equal_message_methods(ctype: str | None, disp: str | None, digest: bool) -> None:
    default = "message/rfc822" if digest else "text/plain"
    for _ in range(2):  # the second round reads the parameter cache filled by the first
        part, msg = _pair(ctype, disp, default)
        for method in _METHODS:
            assert _answer(part, method) == _answer(msg, method), method


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=300),
    cte=st.sampled_from(
        ["", "base64", "BASE64", "quoted-printable", "x-uuencode", "7bit", "bogus", "b\udce9"]
    ),
    encode=st.booleans(),
)
def test_part_payload_equals_message_payload(data: bytes, cte: str, encode: bool) -> None:
    from email.message import Message

    if encode and cte.lower() == "base64":
        data = base64.encodebytes(data)
    elif encode and cte == "quoted-printable":
        data = quopri.encodestring(data)
    part, msg = Part(), Message()
    if cte:
        part._fields["content-transfer-encoding"] = [("Content-Transfer-Encoding", cte)]
        msg.set_raw("Content-Transfer-Encoding", cte)
    part._payload = data
    msg._payload = data.decode("ascii", "surrogateescape")  # what the feed parser stores
    assert part.get_payload(decode=True) == msg.get_payload(decode=True)


def test_multipart_part_payload_is_none_and_walk_is_depth_first() -> None:
    root = mime_fast.build(
        b"Content-Type: multipart/mixed; boundary=X\n\n"
        b"--X\nContent-Type: multipart/alternative; boundary=Y\n\n"
        b"--Y\n\na\n--Y\n\nb\n--Y--\n--X\n\nc\n--X--\n"
    )
    assert root is not None and root.get_payload(decode=True) is None
    leaves = [p.get_payload(decode=True) for p in root.walk() if not p.is_multipart()]
    assert leaves == [b"a", b"b", b"c"]


@given(st.lists(st.sampled_from([
    "Alice <a@x.org>", '"Bob, B." <b@y.org>', "c@z.org", "=?utf-8?q?Ren=C3=A9?= <r@x.org>", "undisclosed:;",
    "g: m1@x.org, m2@x.org;", "<>", "bare", "Dan (comment) <d@x.org>", "\udce9t\udce9 <e@x.org>",
]), min_size=1, max_size=3))
def test_address_memo_equals_uncached_and_returns_fresh_lists(values: list[str]) -> None:
    first = mime.addresses(values)
    assert first == list(mime._addresses.__wrapped__(tuple(values)))
    first.append(("mutated", "m@x.org"))
    assert mime.addresses(values) == first[:-1]


# Every kind of Unicode whitespace (and U+200B, which is not) next to letters.
_WS_CHARS = "ab \u00e9\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u3000\u200b"
_WS_TEXT = st.text(alphabet=st.sampled_from(list(_WS_CHARS)))


@given(_WS_TEXT)
def test_collapse_ws_equals_the_regular_expression(text: str) -> None:
    import re

    assert mime.collapse_ws(text) == re.sub(r"\s+", " ", text).strip()


@given(
    text=_WS_TEXT | st.lists(st.sampled_from([*_WS_CHARS, "word", "words"]), max_size=400).map("".join),
    html=st.sampled_from(["", "<p>a  b</p>", "<style>x</style> c\n d"]),
)
def test_preview_equals_its_definition(text: str, html: str) -> None:
    import re

    source = text if text.strip() else mime.html_to_text(html)
    expected = re.sub(r"\s+", " ", source[:800]).strip()[:200]
    assert mime.ParsedMessage(text=text, html=html).preview == expected
