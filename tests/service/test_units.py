"""In-process tests of the service's pure parts: HTML sanitizer, token storage, mbox seeding."""

from __future__ import annotations

import lzma
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.mail import MailStore
from lsmmail.service.auth import TOKEN_FAMILY, TokenAuth, add_user
from lsmmail.service.sanitize import sanitize_html
from lsmmail.service.server import iter_mbox_xz

_PIECES = ["<script>", "</script>", "<img src=x onerror=alert(1)>", '<a href="javascript:x">', "<a href=",
           "<p>", "</p>", "<div", ">", "<", "&lt;", "&#106;avascript:", '"', "'", " onclick=", "style=",
           "<style>", "</style>", "<iframe src=//e>", "<svg onload=x>", "text", "<b>", "</b>", "<!--", "-->",
           "<table><tr><td>", "<a href='https://ok.example/?a=1&b=2'>", "</a>", "<br/>", "\x00", "é"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_sanitized_html_has_no_active_content(pieces: list[str]) -> None:
    out = sanitize_html("".join(pieces))
    low = out.lower()
    assert "<script" not in low and "<iframe" not in low and "<svg" not in low and "<img" not in low
    assert "<style" not in low and not re.search(r"<[^>]*\son\w+\s*=", low)
    assert not re.search(r'<a [^>]*href="(?!https?://|mailto:)', low)
    for tag in re.findall(r"<(\w+)", out):  # only allowlisted tags, each closed
        assert tag in {"p", "div", "b", "table", "tr", "td", "a", "br"}
    opened = re.findall(r"<(p|div|b|table|tr|td|a)[ >]", out)
    closed = re.findall(r"</(p|div|b|table|tr|td|a)>", out)
    assert sorted(opened) == sorted(closed)


def test_sanitizer_keeps_text_and_safe_markup() -> None:
    out = sanitize_html('<p>Hello <b>world</b> <a href="https://e.example/x?a=1&b=2">link</a> 1 &lt; 2</p>')
    assert out == ('<p>Hello <b>world</b> <a href="https://e.example/x?a=1&amp;b=2" rel="noopener noreferrer '
                   'nofollow" target="_blank">link</a> 1 &lt; 2</p>')


def test_tokens_are_stored_hashed_and_scoped(tmp_path: Path) -> None:
    with MailStore.open(str(tmp_path / "d")) as store:
        t1 = add_user(store, "alice@example.com")
        t2 = add_user(store, "alice@example.com")  # again: a second token for the same user
        tb = add_user(store, "bob@example.com")
        auth = TokenAuth(store)
        assert auth.authenticate(t1) == auth.authenticate(t2) == "alice@example.com"
        assert auth.authenticate(tb) == "bob@example.com"
        assert auth.authenticate(t1 + "x") is None and auth.authenticate("") is None
        assert auth.authenticate(None) is None and auth.authenticate("lsm_" + "a" * 10_000) is None
        stored = list(store.db.scan(prefix=TOKEN_FAMILY))
        assert len(stored) == 3
        for key, _ in stored:  # nothing in the DB is a usable token
            assert all(t.encode() not in key for t in (t1, t2, tb))
        assert auth.revoke(t1) and auth.authenticate(t1) is None and auth.authenticate(t2)


def test_iter_mbox_xz_splits_on_from_lines(tmp_path: Path) -> None:
    mbox = (b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody\n>From quoted stays\n\n"
            b"From b@x Mon Jan  1 00:00:00 2024\nSubject: two\n\nbody two\nFrom not after a blank line\n")
    p = tmp_path / "m.mbox.xz"
    p.write_bytes(lzma.compress(mbox))
    msgs = list(iter_mbox_xz(p, 10))
    assert msgs[0] == b"Subject: one\n\nbody\n>From quoted stays\n\n"
    assert msgs[1] == b"Subject: two\n\nbody two\nFrom not after a blank line\n"
    assert list(iter_mbox_xz(p, 1)) == msgs[:1]
