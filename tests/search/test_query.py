"""The query language: ASTs of valid queries, errors with positions, and robustness on any text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.search import QuerySyntaxError, parse
from lsmmail.search.query import All, And, DateBound, HasAttachment, InFolder, IsRead, Not, Or, Term

from .docgen import queries


def t(text: str, field: str | None = None) -> Term:
    node = parse(f"{field}:{text}" if field else text)
    assert isinstance(node, Term)
    return node


def test_words_and_phrases() -> None:
    assert parse("Hello") == Term(None, "Hello", ("hello",), "hello")
    a, b = parse("a b").children  # type: ignore[union-attr]
    assert (a.tokens, b.tokens) == (("a",), ("b",))
    assert parse('"Quarterly  Report"') == Term(
        None, "Quarterly  Report", ("quarterly", "report"), "quarterly report"
    )
    assert parse("foo-bar").tokens == ("foo", "bar")  # type: ignore[union-attr]
    assert parse("a AND b") == parse("a b")
    assert parse("&") == All()
    assert parse("foo:bar").tokens == ("foo", "bar")  # type: ignore[union-attr]


def test_fields() -> None:
    assert parse("from:alice@x.org") == Term("f", "alice@x.org", ("alice", "x", "org"), "alice@x.org")
    assert parse('subject:"quarterly report"') == Term(
        "s", "quarterly report", ("quarterly", "report"), "quarterly report"
    )
    assert parse("FROM:bob").field == "f"  # type: ignore[union-attr]
    assert parse("to:a cc:b filename:c.pdf") == And(
        (Term("t", "a", ("a",), "a"), Term("c", "b", ("b",), "b"), Term("a", "c.pdf", ("c", "pdf"), "c.pdf"))
    )
    assert parse("has:attachment") == HasAttachment()
    assert parse("is:read is:UNREAD") == And((IsRead(True), IsRead(False)))
    assert parse("in:INBOX") == InFolder("inbox")
    assert parse("after:2020-01-02") == DateBound(False, 1577923200000)
    assert parse("before:2020/1/2") == DateBound(True, 1577923200000)
    assert parse("subject:(a OR b)") == Or((Term("s", "a", ("a",), "a"), Term("s", "b", ("b",), "b")))


def test_operators_and_precedence() -> None:
    a, b, c = (Term(None, x, (x,), x) for x in "abc")
    assert parse("a OR b c") == Or((a, And((b, c))))
    assert parse("a (b OR c)") == And((a, Or((b, c))))
    assert parse("-a -(b OR c)") == And((Not(a), Not(Or((b, c)))))
    assert parse("a or b") == And((a, Term(None, "or", ("or",), "or"), b))  # only capital OR is an operator
    assert parse("- a") == And((All(), a))  # a lone dash is ignored punctuation
    assert parse("--a") == Not(Not(a))


@pytest.mark.parametrize(
    ("query", "position", "words"),
    [
        ("", 0, "empty"),
        ("   ", 0, "empty"),
        ('subject:"open', 8, "unterminated"),
        ('a "b', 2, "unterminated"),
        ("(a b", 0, "never closed"),
        ("a b)", 3, "unbalanced"),
        ("a OR", 4, "expected a search term"),
        ("OR a", 0, "expected a search term"),
        ("a OR OR b", 5, "expected a search term"),
        ("()", 1, "expected a search term"),
        ("from: alice", 5, "needs a value"),
        ("has:pdf", 4, "attachment"),
        ("is:starred", 3, "read"),
        ("before:2020-13-01", 7, "invalid date"),
        ("after:yesterday", 6, "expected a date"),
        ("is:(read)", 3, "cannot be followed by a group"),
        ("a AND", 5, "after it"),
        ("AND a", 0, "before it"),
        ("(" * 200 + "a" + ")" * 200, 100, "deeper"),
    ],
)
def test_errors_say_where(query: str, position: int, words: str) -> None:
    with pytest.raises(QuerySyntaxError) as e:
        parse(query)
    assert e.value.position == position
    assert words in str(e.value) and f"position {position}" in str(e.value)
    assert isinstance(e.value, ValueError)


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.sampled_from('ab "()-:OR AND from:is:has:in:before:after:subject:é\x00'), max_size=40)
    | st.text(max_size=60)
)
def test_never_raises_anything_else(q: str) -> None:
    try:
        parse(q)
    except QuerySyntaxError as e:
        assert 0 <= e.position <= len(q)


@settings(deadline=None)  # no timing assertions: a slow example on a busy machine is fine
@given(queries)
def test_generated_queries_parse(q: str) -> None:
    parse(q)
