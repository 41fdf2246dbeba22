"""The ``lsmmail`` command line.

Each subcommand is one function ``cmd_<name>(args) -> int`` plus one ``add_<name>(parser)`` that declares
its arguments; both are registered in ``COMMANDS``, so adding a subcommand is adding one table row.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

# name -> (help, add arguments, run)
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


class _Progress:
    """A one-line progress report on stderr, redrawn at most 10 times a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.start = time.monotonic()

    def update(self, done: int, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.1):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        sys.stderr.write(f"\r{done} messages ({rate:,.0f}/s) {text[-60:]:<60}")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# ---- import ------------------------------------------------------------------------------------------------

def add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="mbox file (.mbox or .mbox.xz), Maildir, .eml file, or a directory of message files")
    p.add_argument("--user", required=True, help="user to import into (created if missing)")
    p.add_argument("--data", required=True, type=Path, help="data directory of the store")
    p.add_argument("--folder", default="INBOX", help="folder id to import into (default INBOX)")
    p.add_argument("--address", action="append", default=[], help="address for a newly created user")
    p.add_argument("--batch-size", type=int, default=None, help="messages per durable write batch")
    p.add_argument("--read", action="store_true", help="mark imported messages as read")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def cmd_import(args: argparse.Namespace) -> int:
    from lsmmail.mail import MailStore, UnknownUser
    from lsmmail.mail.formats import iter_sources

    counts = {"stored": 0, "duplicate": 0, "unreadable": 0}
    progress = _Progress(not args.quiet)
    labels: list[str] = []

    def sources():  # type: ignore[no-untyped-def]
        try:
            for label, raw in iter_sources(args.paths):
                labels.append(label)
                yield raw
        except (OSError, EOFError) as exc:  # a truncated .xz or unreadable file ends the stream
            print(f"\nerror reading input: {exc}", file=sys.stderr)
            counts["unreadable"] += 1

    with MailStore.open(args.data) as store:
        try:
            store.addresses(args.user)
        except UnknownUser:
            store.create_user(args.user, args.address)
        done = 0
        for res in store.import_messages(args.user, sources(), args.folder, read=args.read,
                                         batch_size=args.batch_size):
            counts["unreadable" if res.status == "too_large" else res.status] += 1
            done += 1
            progress.update(done, labels[res.index] if res.index < len(labels) else "")
        progress.update(done, "", force=True)
        progress.finish()
    print(f"stored {counts['stored']}, duplicates {counts['duplicate']}, unreadable {counts['unreadable']}")
    return 0


# ---- export ------------------------------------------------------------------------------------------------

def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("dest", type=Path, metavar="DEST", help="mbox file or Maildir directory to write")
    p.add_argument("--user", required=True)
    p.add_argument("--data", required=True, type=Path, help="data directory of the store")
    p.add_argument("--format", choices=["mbox", "maildir"], default="mbox")
    p.add_argument("--folder", action="append", default=None,
                   help="folder id to export (repeatable; default: every folder)")


def cmd_export(args: argparse.Namespace) -> int:
    from lsmmail.mail import MailStore
    from lsmmail.mail.formats import write_maildir_message, write_mbox_message

    n = 0
    with MailStore.open(args.data) as store:
        folders = args.folder or [f.id for f in store.folders(args.user)]
        # Oldest first, so a re-import assigns ids (and therefore list order) in the same order.
        items = []
        for folder in folders:
            cursor = None
            while True:
                page = store.list_messages(args.user, folder, limit=500, cursor=cursor)
                items.extend(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
        items.sort(key=lambda m: m.id)
        if args.format == "mbox":
            with open(args.dest, "wb") as out:
                for m in items:
                    sender = m.from_[0][1] if m.from_ else "MAILER-DAEMON"
                    write_mbox_message(out, store.get_raw(args.user, m.id), sender, m.received)
                    n += 1
        else:
            for m in items:
                write_maildir_message(args.dest, m.id, store.get_raw(args.user, m.id), m.is_read)
                n += 1
    print(f"exported {n} messages", file=sys.stderr)
    return 0


COMMANDS: dict[str, Command] = {
    "import": ("import messages (mbox, mbox.xz, Maildir, .eml) into a user's folder", add_import, cmd_import),
    "export": ("export a user's messages as mbox or Maildir", add_export, cmd_export),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsmmail", description="lsmmail: an embedded mailbox store")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
