"""mime_fast's attachment file name fast path against the stdlib's ``Message.get_filename`` (which it
stands in for on the values it accepts), and the memoised ``Part.get_filename`` on whole messages."""

from __future__ import annotations

import email
from email.policy import compat32

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.mail import mime_fast

_type = st.sampled_from(["", "attachment", "inline", "application/pdf", "text/plain", "filename=a.txt",
                         "name", "filename"])
_pname = st.sampled_from(["filename", "FileName", "name", "NAME", "x", "filename*", "name*0", "file name",
                          " filename ", ""])
_pvalue = st.sampled_from(["a.pdf", '"a.pdf"', '" a b.pdf "', '"a;b.pdf"', '""', "", "'q.txt'",
                           '"\\"x\\".txt"', "a\\b", '"=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="', '"a=b.txt"',
                           '""x""', '"un', "x\tz", '"a.pdf" junk'])
_sep = st.sampled_from(["; ", ";", " ; ", ";\r\n\t", ";;"])


@st.composite
def _header(draw: st.DrawFn) -> str | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    out = draw(_type)
    for _ in range(draw(st.integers(0, 3))):
        name, value = draw(_pname), draw(_pvalue)
        out += draw(_sep) + (name if draw(st.integers(0, 5)) == 0 else f"{name}={value}")
    return out


def _stdlib(cd: str | None, ct: str | None) -> object:
    msg = email.message.Message(policy=compat32)
    if ct is not None:
        msg["Content-Type"] = ct
    if cd is not None:
        msg["Content-Disposition"] = cd
    return msg.get_filename()


@settings(max_examples=600, deadline=None)
@given(_header(), _header())
def test_plain_filename_equals_get_filename(cd: str | None, ct: str | None) -> None:
    got = mime_fast._plain_filename(cd, ct)
    if got is mime_fast._UNKNOWN:
        return
    assert (None if got is mime_fast._MISSING else got) == _stdlib(cd, ct)


@settings(max_examples=200, deadline=None)
@given(_header(), _header())
def test_part_get_filename_equals_the_parser(cd: str | None, ct: str | None) -> None:
    head = ""
    if ct is not None:
        head += f"Content-Type: {ct}\r\n"
    if cd is not None:
        head += f"Content-Disposition: {cd}\r\n"
    raw = f"{head}\r\nbody\r\n".encode()
    part = mime_fast.build(raw)
    if part is None:
        return
    ref = email.message_from_bytes(raw, policy=compat32)
    assert part.get_filename() == ref.get_filename()


def test_common_attachment_names_take_the_fast_path() -> None:
    cd = 'attachment; filename="report 2.pdf"'
    assert mime_fast._plain_filename(cd, "application/pdf") == "report 2.pdf"
    assert mime_fast._plain_filename(None, 'image/png; name="x.png"') == "x.png"
    assert mime_fast._plain_filename("inline", "text/plain") is mime_fast._MISSING
    assert mime_fast._plain_filename("attachment; filename*=utf-8''a%20b", None) is mime_fast._UNKNOWN
