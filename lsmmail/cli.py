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
    p.add_argument("--workers", type=int, default=None,
                   help="processes sharing the import, this one included (1: no worker processes; "
                        "default: automatic, one per extra CPU, at most 2)")
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
                                         batch_size=args.batch_size, workers=args.workers):
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


# ---- serve / user (the service extra) ---------------------------------------------------------------------

def _need_server_extra() -> None:
    try:
        import aiosmtpd  # noqa: F401
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"lsmmail: this command needs the service extra: pip install 'lsmmail[server]' ({exc})"
        ) from None


def add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="data directory (created if missing)")
    p.add_argument("--http-host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--smtp-host", default="127.0.0.1")
    p.add_argument("--smtp-port", type=int, default=2525)
    p.add_argument("--seed-corpus", type=Path, default=None,
                   help="corpus directory: seed demo@example.com with 500 sample messages (once)")
    p.add_argument("--smarthost", default=None, help="host:port to relay remote recipients to")
    p.add_argument("--max-message-size", type=int, default=None, help="bytes (default 25 MiB)")


def cmd_serve(args: argparse.Namespace) -> int:
    _need_server_extra()
    from lsmmail.service.server import serve

    serve(str(args.data), args.http_host, args.http_port, args.smtp_host, args.smtp_port,
          str(args.seed_corpus) if args.seed_corpus else None, smarthost=args.smarthost,
          max_message_size=args.max_message_size)
    return 0


def add_user(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["add"], help="add: create the user (if new) and print a new token")
    p.add_argument("address", help="the user's address; it is also the user id")
    p.add_argument("--data", required=True, type=Path, help="data directory (the server must be stopped)")


def cmd_user(args: argparse.Namespace) -> int:
    from lsmmail.service.auth import add_user as service_add_user

    print(service_add_user(str(args.data), args.address))
    return 0


# ---- search ------------------------------------------------------------------------------------------------

def add_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="+", help="Gmail-style query, e.g. from:alice has:attachment invoice")
    p.add_argument("--user", required=True)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--limit", type=int, default=20)


def cmd_search(args: argparse.Namespace) -> int:
    from lsmmail.mail import MailStore
    from lsmmail.search import QuerySyntaxError

    with MailStore.open(args.data) as store:
        try:
            page = store.search(args.user, " ".join(args.query), limit=args.limit)
        except QuerySyntaxError as exc:
            print(f"lsmmail: bad query: {exc}", file=sys.stderr)
            return 2
        for m in page.items:
            sender = m.from_[0][1] if m.from_ else ""
            print(f"{m.id}  {m.folder_id:<8} {sender[:30]:<30} {m.subject[:70]}")
    return 0


def add_reindex(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--user", default=None, help="one user (default: every user)")


def cmd_reindex(args: argparse.Namespace) -> int:
    from lsmmail.mail import MailStore

    with MailStore.open(args.data) as store:
        n = store.reindex(args.user)
    print(f"reindexed {n} messages")
    return 0


# ---- engine tools: bench, check, stats, backup -------------------------------------------------------------

def add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("bench_args", nargs=argparse.REMAINDER,
                   help="arguments of the benchmark (see lsmmail bench --help)")


def cmd_bench(args: argparse.Namespace) -> int:
    from lsmmail.bench import main as bench_main

    return int(bench_main(args.bench_args))


def add_dbdir(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="database directory (a DB, or a MailStore data directory)")


def cmd_check(args: argparse.Namespace) -> int:
    from lsmmail import DB, LsmError, Options

    try:
        with DB.open(args.dir, Options(create_if_missing=False, background_work=False)) as db:
            db.verify()
            st = db.stats()
    except LsmError as exc:
        print(f"{args.dir}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dir}: OK ({st['sst_files']} tables, {st['blob_files']} blob files, "
          "every checksum verified)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from lsmmail import DB, Options

    with DB.open(args.dir, Options(create_if_missing=False, background_work=False)) as db:
        print(json.dumps(db.stats(), indent=2, sort_keys=True))
    return 0


def add_backup(p: argparse.ArgumentParser) -> None:
    add_dbdir(p)
    p.add_argument("dest", type=Path, help="new directory for the consistent copy")


def cmd_backup(args: argparse.Namespace) -> int:
    from lsmmail import DB, Options

    with DB.open(args.dir, Options(create_if_missing=False)) as db:
        db.checkpoint(args.dest)
    print(f"checkpoint of {args.dir} written to {args.dest}")
    return 0


COMMANDS: dict[str, Command] = {
    "import": ("import messages (mbox, mbox.xz, Maildir, .eml) into a user's folder", add_import, cmd_import),
    "export": ("export a user's messages as mbox or Maildir", add_export, cmd_export),
    "serve": ("serve HTTP (REST + SSE) and SMTP on one data directory", add_serve, cmd_serve),
    "user": ("manage users of the service (user add ADDRESS prints a bearer token)", add_user, cmd_user),
    "search": ("search a user's mail with a Gmail-style query", add_search, cmd_search),
    "reindex": ("rebuild the search index from the stored messages", add_reindex, cmd_reindex),
    "bench": ("db_bench-style engine benchmarks (--compare: side by side with peers)", add_bench, cmd_bench),
    "check": ("verify every checksum of a database directory", add_dbdir, cmd_check),
    "stats": ("print the shape and counters of a database directory as JSON", add_dbdir, cmd_stats),
    "backup": ("write a consistent checkpoint of a database directory", add_backup, cmd_backup),
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
