"""Import the real-mail corpus: counts, dedup, byte-exact raw, attachments readable and stored once.

The default run imports a deterministic sample (every 25th usrp-users message, every 10th spamassassin
message, every message naming a file or with a duplicated Message-ID, all of usrp-users-attachments and
all 123 edge cases: ~1,700 messages); ``-m slow`` imports every file whole.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from lsmmail.mail import MailStore, mime, schema

from .helpers import check_attachments, check_user, edge_cases, read_mbox_file

_MID_RE = re.compile(rb"^message-id:\s*<([^>]*)>", re.IGNORECASE | re.MULTILINE)
FILES = ["spamassassin.mbox.xz", "usrp-users.mbox.xz", "usrp-users-attachments.mbox.xz"]


def dedup_key(raw: bytes) -> object:
    mid = mime.parse(raw).message_id
    return ("mid", mid) if mid else ("raw", hashlib.sha256(raw).digest())


def select(name: str, msgs: list[bytes], full: bool) -> list[bytes]:
    if full or name == "usrp-users-attachments.mbox.xz":
        return msgs
    step = 25 if name == "usrp-users.mbox.xz" else 10
    keys = [_MID_RE.search(r.partition(b"\n\n")[0]) for r in msgs]
    keys = [m.group(1) if m else i for i, m in enumerate(keys)]  # cheap pre-filter; exact check below
    dup = {k for k, c in Counter(keys).items() if c > 1}
    return [r for i, r in enumerate(msgs)
            if i % step == 0 or keys[i] in dup or b"filename=" in r or i == 5006]


def run_import(tmp_path: Path, full: bool) -> None:
    sources = {name: select(name, read_mbox_file(name), full) for name in FILES}
    sources["edge-cases"] = [r for _, r in edge_cases(tmp_path / "edge")]
    if full:
        assert [len(sources[n]) for n in FILES] == [6046, 7000, 211]
        usrp_keys = Counter(dedup_key(r) for r in sources["usrp-users.mbox.xz"])
        assert sum(c - 1 for c in usrp_keys.values()) == 6  # the README's 6 repeated Message-IDs
    with MailStore.open(tmp_path / "db") as store:
        store.create_user("c")
        store.create_user("d")
        for name, raws in sources.items():
            folder = store.create_folder("c", name).id
            results = list(store.import_messages("c", raws, folder))
            expected: dict[object, bytes] = {}
            for r in raws:
                expected.setdefault(dedup_key(r), r)
            stored = [res for res in results if res.status == "stored"]
            assert len(stored) == len(expected), name
            assert len(results) == len(raws)
            if name == "usrp-users.mbox.xz":
                assert sum(1 for res in results if res.status == "duplicate") == 6
            # byte-exact raw for every stored message, in import order
            got = [store.get_raw("c", res.id) for res in stored]
            assert got == list(expected.values()), name
        # attachments: readable, hash-checked, stored once (including across users)
        shas = set()
        for f in store.folders("c"):
            cursor = None
            while True:
                page = store.list_messages("c", f.id, limit=500, cursor=cursor)
                for m in page.items:
                    if not m.has_attachments:
                        continue
                    for a in store.get_message("c", m.id).attachments:
                        data = store.get_attachment("c", m.id, a.part)
                        assert len(data) == a.size and hashlib.sha256(data).hexdigest() == a.sha256
                        shas.add(a.sha256)
                cursor = page.next_cursor
                if cursor is None:
                    break
        assert len(shas) > 200
        blobs = {k[1:].hex() for k, _ in store.db.scan(prefix=schema.ATTACHMENT)}
        assert blobs == shas
        list(store.import_messages("d", sources["usrp-users-attachments.mbox.xz"]))
        assert {k[1:].hex() for k, _ in store.db.scan(prefix=schema.ATTACHMENT)} == shas
        check_user(store, "c")
        check_user(store, "d")
        check_attachments(store)


def test_corpus_sample_import(tmp_path: Path) -> None:
    run_import(tmp_path, full=False)


@pytest.mark.slow
def test_corpus_full_import(tmp_path: Path) -> None:
    run_import(tmp_path, full=True)
