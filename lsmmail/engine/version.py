"""Versions: which files make up the database at one moment.

A :class:`Version` is immutable. Every flush or compaction makes a new one from the current one plus a
:class:`~lsmmail.engine.manifest.VersionEdit`. Readers (gets, iterators) take a reference to the version
they start on and keep reading its files even after compaction has replaced them: a file is deleted
only when no live version holds it (reference counting in :class:`VersionSet`).

Levels: L0 holds flushed memtables, newest first, whose key ranges may overlap. Every deeper level holds
files with disjoint key ranges sorted by smallest key; a key found in level *n* is newer than the same
key in any level below it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from .keys import unpack_internal

RangeTombstone = tuple[int, bytes, bytes]  # (sequence, start, end)


@dataclass(eq=False)
class FileMeta:
    """What the manifest records of one SSTable."""

    number: int
    file_size: int
    smallest: bytes  # internal key
    largest: bytes  # internal key
    smallest_seq: int
    largest_seq: int
    num_entries: int
    tombstones_applied_seq: int = 0
    blob_files: tuple[int, ...] = ()
    smallest_user: bytes = field(init=False, repr=False)
    largest_user: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.smallest_user = unpack_internal(self.smallest)[0]
        self.largest_user = unpack_internal(self.largest)[0]

    def overlaps(self, start: bytes | None, end: bytes | None) -> bool:
        """Whether the file may hold user keys in ``[start, end)`` (None = unbounded)."""
        if end is not None and self.smallest_user >= end:
            return False
        if start is not None and self.largest_user < start:
            return False
        return True

    def overlaps_inclusive(self, lo: bytes, hi: bytes) -> bool:
        """Whether the file's user-key range meets ``[lo, hi]``."""
        return not (self.largest_user < lo or self.smallest_user > hi)


@dataclass
class BlobMeta:
    """What the manifest records of one blob file."""

    number: int
    record_count: int
    value_bytes: int
    file_size: int
    garbage_count: int = 0
    garbage_bytes: int = 0

    @property
    def garbage_ratio(self) -> float:
        return self.garbage_bytes / self.value_bytes if self.value_bytes else 1.0


class Version:
    """An immutable set of files: ``levels[0]`` newest first, deeper levels by smallest key."""

    __slots__ = ("levels", "blobs", "range_tombstones", "_level_smallest", "_level_largest", "largest_level",
                 "__weakref__")

    def __init__(
        self,
        levels: list[list[FileMeta]],
        blobs: dict[int, BlobMeta],
        range_tombstones: list[RangeTombstone],
    ) -> None:
        self.levels = levels
        self.blobs = blobs
        self.range_tombstones = range_tombstones
        # Largest user keys per level for bisecting a level's disjoint files.
        self._level_largest = [[f.largest_user for f in files] for files in levels]
        self._level_smallest = [[f.smallest_user for f in files] for files in levels]
        #: The level >= 1 holding the most table bytes (0 if all are empty): a scan's largest source.
        self.largest_level = max(range(1, len(levels)), key=self.level_bytes, default=0) if any(
            levels[1:]) else 0

    @classmethod
    def empty(cls, num_levels: int) -> Version:
        return cls([[] for _ in range(num_levels)], {}, [])

    def files(self) -> Iterable[FileMeta]:
        for files in self.levels:
            yield from files

    def file_for_key(self, level: int, user_key: bytes) -> FileMeta | None:
        """In a level ≥ 1, the one file whose range may hold ``user_key``."""
        largest = self._level_largest[level]
        i = bisect.bisect_left(largest, user_key)
        if i == len(largest):
            return None
        f = self.levels[level][i]
        return f if f.smallest_user <= user_key else None

    def files_in_range(self, level: int, start: bytes | None, end: bytes | None) -> list[FileMeta]:
        """Files of ``level`` that may hold keys in ``[start, end)``, in key order (L0: newest first)."""
        files = self.levels[level]
        if level == 0:
            return [f for f in files if f.overlaps(start, end)]
        lo = 0 if start is None else bisect.bisect_left(self._level_largest[level], start)
        hi = len(files) if end is None else bisect.bisect_left(self._level_smallest[level], end)
        return files[lo:hi]

    def overlapping_inclusive(self, level: int, lo: bytes, hi: bytes) -> list[FileMeta]:
        """Files of ``level`` whose range meets ``[lo, hi]`` (both user keys, inclusive)."""
        files = self.levels[level]
        if level == 0:
            return [f for f in files if f.overlaps_inclusive(lo, hi)]
        i = bisect.bisect_left(self._level_largest[level], lo)
        j = bisect.bisect_right(self._level_smallest[level], hi)
        return files[i:j]

    def level_bytes(self, level: int) -> int:
        return sum(f.file_size for f in self.levels[level])

    def referenced_blobs(self) -> set[int]:
        refs: set[int] = set()
        for f in self.files():
            refs.update(f.blob_files)
        return refs

    def deepest_nonempty_level(self) -> int:
        for level in range(len(self.levels) - 1, -1, -1):
            if self.levels[level]:
                return level
        return 0
