"""Hypothesis state machine: MailStore against a plain in-memory model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from lsmmail.mail import MailStore, OutgoingMessage

from .helpers import check_attachments, check_user

USERS = {"alice": "alice@example.com", "bob": "bob@example.com"}
FOLDERS = ["INBOX", "Archive", "Spam", "Trash"]


def raw_message(n: int, with_mid: bool, variant: int) -> bytes:
    head = f"From: s{n}@remote.org\r\nTo: x@example.com\r\nSubject: m{n}\r\n"
    if with_mid:
        head += f"Message-ID: <m{n}@remote.org>\r\n"
    att = ""
    if n % 3 == 0:  # a third carry an attachment shared by every such message (dedup across users)
        head += "Content-Type: multipart/mixed; boundary=Z\r\n"
        att = ("--Z\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
               f"filename=a{n % 2}.bin\r\n\r\nshared-{n % 2}\r\n--Z--\r\n")
        return (head + f"\r\n--Z\r\nContent-Type: text/plain\r\n\r\nbody {variant}\r\n" + att).encode()
    return (head + f"\r\nbody {n} {variant}\r\n").encode()


class MailModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="mailmodel"))
        self.store = MailStore.open(self.dir / "db")
        for u, a in USERS.items():
            self.store.create_user(u, [a])
        self.msgs: dict[str, dict[str, dict]] = {u: {} for u in USERS}  # user -> id -> {folder, read}
        self.dedup: dict[str, dict[object, str]] = {u: {} for u in USERS}
        self.variant = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pick(self, user: str, i: int) -> str | None:
        ids = sorted(self.msgs[user])
        return ids[i % len(ids)] if ids else None

    @rule(user=st.sampled_from(sorted(USERS)), n=st.integers(0, 11), with_mid=st.booleans(),
          folder=st.sampled_from(["INBOX", "Archive"]), new_body=st.booleans())
    def deliver(self, user: str, n: int, with_mid: bool, folder: str, new_body: bool) -> None:
        if new_body:
            self.variant += 1
        raw = raw_message(n, with_mid, self.variant if new_body else 0)
        key = ("mid", n) if with_mid else ("raw", raw)
        mid = self.store.deliver(user, raw, folder)
        if key in self.dedup[user]:
            assert mid == self.dedup[user][key]
        else:
            assert mid not in self.msgs[user]
            self.msgs[user][mid] = {"folder": folder, "read": False, "raw": raw}
            self.dedup[user][key] = mid
        assert self.store.get_raw(user, mid) == self.msgs[user][mid]["raw"]

    @rule(sender=st.sampled_from(sorted(USERS)), to=st.sets(st.sampled_from(sorted(USERS))),
          remote=st.booleans(), n=st.integers(0, 100))
    def send(self, sender: str, to: set[str], remote: bool, n: int) -> None:
        rcpts = [USERS[u] for u in sorted(to)] + (["far@elsewhere.net"] if remote else [])
        if not rcpts:
            return
        before = len(self.store.outbox(limit=10_000))
        sid = self.store.send(sender, OutgoingMessage(to=rcpts, subject=f"s{n}", text=f"t{n}"))
        self.msgs[sender][sid] = {"folder": "Sent", "read": True, "raw": self.store.get_raw(sender, sid)}
        for u in to:
            inbox = [m.id for m in self.store.list_messages(u, "INBOX", limit=1).items]
            assert inbox and inbox[0] not in self.msgs[u]
            self.msgs[u][inbox[0]] = {"folder": "INBOX", "read": False,
                                      "raw": self.store.get_raw(u, inbox[0])}
        assert len(self.store.outbox(limit=10_000)) == before + (1 if remote else 0)

    @rule(user=st.sampled_from(sorted(USERS)), i=st.integers(0, 1000), read=st.booleans())
    def mark(self, user: str, i: int, read: bool) -> None:
        mid = self._pick(user, i)
        if mid:
            self.store.mark_read(user, mid, read)
            self.msgs[user][mid]["read"] = read

    @rule(user=st.sampled_from(sorted(USERS)), i=st.integers(0, 1000), folder=st.sampled_from(FOLDERS))
    def move(self, user: str, i: int, folder: str) -> None:
        mid = self._pick(user, i)
        if mid:
            self.store.move(user, mid, folder)
            self.msgs[user][mid]["folder"] = folder

    @rule(user=st.sampled_from(sorted(USERS)), i=st.integers(0, 1000))
    def delete(self, user: str, i: int) -> None:
        mid = self._pick(user, i)
        if not mid:
            return
        self.store.delete(user, mid)
        if self.msgs[user][mid]["folder"] == "Trash":
            del self.msgs[user][mid]
            self.dedup[user] = {k: v for k, v in self.dedup[user].items() if v != mid}
        else:
            self.msgs[user][mid]["folder"] = "Trash"

    @rule(user=st.sampled_from(sorted(USERS)), folder=st.sampled_from(FOLDERS + ["Sent"]),
          limit=st.integers(1, 4), unread_only=st.booleans(), n=st.integers(0, 10_000))
    def list_pages_while_delivering(self, user: str, folder: str, limit: int, unread_only: bool,
                                    n: int) -> None:
        expected = sorted((m for m, s in self.msgs[user].items()
                           if s["folder"] == folder and not (unread_only and s["read"])), reverse=True)
        got: list[str] = []
        page = self.store.list_messages(user, folder, limit=limit, unread_only=unread_only)
        got += [m.id for m in page.items]
        k = 0
        while page.next_cursor:
            assert len(page.items) == limit
            if folder in ("INBOX", "Archive"):  # new mail arriving between pages is newer: not repeated
                k += 1
                self.variant += 1
                raw = raw_message(1000 + n + k, False, self.variant)
                new = self.store.deliver(user, raw, folder)
                self.msgs[user][new] = {"folder": folder, "read": False, "raw": raw}
            page = self.store.list_messages(user, folder, limit=limit, cursor=page.next_cursor,
                                            unread_only=unread_only)
            got += [m.id for m in page.items]
        assert got == expected
        for m in page.items:
            assert m.is_read == self.msgs[user][m.id]["read"]

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = MailStore.open(self.dir / "db")

    @invariant()
    def counters_match_model(self) -> None:
        for u in USERS:
            got = {f.id: (f.total, f.unread) for f in self.store.folders(u)}
            for folder in ["INBOX", "Sent", "Archive", "Spam", "Trash"]:
                ms = [s for s in self.msgs[u].values() if s["folder"] == folder]
                assert got[folder] == (len(ms), sum(1 for s in ms if not s["read"])), (u, folder)

    @rule()
    def full_check(self) -> None:
        for u in USERS:
            listed = check_user(self.store, u)
            assert set().union(*listed.values()) == set(self.msgs[u])
        check_attachments(self.store)


TestMailModel = MailModel.TestCase
TestMailModel.settings = settings(max_examples=80, stateful_step_count=40, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])
