"""lsmmail.search.analysis: the import workers' analysis equals the index's own, and loads only the tokenizer
and the record codec (not the index, queries or segments)."""

from __future__ import annotations

import random
import subprocess
import sys

from lsmmail.search.analysis import analyse
from lsmmail.search.index import analyse as index_analyse

from .docgen import random_doc


def test_analyse_equals_the_index_analyse() -> None:
    r = random.Random(7)
    for _ in range(300):
        doc = random_doc(r)
        assert analyse(doc) == index_analyse(doc)


def test_analysis_does_not_load_the_index() -> None:
    code = (
        "import sys, lsmmail.search.analysis, lsmmail.search.documents; "
        "print(sorted(m for m in sys.modules if m.startswith('lsmmail.search.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # a list of module names
    assert "lsmmail.search.analysis" in loaded
    for heavy in ("lsmmail.search.index", "lsmmail.search.evaluator", "lsmmail.search.query",
                  "lsmmail.search.segment_writes"):
        assert heavy not in loaded


def test_lazy_package_exports() -> None:
    import lsmmail.search as search

    for name in search.__all__:
        assert getattr(search, name) is not None
    from lsmmail.search.index import SearchIndex

    assert search.SearchIndex is SearchIndex


def test_message_document_is_an_ordinary_frozen_document() -> None:
    import dataclasses

    from lsmmail.mail import mime
    from lsmmail.search.documents import IndexedDocument, message_document

    raw = (b"From: Ann <ann@example.com>\r\nTo: bo@example.org\r\nSubject: hi there\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
           b"--b\r\nContent-Type: application/pdf; name=r.pdf\r\n\r\n%PDF\r\n--b--\r\n")
    p = mime.parse(raw)
    doc = message_document(p)
    assert doc == IndexedDocument(subject="hi there", from_=[("Ann", "ann@example.com")],
                                  to=[("", "bo@example.org")], cc=[], body_text="body", body_html="",
                                  attachment_names=["r.pdf"], has_attachment=True)
    assert dataclasses.asdict(doc)["attachment_names"] == ["r.pdf"]
    try:
        doc.subject = "changed"  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("message_document's result must stay frozen")
