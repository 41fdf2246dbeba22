"""Real-time push: wake the server-sent-event streams of a user when their mailbox changes.

Two paths lead to a wake-up, so an event reaches a connected client within a second whatever wrote:

* **notify** (the fast path): every writer inside this process (REST routes, the SMTP handler, the outbox
  relay's bounces) calls :meth:`EventHub.notify` after its write is durable; the stream wakes at once.
* **poll** (the safety net): every stream also re-checks ``MailStore.state(user)`` every
  ``poll_interval`` seconds (0.25 s: four cheap in-memory reads a second per connection), which catches
  writes that bypass the service (e.g. a future API on MailStore itself). notes/service_needs.md asks
  MailStore for a change hook that would make this unnecessary.

What a stream sends is computed from ``MailStore.changes(user, state)``, never from the notification, so
a lost or duplicated wake-up cannot lose or duplicate an event.
"""

from __future__ import annotations

import asyncio
import threading


class EventHub:
    """Per-user wake-up events for the asyncio loop serving HTTP. Thread-safe ``notify`` and ``close``."""

    def __init__(self, poll_interval: float = 0.25) -> None:
        self.poll_interval = poll_interval
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
        loop = self._loop
        with self._lock:
            events = list(self._subs.get(user_id, ()))
        if not events or loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_set_all, events)
        except RuntimeError:  # loop closed between the check and the call (shutdown)
            pass

    def notify_all(self) -> None:
        """Wake every stream (a send may land in any local user's INBOX; each stream then compares its
        user's state, an in-memory read, so a spurious wake-up costs microseconds)."""
        loop = self._loop
        with self._lock:
            events = [ev for subs in self._subs.values() for ev in subs]
        if events and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(_set_all, events)
            except RuntimeError:
                pass

    def close(self) -> None:
        """Ask every stream to end (server shutdown). Callable from any thread or a signal handler."""
        self._closing = True
        loop = self._loop
        with self._lock:
            events = [ev for subs in self._subs.values() for ev in subs]
        if events and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(_set_all, events)
            except RuntimeError:
                pass


def _set_all(events: list[asyncio.Event]) -> None:
    for ev in events:
        ev.set()
