"""MailStore.search_ids: the ids of MailStore.search's pages (same ids, same order, same cursors), and never a
stale id after a delete or a move, whatever the search caches hold."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lsmmail.mail import MailStore, UnknownUser
from lsmmail.mail.search_bridge import IdPage, ids_text
from lsmmail.search import QuerySyntaxError

WORDS = ["budget", "lunch", "radio", "antenna", "invoice", "meeting", "photo", "report"]
SENDERS = ["ann@example.org", "bob@example.org", "cy@mail.example.net"]


def message(r: random.Random, n: int) -> bytes:
    subject = " ".join(r.sample(WORDS, 2))
    body = " ".join(r.choice(WORDS) for _ in range(r.randint(1, 8)))
    return (
        f"From: {r.choice(SENDERS)}\r\nTo: alice@example.com\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <m{n}@example.org>\r\n\r\n{body}\r\n"
    ).encode("ascii")


QUERIES = ["budget", "radio antenna", "from:bob@example.org", "invoice -lunch", "from:ann@example.org photo",
           '"budget lunch"', "meeting OR photo", "in:inbox report", "is:unread radio", "-budget",
           "has:attachment"]


def all_pages(fn, query: str, limit: int) -> tuple[list[str], list[str | None]]:
    ids: list[str] = []
    cursors: list[str | None] = []
    cursor = None
    while True:
        page = fn("alice", query, limit=limit, cursor=cursor)
        ids += [x if isinstance(x, str) else x.id for x in page.items]
        cursors.append(page.next_cursor)
        cursor = page.next_cursor
        if cursor is None:
            return ids, cursors


@pytest.fixture
def store(tmp_path: Path):
    s = MailStore.open(tmp_path / "db")
    s.create_user("alice", ["alice@example.com"])
    s._search.flush_postings = 40  # small segments: flushes and merges happen within the test
    s._search.max_segments = 3
    yield s
    s.close()


def test_search_ids_equals_search_page_by_page(store: MailStore) -> None:
    r = random.Random(5)
    ids = list(store.import_messages("alice", [message(r, n) for n in range(60)]))
    for n in range(60, 75):
        store.deliver("alice", message(r, n))
    store.mark_read("alice", ids[3].id)
    assert store._search.segment_count(store._user("alice").uk) >= 1  # flushed segments and memory
    for q in QUERIES:
        for limit in (1, 7, 50):
            for _ in range(2):  # the second time from the warm caches
                got = all_pages(store.search_ids, q, limit)
                assert got == all_pages(store.search, q, limit), q
        assert got[0] == sorted(got[0], reverse=True)  # newest first (ids sort like their time)
    page = store.search_ids("alice", "budget", limit=5)
    assert isinstance(page, IdPage) and len(page.items) == 5 and page.next_cursor is not None
    # the cursors are interchangeable between the two calls
    assert store.search("alice", "budget", limit=5, cursor=page.next_cursor).items[0].id == \
        store.search_ids("alice", "budget", limit=5, cursor=page.next_cursor).items[0]


def test_search_ids_never_stale_after_delete_or_move(store: MailStore) -> None:
    r = random.Random(9)
    mids = [store.deliver("alice", message(r, n)) for n in range(50)]
    store._search.flush()
    live = set(mids)
    for step in range(30):
        for q in ("budget", "radio antenna", "from:bob@example.org", "in:inbox", "in:archive"):
            assert store.search_ids("alice", q, limit=100).items == [s.id for s in store.search(
                "alice", q, limit=100).items], q
            assert set(store.search_ids("alice", q, limit=100).items) <= live, q
        mid = r.choice(sorted(live))
        if step % 3 == 0:
            store.move("alice", mid, "Archive")
            assert mid in store.search_ids("alice", "in:archive", limit=100).items
            assert mid not in store.search_ids("alice", "in:inbox", limit=100).items
        else:
            store.delete("alice", mid)  # to Trash: still searchable
            store.delete("alice", mid)  # for good: gone from every result at once
            live.discard(mid)
            for q in ("budget", "lunch", "radio", "from:ann@example.org", "from:bob@example.org",
                      "from:cy@mail.example.net", "-nothinglikethis"):
                assert mid not in store.search_ids("alice", q, limit=100).items, q
        if step % 10 == 9:
            store._search.flush()


def test_search_ids_errors(store: MailStore) -> None:
    with pytest.raises(UnknownUser):
        store.search_ids("nobody", "budget")
    with pytest.raises(QuerySyntaxError):
        store.search_ids("alice", '"open')
    with pytest.raises(ValueError):
        store.search_ids("alice", "budget", limit=0)
    with pytest.raises(ValueError):
        store.search_ids("alice", "budget", cursor="not-a-cursor")
    assert store.search_ids("alice", "budget") == IdPage([], None)


def test_ids_text_matches_id_to_str() -> None:
    from lsmmail.mail.ids import id_to_str

    r = random.Random(1)
    ids = [r.randbytes(16) for _ in range(200)]
    assert ids_text(ids) == [id_to_str(i) for i in ids]
    assert ids_text(ids[:50]) == [id_to_str(i) for i in ids[:50]]  # memoised


def test_search_summaries_follow_changes_and_are_private(store: MailStore) -> None:
    r = random.Random(3)
    mids = [store.deliver("alice", message(r, n)) for n in range(30)]
    store._search.flush()

    def by_id(q: str) -> dict:
        return {s.id: s for s in store.search("alice", q, limit=100).items}

    for _ in range(2):  # the second pass answers from the summary cache
        page = by_id("from:ann@example.org OR from:bob@example.org OR from:cy@mail.example.net")
        assert set(page) == set(mids)
        for mid in mids[:10]:
            assert page[mid] == store.get_message("alice", mid).summary
    store.mark_read("alice", mids[0])
    store.move("alice", mids[1], "Archive")
    page = by_id("from:ann@example.org OR from:bob@example.org OR from:cy@mail.example.net")
    assert page[mids[0]].is_read and page[mids[0]] == store.get_message("alice", mids[0]).summary
    assert page[mids[1]].folder_id == "Archive"
    assert page[mids[1]] == store.get_message("alice", mids[1]).summary
    page[mids[2]].to.append(("Mallory", "m@evil.example"))  # a caller's change stays in its own copy
    assert by_id("from:ann@example.org OR from:bob@example.org OR from:cy@mail.example.net")[mids[2]] == \
        store.get_message("alice", mids[2]).summary


def test_batched_state_lookup_equals_one_by_one(store: MailStore) -> None:
    r = random.Random(4)
    mids = [store.deliver("alice", message(r, n)) for n in range(12)]
    folder = store.create_folder("alice", "Projects")
    fid = folder.id if hasattr(folder, "id") else folder
    store.move("alice", mids[0], fid)
    store.move("alice", mids[1], "Archive")
    store.mark_read("alice", mids[2])
    store.delete("alice", mids[3])
    store.delete("alice", mids[3])  # gone for good: no state
    uk = store._user("alice").uk
    from lsmmail.mail.ids import id_from_str

    docs = [id_from_str(m) for m in mids]
    with store.db.snapshot() as snap:
        one = [store._doc_state(uk, d, snap) for d in docs]
        assert store._doc_states(uk, docs, snap) == one
    assert one[0].folder_id == "Projects" and one[1].folder_id == "Archive" and one[2].is_read
    assert one[3] is None
    expected = {mids[0]: {"in:projects"}, mids[1]: {"in:archive"}, mids[2]: {"in:inbox", "is:read"}}
    for m, where in expected.items():
        word = store.get_message("alice", m).summary.subject.split()[0]
        for q in ("in:projects", "in:archive", "is:read", "in:inbox"):
            got = store.search_ids("alice", f"{q} {word}", limit=100).items
            assert (m in got) == (q in where), (q, word)
            assert got == [x.id for x in store.search("alice", f"{q} {word}", limit=100).items]
