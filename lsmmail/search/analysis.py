"""The pure per-document half of indexing: a document's forward record and weight.

A bulk import's worker processes run :func:`analyse` and nothing else of the search layer, so this module
imports only the tokenizer and the record codec (``lsmmail.search`` loads its index, queries and segments
on first use): ~9 ms of imports in a spawned worker instead of ~28 ms through ``lsmmail.search.index``.
"""

from __future__ import annotations

from .documents import IndexedDocument
from .mem_segment import stream_weight
from .postings import encode_forward_raw
from .tokenizer import analyze_raw


def analyse(doc: IndexedDocument) -> tuple[bytes, int]:
    """``(forward record, weight)`` of ``doc``: what ``SearchIndex.index_analysed`` takes, i.e.
    ``postings.encode_forward_raw(tokenizer.analyze_raw(doc))`` and ``mem_segment.stream_weight`` of the
    same streams. A pure function of the document (equal to ``lsmmail.search.index.analyse``)."""
    streams = analyze_raw(doc)
    return encode_forward_raw(streams), stream_weight(streams)
