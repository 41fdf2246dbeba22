"""Small generators shared by the search tests: UUIDv7-shaped ids and random documents."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from lsmmail.search import IndexedDocument

WORDS = ["alpha", "beta", "gamma", "Delta", "épée", "STRASSE", "straße", "x1", "42", "foo_bar", "don't"]
ADDRS = [
    ("Alice Smith", "alice@example.com"),
    ("", "bob@example.org"),
    ("Carol Danvers", "carol.danvers@mail.example.com"),
    ("Δημήτρης", "dimitris@example.gr"),
]
FILES = ["report.pdf", "Q3 numbers.xlsx", "photo_1.PNG"]
FOLDERS = ["INBOX", "Archive", "Trash"]
BASE_MS = 1_600_000_000_000  # 2020-09-13


def doc_id(ms: int, rnd: int) -> bytes:
    """A UUIDv7-shaped id: 48-bit big-endian ms, version 7, variant bits, random rest."""
    b = bytearray(ms.to_bytes(6, "big") + rnd.to_bytes(10, "big"))
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return bytes(b)


def random_doc(r: random.Random) -> IndexedDocument:
    def text(n: int) -> str:
        return " ".join(r.choice(WORDS) for _ in range(r.randint(0, n)))

    atts = r.sample(FILES, r.randint(0, 2))
    return IndexedDocument(
        subject=text(4),
        from_=[r.choice(ADDRS)],
        to=r.sample(ADDRS, r.randint(0, 2)),
        cc=r.sample(ADDRS, r.randint(0, 1)),
        body_text=text(12),
        body_html=f"<div><p>{text(4)}</p><script>var gamma=1;</script></div>" if r.random() < 0.3 else "",
        attachment_names=atts,
        has_attachment=bool(atts) or r.random() < 0.1,
    )


_word = st.sampled_from(WORDS + ["missing", "éPÉE", "strasse"])
_field = st.sampled_from(["from", "to", "cc", "subject", "filename"])
_value = st.sampled_from(
    [
        "alice",
        "alice@example.com",
        "example.com",
        "Carol Danvers",
        "danvers",
        "report.pdf",
        "pdf",
        "numbers",
        "Q3 numbers.xlsx",
        "photo_1.png",
        "dimitris@example.gr",
        "δημήτρης",
        "mail.example.com",
        "42",
    ]
)


def _leaf() -> st.SearchStrategy[str]:
    return st.one_of(
        _word,
        st.tuples(_word, _word).map(lambda t: f'"{t[0]} {t[1]}"'),
        st.tuples(_field, _value).map(lambda t: f'{t[0]}:"{t[1]}"'),
        st.just("has:attachment"),
        st.sampled_from(["is:read", "is:unread", "in:inbox", "in:ARCHIVE", "in:trash"]),
        st.sampled_from(["after:2020-09-13", "before:2020-09-14", "after:2020-09-14"]),
    )


queries: st.SearchStrategy[str] = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda t: f"{t[0]} {t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]} OR {t[1]}"),
        inner.map(lambda q: f"-{q}" if not q.startswith("-") else q),
        inner.map(lambda q: f"({q})"),
    ),
    max_leaves=4,
)
