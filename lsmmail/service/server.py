"""``serve()``: HTTP (uvicorn) and SMTP (aiosmtpd) on one embedded data directory, in one process.

Both listeners share one asyncio loop in the main thread; blocking store calls go to worker threads; the
outbox relay (if a smarthost is configured) is a background thread. Ctrl-C (SIGINT) or SIGTERM shuts
down in order: SSE streams are told to end, uvicorn stops accepting and finishes in-flight requests
(at most GRACE seconds), the SMTP listener closes, the relay thread stops, and the store is closed
(every acknowledged write is already durable; close just releases the lock).

``python -m lsmmail.service serve --data DIR`` runs this without the CLI (the tests do).
"""

from __future__ import annotations

import asyncio
import json
import logging
import lzma
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lsmmail.mail import MailOptions, MailStore

from .app import create_app
from .auth import TokenAuth, add_user
from .events import EventHub
from .relay import OutboxRelay, RelayConfig
from .smtp import IngressHandler, MessageFilter

log = logging.getLogger("lsmmail.service")

#: Seconds uvicorn waits for in-flight requests at shutdown before cancelling them (SSE streams end at
#: once on their own; 5 s covers a slow upload finishing).
GRACE = 5
DEMO_ADDRESS = "demo@example.com"
#: Sample mail for the demo user: 500 messages import in a few seconds and fill several pages.
SEED_MESSAGES = 500
SEED_FILE = "usrp-users.mbox.xz"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def iter_mbox_xz(path: Path, limit: int) -> Iterator[bytes]:
    """Messages of an xz-compressed mbox, streamed (no temporary file), without their ``From `` lines."""
    current: list[bytes] = []
    count = 0
    prev_blank = True
    with lzma.open(path, "rb") as f:
        for line in f:
            if line.startswith(b"From ") and prev_blank:
                if current:
                    yield b"".join(current)
                    count += 1
                    if count >= limit:
                        return
                current = []
            else:
                current.append(line)
            prev_blank = line in (b"\n", b"\r\n")
    if current and count < limit:
        yield b"".join(current)


def seed(store: MailStore, corpus: str | Path, address: str = DEMO_ADDRESS,
         messages: int = SEED_MESSAGES) -> str:
    """Make sure the demo user exists and has sample mail from the corpus; return a fresh token.

    Importing is idempotent (per Message-ID), so seeding an already seeded store adds nothing."""
    token = add_user(store, address)
    src = Path(corpus) / SEED_FILE
    if src.exists():
        uid = address.lower()
        if store.folders(uid)[0].total == 0:
            for _ in store.import_messages(uid, iter_mbox_xz(src, messages)):
                pass
    else:
        log.warning("seed corpus %s not found; the demo user starts empty", src)
    return token


class _Uvicorn:
    """uvicorn.Server whose exit also ends the SSE streams (they would otherwise hold shutdown open)."""

    @staticmethod
    def make(config: Any, hub: EventHub) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                hub.close()
                super().handle_exit(sig, frame)

        return Server(config)


def serve(data_dir: str, http_host: str = "127.0.0.1", http_port: int = 8080, smtp_host: str = "127.0.0.1",
          smtp_port: int = 2525, seed_corpus: str | None = None, *, smarthost: str | None = None,
          relay_base_delay: float = 60.0, relay_max_attempts: int = 10,
          max_message_size: int | None = None, message_filter: MessageFilter | None = None,
          ready_file: str | None = None, log_level: str = "warning", hostname: str | None = None,
          print_banner: bool = True) -> None:
    """Run HTTP and SMTP on ``data_dir`` until Ctrl-C / SIGTERM (blocking). Port 0 picks a free port.

    ``seed_corpus``: a corpus directory (``../shared/corpus``) to seed the demo user from; a fresh token for
    it is printed. ``smarthost``: ``host[:port]`` to relay remote mail to (no relay without it: remote
    recipients stay queued). ``ready_file``: where to write ``{"http": url, "smtp_host", "smtp_port",
    "pid"}`` once both listeners accept connections (for scripts and tests)."""
    import uvicorn

    opts = MailOptions() if max_message_size is None else MailOptions(max_message_size=max_message_size)
    store = MailStore.open(data_dir, opts)
    size_limit = store.max_message_size
    relay: OutboxRelay | None = None
    prev_term = None
    try:
        token = seed(store, seed_corpus) if seed_corpus else None
        hub = EventHub()
        if smarthost:
            relay = OutboxRelay(store, RelayConfig.parse(smarthost, base_delay=relay_base_delay,
                                                         max_attempts=relay_max_attempts))
            relay.start()
        app = create_app(store, TokenAuth(store), hub=hub, relay=relay)
        http_sock = _bind(http_host, http_port)
        smtp_sock = _bind(smtp_host, smtp_port)
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=GRACE,
                                access_log=False)
        server = _Uvicorn.make(config, hub)
        handler = IngressHandler(store, message_filter=message_filter,
                                 hostname=hostname or socket.gethostname())
        if threading_main():
            # uvicorn re-raises the signal it caught after shutting down; make SIGTERM's re-raise an
            # exception (like SIGINT's KeyboardInterrupt) so the finally below still closes the store.
            prev_term = signal.signal(signal.SIGTERM, _raise_system_exit)
        info = {"http": f"http://{_url_host(http_host)}:{http_sock.getsockname()[1]}",
                "smtp_host": smtp_host, "smtp_port": smtp_sock.getsockname()[1], "pid": os.getpid()}
        try:
            asyncio.run(_main(server, http_sock, smtp_sock, handler, size_limit, info, token, ready_file,
                              print_banner))
        except (KeyboardInterrupt, SystemExit):
            pass
    finally:
        if relay is not None:
            relay.stop()
        store.close()
        if prev_term is not None:
            signal.signal(signal.SIGTERM, prev_term)


async def _main(server: Any, http_sock: socket.socket, smtp_sock: socket.socket, handler: IngressHandler,
                size_limit: int, info: dict, token: str | None, ready_file: str | None,
                print_banner: bool) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    smtp_server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=size_limit, enable_SMTPUTF8=True, hostname=handler.hostname,
                     ident="lsmmail ESMTP", timeout=300),
        sock=smtp_sock)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.02)
        if print_banner:
            lines = [f"lsmmail serving {info['http']}  (API docs: {info['http']}/docs)",
                     f"SMTP on {info['smtp_host']}:{info['smtp_port']}"]
            if token:
                lines.append(f"demo user {DEMO_ADDRESS}, token: {token}")
                lines.append(f"try: curl -H 'Authorization: Bearer {token}' {info['http']}/v1/folders")
            print("\n".join(lines), flush=True)
        if ready_file:
            tmp = ready_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.replace(tmp, ready_file)

    announcer = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[http_sock])
    finally:
        announcer.cancel()
        smtp_server.close()
        try:
            await asyncio.wait_for(smtp_server.wait_closed(), timeout=2)
        except TimeoutError:
            pass


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_system_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    """``python -m lsmmail.service {serve,add-user}`` (the lead wires the same into ``lsmmail``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m lsmmail.service")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run HTTP and SMTP on a data directory")
    s.add_argument("--data", required=True)
    s.add_argument("--http-host", default="127.0.0.1")
    s.add_argument("--http-port", type=int, default=8080)
    s.add_argument("--smtp-host", default="127.0.0.1")
    s.add_argument("--smtp-port", type=int, default=2525)
    s.add_argument("--seed-corpus")
    s.add_argument("--smarthost")
    s.add_argument("--relay-base-delay", type=float, default=60.0)
    s.add_argument("--relay-max-attempts", type=int, default=10)
    s.add_argument("--max-message-size", type=int)
    s.add_argument("--spam-header-filter", action="store_true",
                   help="file X-Spam-Flag: YES as spam and reject messages with X-Reject-Me (demo filter)")
    s.add_argument("--ready-file")
    s.add_argument("--log-level", default="warning")
    a = sub.add_parser("add-user", help="create a user (or a new token for it) and print a token")
    a.add_argument("--data", required=True)
    a.add_argument("address")
    args = p.parse_args(argv)
    if args.cmd == "add-user":
        print(add_user(args.data, args.address))
        return 0
    mf = None
    if args.spam_header_filter:
        from .smtp import HeaderRulesFilter

        mf = HeaderRulesFilter(reject_patterns=[r"^X-Reject-Me:"])
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    serve(args.data, args.http_host, args.http_port, args.smtp_host, args.smtp_port, args.seed_corpus,
          smarthost=args.smarthost, relay_base_delay=args.relay_base_delay,
          relay_max_attempts=args.relay_max_attempts, max_message_size=args.max_message_size,
          message_filter=mf, ready_file=args.ready_file, log_level=args.log_level)
    return 0
