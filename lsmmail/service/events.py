"""Real-time push: wake the server-sent-event streams of a user when their mailbox changes.

The hub registers itself as a MailStore change listener (:meth:`EventHub.connect`, done by the app at
startup). MailStore calls it after every committed write, from the writing thread, outside its locks —
whoever wrote: a REST route, the SMTP handler, the outbox relay's bounces, or any other code in this
process holding the same MailStore. One process owns a data directory (the engine's LOCK file), so no
mailbox write can bypass the hook, and streams need no polling (see ``app._event_stream`` for the
remaining keepalive wake-up).

What a stream sends is computed from ``MailStore.changes(user, state)``, never from the notification, so
a lost or duplicated wake-up cannot lose or duplicate an event; a wake-up only says "look again".
"""

from __future__ import annotations

import asyncio
import threading

from lsmmail.mail import MailStore


class EventHub:
    """Per-user wake-up events for the asyncio loop serving HTTP. Thread-safe ``notify`` and ``close``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: dict[str, set[asyncio.Event]] = {}
        self._lock = threading.Lock()
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the loop that runs the streams (called at app startup)."""
        self._loop = loop

    def connect(self, store: MailStore) -> None:
        """Wake streams on every committed write to ``store`` (MailStore.add_listener). Pair with
        :meth:`disconnect`."""
        store.add_listener(self.on_change)

    def disconnect(self, store: MailStore) -> None:
        store.remove_listener(self.on_change)

    def on_change(self, user_id: str, new_state: str) -> None:
        """The MailStore listener: wake ``user_id``'s streams. Never raises (notify swallows a closed
        loop), and costs one dict lookup when the user has no stream open."""
        self.notify(user_id)

    def subscribe(self, user_id: str) -> asyncio.Event:
        """A new wake-up event for ``user_id`` (call from the loop). Pair with unsubscribe."""
        ev = asyncio.Event()
        with self._lock:
            self._subs.setdefault(user_id, set()).add(ev)
        return ev

    def unsubscribe(self, user_id: str, ev: asyncio.Event) -> None:
        with self._lock:
            subs = self._subs.get(user_id)
            if subs is not None:
                subs.discard(ev)
                if not subs:
                    del self._subs[user_id]

    def subscribers(self, user_id: str) -> int:
        with self._lock:
            return len(self._subs.get(user_id, ()))

    def notify(self, user_id: str) -> None:
        """Wake every stream of ``user_id``. Callable from any thread; a no-op when nobody listens."""
        with self._lock:
            events = list(self._subs.get(user_id, ()))
        self._wake(events)

    def close(self) -> None:
        """Ask every stream to end (server shutdown). Callable from any thread or a signal handler."""
        self._closing = True
        with self._lock:
            events = [ev for subs in self._subs.values() for ev in subs]
        self._wake(events)

    def _wake(self, events: list[asyncio.Event]) -> None:
        loop = self._loop
        if not events or loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_set_all, events)
        except RuntimeError:  # loop closed between the check and the call (shutdown)
            pass


def _set_all(events: list[asyncio.Event]) -> None:
    for ev in events:
        ev.set()
