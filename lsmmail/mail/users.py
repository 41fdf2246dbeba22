"""UserAccounts: creating users and routing addresses to them (loading a user is in StoreCore)."""

from __future__ import annotations

from collections.abc import Iterable

from . import compose, schema
from .errors import UserExists
from .listeners import _notifies
from .records import SYSTEM_FOLDERS, USER_FOLDER_BASE, dumps, pack_user_state
from .store_core import StoreCore
from .txn import FolderState


class UserAccounts(StoreCore):
    """Mixin of MailStore: users and their addresses."""

    @_notifies
    def create_user(self, user_id: str, addresses: Iterable[str] = ()) -> None:
        """Create a user with the system folders and the given addresses (used to route local mail).

        Raises UserExists if the id or one of the addresses is taken, InvalidAddress for a bad address."""
        addrs = [compose.validate_address(a) for a in addresses]
        if not user_id:
            raise ValueError("empty user id")
        with self._users_lock:
            if self._db.get(schema.user_record_key(user_id)) is not None:
                raise UserExists(f"user {user_id!r} exists")
            for a in addrs:
                if self._db.get(schema.address_key(a)) is not None:
                    raise UserExists(f"address {a!r} belongs to another user")
            raw_next = self._db.get(schema.global_key(b"next_user"))
            number = int.from_bytes(raw_next, "big") if raw_next else 1
            uk = schema.user_key(number)
            batch = self._batch_factory()
            batch.put(schema.global_key(b"next_user"), (number + 1).to_bytes(4, "big"))
            batch.put(schema.user_record_key(user_id), dumps({"n": number, "a": addrs}))
            for a in addrs:
                batch.put(schema.address_key(a), user_id.encode("utf-8"))
            for n, name in SYSTEM_FOLDERS.items():
                batch.put(schema.folder_key(uk, n), FolderState(name, 0, 0).record())
            batch.put(schema.user_state_key(uk), pack_user_state(0, 0, USER_FOLDER_BASE))
            self._db.write(batch, sync=self._opts.sync)
            self._announce(user_id, "0")

    def user_for_address(self, address: str) -> str | None:
        """The id of the user owning ``address``, or None. Case-insensitive (addresses are stored
        case-folded, the same rule ``send`` uses to route local mail); surrounding whitespace is ignored.
        Never raises for malformed input (an empty, non-string or unencodable address is simply unknown);
        engine errors (IOFailure, Corruption) pass through."""
        if not isinstance(address, str) or not address.strip():
            return None
        try:
            key = schema.address_key(address.strip())
        except UnicodeEncodeError:  # e.g. surrogate-escaped bytes from an SMTP envelope
            return None
        raw = self._db.get(key)
        return raw.decode("utf-8") if raw is not None else None

    def addresses(self, user_id: str) -> list[str]:
        return list(self._user(user_id).addresses)
