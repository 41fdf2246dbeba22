"""The tokenizer: the one definition of "a word" shared by indexing, querying and the tests.

Normalisation
    ``normalize(text) = NFKC(casefold(NFKC(text)))``. NFKC first folds compatibility forms (ligatures
    ``ﬁ`` -> ``fi``, full-width ``Ａ`` -> ``A``, circled ``①`` -> ``1``); casefold then does full Unicode
    case folding (``ß`` -> ``ss``, ``Σ``/``ς`` -> ``σ``); the second NFKC re-composes what casefolding may
    decompose, so ``normalize`` is idempotent (a property test checks it).

Words
    A word token is a maximal run of characters matched by ``[^\\W_]`` after normalisation: Unicode letters
    and digits (``str.isalnum``), *excluding* the underscore. Everything else separates words, so
    ``foo_bar`` -> ``foo bar``, ``don't`` -> ``don t``, ``3.14`` -> ``3 14``, ``alice@example.com`` ->
    ``alice example com``. Numbers are words like any other. Scripts written without spaces (CJK, Thai) give
    one token per unbroken run: a query must then name the whole run (a known limitation; no dictionary
    segmentation here).

Positions
    Tokens carry positions (0, 1, 2, ... within one field) so phrase queries can demand true adjacency.
    Tokens longer than :data:`MAX_TOKEN_BYTES` UTF-8 bytes (base64 blobs, long hex strings) are *not
    indexed*, but they still consume their position, so a phrase never bridges over them.

Addresses (from/to/cc)
    Each ``(display name, address)`` pair contributes its display-name words and its address words at
    consecutive positions, then a gap of one position (so phrases never span two recipients), plus three
    position-less *special* terms: the whole normalised address, its local part and its domain.
    Specials contain characters (``@``, ``.``) that a word never does, so they cannot collide with words
    except when equal in meaning (a local part ``alice`` is also the word ``alice``).

HTML
    :func:`html_to_text` strips tags with a few linear regex passes (no parser: ~10x cheaper than
    ``html.parser`` on the corpus), drops comments and ``script``/``style``/``head``/``title`` content,
    decodes character references with ``html.unescape`` and turns block-level tags into spaces so
    ``<td>a</td><td>b</td>`` gives two words.
"""

from __future__ import annotations

import array
import re
import sys
import unicodedata
from html import unescape

from .. import native
from ._group import NO_POSITIONS, group_tokens
from ._group import group_encoded as _group_encoded

#: Longest indexed token, in UTF-8 bytes. English words are < 30 bytes; 64 leaves room for long
#: identifiers and scripts with 3-byte characters while keeping engine keys short.
MAX_TOKEN_BYTES = 64

#: Field codes (one byte each in the key layout of docs/search.md).
SUBJECT = "s"
BODY = "b"
FROM = "f"
TO = "t"
CC = "c"
FILENAME = "a"
META = "h"  # has:attachment lives here as the term "attachment"

#: Fields a query word without ``field:`` searches (Gmail semantics: a bare word matches anywhere).
TEXT_FIELDS = (SUBJECT, BODY, FROM, TO, CC, FILENAME)
#: Fields that also hold position-less whole-value special terms.
SPECIAL_FIELDS = frozenset((FROM, TO, CC, FILENAME))
ADDRESS_FIELDS = frozenset((FROM, TO, CC))

_WORD = re.compile(r"[^\W_]+")
_ASCII_WORD = re.compile(r"[a-z0-9]+")
#: A token of at most this many characters is at most 4 x 16 = 64 UTF-8 bytes: no need to encode it.
_SHORT_TOKEN = MAX_TOKEN_BYTES // 4
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalize(text: str) -> str:
    """NFKC + full case folding (idempotent). See the module docstring."""
    if text.isascii():  # O(1) in CPython; NFKC is the identity on ASCII and casefold is lower
        return text.lower()
    if len(text) >= _LINES_FROM:
        return _normalize_lines(text)
    return _nfkc_fold(text)


def _nfkc_fold(text: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


#: Non-ASCII text of at least this many characters is normalised a run of lines at a time (below, one
#: regex search and a few slices cost more than they save).
_LINES_FROM = 512
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
#: Lines with non-ASCII characters less than this many characters apart are normalised as one run: a run
#: costs ~1.5 us of calls, ASCII text ~0.01 us per character through NFKC and casefold.
_MERGE_GAP = 160


def _normalize_lines(text: str) -> str:
    """:func:`_nfkc_fold` of ``text`` computed only on the lines that hold a non-ASCII character, the other
    lines lower-cased (which is what it does to ASCII).

    Why it is the same: NFKC and casefold both distribute over "\\n" (it has combining class 0, is in no
    composition pair on either side, and no character maps to a string containing it; checked for every
    code point next to a combining mark, a Hangul jamo and itself), so each run of whole lines can be
    normalised on its own. Why: a mail body with a few non-ASCII characters (a no-break space, curly
    quotes) paid two NFKC passes and a casefold over all of its text (~18 us per corpus message)."""
    out: list[str] = []
    pos = 0  # a line start; text[:pos] is done
    n = len(text)
    search = _NON_ASCII.search
    m = search(text)
    while m is not None:
        nl = text.rfind("\n", pos, m.start())
        start = nl + 1 if nl >= 0 else pos
        end = text.find("\n", m.end())
        if end < 0:
            end = n
        m = search(text, end)
        while m is not None and m.start() - end < _MERGE_GAP:  # close by: one run (fewer calls)
            end = text.find("\n", m.end())
            if end < 0:
                end = n
            m = search(text, end)
        out.append(text[pos:start].lower())
        out.append(_nfkc_fold(text[start:end]))
        pos = end
    out.append(text[pos:].lower())
    return "".join(out)


def tokenize(text: str) -> list[str]:
    """The word tokens of ``text`` in order (normalised; long tokens included, see :func:`word_positions`)."""
    return _WORD.findall(normalize(text))


def word_positions(text: str, start: int = 0) -> tuple[list[tuple[str, int]], int]:
    """Indexable ``(token, position)`` pairs of ``text`` with positions from ``start``, and the next position.

    Over-long tokens are left out but still advance the position.
    """
    out: list[tuple[str, int]] = []
    pos = start
    for tok in _WORD.findall(normalize(text)):
        if len(tok) * 4 <= MAX_TOKEN_BYTES or len(tok.encode("utf-8")) <= MAX_TOKEN_BYTES:
            out.append((tok, pos))
        pos += 1
    return out, pos


def special_term(value: str) -> str | None:
    """The whole-value special term of an address, local part, domain or file name, or None if unusable.

    Normalised, surrounding white space and angle brackets removed, inner white space collapsed, control
    characters dropped (so a term never contains NUL, which the key layout uses as the term terminator).
    """
    if value.isascii() and value.isprintable():  # most addresses: no control characters, no \t \n \r
        v = value.lower().strip().strip("<>").strip()
        if " " in v:
            v = _SPACE.sub(" ", v)
    else:
        v = _SPACE.sub(" ", _CONTROL.sub("", normalize(value)).strip().strip("<>").strip())
    if not v or len(v.encode("utf-8")) > MAX_TOKEN_BYTES:
        return None
    return v


def address_terms(value: str) -> list[str]:
    """Specials of one address: the whole address, its local part and its domain (those that exist)."""
    whole = special_term(value)
    if whole is None:
        return []
    terms = [whole]
    if "@" in whole:
        local, _, domain = whole.rpartition("@")
        for part in (local, domain):
            p = special_term(part)
            if p is not None and p not in terms:
                terms.append(p)
    return terms


def body_text(text: str, html: str) -> str:
    """The body text that is indexed: the text/plain parts, or the tag-stripped HTML when they are blank.

    The one place that decides it (delivery and reindex both go through :func:`analyze`). A message with
    both is almost always ``multipart/alternative`` with the same words twice (all 2,388 of the 3,011
    corpus messages with HTML also have a non-blank text part), and stripping HTML was ~14% of bulk
    import, so HTML is indexed only when there is no text/plain alternative (the same rule as the mail
    layer's preview). Trade-off: words only in the HTML of a message that also has text are not found.
    """
    return text if text and not text.isspace() else html_to_text(html)  # = text.strip(), without the copy


Postings = dict[str, list[int]]  # term -> ascending positions (empty for position-less specials)
#: One field as analysed, before grouping: the token at each position ("" where a position holds no
#: indexed token: a gap between parts or an over-long word) and the position-less specials. Words never
#: contain " " and specials never contain NUL, which is what the forward record's encoding relies on.
Stream = tuple[list[str], list[str]]


def _words(text: str) -> list[str]:
    """The tokens of ``text``, over-long ones replaced by "" (they keep their position)."""
    # On ASCII text [^\W_] is exactly [a-z0-9] after lower(), and the narrower class scans ~30% faster.
    toks = (_ASCII_WORD if text.isascii() else _WORD).findall(normalize(text))
    if toks and max(map(len, toks)) > _SHORT_TOKEN:  # rare: only then is any token possibly too long
        short = _SHORT_TOKEN
        toks = [t if len(t) <= short or len(t.encode("utf-8")) <= MAX_TOKEN_BYTES else "" for t in toks]
    return toks


#: One field in the stored form: the tokens of a :data:`Stream` joined by single spaces (UTF-8), their
#: count (needed: "" tokens make the join ambiguous) and the specials. What the forward record holds and
#: what the memory segment keeps per doc; a flush groups it in C (``_segment_build``).
RawStream = tuple[bytes, int, list[str]]


def words_raw_pure(text: str) -> tuple[bytes, int]:
    """:func:`_words` of ``text`` joined by single spaces, and the token count (the reference)."""
    toks = _words(text)
    return " ".join(toks).encode("utf-8"), len(toks)


_lib = native._lib  # the *_native twin works even under LSMMAIL_PURE=1 (for the differential tests)
_ffi = native._ffi
_new_bytes = _ffi.new_allocator(should_clear_after_alloc=False) if _ffi is not None else None
#: Byte c non-zero iff chr(c) is a word character (``[^\W_]``, the very class of :data:`_WORD`), for the
#: Basic Multilingual Plane: the kernel's Unicode word class, from Python's own Unicode database, so both
#: sides agree. Built on the first non-ASCII text (a few ms: letters come in long runs of code points).
_bmp_alnum: bytes | None = None


def _alnum_table() -> bytes:
    global _bmp_alnum
    if _bmp_alnum is None:
        table = bytearray(0x10000)
        # Surrogates (D800-DFFF) are never word characters and the kernel declines them anyway.
        for lo, hi in ((0, 0xD800), (0xE000, 0x10000)):
            for m in _WORD.finditer(_code_points(lo, hi)):
                start, end = m.span()
                table[lo + start : lo + end] = b"\x01" * (end - start)
        _bmp_alnum = bytes(table)
    return _bmp_alnum


def _code_points(lo: int, hi: int) -> str:
    """``"".join(map(chr, range(lo, hi)))`` (no surrogates in the range) by decoding UTF-32: ~1 ms for the
    BMP instead of ~4-5 ms, once per process (the first non-ASCII text of an import pays it)."""
    words = array.array("I", range(lo, hi))
    if words.itemsize != 4:  # pragma: no cover - 4 on every platform CPython supports today
        return "".join(map(chr, range(lo, hi)))
    return words.tobytes().decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be")


def words_raw_native(text: str) -> tuple[bytes, int]:
    """Twin of :func:`words_raw_pure` with the word splitting in C (``native/tokenize.c``).

    ASCII text goes in as it is (the kernel lower-cases ASCII letters, which is all ``normalize`` does to
    ASCII); other text is normalised here first. The kernel declines code points outside the BMP (and
    anything that is not UTF-8, which an encoded ``str`` never is): then the pure path decides.
    """
    if text.isascii():
        data = text.encode("ascii")
        bitmap = _ASCII_ONLY
    else:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: let the reference decide
            return words_raw_pure(text)
        data = _fold_utf8(data) if len(data) >= _LINES_FROM else normalize(text).encode("utf-8")
        bitmap = _alnum_table()
    if not data:
        return b"", 0
    out = _new_bytes("uint8_t[]", len(data))  # written by the kernel before it is read: no zero-fill
    out_len = _ffi.new("size_t *")
    n = _lib.lsm_tokenize(data, len(data), bitmap, MAX_TOKEN_BYTES, out, out_len)
    if n < 0:
        spaced = _astral_as_spaces(data)
        if spaced is None:
            return words_raw_pure(text)
        n = _lib.lsm_tokenize(spaced, len(spaced), bitmap, MAX_TOKEN_BYTES, out, out_len)
        if n < 0:  # pragma: no cover - the kernel declines only characters outside the BMP
            return words_raw_pure(text)
    return _ffi.buffer(out, out_len[0])[:], n


_ASTRAL_UTF8 = re.compile(rb"[\xf0-\xf4][\x80-\xbf]{3}")


def _astral_as_spaces(data: bytes) -> bytes | None:
    """``data`` (normalised UTF-8) with each character outside the BMP replaced by a space when none of them
    is a word character (emoji, the usual case: a separator for a separator leaves the tokens as they
    are); None when one is (the kernel has no table for them: the pure path decides). Why: a body with one
    emoji otherwise went through the pure tokenizer whole (~0.5 ms for the long ones)."""
    found = set(_ASTRAL_UTF8.findall(data))
    for ch in found:
        if _WORD.match(ch.decode("utf-8")):
            return None
        data = data.replace(ch, b" ")
    return data if found else None


#: Ranges of non-ASCII lines one ``lsm_nonascii_lines`` call reports; more: the whole text is normalised.
_MAX_SPANS = 64


def _fold_utf8(data: bytes) -> bytes:
    """``normalize`` of the UTF-8 text ``data``, encoded, except that ASCII letters outside the lines with
    non-ASCII characters keep their case (the kernel lower-cases ASCII itself). Only those lines go through
    NFKC and casefold, as in :func:`_normalize_lines` (same reasoning); they are found in C, where the
    regex search over a non-ASCII ``str`` cost ~1 us per KB."""
    spans = _ffi.new("uint64_t[]", 2 * _MAX_SPANS)
    n = _lib.lsm_nonascii_lines(data, len(data), _MERGE_GAP, spans, _MAX_SPANS)
    if n < 0:
        return _nfkc_fold(data.decode("utf-8")).encode("utf-8")
    pieces = []
    pos = 0
    for k in range(0, 2 * n, 2):
        start, end = spans[k], spans[k + 1]
        pieces.append(data[pos:start])
        pieces.append(_nfkc_fold(data[start:end].decode("utf-8")).encode("utf-8"))
        pos = end
    pieces.append(data[pos:])
    return b"".join(pieces)


#: The kernel reads the table only for non-ASCII input; ASCII text needs none.
_ASCII_ONLY = bytes(1)
_words_raw = words_raw_native if native.lib is not None else words_raw_pure


def _join(pieces: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    """Concatenate token streams (each ``(joined, count)``): one space between non-empty streams."""
    kept = [p for p in pieces if p[1]]
    return b" ".join(raw for raw, _ in kept), sum(n for _, n in kept)


_GAP = (b"", 1)  # one "" token: a position holding no term


def _address_stream_of(pairs: list[tuple[str, str]]) -> RawStream:
    """The stream of one address field: each address's name words, then its address words, then a gap (no
    phrase spans two addresses); the specials of every address."""
    pieces: list[tuple[bytes, int]] = []
    specials: list[str] = []
    for name, addr in pairs:
        if name:
            pieces.append(_words_raw(name))
        if addr:
            pieces.append(_words_raw(addr))
            specials += address_terms(addr)
        pieces.append(_GAP)
    return (*_join(pieces), specials)


#: Address field streams by the field's exact (name, address) pairs: a pure function of them, and a
#: mailbox sees the same From/To/Cc again and again (in the 3,011-message bench import 8,080 fields, ~7 us
#: of a ~40 us analysis; the mail layer memoises the address parsing for the same reason). Cleared when full.
_ADDRESS_STREAMS: dict[tuple[tuple[str, str], ...], RawStream] = {}
_ADDRESS_STREAMS_MAX = 4096


def _address_stream(pairs: list[tuple[str, str]]) -> RawStream:
    """:func:`_address_stream_of`, memoised; every call gets its own specials list."""
    try:
        key = tuple(pairs)
        hit = _ADDRESS_STREAMS.get(key)
    except TypeError:  # unhashable pairs (lists): not memoised
        return _address_stream_of(pairs)
    if hit is None:
        hit = _address_stream_of(pairs)
        if len(_ADDRESS_STREAMS) >= _ADDRESS_STREAMS_MAX:
            _ADDRESS_STREAMS.clear()
        _ADDRESS_STREAMS[key] = hit
    return hit[0], hit[1], list(hit[2])


def analyze_raw(doc: object) -> dict[str, RawStream]:
    """The per-field token streams of an :class:`~lsmmail.search.IndexedDocument` in stored form
    (:data:`RawStream`); :func:`analyze_streams` is the same as lists of tokens."""
    out: dict[str, RawStream] = {}
    if doc.subject:  # type: ignore[attr-defined]
        out[SUBJECT] = (*_words_raw(doc.subject), [])  # type: ignore[attr-defined]
    body = body_text(doc.body_text, doc.body_html)  # type: ignore[attr-defined]
    if body:
        out[BODY] = (*_words_raw(body), [])
    for code, pairs in ((FROM, doc.from_), (TO, doc.to), (CC, doc.cc)):  # type: ignore[attr-defined]
        if pairs:
            out[code] = _address_stream(pairs)
    if doc.attachment_names:  # type: ignore[attr-defined]
        pieces: list[tuple[bytes, int]] = []
        specials: list[str] = []
        for name in doc.attachment_names:  # type: ignore[attr-defined]
            pieces.append(_words_raw(name))
            pieces.append(_GAP)
            special = special_term(name)
            if special is not None:
                specials.append(special)
        out[FILENAME] = (*_join(pieces), specials)
    if doc.has_attachment:  # type: ignore[attr-defined]
        out[META] = (b"", 0, ["attachment"])
    return out


def analyze_streams(doc: object) -> dict[str, Stream]:
    """The per-field token streams of an :class:`~lsmmail.search.IndexedDocument` (see :data:`Stream`).

    :func:`analyze` is ``group`` of this; the forward record stores the streams themselves (joined, as
    :func:`analyze_raw` gives them), so nothing is encoded per position (docs/search.md, "Encodings").
    """
    return {
        code: (raw.decode("utf-8").split(" ") if n else [], specials)
        for code, (raw, n, specials) in analyze_raw(doc).items()
    }


def group(streams: dict[str, Stream]) -> dict[str, Postings]:
    """``field code -> term -> positions`` of analysed streams; fields with no terms are left out."""
    fields: dict[str, Postings] = {}
    for code, (toks, specials) in streams.items():
        f = group_tokens(toks)
        for special in specials:
            if special not in f:
                f[special] = []
        if f:
            fields[code] = f
    return fields


def group_encoded(streams: dict[str, Stream]) -> dict[str, dict[str, bytes]]:
    """:func:`group` with each term's positions as an encoded run (see ``_group``): the index's form."""
    fields: dict[str, dict[str, bytes]] = {}
    for code, (toks, specials) in streams.items():
        f = _group_encoded(toks)
        for special in specials:
            if special not in f:
                f[special] = NO_POSITIONS
        if f:
            fields[code] = f
    return fields


def analyze(doc: object) -> dict[str, Postings]:
    """Tokenise an :class:`~lsmmail.search.IndexedDocument` into ``field code -> term -> positions``.

    Deterministic: the same document always gives the same result (the crash-recovery argument of
    docs/search.md relies on it). Fields with no terms are absent.
    """
    return group(analyze_streams(doc))


# --------------------------------------------------------------------------- HTML

#: Elements whose content is never visible text. ``head``/``title`` also end at a ``<body`` tag, so an
#: unclosed ``<head>`` or ``<title>`` does not swallow the whole message; the others end at their close tag
#: or at the end of the input (an unclosed ``<script>`` hides the rest, as in a browser). Every alternative
#: can run to the end of the input (``\Z``), so a match attempt never fails after a long scan: linear time.
_DROP_RE = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<(?i:(script|style|template|noscript))(?=[\s/>])[^>]*(?:>.*?(?:</(?i:\1)\s*>|\Z)|\Z)"
    r"|<(?i:(head|title))(?=[\s/>])[^>]*(?:>.*?(?:</(?i:\2)\s*>|(?=<(?i:body)[\s/>])|\Z)|\Z)",
    re.DOTALL,
)
#: Block-level tags separate words (``<td>a</td><td>b</td>`` is two words); inline ones do not
#: (``wor<b>ld</b>`` is one word).
_BLOCK_RE = re.compile(
    r"</?(?i:address|article|aside|blockquote|br|dd|div|dl|dt|fieldset|figcaption|figure|footer|form|h[1-6]"
    r"|header|hr|li|main|nav|ol|p|pre|section|table|tbody|td|tfoot|th|thead|tr|ul|img|option)(?=[\s/>])[^>]*>"
)
#: Any other tag, declaration (``<!DOCTYPE``) or processing instruction. A ``<`` followed by anything else
#: (``a < b``, ``<3``) is text.
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>|<[!?][^>]*>")


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment; never raises, linear time (a few regex passes, no parser).

    In order: comments and the content of ``script``/``style``/``template``/``noscript``/``head``/``title``
    elements are dropped; block-level tags become a space, other tags and declarations vanish; then
    character references are decoded with :func:`html.unescape` (after tag removal, so ``&lt;b&gt;`` is
    text). Text after the last ``>`` is kept as it is, tags and all: a ``<`` with no ``>`` after it is not
    a tag (this also keeps every pass linear on input like ``<a<a<a...``).
    """
    if not html:
        return ""
    text = _DROP_RE.sub(" ", html) if "<" in html else html
    end = text.rfind(">") + 1  # tags lie before it; _BLOCK_RE/_TAG_RE would rescan the rest per "<"
    if end:
        text = _TAG_RE.sub("", _BLOCK_RE.sub(" ", text[:end])) + text[end:]
    return unescape(text) if "&" in text else text
