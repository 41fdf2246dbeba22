"""The tokenizer's definition of a word, normalisation, positions, addresses and HTML stripping."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.search import IndexedDocument, analyze, normalize, tokenize
from lsmmail.search.tokenizer import (
    MAX_TOKEN_BYTES,
    address_terms,
    analyze_raw,
    analyze_streams,
    html_to_text,
    special_term,
    word_positions,
    words_raw_pure,
)


def test_words_numbers_and_separators() -> None:
    assert tokenize("Hello, World! 42 times") == ["hello", "world", "42", "times"]
    assert tokenize("foo_bar don't 3.14 x1") == ["foo", "bar", "don", "t", "3", "14", "x1"]
    assert tokenize("alice@example.com") == ["alice", "example", "com"]
    assert tokenize("   ...  ") == []


def test_unicode_normalisation() -> None:
    assert tokenize("STRASSE Straße") == ["strasse", "strasse"]
    assert tokenize("ﬁle Ｆｕｌｌ ①") == ["file", "full", "1"]
    assert tokenize("ΣΊΣΥΦΟΣ") == tokenize("σίσυφος")
    assert tokenize("e\u0301te\u0301") == ["été"]  # combining accents compose, not split
    assert tokenize("日本語のテキスト") == ["日本語のテキスト"]  # no segmentation of unspaced scripts


@settings(deadline=None)  # no timing assertions: a slow example on a busy machine is fine
@given(st.text())
def test_normalize_idempotent_and_tokens_stable(s: str) -> None:
    n = normalize(s)
    assert normalize(n) == n
    toks = tokenize(s)
    assert tokenize(" ".join(toks)) == toks  # a token is a fixed point: query text round-trips


def test_positions_skip_but_count_long_tokens() -> None:
    long = "a" * (MAX_TOKEN_BYTES + 1)
    pairs, nxt = word_positions(f"one {long} two", 10)
    assert pairs == [("one", 10), ("two", 12)] and nxt == 13


def test_address_terms() -> None:
    assert address_terms(" <Alice.Smith@Example.COM> ") == [
        "alice.smith@example.com",
        "alice.smith",
        "example.com",
    ]
    assert address_terms("undisclosed") == ["undisclosed"]
    assert address_terms("") == []
    assert special_term("a\x00b") == "ab"


def test_html_stripping() -> None:
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<p>Hello&nbsp;<b>wor</b>ld</p><script>var secret=1;</script><table><tr><td>a</td><td>b</td></tr>"
        "</table>&amp; caf&eacute;</body>"
    )
    assert tokenize(html_to_text(html)) == ["hello", "world", "a", "b", "café"]
    assert tokenize(html_to_text("<p>unclosed <div <b>bold</b> <!-- c --> tail")) == [
        "unclosed",
        "bold",
        "tail",
    ]
    assert tokenize(html_to_text("<head><title>never closed <body>text")) == ["text"]
    assert html_to_text("") == ""


def test_html_stripping_edges() -> None:
    # upper-case tags and close tags with spaces; entities decoded after tags are gone
    assert tokenize(html_to_text("<STYLE>x</style>y<Script src=a>z</SCRIPT >w")) == ["y", "w"]
    assert html_to_text("a &lt;b&gt; c") == "a <b> c"
    # a "<" that does not start a tag is text; so is a "<tag" with no ">" after it
    assert tokenize(html_to_text("<p>a < b <3</p> text <b")) == ["a", "b", "3", "text", "b"]
    assert tokenize(html_to_text("<!DOCTYPE html><?xml x?><br/>one<hr>two")) == ["one", "two"]
    # unclosed script hides the rest; unclosed head/title end at <body
    assert tokenize(html_to_text("a<script>var x")) == ["a"]
    assert tokenize(html_to_text("<HEAD><TITLE>t</TITLE></HEAD><BODY>hi")) == ["hi"]
    assert tokenize(html_to_text("x<!-- never closed <p>y")) == ["x"]


@settings(deadline=None)  # no timing assertions: a slow example on a busy machine is fine
@given(st.text())
def test_html_to_text_never_raises(s: str) -> None:
    assert isinstance(html_to_text(s), str)


def test_analyze_fields() -> None:
    doc = IndexedDocument(
        subject="Re: Quarterly report",
        from_=[("Alice Smith", "alice@example.com")],
        to=[("", "bob@x.org"), ("Carol", "carol@y.org")],
        body_text="see attached",
        body_html="<p>the <i>report</i></p>",
        attachment_names=["Q3.pdf"],
        has_attachment=True,
    )
    f = analyze(doc)
    assert f["s"] == {"re": [0], "quarterly": [1], "report": [2]}
    assert f["f"]["alice"] == [0, 2] and f["f"]["smith"] == [1] and f["f"]["alice@example.com"] == []
    assert f["f"]["example.com"] == []
    # a gap of one position between recipients: no phrase across two addresses
    assert f["t"]["org"] == [2, 7] and f["t"]["carol"] == [4, 5]
    # HTML is indexed only when the text/plain body is blank (multipart/alternative: same words twice)
    assert f["b"] == {"see": [0], "attached": [1]}
    html_only = analyze(IndexedDocument(body_text=" \n", body_html="<p>the <i>report</i></p>"))
    assert html_only["b"] == {"the": [0], "report": [1]}
    assert f["a"] == {"q3": [0], "pdf": [1], "q3.pdf": []}
    assert f["h"] == {"attachment": []}
    assert "c" not in f and "h" not in analyze(IndexedDocument(subject="x"))


@settings(deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(st.characters(max_codepoint=0x7F), max_size=40)))
def test_special_term_fast_path_equals_the_rule(s: str) -> None:
    """The ASCII fast path of special_term gives exactly the documented rule (normalise, drop control
    characters, strip blanks and angle brackets, collapse inner white space)."""
    v = re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", "", normalize(s)).strip().strip("<>").strip())
    want = v if v and len(v.encode("utf-8")) <= 64 else None
    assert special_term(s) == want


@settings(deadline=None)
@given(
    st.builds(
        IndexedDocument,
        subject=st.text(max_size=30),
        from_=st.lists(st.tuples(st.text(max_size=10), st.text(max_size=15)), max_size=3),
        to=st.lists(st.tuples(st.just(""), st.text(max_size=15)), max_size=2),
        body_text=st.text(max_size=200),
        body_html=st.text(max_size=100),
        attachment_names=st.lists(st.text(max_size=12), max_size=3),
        has_attachment=st.booleans(),
    )
)
def test_analyze_raw_is_the_joined_streams(doc: IndexedDocument) -> None:
    """analyze_raw (C word splitting, streams joined while analysing) is analyze_streams joined, and both
    give the pure tokenizer's words for the subject (the word rule of the module docstring)."""
    raw = analyze_raw(doc)
    streams = analyze_streams(doc)
    assert raw.keys() == streams.keys()
    for code, (toks, specials) in streams.items():
        assert raw[code] == (" ".join(toks).encode("utf-8"), len(toks), specials)
    if doc.subject:
        assert raw["s"][:2] == words_raw_pure(doc.subject)
