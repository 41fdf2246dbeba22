"""Manifest (version edits) and CURRENT: encoding round trips, replay, and the golden file pinning v1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsmmail.engine.errors import Corruption
from lsmmail.engine.fs import MemFileSystem
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, pack_internal
from lsmmail.engine.manifest import (
    ManifestWriter,
    VersionEdit,
    apply_edit,
    read_current,
    replay_manifest,
    set_current,
    snapshot_edit,
)
from lsmmail.engine.version import BlobMeta, FileMeta, Version

GOLDEN = Path(__file__).parents[1] / "golden" / "v1.manifest"
LEVELS = 7


def _file(number: int, lo: bytes, hi: bytes, blobs: tuple[int, ...] = ()) -> FileMeta:
    return FileMeta(number, 1000 + number, pack_internal(lo, 10, KIND_PUT), pack_internal(hi, 3, KIND_DELETE),
                    3, 10, 42, 0, blobs)


def _golden_edits() -> list[VersionEdit]:
    first = VersionEdit(log_number=7, next_file_number=20, last_sequence=1234)
    first.new_files = [(0, _file(9, b"apple", b"cherry", (5,))), (1, _file(11, b"a", b"m")),
                       (1, _file(12, b"n", b"z", (5, 6)))]
    first.new_blobs = [BlobMeta(5, 3, 30000, 30100), BlobMeta(6, 1, 5000, 5050)]
    first.added_range_dels = [(100, b"k1", b"k9")]
    first.compact_pointers = [(1, pack_internal(b"m", 8, KIND_PUT))]
    second = VersionEdit(log_number=8, last_sequence=1300)
    second.deleted_files = [(0, 9)]
    second.new_files = [(2, _file(13, b"apple", b"cherry", (5,)))]
    second.blob_garbage = [(5, 1, 10000)]
    second.deleted_blobs = [6]
    second.dropped_range_dels = [(100, b"k1")]
    return [first, second]


def _write_manifest(fs: MemFileSystem, path: str, edits: list[VersionEdit]) -> None:
    w = ManifestWriter(fs, path)
    for e in edits:
        w.append(e)
    w.close()


def test_golden_manifest_pins_format_v1() -> None:
    fs = MemFileSystem()
    fs.makedirs("/db")
    _write_manifest(fs, "/db/MANIFEST-000001", _golden_edits())
    data = fs.read_file("/db/MANIFEST-000001")
    if os.environ.get("LSMMAIL_REGEN_GOLDEN") == "1":
        GOLDEN.write_bytes(data)
    assert GOLDEN.exists(), "missing golden file; run with LSMMAIL_REGEN_GOLDEN=1 to create it"
    assert GOLDEN.read_bytes() == data, "manifest format v1 changed: that needs a new format version"
    # Reading the golden bytes gives the version the edits describe.
    fs2 = MemFileSystem()
    fs2.makedirs("/g")
    f = fs2.create("/g/MANIFEST-000001")
    f.append(GOLDEN.read_bytes())
    rec = replay_manifest(fs2, "/g/MANIFEST-000001", LEVELS)
    assert (rec.log_number, rec.next_file_number, rec.last_sequence) == (8, 20, 1300)
    v = rec.version
    assert [f.number for f in v.levels[0]] == []
    assert [f.number for f in v.levels[1]] == [11, 12]
    assert [f.number for f in v.levels[2]] == [13]
    assert sorted(v.blobs) == [5]
    assert (v.blobs[5].garbage_count, v.blobs[5].garbage_bytes) == (1, 10000)
    assert v.range_tombstones == []
    assert rec.compact_pointers == {1: pack_internal(b"m", 8, KIND_PUT)}


keys = st.binary(min_size=1, max_size=12)


@st.composite
def edits(draw: st.DrawFn) -> VersionEdit:
    e = VersionEdit()
    e.log_number = draw(st.none() | st.integers(0, 2**40))
    e.next_file_number = draw(st.none() | st.integers(0, 2**40))
    e.last_sequence = draw(st.none() | st.integers(0, 2**56 - 1))
    e.deleted_files = draw(st.lists(st.tuples(st.integers(0, LEVELS - 1), st.integers(0, 10**6)), max_size=4))
    for _ in range(draw(st.integers(0, 3))):
        lo, hi = sorted([draw(keys), draw(keys)])
        blobs = tuple(sorted(set(draw(st.lists(st.integers(0, 999), max_size=3)))))
        level = draw(st.integers(0, LEVELS - 1))
        e.new_files.append((level, _file(draw(st.integers(1, 10**6)), lo, hi, blobs)))
    e.new_blobs = [BlobMeta(n, c, b, s) for n, c, b, s in draw(st.lists(
        st.tuples(st.integers(0, 999), st.integers(0, 99), st.integers(0, 10**9), st.integers(0, 10**9)),
        max_size=3))]
    e.blob_garbage = draw(st.lists(st.tuples(st.integers(0, 999), st.integers(0, 99), st.integers(0, 10**6)),
                                   max_size=3))
    e.deleted_blobs = draw(st.lists(st.integers(0, 999), max_size=3))
    e.added_range_dels = draw(st.lists(st.tuples(st.integers(0, 10**9), keys, keys), max_size=3))
    e.dropped_range_dels = draw(st.lists(st.tuples(st.integers(0, 10**9), keys), max_size=3))
    pointers = draw(st.lists(st.tuples(st.integers(0, LEVELS - 1), keys), max_size=2))
    e.compact_pointers = [(lvl, pack_internal(k, 1, KIND_PUT)) for lvl, k in pointers]
    return e


def _fields(e: VersionEdit) -> tuple[object, ...]:
    files = [(lvl, f.number, f.file_size, f.smallest, f.largest, f.smallest_seq, f.largest_seq,
              f.num_entries, f.tombstones_applied_seq, f.blob_files) for lvl, f in e.new_files]
    return (e.log_number, e.next_file_number, e.last_sequence, e.deleted_files, files, e.new_blobs,
            e.blob_garbage, e.deleted_blobs, e.added_range_dels, e.dropped_range_dels, e.compact_pointers)


@given(edits())
def test_edit_round_trip(e: VersionEdit) -> None:
    assert _fields(VersionEdit.decode(e.encode())) == _fields(e)


@given(edits(), st.data())
def test_truncated_or_extended_edit_is_corruption_or_valid(e: VersionEdit, data: st.DataObject) -> None:
    raw = e.encode()
    if not raw:
        return
    cut = data.draw(st.integers(0, len(raw) - 1))
    try:
        VersionEdit.decode(raw[:cut])
    except Corruption:
        pass  # the only error a malformed edit may raise
    with pytest.raises(Corruption):
        VersionEdit.decode(raw + bytes([99]))  # tag 99 is unknown


def test_snapshot_edit_replays_to_the_same_version() -> None:
    v = Version.empty(LEVELS)
    for e in _golden_edits():
        v = apply_edit(v, e, LEVELS)
    snap = snapshot_edit(v, 8, 20, 1300, {1: b"m" + bytes(8)})
    v2 = apply_edit(Version.empty(LEVELS), VersionEdit.decode(snap.encode()), LEVELS)
    assert [[f.number for f in lvl] for lvl in v2.levels] == [[f.number for f in lvl] for lvl in v.levels]
    assert v2.blobs == v.blobs
    assert v2.range_tombstones == v.range_tombstones


def test_current_is_replaced_atomically_and_checked() -> None:
    fs = MemFileSystem()
    fs.makedirs("/db")
    set_current(fs, "/db", "MANIFEST-000003")
    assert read_current(fs, "/db") == "MANIFEST-000003"
    fs.crash()  # durable: the rename and the directory were synced
    assert read_current(fs, "/db") == "MANIFEST-000003"
    assert not fs.exists("/db/CURRENT.tmp")
    for bad in (b"", b"MANIFEST-000003", b"garbage\n", b"MANIFEST-../x\n"):
        f = fs.create("/db/CURRENT")
        f.append(bad)
        with pytest.raises(Corruption):
            read_current(fs, "/db")


def test_replay_rejects_a_file_numbered_at_or_past_the_counter() -> None:
    fs = MemFileSystem()
    fs.makedirs("/db")
    e = VersionEdit(log_number=1, next_file_number=5, last_sequence=0)
    e.new_files = [(1, _file(5, b"a", b"b"))]
    _write_manifest(fs, "/db/MANIFEST-000001", [e])
    with pytest.raises(Corruption):
        replay_manifest(fs, "/db/MANIFEST-000001", LEVELS)
