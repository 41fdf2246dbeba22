"""What the index takes and gives per document: IndexedDocument (fields to index), DocState (the mail
layer's view for ``is:``/``in:``), the pending update ``index``/``unindex`` hand back, and doc-id helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, NamedTuple

from ..engine.errors import InvalidArgument
from . import postings as P

#: field -> term -> encoded position run (``_group.encode_positions``): a doc's postings.
Fields = dict[str, dict[str, bytes]]
#: field -> (tokens joined by " ", token count, specials): a doc's analysed streams in stored form
#: (``tokenizer.RawStream``), as the forward record and the memory segment keep them.
RawFields = dict[str, tuple[bytes, int, list[str]]]


@dataclass(frozen=True)
class IndexedDocument:
    """What the mail layer extracts from a message for indexing (see docs/search.md, "Fields")."""

    subject: str = ""
    from_: list[tuple[str, str]] = dc_field(default_factory=list)  # (display name, address) pairs
    to: list[tuple[str, str]] = dc_field(default_factory=list)
    cc: list[tuple[str, str]] = dc_field(default_factory=list)
    body_text: str = ""  # the text/plain parts joined
    body_html: str = ""  # the text/html parts joined (stripped here; indexed only if body_text is blank)
    attachment_names: list[str] = dc_field(default_factory=list)
    has_attachment: bool = False


def message_document(parsed: Any) -> IndexedDocument:
    """What search indexes of a parsed message (``lsmmail.mail.mime.ParsedMessage``: ``subject``,
    ``from_``, ``to``, ``cc``, ``text``, ``html``, ``attachments`` with ``filename``): the one definition
    for delivery, the import's workers and reindex, so they index identical fields.

    Built by filling the instance dict: the frozen dataclass's ``__init__`` sets each of the 8 fields
    through ``object.__setattr__`` (~3 µs a message, once per imported message); the object is the same
    (same fields, equal to one made by ``IndexedDocument(...)``, still frozen)."""
    doc = _new_document(IndexedDocument)
    doc.__dict__.update(
        subject=parsed.subject, from_=parsed.from_, to=parsed.to, cc=parsed.cc,
        body_text=parsed.text, body_html=parsed.html,
        attachment_names=[a.filename for a in parsed.attachments if a.filename],
        has_attachment=bool(parsed.attachments),
    )
    return doc


_new_document = object.__new__


class DocState(NamedTuple):
    """The mail layer's current view of a message, for ``is:`` and ``in:``."""

    folder_id: str
    is_read: bool


StateLookup = Callable[[bytes, bytes, Any], DocState | None]


class _Pending(NamedTuple):
    """What index()/unindex() return and committed() takes (a NamedTuple: ~0.3 µs to make against ~1.2
    for a frozen dataclass, once per imported message)."""

    kind: str  # "index" | "unindex"
    user: bytes
    doc: bytes
    #: The doc's forward record (format 2) and its weight (``mem_segment.stream_weight`` of its streams)
    #: for "index"; None and 0 for "unindex".
    forward: bytes | None
    weight: int = 0


def doc_time_ms(doc_id: bytes) -> int:
    """The UUIDv7 timestamp: the first 48 bits, big-endian Unix milliseconds."""
    return int.from_bytes(doc_id[:6], "big")


def _check_doc(doc_id: bytes) -> bytes:
    if not isinstance(doc_id, bytes) or len(doc_id) != P.DOC_ID_LEN:
        raise InvalidArgument("doc_id must be 16 bytes (a UUIDv7)")
    return doc_id
