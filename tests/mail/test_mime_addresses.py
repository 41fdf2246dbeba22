"""mime's plain-form address reader against the stdlib's ``email.utils.getaddresses`` (which it stands in
for on the values it accepts), and the memoised ``addresses`` against the stdlib path alone."""

from __future__ import annotations

import email.utils

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.mail import mime

_local = st.sampled_from(["a", "john.smith", "x+tag", "a_b-c", "%x", "a..b", ".a", "ü", "a b", '"q"'])
_domain = st.sampled_from(["b.c", "example.org", "x-y.z", "a_b.c", "[1.2.3.4]", "b..c", "b.", ""])
_name = st.sampled_from(["", "John", "John Smith", "J. Smith", "John  \t Smith", '"Smith, John"',
                         '"Jörg"', '"=?utf-8?q?J=C3=B6rg?="', '"a\\"b"', '""', '"x" y', "(c) John",
                         "John (c)", "A\n\tB", "Ann Lee via USRP-users", "zcao--- via X", "O'Brien", "x.y",
                         ". z", "J.", "=?utf-8?q?J=C3=B6rg?=", "=?UTF-8?B?546L55u8?= x", "a{b}|c~",
                         "#$%&*+/^_`!", "a=b?c", "a\\b", "a[b]", "a;b", "a:b", "é", "a\x7fb", "a\x0cb",
                         "a\xa0b"])
_ws = st.sampled_from(["", " ", "\t", "\n\t", "  "])


@st.composite
def _element(draw: st.DrawFn) -> str:
    addr = f"{draw(_local)}@{draw(_domain)}"
    form = draw(st.integers(0, 4))
    if form == 0:
        return draw(_ws) + addr + draw(_ws)
    if form == 1:
        return f"{draw(_ws)}{draw(_name)}{draw(_ws)}<{addr}>{draw(_ws)}"
    if form == 2:
        return draw(st.sampled_from(["undisclosed-recipients:;", "group: a@b, c@d;", "<@route:a@b>", ""]))
    return draw(_name) + draw(_ws) + f"<{addr}>"


_values = st.lists(st.lists(_element(), min_size=1, max_size=3).map(",".join), min_size=1, max_size=3)


@settings(max_examples=500, deadline=None)
@given(_values, st.sampled_from(["", ",", ", ", " ,"]))
def test_plain_addresses_equal_getaddresses(values: list[str], tail: str) -> None:
    values = values[:-1] + [values[-1] + tail]
    got = mime._plain_addresses(", ".join(values))
    if got is not None:
        assert got == email.utils.getaddresses(values)


def _reference(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for name, addr in email.utils.getaddresses([mime.unsurrogate(v) for v in values]):
        addr = addr.strip()
        if not addr or "@" not in addr and not name:
            continue
        out.append((mime.decode_words(name).strip() if name else "", addr))
    return out


@settings(max_examples=300, deadline=None)
@given(_values)
def test_addresses_equal_the_stdlib_path(values: list[str]) -> None:
    assert mime.addresses(values) == _reference(values)


def test_plain_forms_take_the_fast_path() -> None:
    assert mime._plain_addresses('John Smith <j@x.org>, "Doe, Jane" <jd@y.org>,\n\tk@z.org') == [
        ("John Smith", "j@x.org"), ("Doe, Jane", "jd@y.org"), ("", "k@z.org")]


def test_atext_names_take_the_fast_path() -> None:
    value = "Ann Lee via USRP-users <u@lists.x.org>, =?utf-8?q?J=C3=B6rg?= <j@x.org>, J. Q. Doe <d@x.org>"
    assert mime._plain_addresses(value) == email.utils.getaddresses([value]) == [
        ("Ann Lee via USRP-users", "u@lists.x.org"), ("=?utf-8?q?J=C3=B6rg?=", "j@x.org"),
        ("J. Q. Doe", "d@x.org")]
