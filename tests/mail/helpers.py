"""Shared helpers for the mail tests: corpus location and a full consistency check of a user."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from lsmmail.mail import MailStore, records, schema
from lsmmail.mail.formats import open_maybe_xz, read_maildir, read_mbox
from lsmmail.mail.ids import id_to_str

CORPUS = (Path(__file__).parents[2] / ".." / "shared" / "corpus").resolve()


def corpus_or_skip() -> Path:
    if not (CORPUS / "README.md").exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


def read_mbox_file(name: str) -> list[bytes]:
    with open_maybe_xz(corpus_or_skip() / name) as f:
        return list(read_mbox(f))


def edge_cases(tmp: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(corpus_or_skip() / "edge-cases.tar.gz") as tf:
        tf.extractall(tmp, filter="data")
    return list(read_maildir(tmp / "edge-cases"))


def check_user(store: MailStore, user_id: str) -> dict[str, set[str]]:
    """Assert listed <=> gettable <=> counted for every folder of ``user_id``; return folder -> ids."""
    db = store.db
    uk = store._user(user_id).uk
    recs = {}
    for k, v in db.scan(prefix=schema.MESSAGE + uk):
        recs[k[-16:]] = v
    by_folder: dict[str, set[str]] = {}
    listed_all = set()
    for f in store.folders(user_id):
        n = store._folder_num(store._user(user_id), f.id)
        listed = {schema.id_of_list_key(k): v for k, v in
                  db.scan(prefix=schema.list_prefix(schema.LISTING, uk, n))}
        unread_prefix = schema.list_prefix(schema.UNREAD, uk, n)
        unread_rows = {schema.id_of_list_key(k): v for k, v in db.scan(prefix=unread_prefix)}
        assert all(listed.get(m) == v for m, v in unread_rows.items()), "N value differs from its L value"
        unread = set(unread_rows)
        assert f.total == len(listed), (f, len(listed))
        assert f.unread == len(unread), (f, len(unread))
        assert unread == {m for m, s in listed.items() if not records.summary_is_read(s)}
        for mid, s in listed.items():
            assert mid in recs and records.decode_message_head(recs[mid]) == (n, s)
            assert db.get(schema.raw_key(uk, mid)) is not None
        listed_all |= set(listed)
        by_folder[f.id] = {id_to_str(m) for m in listed}
    assert listed_all == set(recs), "message records that no folder lists"
    # the stored counters survive a reload from disk
    stored = {schema.folder_of_key(k): json.loads(v) for k, v in db.scan(prefix=schema.folder_prefix(uk))}
    for f in store.folders(user_id):
        n = store._folder_num(store._user(user_id), f.id)
        assert (stored[n]["t"], stored[n]["u"]) == (f.total, f.unread)
    return by_folder


def check_attachments(store: MailStore) -> None:
    """Every attachment blob has a holder, every holder its blob, and holders match message records."""
    db = store.db
    blobs = {k[1:] for k, _ in db.scan(prefix=schema.ATTACHMENT)}
    holders = {}
    for k, _ in db.scan(prefix=schema.HOLDER):
        holders.setdefault(k[1:33], set()).add(k[33:])
    assert blobs == set(holders)
    expected = set()
    for k, v in db.scan(prefix=schema.MESSAGE):
        uk, mid = k[1:5], k[5:]
        for part, a in enumerate(records.decode_message_details(v)["a"]):
            expected.add((bytes.fromhex(a[3]), uk + mid + part.to_bytes(2, "big")))
    assert expected == {(sha, h) for sha, hs in holders.items() for h in hs}
