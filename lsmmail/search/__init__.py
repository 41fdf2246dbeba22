"""lsmmail.search: the built-in inverted index and the Gmail-style query language (DESIGN.md §4).

Depends only on the engine (``lsmmail.DB`` surface: get / write(batch) / scan(prefix=) / snapshot) and the
stdlib; it never imports ``lsmmail.mail``. Design, key layout and the crash argument: docs/search.md.

How the mail layer calls it (the contract of notes/mail_search_interface.md)::

    from lsmmail.search import SearchIndex, IndexedDocument, DocState, QuerySyntaxError

    index = SearchIndex(db, state_lookup)          # once, after DB.open; replays unflushed docs into memory
    # state_lookup(user_key: bytes, doc_id: bytes, snapshot) -> DocState(folder_id, is_read) | None

    # delivery: ONE WriteBatch with the message records AND the search record
    batch = WriteBatch(); ...mail puts...
    pending = index.index(batch, user_key, doc_id, IndexedDocument(...))
    db.write(batch, sync=True)
    index.committed(pending)                       # ONLY after the write succeeded; never if it raised

    # delete for good: same pattern with index.unindex(batch, user_key, doc_id) + committed()
    # move / mark read: NOTHING to do here; is:/in: read state_lookup (your truth) at query time

    ids, next_cursor = index.search(user_key, "from:alice has:attachment invoice", limit=50, cursor=None)
    index.rebuild(user_key, [(doc_id, IndexedDocument(...)), ...])   # lsmmail reindex (user quiescent)
    index.flush()                                  # optional (e.g. at close): persist the memory segment

Things the mail engineer must know:

* Key families ``b"S"`` and ``b"s"`` belong to search. ``user_key`` is any 1..255 bytes (your 4-byte key).
* ``doc_id`` is the 16-byte UUIDv7 message id; ``before:``/``after:`` use its 48-bit ms timestamp (UTC
  dates). Ids must never be reused for another message.
* ``committed()`` may trigger a flush of the memory segment (one extra batch, not synced; see
  docs/search.md for why no fsync is needed). Call it outside your own locks if you can.
* ``in:X`` compares ``normalize(X)`` with ``normalize(DocState.folder_id)`` (NFKC + casefold): give the
  folder name users type (e.g. ``"INBOX"``, ``"Sent"``, a user folder's current name). ``state_lookup``
  is called only for queries with
  ``is:``/``in:``; returning None hides the doc from those queries.
* Lock order: ``search`` holds the index lock while it calls ``state_lookup``; so ``state_lookup`` must
  not wait for a lock that your code holds while calling ``index``/``unindex``/``committed``/``search``.
  Reading through the snapshot it is given (no lock) is the intended implementation.
* ``IndexedDocument.body_html`` is raw HTML (tags stripped here); ``body_text`` the text/plain parts.
  The HTML is indexed only when ``body_text`` is blank (``tokenizer.body_text``; docs/search.md).
* ``search`` raises ``QuerySyntaxError`` (ValueError, ``.position``) for bad queries and
  ``InvalidArgument`` (ValueError) for a bad limit/cursor. Results: newest first (descending id).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .index import DocState, IndexedDocument, SearchIndex
    from .query import QuerySyntaxError, parse
    from .tokenizer import analyze, normalize, tokenize

#: Exported name -> its module. Imported on first use (PEP 562): a bulk import's worker process imports
#: ``tokenizer``, ``postings`` and ``analysis`` only, not the index, its queries and segments (~20 ms).
_EXPORTS = {
    "DocState": "index", "IndexedDocument": "index", "SearchIndex": "index", "QuerySyntaxError": "query",
    "parse": "query", "analyze": "tokenizer", "normalize": "tokenizer", "tokenize": "tokenizer",
}

__all__ = [
    "DocState",
    "IndexedDocument",
    "QuerySyntaxError",
    "SearchIndex",
    "analyze",
    "normalize",
    "parse",
    "tokenize",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lsmmail.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
