"""Public result types of the mail layer and the encoding of the values stored under schema keys.

The per-message values read on every list page, get and mark (summary ``L``/``N``, message record ``M``,
body ``Y``) are compact binary records laid out in docs/schema.md: a list page decodes 50 summaries, and
with JSON that decode plus building the result was ~70% of a page (profile in docs/benchmarks.md). A
summary is a fixed struct head, one array of string lengths and one UTF-8 text run, so decoding it is
two ``struct`` unpacks, one ``decode`` and slicing. Rarely read values (user and folder records, the
message's detail part, outbox heads) stay compact JSON, readable in a debugger.

Every decoder checks the format byte and that the lengths add up, and raises ``Corruption`` otherwise:
a damaged value is reported, never returned as different mail.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate

from lsmmail.engine.errors import Corruption

from .ids import id_to_str

# System folders: fixed numbers (never reused by user folders, which start at USER_FOLDER_BASE) and ids
# equal to their names, so "INBOX" is a valid folder id for every user.
INBOX, SENT, DRAFTS, TRASH, SPAM, ARCHIVE = 1, 2, 3, 4, 5, 6
SYSTEM_FOLDERS: dict[int, str] = {
    INBOX: "INBOX", SENT: "Sent", DRAFTS: "Drafts", TRASH: "Trash", SPAM: "Spam", ARCHIVE: "Archive",
}
USER_FOLDER_BASE = 16


def folder_id_str(number: int) -> str:
    """Public folder id: the name for system folders, ``f<number>`` for user folders (stable under rename)."""
    return SYSTEM_FOLDERS.get(number) or f"f{number}"


@dataclass(frozen=True)
class Folder:
    id: str
    name: str
    total: int
    unread: int
    system: bool


@dataclass(frozen=True)
class MessageSummary:
    """One row of a message list. ``received`` is the time in the id (Unix seconds); ``date`` is the
    message's own Date header (None when missing or unusable)."""

    id: str
    folder_id: str
    thread_id: str
    subject: str
    from_: list[tuple[str, str]]
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    date: float | None
    received: float
    preview: str
    size: int
    has_attachments: bool
    is_read: bool


@dataclass(frozen=True)
class AttachmentInfo:
    part: int
    filename: str
    content_type: str
    size: int
    sha256: str  # hex


@dataclass(frozen=True)
class Message:
    summary: MessageSummary
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    bcc: list[tuple[str, str]]
    text: str
    html: str
    attachments: list[AttachmentInfo]


@dataclass(frozen=True)
class Page:
    items: list[MessageSummary]
    next_cursor: str | None


@dataclass(frozen=True)
class Changes:
    """Ids created, updated (folder or read flag) and deleted for good since a state, and the new state.
    An id created and deleted in the range appears in neither list; created wins over updated."""

    created: list[str]
    updated: list[str]
    deleted: list[str]
    new_state: str


@dataclass(frozen=True)
class OutgoingMessage:
    """Fields of a message for :meth:`MailStore.send` to build (From, Date and Message-ID are added)."""

    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # (filename, type, data)
    in_reply_to: str | None = None


@dataclass(frozen=True)
class ImportResult:
    """Outcome of one message of a bulk import: status is ``stored``, ``duplicate`` or ``too_large``."""

    index: int
    status: str
    id: str | None


@dataclass(frozen=True)
class OutboxEntry:
    id: str
    user_id: str
    sender: str
    recipients: list[str]
    raw: bytes


# One encoder for every call: json.dumps with non-default arguments builds a new JSONEncoder each time
# (~1 µs of the ~1.9 µs a folder counter record took; mark_read writes one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


# The C encoder behind _ENCODER, made once: ``JSONEncoder.encode`` builds a new one per call (~5 of the
# ~6.5 us a message's details took). Same arguments as _ENCODER's, except no circular-reference markers
# (records never nest themselves; a shared markers dict could keep stale ids after an error).
_C_ENCODE = (
    json.encoder.c_make_encoder(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",",
                                False, False, True)
    if json.encoder.c_make_encoder is not None else None
)


def dumps(obj: object) -> bytes:
    if _C_ENCODE is None or type(obj) is str:  # pragma: no cover - CPython always has the C encoder
        return _ENCODER.encode(obj).encode("utf-8")
    return "".join(_C_ENCODE(obj, 0)).encode("utf-8")


def dumps_str(text: str) -> str:
    """``text`` as a JSON string literal, exactly as :func:`dumps` writes it inside a value."""
    return _ENCODER.encode(text)


def loads(data: bytes) -> dict:
    return json.loads(data)


# ---- summary record (value of LISTING / UNREAD keys, and the summary part of a MESSAGE record) --------
#
#   u8 format (1) | u8 flags | u64 raw size | f64 date | thread id (16) | u32 #from | u32 #to | u32 #cc
#   | strings: subject, preview, then (name, address) of each from, to, cc address in order
#
# The strings are one UTF-8 text run, each string followed by U+0000, so a reader decodes once and splits
# once (two C calls for all of them); the terminator after the last string makes a cut or extended value
# detectable. A string that itself contains U+0000 (possible only in malformed mail) switches the record
# to FLAG_LENGTHS: a u32 length (in code points) per string, then the strings concatenated.

SUMMARY_FORMAT = 1
FLAG_READ = 0x01
FLAG_ATTACHMENTS = 0x02
FLAG_DATE = 0x04  # the date field is meaningful (the Date header was usable)
FLAG_LENGTHS = 0x08  # strings are length-prefixed instead of U+0000-separated
_FLAGS_KNOWN = FLAG_READ | FLAG_ATTACHMENTS | FLAG_DATE | FLAG_LENGTHS
_SUMMARY_HEAD = struct.Struct(">BBQd16sIII")
SUMMARY_HEAD_LEN = _SUMMARY_HEAD.size  # 46
#: Offset of the flags byte, so mark_read flips the read bit without decoding anything.
SUMMARY_FLAGS_AT = 1
_SEP = "\x00"


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (never produced by mime.parse, but possible in a caller's str)
    # round-trips instead of making the write fail.
    return text.encode("utf-8", "surrogatepass")


def encode_summary(
    *, subject: str, preview: str, from_: list, to: list, cc: list, date: float | None, size: int,
    has_attachments: bool, read: bool, thread: bytes,
) -> bytes:
    """The binary summary record (layout above and in docs/schema.md)."""
    strings = [subject, preview]
    for addrs in (from_, to, cc):
        for name, addr in addrs:
            strings.append(name)
            strings.append(addr)
    flags = (FLAG_READ if read else 0) | (FLAG_ATTACHMENTS if has_attachments else 0)
    flags |= FLAG_DATE if date is not None else 0
    joined = _SEP.join(strings)
    # A string holds U+0000 iff the join has more than the separators (one C scan instead of a generator).
    if joined.count(_SEP) != len(strings) - 1:
        flags |= FLAG_LENGTHS
        body = struct.pack(f">{len(strings)}I", *[len(x) for x in strings]) + _utf8("".join(strings))
    else:
        body = _utf8(joined + _SEP)
    head = _SUMMARY_HEAD.pack(SUMMARY_FORMAT, flags, size, date if date is not None else 0.0, thread,
                              len(from_), len(to), len(cc))
    return head + body


_SUMMARY_PRE = struct.Struct(">BBQd")  # the head up to the thread id
_SUMMARY_POST = struct.Struct(">III")  # the head after it
#: Offset of the thread id in a summary record.
SUMMARY_THREAD_AT = _SUMMARY_PRE.size  # 18


def summary_parts(
    *, subject: str, preview: str, from_: list, to: list, cc: list, date: float | None, size: int,
    has_attachments: bool,
) -> tuple[bytes, bytes]:
    """The unread summary record without its thread id, as the bytes before and after it: the part of
    :func:`encode_summary` that depends on the message alone, so an import's worker processes make it and
    the storing process only joins (:func:`join_summary`). ``pre + thread + post`` is exactly
    ``encode_summary(..., read=False, thread=thread)``."""
    whole = encode_summary(subject=subject, preview=preview, from_=from_, to=to, cc=cc, date=date, size=size,
                           has_attachments=has_attachments, read=False, thread=bytes(16))
    return whole[:SUMMARY_THREAD_AT], whole[SUMMARY_THREAD_AT + 16:]


def join_summary(pre: bytes, thread: bytes, post: bytes, read: bool) -> bytes:
    """:func:`encode_summary` from :func:`summary_parts` (``thread``: 16 bytes)."""
    if read:
        at = SUMMARY_FLAGS_AT
        pre = pre[:at] + bytes((pre[at] | FLAG_READ,)) + pre[at + 1:]
    return pre + thread + post


def _strings(data: bytes, flags: int, k: int) -> list[str]:
    if not flags & FLAG_LENGTHS:
        strs = data[SUMMARY_HEAD_LEN:].decode("utf-8", "surrogatepass").split(_SEP)
        if len(strs) != k + 1 or strs.pop():
            raise ValueError(f"{len(strs)} strings or no final terminator, the counts say {k}")
        return strs
    lens = struct.unpack_from(f">{k}I", data, SUMMARY_HEAD_LEN)
    text = data[SUMMARY_HEAD_LEN + 4 * k:].decode("utf-8", "surrogatepass")
    ends = list(accumulate(lens))
    if ends[-1] != len(text):
        raise ValueError(f"lengths add up to {ends[-1]}, text has {len(text)}")
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def decode_summary(data: bytes) -> tuple:
    """``(flags, size, date, thread, subject, preview, from_, to, cc)``; Corruption if malformed."""
    try:
        fmt, flags, size, date, thread, nf, nt, nc = _SUMMARY_HEAD.unpack_from(data)
        if fmt != SUMMARY_FORMAT or flags & ~_FLAGS_KNOWN:
            raise ValueError(f"format {fmt}, flags {flags:#x}")
        strs = _strings(data, flags, 2 + 2 * (nf + nt + nc))
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise Corruption(f"bad message summary record: {exc}") from None
    # _strings checked the count (2 + an even number), so pairing one iterator with itself is exact; it
    # skips the two stride-2 slice copies and the strict check (50 summaries: 77 -> ~55 µs here).
    it = iter(strs)
    subject = next(it)
    preview = next(it)
    pairs = list(zip(it, it, strict=False))
    from_, to, cc = pairs[:nf], pairs[nf:nf + nt], pairs[nf + nt:]
    return (flags, size, date if flags & FLAG_DATE else None, thread, subject, preview, from_, to, cc)


def summary_is_read(data: bytes) -> bool:
    """The read flag of a summary record, without decoding the rest."""
    return bool(data[SUMMARY_FLAGS_AT] & FLAG_READ)


def summary_with_read(data: bytes, read: bool) -> bytes:
    """A copy of a summary record with the read flag set to ``read`` (one byte differs)."""
    b = bytearray(data)
    b[SUMMARY_FLAGS_AT] = (b[SUMMARY_FLAGS_AT] & ~FLAG_READ) | (FLAG_READ if read else 0)
    return bytes(b)


def summary_thread(data: bytes) -> bytes:
    """The 16-byte thread id of a summary record."""
    return bytes(data[18:34])


# Thread ids repeat across a page (replies share one), so their text form is memoised; bounded so a
# long-running process does not grow without limit (4,096 entries of ~100 bytes).
_THREAD_TEXT: dict[bytes, str] = {}
_THREAD_TEXT_MAX = 4096


def summaries(rows: Iterable[tuple[bytes, bytes]], folder: int) -> list[MessageSummary]:
    """MessageSummary objects for ``(id, summary record)`` rows of one folder (a list page).

    The hot loop of list_messages: one folder id string per page, thread texts memoised, and each
    instance's dict filled directly (the frozen dataclass ``__init__`` sets its 13 fields through
    ``object.__setattr__`` one by one, which cost about as much as decoding the record). Corruption if a
    record is malformed."""
    return summaries_in(((mid, folder, data) for mid, data in rows))


def summaries_in(rows: Iterable[tuple[bytes, int, bytes]]) -> list[MessageSummary]:
    """MessageSummary objects for ``(id, folder, summary record)`` rows of any folders (search results):
    the same loop as :func:`summaries`, with the folder id strings memoised per call. Building all of a
    result page in one call instead of one ``summary_from`` per result (and the cheaper pairing in
    decode_summary) took MailStore.search p50 from ~500 to ~450 µs on a 2,200-message mailbox here (50
    hits; the 50 engine reads, ~240 µs, are the rest). Corruption if a record is malformed."""
    folder_ids: dict[int, str] = {}
    threads = _THREAD_TEXT
    new = object.__new__
    cls = MessageSummary
    out = []
    for mid, folder, data in rows:
        folder_id = folder_ids.get(folder)
        if folder_id is None:
            folder_id = folder_ids[folder] = folder_id_str(folder)
        flags, size, date, thread, subject, preview, from_, to, cc = decode_summary(data)
        tid = threads.get(thread)
        if tid is None:
            if len(threads) >= _THREAD_TEXT_MAX:
                threads.clear()
            tid = threads[thread] = id_to_str(thread)
        s = new(cls)
        s.__dict__.update(
            id=id_to_str(mid), folder_id=folder_id, thread_id=tid, subject=subject, from_=from_, to=to,
            cc=cc, date=date, received=int.from_bytes(mid[:6], "big") / 1000.0, preview=preview,
            size=size, has_attachments=bool(flags & FLAG_ATTACHMENTS), is_read=bool(flags & FLAG_READ),
        )
        out.append(s)
    return out


def summary_from(mid: bytes, folder: int, data: bytes) -> MessageSummary:
    """Build a MessageSummary from a summary record (the value of LISTING / UNREAD keys).

    The one-row twin of :func:`summaries_in` (same fields, same memoised thread text) without its
    generator and per-call folder table: ~3.5 -> ~2.5 µs here, and get_message / thread call it per row.
    Corruption if the record is malformed."""
    flags, size, date, thread, subject, preview, from_, to, cc = decode_summary(data)
    threads = _THREAD_TEXT
    tid = threads.get(thread)
    if tid is None:
        if len(threads) >= _THREAD_TEXT_MAX:
            threads.clear()
        tid = threads[thread] = id_to_str(thread)
    s = object.__new__(MessageSummary)
    s.__dict__.update(
        id=id_to_str(mid), folder_id=SYSTEM_FOLDERS.get(folder) or f"f{folder}", thread_id=tid,
        subject=subject, from_=from_, to=to, cc=cc, date=date,
        received=int.from_bytes(mid[:6], "big") / 1000.0, preview=preview, size=size,
        has_attachments=bool(flags & FLAG_ATTACHMENTS), is_read=bool(flags & FLAG_READ),
    )
    return s


# ---- message record (value of MESSAGE keys) --------------------------------------------------------------
#
#   u8 format (1) | u32 folder | u32 summary length | summary record | details (compact JSON)
#
# details: {"m": Message-ID or null, "i": [In-Reply-To ids], "r": [References ids], "b": [[name, addr]]
# Bcc, "a": [[filename, type, size, sha256 hex]] attachments, "k": dedup key hex or null}. The folder
# and the summary sit at fixed offsets, so mark_read and move rewrite bytes without parsing the details.

MESSAGE_FORMAT = 1
_MSG_HEAD = struct.Struct(">BII")
MESSAGE_HEAD_LEN = _MSG_HEAD.size  # 9


def encode_message(folder: int, summary: bytes, details: dict) -> bytes:
    return _MSG_HEAD.pack(MESSAGE_FORMAT, folder, len(summary)) + summary + dumps(details)


def details_prefix(details: dict) -> bytes:
    """The details JSON of a message record up to its last member, the dedup key ``"k"`` (which depends on
    the user): ``details`` holds every other member, in record order. :func:`message_record` completes it."""
    if "k" in details:
        raise ValueError("details_prefix takes the details without their dedup key")
    return dumps({**details, "k": None})[:-len(b"null}")]


def message_record(folder: int, summary: bytes, prefix: bytes, dedup_key: bytes | None) -> bytes:
    """``encode_message(folder, summary, {**details, "k": dedup_key.hex() or None})`` from the
    :func:`details_prefix` of ``details``: the same bytes, without encoding the details again."""
    tail = b"null}" if dedup_key is None else b'"' + dedup_key.hex().encode("ascii") + b'"}'
    return _MSG_HEAD.pack(MESSAGE_FORMAT, folder, len(summary)) + summary + prefix + tail


def decode_message_head(data: bytes) -> tuple[int, bytes]:
    """``(folder, summary record)`` of a message record; Corruption if malformed."""
    try:
        fmt, folder, n = _MSG_HEAD.unpack_from(data)
    except struct.error as exc:
        raise Corruption(f"bad message record: {exc}") from None
    if fmt != MESSAGE_FORMAT or MESSAGE_HEAD_LEN + n > len(data):
        raise Corruption(f"bad message record (format {fmt}, summary {n} of {len(data)} bytes)")
    return folder, data[MESSAGE_HEAD_LEN:MESSAGE_HEAD_LEN + n]


def decode_message_details(data: bytes, summary_len: int | None = None) -> dict:
    """The details part of a message record (see the layout above); Corruption if malformed.
    ``summary_len``: the length of its summary when the caller already decoded the head."""
    if summary_len is None:
        summary_len = len(decode_message_head(data)[1])
    try:
        return json.loads(data[MESSAGE_HEAD_LEN + summary_len:])
    except ValueError as exc:
        raise Corruption(f"bad message record details: {exc}") from None


class _Lazy:
    """A Message field decoded on first access (a non-data descriptor of :class:`_LazyMessage`).

    The first read of any field of a group runs the group's loader, which stores the whole group in the
    instance ``__dict__``; later reads find it there without calling back here (a non-data descriptor
    loses to the instance dict)."""

    __slots__ = ("load", "name")

    def __init__(self, load: Callable[[dict], None]) -> None:
        self.load = load
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> object:
        if obj is None:
            return self
        d = obj.__dict__
        self.load(d)
        return d[self.name]


_PENDING = "_pending_body", "_pending_details"


def _load_body(d: dict) -> None:
    # The pending bytes are removed only after the fields are in place (one dict.update), so a thread
    # that finds them gone knows the fields are there; two threads racing both decode the same values.
    body = d.get("_pending_body", _PENDING)
    if body is _PENDING:
        return
    text, html = decode_body(body) if body else ("", "")
    d.update(text=text, html=html)
    d.pop("_pending_body", None)


def _load_details(d: dict) -> None:
    data = d.get("_pending_details", _PENDING)
    if data is _PENDING:
        return
    try:
        x = json.loads(data)
        fields = {
            "message_id": x["m"], "in_reply_to": x["i"], "references": x["r"],
            "bcc": [(name, addr) for name, addr in x["b"]],
            "attachments": [AttachmentInfo(i, a[0], a[1], a[2], a[3]) for i, a in enumerate(x["a"])],
        }
    except (KeyError, TypeError, IndexError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise Corruption(f"bad message record details: {exc!r}") from None
    d.update(fields)
    d.pop("_pending_details", None)


class _LazyMessage(Message):
    """A :class:`Message` whose body (``text``, ``html``) and details (``message_id``, ``in_reply_to``,
    ``references``, ``bcc``, ``attachments``) are decoded when first read, not when the message is read.

    Why: decoding an average 11.6 KB body took ~3.9 µs and the details JSON ~2.5 µs of a ~22 µs
    get_message here, and callers such as an attachment download or a header view read neither. A
    caller that reads every field pays the same decodes as before, later.

    It behaves as a Message: ``isinstance(m, Message)``, same fields, ``==`` with an equal Message (either
    side), ``repr`` says ``Message(...)``, ``dataclasses.replace``/``asdict`` work, and ``pickle``/``copy``
    produce a plain Message. Contract change to know: a malformed body or details record raises
    ``Corruption`` from the first read of one of its fields instead of from get_message."""

    __qualname__ = "Message"  # the dataclass repr prints the class's qualname

    text = _Lazy(_load_body)  # type: ignore[assignment]
    html = _Lazy(_load_body)  # type: ignore[assignment]
    message_id = _Lazy(_load_details)  # type: ignore[assignment]
    in_reply_to = _Lazy(_load_details)  # type: ignore[assignment]
    references = _Lazy(_load_details)  # type: ignore[assignment]
    bcc = _Lazy(_load_details)  # type: ignore[assignment]
    attachments = _Lazy(_load_details)  # type: ignore[assignment]

    def _values(self) -> tuple:
        return (self.summary, self.message_id, self.in_reply_to, self.references, self.bcc, self.text,
                self.html, self.attachments)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Message):
            return self._values() == _LazyMessage._values(other)  # type: ignore[arg-type]
        return NotImplemented

    __hash__ = Message.__hash__

    def __reduce__(self) -> tuple:
        return (Message, self._values())


def message_from(mid: bytes, data: bytes, body: bytes | None) -> Message:
    """The Message for id ``mid`` from its message record and its body record (None: no body stored).

    The summary is decoded now; the body and the details when first read (see :class:`_LazyMessage`).
    Built through the instance ``__dict__`` like :func:`summaries_in` (the frozen dataclass ``__init__``
    sets each field through ``object.__setattr__``). Corruption if the head or summary is malformed."""
    folder, sm = decode_message_head(data)
    m = object.__new__(_LazyMessage)
    m.__dict__.update(summary=summary_from(mid, folder, sm), _pending_body=body,
                      _pending_details=data[MESSAGE_HEAD_LEN + len(sm):])
    return m


def message_with_read(data: bytes, read: bool) -> bytes:
    """A copy of a message record whose summary has the read flag ``read`` (one byte differs): what
    mark_read writes, without re-decoding the head or joining a new record (the caller has already
    decoded the head with decode_message_head, which checked the summary lies inside ``data``)."""
    b = bytearray(data)
    i = MESSAGE_HEAD_LEN + SUMMARY_FLAGS_AT
    b[i] = (b[i] & ~FLAG_READ) | (FLAG_READ if read else 0)
    return bytes(b)


def message_with(data: bytes, folder: int, summary: bytes) -> bytes:
    """A copy of a message record with a new folder and summary (the details are kept as they are)."""
    _, old = decode_message_head(data)
    return _MSG_HEAD.pack(MESSAGE_FORMAT, folder, len(summary)) + summary + data[MESSAGE_HEAD_LEN + len(old):]


# ---- body record (value of BODY keys) --------------------------------------------------------------------
#
#   u32 length of the text part in bytes | text/plain parts (UTF-8) | text/html parts (UTF-8)
#
# Two slices and two decodes: json.loads of the same bodies took 82 µs per 15 KB record here, this 5 µs.
_U32 = struct.Struct(">I")


def encode_body(text: str, html: str) -> bytes:
    t = _utf8(text)
    return _U32.pack(len(t)) + t + _utf8(html)


def decode_body(data: bytes) -> tuple[str, str]:
    """``(text, html)`` of a body record; Corruption if malformed."""
    try:
        (n,) = _U32.unpack_from(data)
        if 4 + n > len(data):
            raise ValueError(f"text of {n} bytes in a {len(data)}-byte record")
        return (data[4:4 + n].decode("utf-8", "surrogatepass"),
                data[4 + n:].decode("utf-8", "surrogatepass"))
    except (struct.error, ValueError) as exc:
        raise Corruption(f"bad message body record: {exc}") from None


_STATE = struct.Struct(">QQI")


def pack_user_state(next_seq: int, oldest_seq: int, next_folder: int) -> bytes:
    return _STATE.pack(next_seq, oldest_seq, next_folder)


def unpack_user_state(data: bytes) -> tuple[int, int, int]:
    return _STATE.unpack(data)  # type: ignore[return-value]
