"""Normalising only the lines that need it: ``tokenizer._normalize_lines`` (pure) and ``_fold_utf8`` with the
``lsm_nonascii_lines`` kernel (native) against NFKC + casefold of the whole text, and the kernel against a
plain Python model. Long texts (the line path starts at ``_LINES_FROM``) with few, many, adjacent and
far-apart non-ASCII lines, combining marks and Hangul jamo right after a line end."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.search import tokenizer as T

if not native.BUILT or not hasattr(native._lib, "lsm_nonascii_lines"):  # pragma: no cover
    raise RuntimeError("lsmmail._native lacks lsm_nonascii_lines: run python native/build_native.py")

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_pieces = st.sampled_from([
    "plain ascii words ", "Mixed CASE Text ", "\n", "\n\n", "\u00a0", "\u2019", "é", "e\u0301", "\u0301", "ﬁ",
    "ẞ", "\u0345", "\u1100", "\u1161", "\u11a8", "Ω", "²", "İ", "日本", "𝐀", "😀", "x" * 200, "Ａ", "\t", "_",
])
_long_text = st.lists(_pieces, min_size=20, max_size=120).map("".join)


@FAST
@given(_long_text)
def test_normalize_lines_equals_whole_text(text: str) -> None:
    assert T._normalize_lines(text) == T._nfkc_fold(text)
    assert T.normalize(text) == T._nfkc_fold(text)


@FAST
@given(_long_text)
def test_fold_utf8_differs_from_normalize_only_in_ascii_case(text: str) -> None:
    folded = T._fold_utf8(text.encode("utf-8"))
    expected = T._nfkc_fold(text).encode("utf-8")
    assert folded.lower() == expected  # bytes.lower() touches ASCII letters only
    assert T.words_raw_native(text) == T.words_raw_pure(text)


def _model(data: bytes, gap: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in data.split(b"\n"):
        start, end = pos, pos + len(line)
        pos = end + 1
        if line.isascii():
            continue
        if spans and start - spans[-1][1] < gap:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _kernel(data: bytes, gap: int, max_spans: int) -> list[tuple[int, int]] | None:
    out = native._ffi.new("uint64_t[]", 2 * max_spans + 1)
    n = native._lib.lsm_nonascii_lines(data, len(data), gap, out, max_spans)
    if n < 0:
        return None
    return [(out[2 * k], out[2 * k + 1]) for k in range(n)]


@FAST
@given(st.lists(st.sampled_from([b"a", b"\n", b"\x80", b"\xff", b"abcdefghijk", b"\n\n", b"\xc3\xa9"]),
                max_size=80).map(b"".join),
       st.integers(0, 40), st.integers(1, 8))
def test_nonascii_lines_kernel_equals_model(data: bytes, gap: int, max_spans: int) -> None:
    expected = _model(data, gap)
    got = _kernel(data, gap, max_spans)
    if len(expected) > max_spans:
        assert got is None
    else:
        assert got == expected


def test_many_nonascii_lines_fall_back_to_the_whole_text() -> None:
    text = ("x" * 300 + "\n\u00e9\n").join(str(i) for i in range(T._MAX_SPANS + 5))
    assert T._fold_utf8(text.encode("utf-8")) == T._nfkc_fold(text).encode("utf-8")
    assert T.words_raw_native(text) == T.words_raw_pure(text)


_astral_pieces = st.sampled_from(["😀", "🚀x", "𠀀", "𝐀", "word ", "Über ", "\n", "x" * 70, "_", "\u00a0"])


@FAST
@given(st.lists(_astral_pieces, max_size=60).map("".join))
def test_astral_characters_native_equals_pure(text: str) -> None:
    """Emoji (separators) are tokenized in C as spaces; an astral word character (U+20000) sends the text
    to the pure path; either way the tokens are the pure tokenizer's."""
    assert T.words_raw_native(text) == T.words_raw_pure(text)
    assert T.words_raw_native(text * 10) == T.words_raw_pure(text * 10)  # past the line-folding threshold
