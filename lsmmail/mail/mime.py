"""Parse only what the mail layer stores, and never raise.

Cost matters: MIME parsing is most of the CPU of a delivery. The stdlib parser with
``email.policy.default`` builds a header object (with a full RFC 5322 grammar) for every header it
touches; ``compat32`` keeps headers as strings, which is several times cheaper (see docs/mail.md for the
measurement). We therefore parse with ``compat32`` and decode *only* the headers we store (From, To, Cc,
Bcc, Subject, Date, Message-ID, In-Reply-To, References) with targeted helpers (RFC 2047 encoded words,
address lists), and decode only text parts and attachments.

Robustness: every step that can fail on malformed input is guarded; a header or part that cannot be read
is left empty and noted in ``ParsedMessage.defects``. The corpus has messages that make the default
policy raise (``Message-Id: <>``, group syntax ``To: unlisted-recipients:;``); the helpers here handle both.
"""

from __future__ import annotations

import calendar
import codecs
import email.parser
import email.utils
import functools
import hashlib
import html as html_lib
import re
from dataclasses import dataclass, field
from email._policybase import compat32  # = email.policy.compat32, without loading the header registry
from email.header import decode_header
from email.message import Message

from . import mime_fast

PREVIEW_CHARS = 200
_PREVIEW_FIRST_WINDOW = 256  # enough for PREVIEW_CHARS in most mail (prose has ~15% whitespace)

# Signature parts are not attachments (the corpus README counts the same way).
_SIGNATURE_TYPES = frozenset(
    {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
)
_ATTACHMENT_MAJOR = frozenset({"image", "audio", "video", "application"})

_PARSER = email.parser.BytesParser(policy=compat32)
_MSGID_RE = re.compile(r"<([^<>]*)>")
_TAG_RE = re.compile(r"<[^>]*>")
_SCRIPT_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_WS_RE = re.compile(r"\s+")
_REPLY_PREFIX_RE = re.compile(
    r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|ref|tr)\s*(\[\d+\])?\s*:\s*|\[[^\]]{1,40}\]\s*)+", re.IGNORECASE
)

Address = tuple[str, str]  # (display name, address)


@dataclass
class Attachment:
    """One attachment part: its decoded bytes and what the message says about it."""

    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()


@dataclass
class ParsedMessage:
    """What the store keeps from a message besides its raw bytes."""

    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    date: float | None = None  # Unix seconds from the Date header, None if missing or unusable
    text: str = ""
    html: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    @property
    def preview(self) -> str:
        """About 200 characters of body text (tags stripped from HTML), whitespace collapsed."""
        # ``isspace`` instead of ``strip()``: no copy of a 20 KB body just to test it (~15 us).
        text = self.text
        source = text if text and not text.isspace() else html_to_text(self.html[: PREVIEW_CHARS * 20])
        # Collapsing a prefix gives a prefix of the collapsed text, so when the first 256 characters
        # already yield 200 the 800-character window would give the same 200 (~4 us less per message).
        head = collapse_ws(source[:_PREVIEW_FIRST_WINDOW])
        if len(head) >= PREVIEW_CHARS:
            return head[:PREVIEW_CHARS]
        return collapse_ws(source[: PREVIEW_CHARS * 4])[:PREVIEW_CHARS]


def parse(raw: bytes) -> ParsedMessage:
    """Parse ``raw`` into a :class:`ParsedMessage`. Never raises for any input bytes.

    Equal, field by field, to :func:`parse_reference` for every input: the fast path
    (:func:`parse_fast`) handles the messages it can read identically, the reference the rest."""
    fast = parse_fast(raw)
    return fast if fast is not None else parse_reference(raw)


def parse_fast(raw: bytes) -> ParsedMessage | None:
    """:func:`parse_reference`'s result for ``raw`` without the stdlib feed parser, or None when
    :mod:`lsmmail.mail.mime_fast` declines the message (see its docstring for when). Never raises."""
    try:
        msg = mime_fast.build(raw)
    except Exception:  # a bug or an input it does not model: the reference decides
        return None
    if msg is None:
        return None
    # From here on the same steps as parse_reference, on the same message tree.
    out = ParsedMessage()
    _read_headers(msg, out)
    try:
        _walk(msg, out)
    except Exception as exc:  # pragma: no cover - walk guards each part; this is a last resort
        out.defects.append(f"walk: {exc!r}")
    return out


def parse_reference(raw: bytes) -> ParsedMessage:
    """The reference parser: the stdlib ``compat32`` parser over the whole message. Never raises."""
    out = ParsedMessage()
    try:
        msg = _PARSER.parsebytes(raw)
    except Exception as exc:  # the compat32 feed parser does not raise in practice; be sure anyway
        out.defects.append(f"parse: {exc!r}")
        return out
    _read_headers(msg, out)
    try:
        _walk(msg, out)
    except Exception as exc:  # pragma: no cover - walk guards each part; this is a last resort
        out.defects.append(f"walk: {exc!r}")
    return out


def _header(msg: Message, name: str, out: ParsedMessage) -> str | None:
    try:
        value = msg.get(name)
    except Exception as exc:
        out.defects.append(f"{name}: {exc!r}")
        return None
    return None if value is None else str(value)


def _all_headers(msg: Message, name: str, out: ParsedMessage) -> list[str]:
    try:
        return [str(v) for v in msg.get_all(name) or ()]
    except Exception as exc:
        out.defects.append(f"{name}: {exc!r}")
        return []


def _read_headers(msg: Message, out: ParsedMessage) -> None:
    subject = _header(msg, "Subject", out)
    out.subject = collapse_ws(decode_words(subject)) if subject else ""
    out.from_ = addresses(_all_headers(msg, "From", out))
    out.to = addresses(_all_headers(msg, "To", out))
    out.cc = addresses(_all_headers(msg, "Cc", out))
    out.bcc = addresses(_all_headers(msg, "Bcc", out))
    mid = _header(msg, "Message-ID", out)
    out.message_id = normalise_message_id(mid) if mid else None
    irt = _header(msg, "In-Reply-To", out)
    out.in_reply_to = _msgid_list(irt)
    refs = _header(msg, "References", out)
    out.references = _msgid_list(refs)
    date = _header(msg, "Date", out)
    out.date = parse_date(date) if date else None


def collapse_ws(text: str) -> str:
    """Whitespace runs as one space, none at either end: ``_WS_RE.sub(" ", text).strip()`` (``\\s`` and
    ``str.split`` both use Unicode ``isspace``), without the regular expression (~3x faster)."""
    return " ".join(text.split())


def normalise_message_id(value: str) -> str | None:
    """The text between the first ``<`` and ``>`` (or the stripped value without brackets); None if
    empty, so ``Message-Id: <>`` counts as no Message-ID."""
    value = unsurrogate(value)
    m = _MSGID_RE.search(value)
    text = (m.group(1) if m else value).strip()
    return text or None


def _msgid_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [t.strip() for t in _MSGID_RE.findall(unsurrogate(value)) if t.strip()]


# The usual RFC 5322 date ("Fri, 7 Jun 2019 11:10:09 -0400", a comment may follow), for which the stdlib's
# parsedate_tz + mktime_tz reduce to timegm of the fields minus the numeric zone (-0000 counts as +0000
# there too). Anything else goes to the stdlib. ~4 us per message less (the stdlib tokenises in Python).
_RFC5322_DATE = re.compile(
    r"\s*(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ?)?([0-9]{1,2})"
    r" (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([1-9][0-9]{3})"
    r" ([0-9]{2}):([0-9]{2})(?::([0-9]{2}))? ([+-])([0-9]{2})([0-9]{2})(?:\s|$)",
    re.ASCII,
)
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def parse_date(value: str) -> float | None:
    """Unix seconds for an RFC 5322 date, or None when missing, unparsable or before 1970."""
    m = _RFC5322_DATE.match(value)
    if m is not None:
        dd, mon, yy, hh, mi, ss, sign, zh, zm = m.groups()
        offset = int(zh) * 3600 + int(zm) * 60
        ts = float(calendar.timegm((int(yy), _MONTHS[mon], int(dd), int(hh), int(mi), int(ss or 0)))
                   - (-offset if sign == "-" else offset))
        return ts if 0 <= ts < 2**47 / 1000 else None
    return _parse_date_stdlib(value)


def _parse_date_stdlib(value: str) -> float | None:
    """:func:`parse_date` by the stdlib alone (the reference for its fast path)."""
    try:
        parts = email.utils.parsedate_tz(unsurrogate(value))
        if parts is None:
            return None
        ts = float(email.utils.mktime_tz(parts))
    except Exception:
        return None
    return ts if 0 <= ts < 2**47 / 1000 else None


def unsurrogate(text: str) -> str:
    """compat32 keeps undecodable 8-bit header bytes as surrogate escapes; read them as UTF-8 (RFC 6532)
    and replace what is not UTF-8."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        return text.encode("utf-8", "replace").decode("utf-8", "replace")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset; an unknown label falls back to UTF-8, then Latin-1 (which
    never fails), so text is always returned."""
    if charset:
        try:
            return data.decode(codecs.lookup(charset).name, "replace")
        except (LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words in a header value. Never raises."""
    if "=?" not in value:
        return unsurrogate(value)
    try:
        pieces = decode_header(value)
    except Exception:
        return unsurrogate(value)
    out = []
    for chunk, charset in pieces:
        if isinstance(chunk, str):
            out.append(unsurrogate(chunk))
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out)


def addresses(values: list[str]) -> list[Address]:
    """(display name, address) pairs of address headers. Group syntax yields its members (an empty group
    yields nothing); names are RFC 2047-decoded. Never raises.

    Memoised by the exact header values: the stdlib address parser costs ~25-90 us per header (one Python
    call per atom), and a mailbox sees the same From/To/Cc values again and again (in the 3,211-message
    bench sample, 7,987 From/To/Cc/Bcc headers have 1,193 distinct values). The result depends on the values
    only, so a hit is exact; each call gets its own list."""
    if not values:
        return []
    return list(_addresses(tuple(values)))


# One address list element of the plain forms, for which the stdlib's AddrlistClass gives (name, address)
# directly: a bare addr-spec, or an optional display name (atoms, or one quoted string without backslashes
# or control characters) and an angle-bracketed addr-spec; blanks and folds around. An atom of an unquoted
# name is a run of printable ASCII atext and dots (``_NAME_ATOM``): ``getphraselist`` reads an atom up to
# the next special other than "." (obs-phrase) or blank, and the name is the atoms joined by one space;
# so "Ann Lee via USRP-users", "J. Smith" and an RFC 2047 word ("=?utf-8?q?J=C3=B6rg?=", decoded after)
# take this path too (in the bench sample 42% of the distinct address values missed it when atoms were
# letters and digits only; each miss costs ~25-90 us in the stdlib). Anything else (comments, groups,
# routes, empty elements, other characters) goes to the stdlib.
_ADDR_SPEC = r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_NAME_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_PLAIN_ADDRESS = re.compile(
    rf"[ \t\r\n]*(?:(?P<bare>{_ADDR_SPEC})|(?:\"(?P<quoted>[^\"\\\x00-\x1f\x7f]*)\""
    rf"|(?P<words>{_NAME_ATOM}(?:[ \t\r\n]+{_NAME_ATOM})*))?[ \t\r\n]*<(?P<angle>{_ADDR_SPEC})>)[ \t\r\n]*"
    r"(?:,|\Z)"
)


def _plain_addresses(text: str) -> list[tuple[str, str]] | None:
    """``email.utils.getaddresses([text])`` when every element of ``text`` has a plain form (see
    :data:`_PLAIN_ADDRESS`), else None. Why: on a cache miss the stdlib parser costs ~25-90 us per header
    (a Python call per character class), and a bulk import misses on each distinct value once."""
    out = []
    pos = 0
    n = len(text)
    match = _PLAIN_ADDRESS.match
    while pos < n:
        m = match(text, pos)
        if m is None or m.end() == pos:
            return None
        bare, quoted, words, angle = m.group("bare", "quoted", "words", "angle")
        if bare is not None:
            out.append(("", bare))
        else:
            out.append((quoted if quoted is not None else " ".join(words.split()) if words else "", angle))
        pos = m.end()
        if text.endswith(",", 0, pos) and pos == n:
            return None  # a trailing comma: the stdlib adds an empty element
    return out if out else None


@functools.lru_cache(maxsize=4096)
def _addresses(values: tuple[str, ...]) -> tuple[Address, ...]:
    try:
        texts = [unsurrogate(v) for v in values]
        pairs = _plain_addresses(", ".join(texts)) or email.utils.getaddresses(texts)
    except Exception:
        return ()
    out = []
    for name, addr in pairs:
        addr = addr.strip()
        if not addr or "@" not in addr and not name:
            continue
        out.append((decode_words(name).strip() if name else "", addr))
    return tuple(out)


def html_to_text(markup: str) -> str:
    """Crude but safe tag stripping for previews: drops script/style, tags, entities."""
    if not markup:
        return ""
    text = _TAG_RE.sub(" ", _SCRIPT_RE.sub(" ", markup))
    return html_lib.unescape(text)


def normalise_subject(subject: str) -> str:
    """Subject for threading: reply/forward prefixes (Re:, Fwd:, AW:, [list] tags) removed, whitespace
    collapsed, case-folded."""
    return collapse_ws(_REPLY_PREFIX_RE.sub("", subject)).casefold()


def is_reply_subject(subject: str) -> bool:
    return bool(_REPLY_PREFIX_RE.match(subject))


def subject_thread_key(subject: str) -> tuple[str, bool]:
    """``(normalise_subject(subject), is_reply_subject(subject))`` with one regex match: the pattern is
    anchored and never matches empty, so ``sub`` removes exactly the prefix ``match`` finds."""
    m = _REPLY_PREFIX_RE.match(subject)
    return collapse_ws(subject[m.end():] if m else subject).casefold(), m is not None


def _walk(msg: Message, out: ParsedMessage) -> None:
    texts: list[str] = []
    htmls: list[str] = []
    for part in msg.walk():
        try:
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            disposition = part.get_content_disposition()
            try:
                filename = part.get_filename()
            except Exception:
                filename = None
            filename = decode_words(filename).strip() if filename else ""
            maintype = ctype.partition("/")[0]
            if maintype == "text" and disposition != "attachment" and not filename:
                payload = part.get_payload(decode=True)
                if not isinstance(payload, bytes):
                    continue
                text = decode_bytes(payload, _charset(part))
                (htmls if ctype == "text/html" else texts).append(text)
                continue
            if ctype in _SIGNATURE_TYPES:
                continue
            if disposition == "attachment" or filename or maintype in _ATTACHMENT_MAJOR:
                payload = part.get_payload(decode=True)
                if not isinstance(payload, bytes):
                    payload = b""
                out.attachments.append(Attachment(filename, ctype, payload))
        except Exception as exc:
            out.defects.append(f"part: {exc!r}")
    out.text = "\n".join(texts)
    out.html = "\n".join(htmls)


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None
