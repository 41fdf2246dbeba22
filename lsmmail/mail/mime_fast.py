"""A byte-level stand-in for the stdlib ``compat32`` feed parser, for the messages it can read identically.

Why: ``mime.parse_reference`` hands the whole message to ``email.parser.BytesParser``, whose feed parser
reads the input line by line in Python, checks every line of every part against the boundary regular
expressions of all enclosing multiparts, and compiles one regular expression per boundary (each boundary
is unique, so the ``re`` cache never hits). On the usrp-users corpus that is ~80% of ``parse`` (~0.5 of
0.7 ms per message). Most of those lines are base64 attachment and HTML bodies that ``parse`` only needs
as one slice each.

What: :func:`build` finds the same structure with ``bytes.find`` and two regular expressions over the
header blocks, and returns the same tree of ``email.message.Message`` objects the feed parser would build,
restricted to what ``mime`` reads: every part's headers among :data:`KEPT_HEADERS` as the same raw
``(name, value)`` pairs (``set_raw``, values decoded ASCII + surrogateescape exactly like ``BytesParser``),
multipart payloads as lists of parts, leaf payloads as the same ``str`` slices. ``mime`` then runs the very
same header and part readers on that tree as on the parser's, so everything downstream (RFC 2047,
addresses, dates, parameters and RFC 2231, transfer decoding, charsets, error handling) is shared code.

Contract: ``build(raw)`` returns either ``None`` ("not sure, use the reference parser") or a tree for
which ``mime`` produces a result equal, field by field, to ``parse_reference(raw)``. It declines (returns
None) whenever the feed parser does something this module does not model:

* a lone CR anywhere (the feed parser ends lines at ``\\r``, ``\\n`` and ``\\r\\n``; here only the last two);
* header blocks with an envelope ``From `` line, a line starting with ``:``, or a first line that is a
  continuation (the feed parser records a defect and skips or pushes back such lines);
* ``message/delivery-status`` parts (split into header blocks by the feed parser); other ``message/*``
  parts are read as nested messages, as the feed parser does;
* multiparts without a usable boundary (missing, empty, non-ASCII), whose first boundary line is the close
  delimiter or is missing (the parser keeps such a body as a string), or with two boundary lines in a row
  (the parser swallows the second, even a close delimiter), or with nested delimiters that are equal or
  differ by a trailing ``--`` (a line could then end more than one part at once).

Never raises on purpose; ``mime.parse`` still treats any exception here as a decline.
"""

from __future__ import annotations

import functools
import quopri
import re
import threading
from collections.abc import Iterator
from email._encoded_words import decode_b
from email._policybase import compat32  # = email.policy.compat32, without loading the header registry
from email.message import Message, _decode_uu, _parseparam
from email.utils import unquote as _unquote

from lsmmail import native_lib

# The headers ``mime`` reads (lower case). Keeping only these changes no ``get``/``get_all`` result for
# them, and skips the ~20-40 Received/DKIM/List-* headers of a typical list message.
KEPT_HEADERS = frozenset(
    {
        "subject", "from", "to", "cc", "bcc", "date", "message-id", "in-reply-to", "references",
        "content-type", "content-disposition", "content-transfer-encoding",
    }
)

# The feed parser's test for "this line belongs to the header block" (its ``headerRE``), applied to a run
# of whole lines: a field name (possibly empty) and a colon, a continuation, or an envelope ``From `` line.
_HEADER_BLOCK = re.compile(rb"(?:(?:[\041-\071\073-\176]*:|[\t ]|From )[^\n]*\n)*")
_HEADER_LINE = re.compile(rb"[\041-\071\073-\176]*:|[\t ]|From ")
# One kept field with its continuation lines, found after the "\n" that starts its line (searched in
# b"\n" + block; a continuation line starts with a space or tab, so it never matches a field name).
# Anchoring on the literal "\n" lets the regex engine skip to candidate lines: 7 us per usrp-users
# header block (4.8 KB average) against 20 us with ``^`` and MULTILINE, which tries every position.
# The blanks after the colon are outside the group: ``[ \t]*`` is greedy and the group may be empty, so
# the group is the first line's rest without its leading blanks (``lstrip(" \t")``) plus the continuation
# lines, as in ``header_source_parse``.
_KEPT_FIELD = re.compile(
    rb"\n(subject|from|to|cc|bcc|date|message-id|in-reply-to|references|content-type"
    rb"|content-disposition|content-transfer-encoding):[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)",
    re.IGNORECASE,
)
# Field name as found -> (name, lower-case key): the few spellings ("Content-Type", "Content-type") repeat.
_NAMES: dict[bytes, tuple[str, str]] = {}

# A CR not followed by LF (the regex finds the next CR by a fast literal scan, then checks one byte).
_LONE_CR = re.compile(rb"\r(?!\n)")

# Nesting deeper than this is declined: the reference handles it (slowly); real mail nests 3-4 deep.
_MAX_DEPTH = 32


# Parameters of a header value (``Message._get_params_preserve``: ``_parseparam`` + ``decode_params``,
# ~15 us) depend on the value alone, and most values repeat (``text/plain; charset="us-ascii"``): keep them
# for the ASCII values (a non-ASCII one is read through a ``Header`` object, never cached). Bounded so a
# stream of unique boundaries cannot grow it; clearing at the bound costs one re-parse per value.
_PARAMS_CACHE: dict[str, list] = {}
_PARAMS_CACHE_MAX = 4096
_fetch = compat32.header_fetch_parse
_stdlib_params = Message._get_params_preserve


class Part:
    """One part of the tree: the stand-in for ``email.message.Message`` that ``mime`` reads.

    ``mime``'s header readers and part walk call ``get``, ``get_all``, ``walk``, ``is_multipart``,
    ``get_content_type``, ``get_content_disposition``, ``get_filename``, ``get_content_charset`` and
    ``get_payload(decode=True)``. The parameter-level methods are the stdlib's own functions (borrowed
    below, so RFC 2231, quoting and charset rules are literally the same code); what differs is storage:
    headers are a dict of lower-case name -> raw ``(name, value)`` pairs (``Message`` scans a list and
    lower-cases every name per lookup), a leaf payload stays the raw ``bytes`` slice (the feed parser's
    ``str`` is that slice decoded ASCII + surrogateescape, and ``get_payload(decode=True)`` encodes it
    back to exactly these bytes), and parameters are parsed once per distinct header value."""

    __slots__ = ("_fields", "_payload", "_default_type")

    policy = compat32

    def __init__(self, default_type: str = "text/plain") -> None:
        self._fields: dict[str, list[tuple[str, str]]] = {}
        self._payload: list[Part] | bytes = b""
        self._default_type = default_type

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._fields

    def get(self, name: str, failobj: object = None) -> object:
        pairs = self._fields.get(name.lower())
        if not pairs:
            return failobj
        k, v = pairs[0]
        return v if v.isascii() else _fetch(k, v)  # compat32 wraps surrogate-escaped bytes in a Header

    def get_all(self, name: str, failobj: object = None) -> object:
        pairs = self._fields.get(name.lower())
        if not pairs:
            return failobj
        return [v if v.isascii() else _fetch(k, v) for k, v in pairs]

    def _get_params_preserve(self, failobj: object, header: str) -> object:
        pairs = self._fields.get(header.lower())
        if not pairs:
            return failobj
        value = pairs[0][1]
        if not value.isascii():
            return _stdlib_params(self, failobj, header)
        params = _PARAMS_CACHE.get(value)
        if params is None:
            params = _stdlib_params(self, failobj, header)
            if len(_PARAMS_CACHE) >= _PARAMS_CACHE_MAX:
                _PARAMS_CACHE.clear()
            _PARAMS_CACHE[value] = params
        return params

    def is_multipart(self) -> bool:
        return type(self._payload) is list

    def walk(self) -> Iterator[Part]:
        """This part, then every subpart depth first (``Message.walk``'s order)."""
        yield self
        if type(self._payload) is list:
            for sub in self._payload:
                yield from sub.walk()

    def get_payload(self, decode: bool = False) -> object:
        """``Message.get_payload`` for ``decode=True`` (the only use): None for a multipart, else the
        transfer-decoded bytes (base64, quoted-printable, uuencode; anything else as is)."""
        if not decode:
            raise NotImplementedError("mime reads decoded payloads only")
        payload = self._payload
        if type(payload) is list:
            return None
        cte = str(self.get("content-transfer-encoding", "")).lower()
        if cte == "quoted-printable":
            return quopri.decodestring(payload) if _qp is None else _qp(payload)
        if cte == "base64":
            if _b64 is not None:
                data = _b64(payload)
                if data is not None:
                    return data
            return decode_b(b"".join(payload.splitlines()))[0]  # defects: compat32 only records them
        if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
            try:
                return _decode_uu(payload)
            except ValueError:
                return payload
        return payload

    def _ascii_value(self, name: str) -> str | None:
        """The first ``name`` value if present and ASCII; None otherwise (absent, or read as a Header)."""
        pairs = self._fields.get(name)
        if not pairs:
            return None
        value = pairs[0][1]
        return value if value.isascii() else None

    def get_content_type(self) -> str:
        # Message.get_content_type on a plain string: the value before the first ";", stripped, lower case,
        # "text/plain" unless it has exactly one "/"; the default type when the header is missing.
        pairs = self._fields.get("content-type")
        if not pairs:
            return self._default_type
        value = pairs[0][1]
        if not value.isascii():
            return _stdlib_content_type(self)
        ctype = value.partition(";")[0].strip().lower()
        return ctype if ctype.count("/") == 1 else "text/plain"

    def get_content_disposition(self) -> str | None:
        pairs = self._fields.get("content-disposition")
        if not pairs:
            return None
        value = pairs[0][1]
        if not value.isascii():
            return _stdlib_disposition(self)
        return value.partition(";")[0].strip().lower()

    def get_filename(self, failobj: object = None) -> object:
        """``Message.get_filename``, memoised by the (Content-Disposition, Content-Type) values: the answer
        depends on those two strings only (two parameter lookups and RFC 2231 collapsing, ~10 us)."""
        cd = self._ascii_value("content-disposition")
        ct = self._ascii_value("content-type")
        if (cd is None and "content-disposition" in self._fields) or (
            ct is None and "content-type" in self._fields
        ):
            return _stdlib_filename(self, failobj)
        key = (cd, ct)
        hit = _FILENAME_CACHE.get(key, _UNKNOWN)
        if hit is _UNKNOWN:
            hit = _plain_filename(cd, ct)
            if hit is _UNKNOWN:
                hit = _stdlib_filename(self, _MISSING)
            _remember(_FILENAME_CACHE, key, hit)
        return failobj if hit is _MISSING else hit

    def get_content_charset(self, failobj: object = None) -> object:
        """``Message.get_content_charset``, memoised by the Content-Type value (it depends on it alone)."""
        ct = self._ascii_value("content-type")
        if ct is None:
            return _stdlib_charset(self, failobj)
        hit = _CHARSET_CACHE.get(ct, _UNKNOWN)
        if hit is _UNKNOWN:
            hit = _stdlib_charset(self, _MISSING)
            _remember(_CHARSET_CACHE, ct, hit)
        return failobj if hit is _MISSING else hit

    def get_boundary(self, failobj: object = None) -> object:
        """``Message.get_boundary`` without the generic parameter code for a value with no ``*`` (RFC 2231)
        and no backslash, the usual case (boundaries are unique, so the value cache never hits there).

        For such a value the stdlib chain reduces to: split with ``_parseparam``; the first parameter
        named ``boundary`` (the type itself included, as ``get_param`` iterates it too); its value
        unquoted twice (``decode_params`` unquotes and re-quotes, which is the identity without
        backslashes, ``get_param`` unquotes, ``collapse_rfc2231_value`` unquotes again), right-stripped."""
        ct = self._ascii_value("content-type")
        if ct is None or "*" in ct or "\\" in ct:
            return _stdlib_boundary(self, failobj)
        for piece in _parseparam(ct):
            name, eq, value = piece.partition("=")
            if (name.strip() if eq else piece.strip()).lower() == "boundary":
                return _unquote(_unquote(value.strip())).rstrip()
        return failobj

    get_default_type = Message.get_default_type
    get_content_maintype = Message.get_content_maintype
    get_param = Message.get_param


def _plain_param(value: str | None, param: str) -> object:
    """``Message.get_param(param)`` of a header whose ASCII value has no ``*`` (RFC 2231) and no backslash
    (``_MISSING`` if the header or the parameter is absent). For such a value the stdlib chain reduces to:
    split with ``_parseparam``; the first parameter whose name (the bare first piece included, as
    ``get_param`` iterates it too) is ``param`` in any case; its stripped value unquoted once
    (``decode_params`` unquotes and re-quotes, the identity without backslashes, and ``get_param``
    unquotes), as in :meth:`Part.get_boundary`."""
    if value is None:
        return _MISSING
    for piece in _parseparam(value):
        name, eq, val = piece.partition("=")
        if (name.strip() if eq else piece.strip()).lower() == param:
            return _unquote(val.strip())
    return _MISSING


def _plain_filename(cd: str | None, ct: str | None) -> object:
    """``Message.get_filename(_MISSING)`` from the Content-Disposition and Content-Type values (None:
    absent) when neither has ``*`` or a backslash: the ``filename`` parameter, else ``name``, unquoted
    again by ``collapse_rfc2231_value`` and stripped; ``_UNKNOWN`` otherwise (the stdlib decides). Why:
    attachment names are mostly unique, so the memo misses on each (~25 us through the generic parameter
    code, ~440 times in the bench sample's import)."""
    for v in (cd, ct):
        if v is not None and ("*" in v or "\\" in v):
            return _UNKNOWN
    found = _plain_param(cd, "filename")
    if found is _MISSING:
        found = _plain_param(ct, "name")
    if found is _MISSING:
        return _MISSING
    return _unquote(found).strip()  # type: ignore[arg-type]


_MISSING = object()  # "no such parameter", as a cached answer
_UNKNOWN = object()  # not in the cache
_stdlib_content_type = Message.get_content_type
_stdlib_disposition = Message.get_content_disposition
_stdlib_filename = Message.get_filename
_stdlib_charset = Message.get_content_charset
_stdlib_boundary = Message.get_boundary
# Answers by header value(s), bounded like _PARAMS_CACHE (exceptions are not cached: they propagate).
_FILENAME_CACHE: dict[tuple[str | None, str | None], object] = {}
_CHARSET_CACHE: dict[str, object] = {}


def _remember(cache: dict, key: object, value: object) -> None:
    if len(cache) >= _PARAMS_CACHE_MAX:
        cache.clear()
    cache[key] = value


class _Decline(Exception):
    """Internal: the input needs the reference parser."""


def build(raw: bytes) -> Part | None:
    """The message tree ``email.parser.BytesParser(policy=compat32)`` would build for ``raw`` (kept headers
    only), or None when this module cannot guarantee that. The structure comes from the C scanner
    (``native/mimescan.c``, :func:`build_native`) when it is loaded, else from :func:`build_pure`."""
    if type(raw) is not bytes:
        return None
    return _build(raw)


def build_native(raw: bytes) -> Part | None:
    """:func:`build_pure`'s tree, with the structure (header blocks, kept fields, kinds, boundaries,
    delimiter lines) found by ``lsm_mimescan`` in one call; this function only makes the ``Part`` objects.
    The scanner hands back to :func:`build_pure` what it reads through the stdlib's generic helpers
    there (a non-ASCII Content-Type, an RFC 2231 or backslash-quoted boundary, a boundary over 254
    bytes, more than :data:`_SCAN_PARTS` parts or :data:`_SCAN_FIELDS` kept fields), and declines
    (None) exactly where :func:`build_pure` does. Requires the extension (``native.BUILT``)."""
    try:
        parts_buf, fields_buf, nfields = _scratch.buffers
    except AttributeError:
        parts_buf, fields_buf, nfields = _scratch.buffers = (
            _new_i32(7 * _SCAN_PARTS), _new_i32(4 * _SCAN_FIELDS), _new_i32(1))
    n = _scan(raw, len(raw), parts_buf, _SCAN_PARTS, fields_buf, _SCAN_FIELDS, nfields)
    if n < 0:
        return None if n == _SCAN_REFERENCE else build_pure(raw)
    pv = _unpack_i32(parts_buf, 7 * n)
    fv = iter(_unpack_i32(fields_buf, 4 * nfields[0]))
    field_rows = zip(fv, fv, fv, fv, strict=False)  # (name, value) offsets, 4 a field, in part order
    rows = iter(pv)
    nodes: list[Part] = []
    names_of = _NAMES.get
    for parent, kind, rfc822, body, end, f0, f1 in zip(*[rows] * 7, strict=False):
        msg = Part(_DEFAULT_TYPES[rfc822])
        if f0 != f1:
            fields = msg._fields
            for _, (ns, ne, vs, ve) in zip(range(f1 - f0), field_rows, strict=False):
                name_b = raw[ns:ne]
                names = names_of(name_b)
                if names is None:
                    names = name_b.decode("ascii"), name_b.decode("ascii").lower()
                    if len(_NAMES) < 1024:
                        _NAMES[name_b] = names
                name, key = names
                value = raw[vs:ve].decode("ascii", "surrogateescape")
                pairs = fields.get(key)
                if pairs is None:
                    fields[key] = [(name, value)]
                else:
                    pairs.append((name, value))
        msg._payload = [] if kind else raw[body:end]
        if parent >= 0:
            nodes[parent]._payload.append(msg)  # type: ignore[union-attr]
        nodes.append(msg)
    return nodes[0]


def build_pure(raw: bytes) -> Part | None:
    """The pure-Python structure scan (the twin of ``native/mimescan.c``); same contract as :func:`build`."""
    if type(raw) is not bytes:
        return None
    # ``in`` is a memchr (~1 us for 24 KB); the two counts this replaced took ~25 us on every message.
    if b"\r" in raw and _LONE_CR.search(raw):
        return None  # a lone CR ends a line for the feed parser
    try:
        return _part(raw, 0, len(raw), (), 0)
    except _Decline:
        return None


# The C scanner (``native/mimescan.c``): its return codes, and its output capacity per call. 64 parts and
# 512 kept fields: the corpus's largest message has 23 parts; more goes to the pure twin (one extra scan).
_SCAN_PARTS = 64
_SCAN_FIELDS = 512
_SCAN_REFERENCE = -4  # LSM_MS_REFERENCE: the reference parser decides (build returns None)
_DEFAULT_TYPES = ("text/plain", "message/rfc822")  # by the scanner's default-type flag
# The scanner's output arrays, one set per thread (the C call runs without the GIL): allocating them took
# ~1.4 us per message.
_scratch = threading.local()
if native_lib.BUILT:
    _scan = native_lib._lib.lsm_mimescan
    _new_i32 = functools.partial(native_lib._new, "int32_t[]")

    def _unpack_i32(buf: object, n: int) -> list[int]:
        return memoryview(native_lib._ffi.buffer(buf, 4 * n)).cast("i").tolist()


def _headers(raw: bytes, start: int, end: int, msg: Part) -> int:
    """Read the header block of the part in ``raw[start:end]`` into ``msg``; return where its body starts.

    Mirrors the feed parser: the block is the run of lines matching ``headerRE``; a following empty line
    is the separator and is dropped; any other line is the first body line (a missing separator)."""
    m = _HEADER_BLOCK.match(raw, start, end)
    assert m is not None  # the pattern matches the empty string
    stop = m.end()
    body = stop
    if stop < end:
        first = raw[stop]
        if first == 0x0A:  # "\n"
            body = stop + 1
        elif first == 0x0D:  # "\r\n" (lone CRs were declined)
            body = stop + 2
        elif raw.find(b"\n", stop, end) < 0 and _HEADER_LINE.match(raw, stop, end):
            stop = body = end  # a last header line without a line end, at the end of the input
    if stop == start:
        return body
    if raw.startswith(b"From ", start, stop):
        # An envelope line first is the Unix-from, which mime never reads; a continuation right after it
        # would be dropped by the feed parser (declined below).
        nl = raw.find(b"\n", start, stop)
        if nl < 0 or nl + 1 == stop:
            return body
        start = nl + 1
    if raw[start] in b" \t:" or raw.find(b"\nFrom ", start, stop) >= 0 or raw.find(b"\n:", start, stop) >= 0:
        raise _Decline  # a continuation first, a misplaced envelope line, or an empty field name
    if start and raw[start - 1] == 0x0A:  # search in place from the line end before the block
        found = _KEPT_FIELD.findall(raw, start - 1, stop)
    else:
        found = _KEPT_FIELD.findall(b"\n" + raw[start:stop])
    fields = msg._fields
    for name_b, value_b in found:
        names = _NAMES.get(name_b)
        if names is None:
            names = name_b.decode("ascii"), name_b.decode("ascii").lower()
            if len(_NAMES) < 1024:  # bounded: a header name has few spellings in practice
                _NAMES[name_b] = names
        name, key = names
        # compat32's header_source_parse: blanks after the colon stripped (by the pattern), and line ends
        # at the very end
        value = value_b.rstrip(b"\r\n").decode("ascii", "surrogateescape")
        pairs = fields.get(key)
        if pairs is None:
            fields[key] = [(name, value)]
        else:
            pairs.append((name, value))
    return body


def _part(
    raw: bytes, start: int, end: int, outer: tuple[bytes, ...], depth: int, digest: bool = False
) -> Part:
    """The part in ``raw[start:end]``; ``outer`` holds the delimiters of the enclosing multiparts,
    ``digest`` says the parent is a multipart/digest (whose parts default to message/rfc822)."""
    if depth > _MAX_DEPTH:
        raise _Decline
    msg = Part("message/rfc822" if digest else "text/plain")
    body = _headers(raw, start, end, msg)
    ctype = msg.get_content_type()
    maintype = ctype.partition("/")[0]
    if maintype == "message":
        if ctype == "message/delivery-status":
            raise _Decline  # the feed parser splits it into header blocks
        # The body is a whole message (its transfer encoding is not undone, as in the feed parser).
        msg._payload = [_part(raw, body, end, outer, depth + 1)]
        return msg
    if maintype != "multipart":
        msg._payload = raw[body:end]
        return msg
    boundary = msg.get_boundary()
    if not boundary or not boundary.isascii():
        raise _Decline
    delim = b"--" + boundary.encode("ascii")
    for d in outer:
        # A line can end parts of two multiparts at once only if their delimiters are equal or one is the
        # other plus "--" (the boundary is right-stripped, and a delimiter line allows only "--", blanks
        # and the line end after the delimiter).
        if d == delim or d == delim + b"--" or delim == d + b"--":
            raise _Decline
    lines = _delimiter_lines(raw, body, end, delim)
    if not lines or lines[0][2]:
        raise _Decline  # no start boundary, or the close delimiter first
    inner = outer + (delim,)
    parts: list[Part] = []
    for k, (_, part_start, is_close) in enumerate(lines):
        if is_close:
            break
        part_end = lines[k + 1][0] if k + 1 < len(lines) else end
        if part_end == part_start:
            raise _Decline  # another boundary line (or the end of the enclosing part) right away
        child = _part(raw, part_start, part_end, inner, depth + 1, ctype == "multipart/digest")
        _drop_last_line_end(child)
        parts.append(child)
    msg._payload = parts
    return msg


def _drop_last_line_end(part: Part) -> None:
    """RFC 2046: the line end before a delimiter line belongs to the delimiter. The feed parser removes it
    from the payload of the last message it created: ``part`` itself if a leaf, the innermost message of
    a message/* part, and nothing (only the epilogue, which mime never reads) for a multipart."""
    while type(part._payload) is list:
        if part.get_content_maintype() == "multipart":
            return
        part = part._payload[0]
    payload = part._payload
    if payload.endswith(b"\r\n"):
        part._payload = payload[:-2]
    elif payload.endswith(b"\n"):
        part._payload = payload[:-1]


def _delimiter_lines(raw: bytes, start: int, end: int, delim: bytes) -> list[tuple[int, int, bool]]:
    """Delimiter lines of ``delim`` in ``raw[start:end]`` up to and including the first close delimiter:
    (line start, next line start, is close). A delimiter line is ``delim``, optionally ``--``, optional
    blanks, then a line end or the end of the input (the feed parser's ``boundaryre``)."""
    out: list[tuple[int, int, bool]] = []
    n = len(delim)
    pos = start
    find = raw.find
    while True:
        i = find(delim, pos, end)
        if i < 0:
            return out
        # Continue at the next line: a delimiter line starts a line, so at most one candidate per line
        # (a short boundary like "-" would otherwise cost one Python iteration per byte of "-----" runs).
        nl = find(b"\n", i, end)
        pos = end if nl < 0 else nl + 1
        if i != start and raw[i - 1] != 0x0A:
            continue
        j = i + n
        is_close = raw.startswith(b"--", j, end)
        for close in ((True, False) if is_close else (False,)):
            k = j + 2 if close else j
            while k < end and raw[k] in b" \t":
                k += 1
            if k == end:
                out.append((i, k, close))
                break
            if raw[k] == 0x0A:
                out.append((i, k + 1, close))
                break
            if raw[k] == 0x0D and k + 1 < end and raw[k + 1] == 0x0A:
                out.append((i, k + 2, close))
                break
        else:
            continue
        if out[-1][2]:
            return out


def b64_native(body: bytes) -> bytes | None:
    """``decode_b(b"".join(body.splitlines()))[0]`` by ``lsm_b64_lines`` for the common form (base64 lines
    that join into whole, correctly padded groups), None for anything else (the stdlib then decides).
    Why: the stdlib copies the body twice (``splitlines``, ``join``), checks it with a regular expression,
    then decodes: ~20 us per bench message, most of it for attachments."""
    out = native_lib._new("uint8_t[]", len(body) // 4 * 3 + 3)
    n = _b64_lines(body, len(body), out, len(body) // 4 * 3 + 3)
    return None if n < 0 else native_lib._ffi.buffer(out, n)[:]


def qp_native(body: bytes) -> bytes:
    """``quopri.decodestring(body)`` (CPython's ``binascii.a2b_qp``, header=False) by ``lsm_qp_decode``,
    which copies the runs between '=' with memchr/memcpy instead of a byte per step (~4 us per message)."""
    out = native_lib._new("uint8_t[]", len(body) or 1)
    return native_lib._ffi.buffer(out, _qp_decode(body, len(body), out))[:]


if native_lib.BUILT:
    _b64_lines = native_lib._lib.lsm_b64_lines
    _qp_decode = native_lib._lib.lsm_qp_decode
#: The quoted-printable decoder of ``Part.get_payload``: None (the stdlib's) without the extension or under
#: LSMMAIL_PURE=1.
_qp = qp_native if native_lib.lib is not None else None
#: The base64 fast path of ``Part.get_payload``: None when the extension is missing or LSMMAIL_PURE=1.
_b64 = b64_native if native_lib.lib is not None else None

#: What :func:`build` uses: the C scanner unless the extension is missing or LSMMAIL_PURE=1.
_build = build_native if native_lib.lib is not None else build_pure
