"""mime.parse (byte-level fast path + fallback) against mime.parse_reference (the stdlib parser), field by
field: on a corpus sample (whole corpus under ``slow``) and on generated and mutated multipart messages."""

from __future__ import annotations

import base64
import itertools
import quopri
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail.mail import mime
from lsmmail.mail.formats import open_maybe_xz, read_mbox

from .helpers import corpus_or_skip, edge_cases

# (file, take every n-th message, at most this many): ~1,800 messages, a few seconds.
SAMPLE = (
    ("spamassassin.mbox.xz", 6, None),
    ("usrp-users.mbox.xz", 1, 500),
    ("usrp-users-attachments.mbox.xz", 1, None),
)
# Messages the fast path declines in the whole corpus (measured; see docs/mail.md): 8 spamassassin messages
# with a lone CR, 3 + 11 with message/delivery-status, 2 + 6 whose multipart has no start boundary.
DECLINED_ALL = 30


def _read(name: str, step: int, limit: int | None) -> list[tuple[str, bytes]]:
    with open_maybe_xz(corpus_or_skip() / name) as f:
        msgs = itertools.islice(read_mbox(f), limit)
        return [(f"{name}[{i}]", raw) for i, raw in enumerate(msgs) if i % step == 0]


def _check(named: list[tuple[str, bytes]]) -> int:
    """Assert fast == reference for every message; return how many the fast path declined."""
    declined = 0
    for name, raw in named:
        ref = mime.parse_reference(raw)
        fast = mime.parse_fast(raw)
        if fast is None:
            declined += 1
        else:
            for f in ref.__dataclass_fields__:
                assert getattr(fast, f) == getattr(ref, f), (name, f)
        assert mime.parse(raw) == ref, name
    return declined


def test_corpus_sample_fast_equals_reference(tmp_path: Path) -> None:
    sample = [m for name, step, limit in SAMPLE for m in _read(name, step, limit)]
    sample.append(("spamassassin.mbox.xz[5006]", _read("spamassassin.mbox.xz", 1, 5007)[5006][1]))
    edges = edge_cases(tmp_path)
    assert len(sample) > 1500 and len(edges) == 123
    real = _check(sample)
    assert real <= 3, f"{real} real-mail messages declined"  # 2 in the sample today
    assert _check(edges) == 17  # delivery-status, no start boundary (docs/mail.md)


@pytest.mark.slow
def test_whole_corpus_fast_equals_reference(tmp_path: Path) -> None:
    declined = sum(_check(_read(name, 1, None)) for name, _, _ in SAMPLE)
    declined += _check(edge_cases(tmp_path))
    assert declined == DECLINED_ALL


# --- generated messages -------------------------------------------------------------------------------

# Body text never contains "_" and every boundary does, so no body line can be a delimiter line: the
# generated messages are well formed and the fast path must take every one of them.
_TEXT = st.text(alphabet="abc XYZ019.,:;-=!?<>/\"'é€\t", max_size=60)
_BCHARS = "abcXYZ0189'()+,-./:=?"
_NAMES = st.sampled_from(["notes.txt", "a b.pdf", "=?utf-8?q?r=C3=A9sum=C3=A9?=.doc", "x;y.bin", ""])


def _boundary(draw: st.DrawFn, serial: int) -> str:
    body = draw(st.text(alphabet=_BCHARS, min_size=0, max_size=20))
    inner_space = draw(st.sampled_from(["", " x"]))
    return f"{body}{inner_space}_{serial}"


def _header(draw: st.DrawFn, name: str, value: str, nl: str) -> str:
    name = draw(st.sampled_from([name, name.lower(), name.upper()]))
    sep = draw(st.sampled_from([": ", ":", ":\t", ":  "]))
    if " " in value and draw(st.booleans()):  # fold at a space
        i = value.index(" ")
        value = value[:i] + nl + draw(st.sampled_from([" ", "\t", "  "])) + value[i + 1 :]
    return f"{name}{sep}{value}{nl}"


def _leaf(draw: st.DrawFn, nl: str) -> tuple[str, bytes]:
    ctype = draw(st.sampled_from(
        ["text/plain", "text/plain", "text/html", "text/html", "image/png", "application/octet-stream",
         "application/pgp-signature", "text/x-log", "TEXT/Plain", "bogus", None]))
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1", "us-ascii", "chinesebig5", None]))
    cte = draw(st.sampled_from(["base64", "quoted-printable", "7bit", "8bit", "binary", "7-bit", None]))
    disposition = draw(st.sampled_from(["attachment", "inline", "INLINE", None]))
    name = draw(_NAMES)
    # (no leading blank: in a digest a part without Content-Type is a message, and a blank first line
    # would be a continuation line without a field, a leading ":" a field without a name: both declined)
    text = draw(_TEXT).lstrip(" \t:")
    data = text.encode(charset if charset in ("utf-8", "iso-8859-1") else "utf-8", "replace")
    lines = []
    if ctype is not None:
        params = f"; charset={charset}" if charset else ""
        if name and draw(st.booleans()):
            params += f'; name="{name}"'
        lines.append(_header(draw, "Content-Type", ctype + params, nl))
    if disposition or (name and draw(st.booleans())):
        d = disposition or "attachment"
        if name:
            rfc2231 = f"; filename*=utf-8''{name.replace(' ', '%20')}"
            d += draw(st.sampled_from([f'; filename="{name}"', rfc2231]))
        lines.append(_header(draw, "Content-Disposition", d, nl))
    if cte:
        lines.append(_header(draw, "Content-Transfer-Encoding", cte, nl))
    if cte == "base64":
        enc = base64.encodebytes(data).decode("ascii")
    elif cte == "quoted-printable":
        enc = quopri.encodestring(data).decode("ascii")
    else:
        enc = data.decode("latin-1")
    body = nl.join(enc.split("\n"))
    if draw(st.booleans()):
        body = body.rstrip("\r\n")
    head = "".join(lines)
    form = draw(st.sampled_from(["normal", "normal", "normal", "headers-only", "no-separator"]))
    if form == "headers-only" and head:
        return head, data
    if form == "no-separator" and head and body[:1].isalnum():
        return head + body, data  # the feed parser starts the body at the first non-header line
    return head + nl + body, data


def _part(draw: st.DrawFn, nl: str, depth: int, serial: itertools.count) -> str:
    kinds = ["multipart", "multipart", "leaf", "message"] if depth == 0 else ["leaf", "leaf", "multipart",
                                                                               "message"]
    kind = draw(st.sampled_from(kinds if depth < 3 else ["leaf"]))
    if kind == "leaf":
        return _leaf(draw, nl)[0]
    if kind == "message":
        inner = _message(draw, nl, depth + 1, serial)
        return _header(draw, "Content-Type", "message/rfc822", nl) + nl + inner
    boundary = _boundary(draw, next(serial))
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "digest", "signed"]))
    quoted = draw(st.sampled_from([f'"{boundary}"', boundary if " " not in boundary else f'"{boundary}"']))
    head = _header(draw, "Content-Type", f"multipart/{subtype}; boundary={quoted}", nl)
    children = draw(st.integers(min_value=1, max_value=4))
    out = [head, nl]
    if draw(st.booleans()):
        out.append(draw(_TEXT).replace("\n", "") + nl)  # preamble
    for _ in range(children):
        ws = draw(st.sampled_from(["", " ", "\t ", ""]))
        out.append(f"--{boundary}{ws}{nl}")
        child = _part(draw, nl, depth + 1, serial)
        if subtype == "digest" and child.startswith(nl) is False and draw(st.booleans()):
            child = nl + _message(draw, nl, depth + 1, serial)  # a digest part without headers
        out.append(child if child.endswith(nl) else child + nl)
    if draw(st.integers(0, 4)):  # usually closed
        ws = draw(st.sampled_from(["", " ", "\t"]))
        out.append(f"--{boundary}--{ws}")
        if draw(st.booleans()):
            out.append(nl + draw(_TEXT).replace("\n", ""))  # epilogue
        out.append(nl)
    return "".join(out)


def _message(draw: st.DrawFn, nl: str, depth: int, serial: itertools.count) -> str:
    heads = []
    if depth == 0 and draw(st.booleans()):
        heads.append(f"From sender@example.org Mon May  2 16:07:05 2005{nl}")
    heads.append(_header(draw, "From", draw(st.sampled_from(
        ["a@b.c", "=?utf-8?q?J=C3=B6rg?= <j@x.de>", '"Last, First" <lf@y.org>', "undisclosed:;"])), nl))
    heads.append(_header(draw, "Subject", draw(st.sampled_from(
        ["hello world", "=?iso-8859-1?b?UmVu6Q==?= news", "Re: [list] x", ""])), nl))
    if draw(st.booleans()):
        heads.append(_header(draw, "Message-ID", "<id.1@host> ", nl))
    if draw(st.booleans()):
        heads.append(_header(draw, "Date", "Tue, 22 Aug 2002 12:07:35 +0800", nl))
    heads.append(_header(draw, "X-Other", "ignored value here", nl))
    return "".join(heads) + _part(draw, nl, depth, serial)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    nl = draw(st.sampled_from(["\r\n", "\n"]))
    text = _message(draw, nl, 0, itertools.count())
    return text.encode("utf-8")


_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(messages())
def test_generated_messages_take_the_fast_path_and_match(raw: bytes) -> None:
    ref = mime.parse_reference(raw)
    fast = mime.parse_fast(raw)
    assert fast is not None, "the fast path declined a well-formed message"
    assert fast == ref
    assert mime.parse(raw) == ref


@_SETTINGS
@given(messages(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2),
                                      st.sampled_from([b"\r", b"\n", b"\r\n", b"-", b"--", b" ", b"\t", b":",
                                                       b"=", b"\x80", b"From ", b"_", b"\"", b";"])),
                            min_size=1, max_size=6))
def test_mutated_messages_match_or_decline(raw: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(raw)
    for pos, op, piece in edits:
        pos %= len(data) + 1
        if op == 0:
            data[pos:pos] = piece
        elif op == 1:
            del data[pos : pos + len(piece)]
        else:
            data[pos : pos + len(piece)] = piece
    raw = bytes(data)
    ref = mime.parse_reference(raw)
    fast = mime.parse_fast(raw)
    assert fast is None or fast == ref
    assert mime.parse(raw) == ref
