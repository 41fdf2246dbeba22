"""Subprocess for test_crash: delivers messages from an mbox and prints ``ACK index id`` after each
acknowledged (durable) delivery, until killed (``READY`` first, once the user exists).

Usage: crash_worker.py DB MBOX MODE (deliver|import) START."""

from __future__ import annotations

import sys
from pathlib import Path

from lsmmail.mail import MailStore, UnknownUser
from lsmmail.mail.formats import read_mbox


def main() -> None:
    db, mbox, mode, start = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    with open(mbox, "rb") as f:
        raws = list(read_mbox(f))
    out = sys.stdout
    with MailStore.open(db) as store:
        try:
            store.addresses("crash")
        except UnknownUser:
            store.create_user("crash", ["crash@example.com"])
        out.write("READY\n")  # the user exists: from here on a kill tests the mail, not the setup
        out.flush()
        if mode == "deliver":
            for i, raw in enumerate(raws):
                if i < start:
                    continue
                mid = store.deliver("crash", raw)
                out.write(f"ACK {i} {mid}\n")
                out.flush()
                if i % 7 == 3:  # some reads flag changes and moves: they must be atomic too
                    store.mark_read("crash", mid)
                if i % 11 == 5:
                    store.move("crash", mid, "Archive")
        else:
            for res in store.import_messages("crash", raws[start:], batch_size=16):
                out.write(f"ACK {res.index + start} {res.id}\n")
            out.flush()
        # Everything is in: keep changing flags and folders until killed, so the kill always lands
        # in the middle of some operation.
        ids = [m.id for f in ("INBOX", "Archive") for m in store.list_messages("crash", f, limit=100).items]
        n = 0
        while ids:
            mid = ids[n % len(ids)]
            store.mark_read("crash", mid, read=n % 2 == 0)
            store.move("crash", mid, "Archive" if n % 3 else "INBOX")
            n += 1


if __name__ == "__main__":
    main()
