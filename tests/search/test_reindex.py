"""MailStore.reindex / `lsmmail reindex`: the rebuilt index answers every query exactly as before, and
in:NAME follows user folders across renames."""

from __future__ import annotations

import random
from pathlib import Path

from lsmmail.cli import main as cli_main
from lsmmail.mail import MailStore
from lsmmail.search import tokenize

from .corpus import read_mbox_xz

USER = "alice@example.org"


def _results(store: MailStore, queries: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for q in queries:
        ids: list[str] = []
        cursor = None
        while True:
            page = store.search(USER, q, limit=7, cursor=cursor)
            ids += [m.id for m in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        out[q] = ids
    return out


def _queries(raws: list[bytes]) -> list[str]:
    r = random.Random(5)
    words = sorted({w for raw in raws[:60] for w in tokenize(raw.decode("latin-1"))[:80] if w.isalpha()})
    qs = r.sample(words, 40)
    qs += [f"{a} {b}" for a, b in zip(r.sample(words, 15), r.sample(words, 15), strict=True)]
    qs += [f"{a} -{b}" for a, b in zip(r.sample(words, 10), r.sample(words, 10), strict=True)]
    qs += [f"{a} OR {b}" for a, b in zip(r.sample(words, 10), r.sample(words, 10), strict=True)]
    qs += ["in:inbox", "in:projects", "is:unread", "has:attachment", "in:projects is:read", "-in:inbox"]
    qs += [f"in:projects {w}" for w in r.sample(words, 5)]
    return qs


def test_reindex_gives_identical_results_and_cli(tmp_path: Path) -> None:
    raws = read_mbox_xz("spamassassin.mbox.xz", every=40, limit=80)
    raws += read_mbox_xz("usrp-users-attachments.mbox.xz", limit=20)
    data = tmp_path / "data"
    with MailStore.open(data) as store:
        store.create_user(USER, [USER])
        folder = store.create_folder(USER, "Projects")
        ids = [store.deliver(USER, raw) for raw in raws]
        for i, mid in enumerate(ids):
            if i % 5 == 0:
                store.move(USER, mid, folder.id)
            elif i % 7 == 0:
                store.delete(USER, mid)
            elif i % 3 == 0:
                store.mark_read(USER, mid)
        queries = _queries(raws)
        before = _results(store, queries)
        assert sum(map(len, before.values())) > 200  # the queries do find things
        assert len(before["in:projects"]) == len(range(0, len(ids), 5))
        assert store.reindex(USER) == sum(f.total for f in store.folders(USER))
        assert _results(store, queries) == before
    assert cli_main(["reindex", "--data", str(data)]) == 0
    with MailStore.open(data) as store:
        assert _results(store, queries) == before


def test_in_folder_by_current_name_across_renames(tmp_path: Path) -> None:
    raws = read_mbox_xz("usrp-users-attachments.mbox.xz", limit=6)
    with MailStore.open(tmp_path / "data") as store:
        store.create_user(USER, [USER])
        folder = store.create_folder(USER, "Work Stuff")
        ids = [store.deliver(USER, raw) for raw in raws]
        moved = sorted(ids[:3], reverse=True)
        for mid in moved:
            store.move(USER, mid, folder.id)
        assert [m.id for m in store.search(USER, 'in:"work stuff"').items] == moved
        assert [m.id for m in store.search(USER, "in:WORK-STUFF").items] == []  # a name, not words
        store.rename_folder(USER, folder.id, "Archive2024")
        assert store.search(USER, 'in:"work stuff"').items == []
        assert [m.id for m in store.search(USER, "in:archive2024").items] == moved
        assert len(store.search(USER, "in:inbox").items) == 3
