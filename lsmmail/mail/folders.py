"""Folders: listing, creating, renaming and deleting a user's folders."""

from __future__ import annotations

from . import schema
from .errors import FolderExists, FolderNotAllowed
from .listeners import _notifies
from .records import TRASH, USER_FOLDER_BASE, Folder, folder_id_str
from .store_core import StoreCore
from .txn import FolderState, UserState


def _folder_order(item: tuple[int, FolderState]) -> tuple[bool, str, int]:
    n, f = item
    return (True, f.name.casefold(), n) if n >= USER_FOLDER_BASE else (False, "", n)


class Folders(StoreCore):
    """Mixin of MailStore: folder operations (resolving a folder id is in StoreCore)."""

    def folders(self, user_id: str) -> list[Folder]:
        """System folders in fixed order, then user folders by name, with total and unread counts."""
        u = self._user(user_id)
        with u.lock:
            items = sorted(u.folders.items(), key=_folder_order)
            base = USER_FOLDER_BASE
            return [Folder(folder_id_str(n), f.name, f.total, f.unread, n < base) for n, f in items]

    def _check_name(self, u: UserState, name: str, exclude: int | None = None) -> str:
        name = name.strip()
        if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
            raise ValueError(f"invalid folder name {name!r}")
        for n, f in u.folders.items():
            if n != exclude and f.name.casefold() == name.casefold():
                raise FolderExists(name)
        return name

    @_notifies
    def create_folder(self, user_id: str, name: str) -> Folder:
        """Create a user folder. Names are unique per user, case-insensitively (FolderExists)."""
        u = self._user(user_id)
        with u.lock:
            name = self._check_name(u, name)
            txn = self._txn()
            ut = txn.user(u)
            n = ut.next_folder
            ut.next_folder += 1
            ut.folders[n] = FolderState(name, 0, 0)
            ut.touched_folders.add(n)
            self._commit(txn)
            return Folder(folder_id_str(n), name, 0, 0, False)

    @_notifies
    def rename_folder(self, user_id: str, folder_id: str, new_name: str) -> None:
        """Rename a user folder (its id does not change). System folders: FolderNotAllowed."""
        u = self._user(user_id)
        with u.lock:
            n = self._folder_num(u, folder_id)
            if n < USER_FOLDER_BASE:
                raise FolderNotAllowed(f"cannot rename system folder {folder_id}")
            new_name = self._check_name(u, new_name, exclude=n)
            txn = self._txn()
            ut = txn.user(u)
            ut.folder(n).name = new_name
            self._commit(txn)

    @_notifies
    def delete_folder(self, user_id: str, folder_id: str) -> int:
        """Delete a user folder. Its messages are first moved to Trash (not destroyed) in the same batch;
        returns how many were moved. System folders: FolderNotAllowed."""
        u = self._user(user_id)
        with u.lock:
            n = self._folder_num(u, folder_id)
            if n < USER_FOLDER_BASE:
                raise FolderNotAllowed(f"cannot delete system folder {folder_id}")
            txn = self._txn()
            ut = txn.user(u)
            moved = 0
            for k, _ in self._db.scan(prefix=schema.list_prefix(schema.LISTING, u.uk, n)):
                mid = schema.id_of_list_key(k)
                self._move(txn, u, mid, self._message_record(u, mid), TRASH)
                moved += 1
            ut.removed_folders.add(n)
            self._commit(txn)
            return moved
