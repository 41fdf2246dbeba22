"""Change listeners of MailStore: registration, and notification after a public write returns.

``@_notifies`` marks every public MailStore method that commits; ``ChangeListeners`` holds the
registrations and the per-thread queue of (user, state) pairs the outermost decorated call delivers.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

# The logger keeps the name of the module this code came from: add_listener's contract names it.
log = logging.getLogger("lsmmail.mail.store")
#: A change listener: called with (user_id, new_state) after a committed write (see MailStore.add_listener).
Listener = Callable[[str, str], None]
_F = TypeVar("_F", bound=Callable[..., Any])


def _notifies(method: _F) -> _F:
    """Mark a public write method: the change listeners for the writes it committed run when it returns
    (or raises), i.e. after every lock it took is released. Nested calls notify once, at the outermost.
    Every public method that commits (via _commit) must carry it; without it, its notifications wait for
    the same thread's next decorated call."""

    @functools.wraps(method)
    def wrapper(self: ChangeListeners, *args: Any, **kwargs: Any) -> Any:
        local = self._local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            local.depth = depth
            if depth == 0:
                self._notify_listeners()

    return wrapper  # type: ignore[return-value]


class ChangeListeners:
    """Mixin of MailStore: the listener registry. MailStore.__init__ sets the attributes below."""

    _listeners: tuple[Listener, ...]  # replaced, never mutated: callers iterate lock-free
    _listeners_lock: threading.Lock
    _local: threading.local  # per thread: write depth and (user, state) pairs to announce

    # ---- change listeners ---------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(user_id, new_state)`` after every committed write that changes a user's mailbox.

        Contract:

        * **When.** After the write is durable and the in-memory state is installed, so ``state(user_id)``
          already returns ``new_state`` (or a later state) and reads see the change. Called by the thread
          that made the write, just before the MailStore method returns, with **no MailStore lock held**:
          a listener may call MailStore (even write; its own notifications follow at once).
        * **What.** One call per user per committed batch: ``deliver``, each ``import_messages`` batch that
          stored something, ``send`` (the sender and every local recipient), ``mark_read``, ``move``,
          ``delete``, the folder operations and ``create_user`` (state ``"0"``). No call for a no-op
          (duplicate delivery, mark to the same flag, move to the same folder) or a failed write.
          ``new_state`` is the user's state after the write; folder create/rename are not in the change
          log, so they report an unchanged state. ``outbox_done`` changes no mailbox and is not reported.
        * **Order.** Calls for one thread's writes come in commit order; calls made by different threads
          may interleave in any order, so treat a call as "look again" (compare states numerically, or
          call ``changes``) rather than as an ordered log.
        * **Failure.** An exception from a listener is logged (logger ``lsmmail.mail.store``) and
          swallowed: the mail operation has already committed and returns normally; the other listeners
          still run.
        * **Cost.** The listener delays the writer's return, so keep it short (e.g. hand off to a queue
          or an event loop). Adding the same function twice makes it run twice."""
        if not callable(fn):
            raise TypeError("listener must be callable")
        with self._listeners_lock:
            self._listeners = (*self._listeners, fn)

    def remove_listener(self, fn: Listener) -> None:
        """Unregister one registration of ``fn`` (a function not registered is ignored). A write that is
        already notifying may still call it once."""
        with self._listeners_lock:
            items = list(self._listeners)
            if fn in items:
                items.remove(fn)
                self._listeners = tuple(items)

    def _announce(self, user_id: str, state: str) -> None:
        """Queue a notification for the current thread's outermost write method to deliver."""
        if self._listeners:
            pending = getattr(self._local, "pending", None)
            if pending is None:
                pending = self._local.pending = []
            pending.append((user_id, state))

    def _notify_listeners(self) -> None:
        pending = getattr(self._local, "pending", None)
        if not pending:
            return
        self._local.pending = []
        listeners = self._listeners
        for user_id, state in pending:
            for fn in listeners:
                try:
                    fn(user_id, state)
                except Exception:  # noqa: BLE001 - the write is committed; a listener cannot undo it
                    log.exception("mail change listener %r failed for user %r", fn, user_id)
