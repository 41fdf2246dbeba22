"""Sending: send (Sent copy, local recipients' copies, outbox entry) and the outbox of remote mail."""

from __future__ import annotations

from . import compose, mime, schema
from .delivery import Delivery
from .errors import InvalidAddress, InvalidCursor
from .ids import id_from_str, id_to_str
from .listeners import _notifies
from .records import INBOX, SENT, OutboxEntry, OutgoingMessage, dumps, loads
from .txn import UserState


class Sending(Delivery):
    """Mixin of MailStore: send stores its copies through the delivery write path (_add_message)."""

    @_notifies
    def send(self, user_id: str, message: bytes | OutgoingMessage) -> str:
        """Send mail as ``user_id``; returns the id of the copy stored in the sender's Sent folder.

        ``message`` is raw bytes (its To/Cc/Bcc are the recipients) or an OutgoingMessage to build
        (From is the user's first address; Date and Message-ID are added). In ONE batch: the Sent copy
        (with Bcc), a copy without Bcc in the INBOX of each local recipient (an address of a user of this
        store), and an outbox entry for the remote recipients (drained later over SMTP). Durable before
        returning. Sending the same message (same Message-ID) twice is a no-op returning the first id.
        Raises InvalidAddress (bad or no recipients, or the sender has no address), MessageTooLarge."""
        u = self._user(user_id)
        if isinstance(message, OutgoingMessage):
            if not u.addresses:
                raise InvalidAddress(f"user {user_id!r} has no address to send from")
            raw = compose.build(u.addresses[0], message)
        else:
            raw = bytes(message)
        self._check_size(raw)
        parsed = mime.parse(raw)
        recipients = compose.parse_recipients([a for _, a in parsed.to + parsed.cc + parsed.bcc])
        if not recipients:
            raise InvalidAddress("message has no recipients")
        sender = parsed.from_[0][1] if parsed.from_ else (u.addresses[0] if u.addresses else "")
        local: dict[str, UserState] = {}
        remote: list[str] = []
        for addr in dict.fromkeys(recipients):
            owner = self._db.get(schema.address_key(addr))
            if owner is None:
                remote.append(addr)
            else:
                local.setdefault(owner.decode("utf-8"), self._user(owner.decode("utf-8")))
        without_bcc = compose.strip_bcc(raw)
        parsed_nobcc = mime.parse(without_bcc) if parsed.bcc else parsed
        involved = sorted({u.uk: u, **{r.uk: r for r in local.values()}}.items())
        locks = [state.lock for _, state in involved]
        for lock in locks:  # sorted by user key: no deadlock between concurrent sends
            lock.acquire()
        try:
            txn = self._txn()
            sent_id, created = self._add_message(txn, u, raw, parsed, SENT, read=True)
            if not created:
                return id_to_str(sent_id)
            for rid, r in local.items():
                self._add_message(txn, r, without_bcc, parsed_nobcc, INBOX, read=False,
                                  register_dedup=rid != user_id)
            if remote:
                entry = self._ids.new()
                head = dumps({"u": user_id, "s": sender, "r": remote, "m": id_to_str(sent_id)})
                txn.put(schema.outbox_key(entry), len(head).to_bytes(4, "big") + head + without_bcc)
            self._commit_with_attachments(txn)
            return id_to_str(sent_id)
        finally:
            for lock in reversed(locks):
                lock.release()

    def outbox(self, after: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` queued remote deliveries, oldest first. ``after``: an entry id from a previous
        page; only entries queued after it are returned (it need not still exist, so entries finished
        meanwhile do not disturb paging). A page shorter than ``limit`` is the end of the queue.
        InvalidCursor if ``after`` is not an entry id; ValueError if ``limit`` < 1."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        start = schema.OUTBOX
        if after is not None:
            try:
                start = schema.outbox_key(id_from_str(after)) + b"\x00"  # first key after that entry
            except (TypeError, ValueError) as exc:
                raise InvalidCursor(str(after)) from exc
        out: list[OutboxEntry] = []
        for k, v in self._db.scan(start, schema.prefix_end(schema.OUTBOX)):
            n = int.from_bytes(v[:4], "big")
            head = loads(v[4:4 + n])
            out.append(OutboxEntry(id_to_str(k[1:]), head["u"], head["s"], head["r"], v[4 + n:]))
            if len(out) >= limit:
                break
        return out

    def outbox_done(self, entry_id: str) -> None:
        """Remove a delivered (or permanently failed) outbox entry. Durable before returning."""
        batch = self._batch_factory()
        batch.delete(schema.outbox_key(id_from_str(entry_id)))
        self._db.write(batch, sync=self._opts.sync)
