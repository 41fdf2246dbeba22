"""Differential test of the tokenizer kernel (native/tokenize.c) against the Python tokenizer.

``words_raw_native(text)`` must equal ``words_raw_pure(text)`` (the regex tokenizer of search/tokenizer.py,
joined) for any text: ASCII, Latin, CJK, compatibility forms that NFKC rewrites, characters outside the BMP
(declined by the kernel, then tokenized in Python), underscores, over-long words. The kernel itself is also
fed raw bytes, malformed UTF-8 included: it must either decline or agree with the Python tokenizer on the
decoded text, and never write past its output buffer (which is exactly the input's length).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.search import tokenizer as T

if not native.BUILT or not hasattr(native._lib, "lsm_tokenize"):  # pragma: no cover
    raise RuntimeError("lsmmail._native lacks lsm_tokenize: run python native/build_native.py")

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_lib, _ffi = native._lib, native._ffi

_pieces = st.sampled_from(
    ["a", "Z", "_", " ", "-", ".", "3", "ß", "ﬁ", "Ａ", "①", "é", "É", "日本", "Σ", "ς", "İ", "\u00a0",
     "\u2019", "😀", "𝐀", "\u0301", "x" * 70, "é" * 40, "\t", "\n", "\x00", "٣", "ⅷ"]
)
_text = st.one_of(
    st.text(max_size=200),
    st.lists(_pieces, max_size=60).map("".join),
    st.text(st.characters(max_codepoint=0x7F), max_size=300),
)


@FAST
@given(_text)
def test_words_raw_native_equals_pure(text: str) -> None:
    assert T.words_raw_native(text) == T.words_raw_pure(text)


def _kernel(data: bytes) -> tuple[bytes, int] | None:
    out = _ffi.new("uint8_t[]", len(data) or 1)
    out_len = _ffi.new("size_t *")
    n = _lib.lsm_tokenize(data, len(data), T._alnum_table(), T.MAX_TOKEN_BYTES, out, out_len)
    if n < 0:
        return None
    assert out_len[0] <= len(data)
    return _ffi.buffer(out, out_len[0])[:], n


@FAST
@given(
    st.one_of(
        st.binary(max_size=200),  # mostly malformed UTF-8
        _text.map(lambda t: T.normalize(t).encode("utf-8", "surrogatepass")),
        _text.map(lambda t: t.encode("utf-8", "surrogatepass")),  # lone surrogates, unnormalised text
    )
)
def test_kernel_on_raw_bytes_declines_or_agrees(data: bytes) -> None:
    got = _kernel(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        assert got is None  # malformed UTF-8 is always declined
        return
    if got is None:
        assert any(ord(c) > 0xFFFF for c in text)  # only astral code points are declined in valid UTF-8
        return
    # The kernel does not normalise (Python does it first, except lower() of ASCII, done in C): compare on
    # text that normalisation leaves alone.
    if text.isascii() or T.normalize(text) == text:
        assert got == T.words_raw_pure(text)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Hello, World_2 3.14", (b"hello world 2 3 14", 5)),
        ("a" * 64 + " " + "b" * 65 + " c", (b"a" * 64 + b"  c", 3)),  # over-long: an empty token
        ("Straße ﬁx", (b"strasse fix", 2)),
        ("x 😀 y", (b"x y", 2)),  # declined by the kernel, tokenized in Python
        ("", (b"", 0)),
        ("  --  ", (b"", 0)),
    ],
)
def test_known_streams(text: str, want: tuple[bytes, int]) -> None:
    assert T.words_raw_native(text) == want == T.words_raw_pure(text)


def test_alnum_table_is_the_word_class() -> None:
    table = T._alnum_table()
    for c in range(0x10000):
        if not 0xD800 <= c < 0xE000:
            assert (table[c] != 0) == bool(T._WORD.fullmatch(chr(c))), hex(c)
