"""native/mimescan.c (through ``mime_fast.build_native``) against its pure twin ``mime_fast.build_pure``: the
same message tree (kept header fields, kinds, default types, payload bytes) or the same decline, on the
corpus, on generated well-formed messages, on adversarial mutations of them, and on the cases the
scanner hands back to the pure twin."""

from __future__ import annotations

import base64
import itertools
import quopri
from email._encoded_words import decode_b
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.mail import mime, mime_fast
from lsmmail.mail.formats import open_maybe_xz, read_mbox
from tests.mail.helpers import corpus_or_skip, edge_cases
from tests.mail.test_mime_differential import messages

pytestmark = pytest.mark.skipif(not native.BUILT, reason="the native extension is not built")


def _tree(part: mime_fast.Part | None) -> object:
    """Everything ``mime`` can read of a tree, as plain values."""
    if part is None:
        return None
    payload = part._payload
    kids = [_tree(p) for p in payload] if type(payload) is list else bytes(payload)
    return part._default_type, {k: list(v) for k, v in part._fields.items()}, kids


def _same(raw: bytes) -> mime_fast.Part | None:
    fast = mime_fast.build_native(raw)
    assert _tree(fast) == _tree(mime_fast.build_pure(raw))
    return fast


def test_corpus_sample_same_tree(tmp_path: Path) -> None:
    msgs: list[bytes] = []
    files = (("spamassassin.mbox.xz", 7), ("usrp-users.mbox.xz", 9), ("usrp-users-attachments.mbox.xz", 1))
    for name, step in files:
        with open_maybe_xz(corpus_or_skip() / name) as f:
            msgs += [raw for i, raw in enumerate(itertools.islice(read_mbox(f), 3000)) if i % step == 0]
    msgs += [raw for _, raw in edge_cases(tmp_path)]
    assert len(msgs) > 1000
    built = sum(_same(raw) is not None for raw in msgs)
    assert built > 0.95 * len(msgs)


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(messages())
def test_generated_messages_same_tree(raw: bytes) -> None:
    assert _same(raw) is not None  # well formed: neither side declines


_PIECES = st.sampled_from([
    b"\r", b"\n", b"\r\n", b"\n\n", b"-", b"--", b" ", b"\t", b":", b"=", b"\x80\xff", b"\x00", b"From ",
    b"\nFrom x\n", b"_", b'"', b";", b"*", b"\\", b"\n\t", b"boundary=", b"; boundary=\"z\"",
    b"\nContent-Type: multipart/mixed; boundary=q\n", b"\n--q\n", b"\n--q--\n", b"message/rfc822",
    b"\nContent-Type: message/rfc822\n\n", b"multipart/digest", b"\ncontent-TYPE:text/x\n", b"<", b">",
    b"\nSubject:\n", b"\nTo: a@b\n\t c@d\n", b"\x1c", b"\x0b",
])


@_SETTINGS
@given(messages(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2), _PIECES), min_size=1,
                            max_size=8))
def test_mutated_messages_same_tree_or_decline(raw: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(raw)
    for pos, op, piece in edits:
        pos %= len(data) + 1
        if op == 0:
            data[pos:pos] = piece
        elif op == 1:
            del data[pos : pos + len(piece)]
        else:
            data[pos : pos + len(piece)] = piece
    _same(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_same_tree_or_decline(raw: bytes) -> None:
    _same(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "Content-Type: multipart/mixed; boundary=b", "Content-Type: multipart/alternative; boundary=\"c d\"",
    "Content-Type: message/rfc822", "Content-Type: text/plain", "--b", "--b--", "--c d", "--c d--  ",
    "Subject: s", " folded", "", "body text", "From: a@b", "--b --",
    "Content-Type: multipart/digest; boundary=b",
    "content-type: Multipart/Mixed;\tBoundary = 'b'", "Content-Type: multipart/mixed; boundary=\"b;x\"; a=\"",
]), max_size=30), st.sampled_from(["\n", "\r\n"]))
def test_line_soup_same_tree_or_decline(lines: list[str], nl: str) -> None:
    _same(nl.join(lines).encode())


def _multipart(boundary: str, n: int, ctype_extra: str = "") -> bytes:
    head = f'From: a@b\nContent-Type: multipart/mixed; boundary="{boundary}"{ctype_extra}\n\n'
    body = "".join(f"--{boundary}\nContent-Type: text/plain\n\npart {i}\n" for i in range(n))
    return (head + body + f"--{boundary}--\n").encode()


@pytest.mark.parametrize("raw", [
    _multipart("b", 3),
    _multipart("b", 70),  # more parts than the scanner's arrays: the pure twin builds it
    _multipart("x" * 300, 2),  # a boundary over 254 bytes: the pure twin
    b"Content-Type: multipart/mixed; boundary*=us-ascii''b\n\n--b\n\nx\n--b--\n",  # RFC 2231
    b'Content-Type: multipart/mixed; boundary="a\\"b"\n\n--a"b\n\nx\n--a"b--\n',  # backslash-quoted
    "Content-Type: multipart/mixéd; boundary=b\n\n--b\n\nx\n--b--\n".encode(),  # non-ASCII type
    b"Content-Type: message/delivery-status\n\nReporting-MTA: x\n\nAction: failed\n",
    b"Subject: a\rb\n\nbody\n",  # a lone CR
    b"Subject: s\n" + b"X-Long: " + b"y" * 100_000 + b"\n\nbody\n",  # a huge header
    b"Subject: s\n" + b"".join(b"To: u%d@x\n" % i for i in range(600)) + b"\nbody\n",  # over 512 fields
    b"Subject: s\n" + b"".join(b"To: u%d@x\n" % i for i in range(100)) + b"\nbody\n",  # over 64 kept lines
    b"From a@b Mon\nFrom c@d Tue\nSubject: s\n\nbody\n",  # an envelope line, then a "From " line
    b"From a@b Mon\n:empty name\n\nbody\n",
    b"From a@b Mon\n folded first\nSubject: s\n\nbody\n",
    b"Subject: s\nFrom a@b Mon\n\nbody\n",  # a "From " line after the first
    b"From a@b Mon",  # the envelope alone, no line end
    b"Subject: s\n to: x",  # a last continuation without a line end
    b"",
    b"no headers at all",
])
def test_special_cases_same_tree(raw: bytes) -> None:
    _same(raw)
    assert mime.parse(raw) == mime.parse_reference(raw)


def test_build_uses_the_scanner_unless_pure() -> None:
    expected = mime_fast.build_native if native.lib is not None else mime_fast.build_pure
    assert mime_fast._build is expected


# --- base64 bodies ------------------------------------------------------------------------------------

def _stdlib_b64(body: bytes) -> bytes:
    return decode_b(b"".join(body.splitlines()))[0]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 80), st.sampled_from([b"\n", b"\r\n", b"\r"]),
       st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
           [b"=", b"==", b"\n", b" ", b"A", b"-", b"\x00", b"\xff", b"\r", b"===", b"_", b"Q=", b"\t"])),
           max_size=3))
def test_b64_native_equals_stdlib_or_declines(data: bytes, width: int, nl: bytes,
                                              edits: list[tuple[int, bytes]]) -> None:
    enc = base64.b64encode(data)
    body = bytearray(nl.join(enc[i : i + width] for i in range(0, len(enc), width)) + nl)
    for pos, piece in edits:
        pos %= len(body) + 1
        body[pos:pos] = piece
    got = mime_fast.b64_native(bytes(body))
    if not edits:
        assert got == data  # the common form always takes the fast path
    assert got is None or got == _stdlib_b64(bytes(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_b64_native_on_random_bytes(body: bytes) -> None:
    got = mime_fast.b64_native(body)
    assert got is None or got == _stdlib_b64(body)


@pytest.mark.parametrize("body", [b"", b"\n", b"QQ==", b"QR==", b"QUI=", b"QUJD", b"Q===", b"QQ", b"====",
                                  b"QQ==QQ==", b"QQ=\n=\n", b"QUJD\r\nREVG\r\n", b"QUJ\nD", b"QU JD"])
def test_b64_native_edge_cases(body: bytes) -> None:
    got = mime_fast.b64_native(body)
    assert got is None or got == _stdlib_b64(body)


def test_threads_build_the_same_trees() -> None:
    """The scanner's output arrays are per thread (the C call runs without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    msgs = [_multipart(f"b{i}", i % 7 + 1) for i in range(200)]
    expected = [_tree(mime_fast.build_pure(raw)) for raw in msgs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(lambda raw: _tree(mime_fast.build_native(raw)), msgs)) == expected


# --- quoted-printable bodies --------------------------------------------------------------------------

_QP_PIECES = st.sampled_from([b"=", b"==", b"=\n", b"=\r\n", b"=\r", b"=3D", b"=3d", b"=C3=A9", b"=G1", b"=1",
                              b"=\r x\n", b"abc", b" \t", b"\n", b"\r\n", b"\x00", b"\xff", b"=F", b"=fF"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_QP_PIECES, max_size=40).map(b"".join))
def test_qp_native_equals_stdlib(body: bytes) -> None:
    assert mime_fast.qp_native(body) == quopri.decodestring(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_qp_native_on_random_bytes(body: bytes) -> None:
    assert mime_fast.qp_native(body) == quopri.decodestring(body)
