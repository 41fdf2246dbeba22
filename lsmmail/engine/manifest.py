"""The manifest: a log of version edits, and ``CURRENT``, which names the live manifest.

Format: docs/format.md, "Manifest" and "CURRENT". Each flush or compaction appends one
:class:`VersionEdit` record and fsyncs it *before* the new version is used, so after any crash the
manifest describes a set of files that all exist and are complete. A torn last record (a crash during
that append) was never acted on and is ignored; a bad record in the middle is ``Corruption``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .coding import get_bytes, get_varint, put_bytes, put_varint
from .errors import Corruption
from .fs import FileSystem
from .version import BlobMeta, FileMeta, RangeTombstone, Version
from .wal import LogWriter, read_log

TAG_LOG_NUMBER = 1
TAG_NEXT_FILE = 2
TAG_LAST_SEQ = 3
TAG_DELETE_FILE = 4
TAG_NEW_FILE = 5
TAG_NEW_BLOB = 6
TAG_BLOB_GARBAGE = 7
TAG_DELETE_BLOB = 8
TAG_ADD_RANGE_DEL = 9
TAG_DROP_RANGE_DEL = 10
TAG_COMPACT_POINTER = 11


@dataclass
class VersionEdit:
    log_number: int | None = None
    next_file_number: int | None = None
    last_sequence: int | None = None
    deleted_files: list[tuple[int, int]] = field(default_factory=list)  # (level, number)
    new_files: list[tuple[int, FileMeta]] = field(default_factory=list)
    new_blobs: list[BlobMeta] = field(default_factory=list)
    blob_garbage: list[tuple[int, int, int]] = field(default_factory=list)  # (number, count, bytes)
    deleted_blobs: list[int] = field(default_factory=list)
    added_range_dels: list[RangeTombstone] = field(default_factory=list)
    dropped_range_dels: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, start)
    compact_pointers: list[tuple[int, bytes]] = field(default_factory=list)

    def encode(self) -> bytes:
        out = bytearray()
        if self.log_number is not None:
            put_varint(out, TAG_LOG_NUMBER)
            put_varint(out, self.log_number)
        if self.next_file_number is not None:
            put_varint(out, TAG_NEXT_FILE)
            put_varint(out, self.next_file_number)
        if self.last_sequence is not None:
            put_varint(out, TAG_LAST_SEQ)
            put_varint(out, self.last_sequence)
        for level, number in self.deleted_files:
            put_varint(out, TAG_DELETE_FILE)
            put_varint(out, level)
            put_varint(out, number)
        for level, f in self.new_files:
            put_varint(out, TAG_NEW_FILE)
            for v in (level, f.number, f.file_size):
                put_varint(out, v)
            put_bytes(out, f.smallest)
            put_bytes(out, f.largest)
            for v in (f.smallest_seq, f.largest_seq, f.num_entries, f.tombstones_applied_seq):
                put_varint(out, v)
            put_varint(out, len(f.blob_files))
            for b in f.blob_files:
                put_varint(out, b)
        for b in self.new_blobs:
            put_varint(out, TAG_NEW_BLOB)
            for v in (b.number, b.record_count, b.value_bytes, b.file_size):
                put_varint(out, v)
        for number, count, nbytes in self.blob_garbage:
            put_varint(out, TAG_BLOB_GARBAGE)
            for v in (number, count, nbytes):
                put_varint(out, v)
        for number in self.deleted_blobs:
            put_varint(out, TAG_DELETE_BLOB)
            put_varint(out, number)
        for seq, start, end in self.added_range_dels:
            put_varint(out, TAG_ADD_RANGE_DEL)
            put_varint(out, seq)
            put_bytes(out, start)
            put_bytes(out, end)
        for seq, start in self.dropped_range_dels:
            put_varint(out, TAG_DROP_RANGE_DEL)
            put_varint(out, seq)
            put_bytes(out, start)
        for level, key in self.compact_pointers:
            put_varint(out, TAG_COMPACT_POINTER)
            put_varint(out, level)
            put_bytes(out, key)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> VersionEdit:
        e = cls()
        pos = 0
        n = len(data)
        try:
            while pos < n:
                tag, pos = get_varint(data, pos)
                if tag == TAG_LOG_NUMBER:
                    e.log_number, pos = get_varint(data, pos)
                elif tag == TAG_NEXT_FILE:
                    e.next_file_number, pos = get_varint(data, pos)
                elif tag == TAG_LAST_SEQ:
                    e.last_sequence, pos = get_varint(data, pos)
                elif tag == TAG_DELETE_FILE:
                    level, pos = get_varint(data, pos)
                    number, pos = get_varint(data, pos)
                    e.deleted_files.append((level, number))
                elif tag == TAG_NEW_FILE:
                    level, pos = get_varint(data, pos)
                    number, pos = get_varint(data, pos)
                    size, pos = get_varint(data, pos)
                    smallest, pos = get_bytes(data, pos)
                    largest, pos = get_bytes(data, pos)
                    if len(smallest) < 9 or len(largest) < 9:
                        raise Corruption("manifest: file bound is not an internal key")
                    vals = []
                    for _ in range(5):
                        v, pos = get_varint(data, pos)
                        vals.append(v)
                    blobs = []
                    for _ in range(vals[4]):
                        b, pos = get_varint(data, pos)
                        blobs.append(b)
                    meta = FileMeta(number, size, smallest, largest, vals[0], vals[1], vals[2], vals[3],
                                    tuple(blobs))
                    e.new_files.append((level, meta))
                elif tag == TAG_NEW_BLOB:
                    vals = []
                    for _ in range(4):
                        v, pos = get_varint(data, pos)
                        vals.append(v)
                    e.new_blobs.append(BlobMeta(vals[0], vals[1], vals[2], vals[3]))
                elif tag == TAG_BLOB_GARBAGE:
                    vals = []
                    for _ in range(3):
                        v, pos = get_varint(data, pos)
                        vals.append(v)
                    e.blob_garbage.append((vals[0], vals[1], vals[2]))
                elif tag == TAG_DELETE_BLOB:
                    number, pos = get_varint(data, pos)
                    e.deleted_blobs.append(number)
                elif tag == TAG_ADD_RANGE_DEL:
                    seq, pos = get_varint(data, pos)
                    start, pos = get_bytes(data, pos)
                    end, pos = get_bytes(data, pos)
                    e.added_range_dels.append((seq, start, end))
                elif tag == TAG_DROP_RANGE_DEL:
                    seq, pos = get_varint(data, pos)
                    start, pos = get_bytes(data, pos)
                    e.dropped_range_dels.append((seq, start))
                elif tag == TAG_COMPACT_POINTER:
                    level, pos = get_varint(data, pos)
                    key, pos = get_bytes(data, pos)
                    e.compact_pointers.append((level, key))
                else:
                    raise Corruption(f"manifest: unknown tag {tag} at offset {pos}")
        except IndexError as exc:  # pragma: no cover - get_varint raises Corruption first
            raise Corruption("manifest: truncated edit") from exc
        return e


def apply_edit(base: Version, edit: VersionEdit, num_levels: int) -> Version:
    """The version that results from applying ``edit`` to ``base`` (``base`` is not changed)."""
    levels = [list(files) for files in base.levels]
    if edit.deleted_files:
        dead = set(edit.deleted_files)
        for level in {lvl for lvl, _ in dead}:
            if level >= num_levels:
                raise Corruption(f"manifest: level {level} out of range")
            levels[level] = [f for f in levels[level] if (level, f.number) not in dead]
    for level, f in edit.new_files:
        if level >= num_levels:
            raise Corruption(f"manifest: level {level} out of range")
        levels[level].append(f)
    levels[0].sort(key=lambda f: (f.largest_seq, f.number), reverse=True)
    for level in range(1, num_levels):
        levels[level].sort(key=lambda f: f.smallest_user)
    blobs = dict(base.blobs)
    for b in edit.new_blobs:
        blobs[b.number] = b
    for number, count, nbytes in edit.blob_garbage:
        old = blobs.get(number)
        if old is not None:
            blobs[number] = BlobMeta(old.number, old.record_count, old.value_bytes, old.file_size,
                                     old.garbage_count + count, old.garbage_bytes + nbytes)
    for number in edit.deleted_blobs:
        blobs.pop(number, None)
    tombs = base.range_tombstones
    if edit.added_range_dels or edit.dropped_range_dels:
        dropped = set(edit.dropped_range_dels)
        tombs = [t for t in tombs if (t[0], t[1]) not in dropped] + list(edit.added_range_dels)
        tombs.sort()
    return Version(levels, blobs, tombs)


def snapshot_edit(version: Version, log_number: int, next_file: int, last_seq: int,
                  compact_pointers: dict[int, bytes]) -> VersionEdit:
    """One edit describing the whole of ``version`` (the first record of a new manifest)."""
    e = VersionEdit(log_number=log_number, next_file_number=next_file, last_sequence=last_seq)
    for level, files in enumerate(version.levels):
        for f in files:
            e.new_files.append((level, f))
    e.new_blobs = list(version.blobs.values())
    e.blob_garbage = [(b.number, b.garbage_count, b.garbage_bytes) for b in version.blobs.values()
                      if b.garbage_count or b.garbage_bytes]
    # new_blobs carry no garbage; the garbage edit above restores it.
    e.new_blobs = [BlobMeta(b.number, b.record_count, b.value_bytes, b.file_size) for b in e.new_blobs]
    e.added_range_dels = list(version.range_tombstones)
    e.compact_pointers = sorted(compact_pointers.items())
    return e


def manifest_name(number: int) -> str:
    return f"MANIFEST-{number:06d}"


def read_current(fs: FileSystem, dbdir: str) -> str:
    data = fs.read_file(os.path.join(dbdir, "CURRENT"))
    if not data.endswith(b"\n") or not data.startswith(b"MANIFEST-") or b"/" in data:
        raise Corruption(f"CURRENT is malformed: {data[:64]!r}")
    return data[:-1].decode("ascii", "replace")


def set_current(fs: FileSystem, dbdir: str, manifest: str) -> None:
    """Point CURRENT at ``manifest`` atomically: temp file, fsync, rename, fsync the directory."""
    tmp = os.path.join(dbdir, "CURRENT.tmp")
    f = fs.create(tmp)
    try:
        f.append(manifest.encode("ascii") + b"\n")
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, os.path.join(dbdir, "CURRENT"))
    fs.sync_dir(dbdir)


@dataclass
class RecoveredManifest:
    version: Version
    log_number: int
    next_file_number: int
    last_sequence: int
    compact_pointers: dict[int, bytes]


def replay_manifest(fs: FileSystem, path: str, num_levels: int) -> RecoveredManifest:
    """Rebuild the version a manifest describes. Raises ``Corruption`` on any inconsistency."""
    data = fs.read_file(path)
    records, _ = read_log(data, name=os.path.basename(path))
    if not records:
        raise Corruption(f"{os.path.basename(path)}: manifest holds no edit")
    version = Version.empty(num_levels)
    log_number = next_file = last_seq = None
    pointers: dict[int, bytes] = {}
    for rec in records:
        edit = VersionEdit.decode(rec)
        version = apply_edit(version, edit, num_levels)
        if edit.log_number is not None:
            log_number = edit.log_number
        if edit.next_file_number is not None:
            next_file = edit.next_file_number
        if edit.last_sequence is not None:
            last_seq = edit.last_sequence
        for level, key in edit.compact_pointers:
            pointers[level] = key
    if log_number is None or next_file is None or last_seq is None:
        raise Corruption(f"{os.path.basename(path)}: manifest lacks log number, file counter or sequence")
    for f in version.files():
        if f.number >= next_file:
            raise Corruption(f"manifest: file {f.number} at or beyond next_file_number {next_file}")
    return RecoveredManifest(version, log_number, next_file, last_seq, pointers)


class ManifestWriter:
    """Appends version edits to one manifest file; every append is fsynced before it returns."""

    def __init__(self, fs: FileSystem, path: str) -> None:
        self.path = path
        self._file = fs.create(path)
        self._log = LogWriter(self._file)

    def append(self, edit: VersionEdit) -> None:
        self._log.add_record(edit.encode())
        self._log.sync()

    @property
    def size(self) -> int:
        return self._file.size()

    def close(self) -> None:
        self._log.close()
