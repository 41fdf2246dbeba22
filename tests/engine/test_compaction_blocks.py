"""Compaction over whole blocks (compact_native + OutputSink.add_compacted) against the per-entry path
(drop_hidden over merge_entries into OutputSink.add, TableBuilder per entry): random runs with
snapshots, deletions, range tombstones, blob references (garbage, relocation into a new blob file) and
bottommost/not, through both twins (native/compact.c and the pure one)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.blob import decode_blob_ref, encode_blob_ref
from lsmmail.engine.block import BlockBuilder
from lsmmail.engine.compact_native import compact_blocks_native, compact_blocks_pure
from lsmmail.engine.compaction import OutputSink, drop_hidden
from lsmmail.engine.fs import MemFileSystem
from lsmmail.engine.iterators import merge_entries
from lsmmail.engine.options import Options
from lsmmail.engine.sstable import TableReader
from lsmmail.engine.version import FileMeta

Version = tuple[bytes, int, int, bytes]


def _raw_blocks(entries: list[Version], cut: int) -> list[bytes]:
    out, b = [], BlockBuilder(16)
    for uk, seq, kind, value in entries:
        b.add(uk + (seq << 8 | kind).to_bytes(8, "little"), value)
        if b.estimated_size() >= cut:
            out.append(b.finish())
            b = BlockBuilder(16)
    if not b.empty:
        out.append(b.finish())
    return out


@st.composite
def _runs(draw: st.DrawFn) -> tuple:
    keys = sorted({draw(st.binary(min_size=1, max_size=10)) for _ in range(draw(st.integers(1, 30)))})
    seqs = draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=150, unique=True))
    k = draw(st.integers(1, 4))
    runs: list[list[Version]] = [[] for _ in range(k)]
    for seq in seqs:
        kind = draw(st.sampled_from([0, 1, 1, 1, 2, 2]))
        if kind == 2:
            value = encode_blob_ref(draw(st.sampled_from([1, 2, 3])), 16 + seq, seq % 700 + 1)
        else:
            size = draw(st.sampled_from([0, 10, 200, 900]))
            value = b"" if kind == 0 else bytes([seq % 251]) * size
        runs[draw(st.integers(0, k - 1))].append((draw(st.sampled_from(keys)), seq, kind, value))
    for r in runs:
        r.sort(key=lambda e: (e[0], -e[1]))
    snaps = sorted(set(draw(st.lists(st.sampled_from(seqs), max_size=3))))
    tombs = []
    for _ in range(draw(st.integers(0, 2))):
        a, b = sorted([draw(st.sampled_from(keys)), draw(st.sampled_from(keys + [b"\xff"]))])
        tombs.append((draw(st.sampled_from(seqs)), a, b))
    relocate = frozenset(draw(st.lists(st.sampled_from([1, 3]), max_size=2)))
    return runs, snaps, draw(st.booleans()), tombs, relocate


def _read_blob(ref: bytes) -> bytes:
    """A stand-in for the blob files the references point at: the value is a function of the ref."""
    _, offset, length = decode_blob_ref(ref)
    return bytes([offset % 251]) * length


def _metas(files: list[FileMeta]) -> list[str]:
    return [repr(f) for f in files]  # FileMeta compares by identity


def _sink(fs: MemFileSystem, opts: Options, max_file_size: float, relocate: frozenset[int]) -> OutputSink:
    counter = itertools.count(10)
    return OutputSink(fs, "db", opts, lambda: next(counter), _read_blob, max_file_size, relocate=relocate)


def _entries(fs: MemFileSystem, numbers: list[int]) -> list[list[Version]]:
    return [list(TableReader.open(fs.open_read(f"db/{n:06d}.sst"), n, cache=None,
                                  verify_checksums=True).entries()) for n in numbers]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_runs(), st.sampled_from([64, 512, 4096]), st.sampled_from([float("inf"), 1, 3000, 20_000]),
       st.booleans(), st.sampled_from([None, None, 200, 900]))
def test_block_path_matches_entry_path(case, block_size, max_file_size, compression, min_blob) -> None:  # type: ignore[no-untyped-def]
    runs, snaps, bottom, tombs, relocate = case
    # min_blob: PUT values that reach it move to the blob file (a compaction after the option was lowered).
    opts = Options(block_size=block_size, compression=compression, min_blob_size=min_blob)
    fs = MemFileSystem()
    fs.makedirs("db")
    want_sink = _sink(fs, opts, max_file_size, relocate)
    # The block path takes its blob file's number before any table's: so does this one.
    reloc_number = want_sink.reserve_blob_number() if relocate or min_blob else 0
    want_out = want_sink.out

    def on_drop(e: Version) -> None:
        if e[2] == 2:
            want_out.add_garbage(e[3])

    for e in drop_hidden(merge_entries([iter(r) for r in runs]), snaps, bottom, tombs, on_drop):
        want_sink.add(e)
    want_sink.finish()
    want_files = want_out.files
    want = [fs.read_file(f"db/{f.number:06d}.sst") for f in want_files]
    want_blobs = [fs.read_file(f"db/{b.number:06d}.blob") for b in want_out.blobs]
    twins = [compact_blocks_pure] + ([compact_blocks_native] if native.BUILT else [])
    got = []
    for fn in twins:
        fs2 = MemFileSystem()
        fs2.makedirs("db")
        sink = _sink(fs2, opts, max_file_size, relocate)
        assert (sink.reserve_blob_number() if relocate or min_blob else 0) == reloc_number
        sink.add_compacted(fn([iter(_raw_blocks(r, 700)) for r in runs], snaps, bottom, block_size, 16,
                              tombs, relocate, reloc_number, sink.out.garbage, min_blob or 0))
        out = sink.finish()
        files = out.files
        got.append(([fs2.read_file(f"db/{f.number:06d}.sst") for f in files], files, fs2, out))
        # The same blob accounting: garbage per blob file, and the relocated values' file byte for byte.
        assert out.garbage == want_out.garbage
        assert [repr(b) for b in out.blobs] == [repr(b) for b in want_out.blobs]
        assert [fs2.read_file(f"db/{b.number:06d}.blob") for b in out.blobs] == want_blobs
    # The C twin and the Python twin write the same tables.
    assert all(g[0] == got[0][0] and _metas(g[1]) == _metas(got[0][1]) for g in got)
    tables, files, fs2, _ = got[0]
    if max_file_size == float("inf"):
        # One table: byte for byte the per-entry path's (blob_files included).
        assert tables == want and _metas(files) == _metas(want_files)
    # Same entries in the same order, each user key in one table, tables cut only once full.
    want_entries = _entries(fs, [f.number for f in want_files])
    got_entries = _entries(fs2, [f.number for f in files])
    assert [e for t in got_entries for e in t] == [e for t in want_entries for e in t]
    for a, b in itertools.pairwise(got_entries):
        assert a[-1][0] != b[0][0]
    for f in files[:-1]:
        assert f.file_size >= max_file_size
    # Each table names exactly the blob files its references point at.
    for f, t in zip(files, got_entries, strict=True):
        assert f.blob_files == tuple(sorted({decode_blob_ref(e[3])[0] for e in t if e[2] == 2}))


_flush_op = st.tuples(st.sampled_from(["put", "put", "put", "del"]), st.binary(min_size=1, max_size=12),
                      st.sampled_from([0, 7, 60, 300, 1500, 5000]))


@pytest.mark.skipif(not native.BUILT, reason="the flush's block path needs the C memtable")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_flush_op, min_size=1, max_size=60), min_size=1, max_size=3),
       st.sampled_from([64, 512, 4096]), st.sampled_from([1, 300, 1500]), st.booleans(),
       st.randoms(use_true_random=False))
def test_flush_of_large_values_matches_entry_path(batches, block_size, min_blob, compression, rnd) -> None:  # type: ignore[no-untyped-def]
    # The kernel moving PUT values of at least min_blob_size to the blob file (as a compaction does when
    # the option was lowered), fed a memtable's blocks, against the flush's OutputSink.add_run per
    # entry: the same table and blob file, byte for byte, and the same numbers.
    from lsmmail.engine.batch import WriteBatch
    from lsmmail.engine.memtable_native import NativeMemTable

    mem = NativeMemTable(1)
    seq = 1
    for ops in batches:
        wb = WriteBatch()
        for op, k, size in ops:
            if op == "del":
                wb.delete(k)
            else:
                wb.put(k, rnd.randbytes(size))
        mem.add_batch(seq, wb.entries, wb.encoded_entries())
        seq += len(wb)
    opts = Options(block_size=block_size, compression=compression, min_blob_size=min_blob)
    fs = MemFileSystem()
    fs.makedirs("db")
    want_sink = _sink(fs, opts, float("inf"), frozenset())
    for ikeys, values in mem.flush_runs():
        want_sink.add_run(ikeys, values)
    want = want_sink.finish()
    for fn in (compact_blocks_pure, compact_blocks_native):
        fs2 = MemFileSystem()
        fs2.makedirs("db")
        sink = _sink(fs2, opts, float("inf"), frozenset())
        sink.reserve_table_number()
        number = sink.reserve_blob_number()
        blocks = (raw for run in mem.flush_blocks(block_size, 16) for raw in run[0])
        sink.add_compacted(fn([blocks], [], False, block_size, 16, (), frozenset(), number, None, min_blob))
        got = sink.finish()
        assert _metas(got.files) == _metas(want.files)
        assert [repr(b) for b in got.blobs] == [repr(b) for b in want.blobs]
        for f in want.files:
            assert fs2.read_file(f"db/{f.number:06d}.sst") == fs.read_file(f"db/{f.number:06d}.sst")
        for b in want.blobs:
            assert fs2.read_file(f"db/{b.number:06d}.blob") == fs.read_file(f"db/{b.number:06d}.blob")


@pytest.mark.skipif(not native.BUILT, reason="the flush's spilling path needs the C memtable")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_flush_op, min_size=1, max_size=60), min_size=1, max_size=3),
       st.sampled_from([64, 512, 4096, 16384]), st.sampled_from([1, 2, 16]), st.sampled_from([1, 300, 1500]),
       st.booleans(), st.sampled_from([1, 3, 4096]), st.sampled_from([40, 6000, 1 << 20]), st.booleans(),
       st.randoms(use_true_random=False))
def test_flush_spilling_matches_entry_path(batches, block_size, ri, min_blob, compression, entries, nbytes,
                                           framed, rnd) -> None:  # type: ignore[no-untyped-def]
    # The flush of a memtable whose large values go to the blob file, fed from lsm_mem_flush_scan's flat
    # buffer into the compaction kernel (flush_spilling_native), against OutputSink.add_run per entry (its
    # pure twin): the same table and blob file, byte for byte, and the same file numbers, with the spilled
    # values framed as blob records in C or by BlobFileWriter.add. Small scan chunks and buffers
    # (entries, nbytes) exercise the refills and the buffer growth.
    from lsmmail.engine import compact_native
    from lsmmail.engine.batch import WriteBatch
    from lsmmail.engine.memtable_native import NativeMemTable

    mem = NativeMemTable(1)
    seq = 1
    for ops in batches:
        wb = WriteBatch()
        for op, k, size in ops:
            if op == "del":
                wb.delete(k)
            else:
                wb.put(k, rnd.randbytes(size))
        mem.add_batch(seq, wb.entries, wb.encoded_entries())
        seq += len(wb)
    opts = Options(block_size=block_size, block_restart_interval=ri, compression=compression,
                   min_blob_size=min_blob)
    fs = MemFileSystem()
    fs.makedirs("db")
    want_sink = _sink(fs, opts, float("inf"), frozenset())
    for ikeys, values in mem.flush_runs():
        want_sink.add_run(ikeys, values)
    want = want_sink.finish()
    fs2 = MemFileSystem()
    fs2.makedirs("db")
    sink = _sink(fs2, opts, float("inf"), frozenset())
    sink.reserve_table_number()
    number = sink.reserve_blob_number()
    saved = compact_native._FLAT_ENTRIES, compact_native._FLAT_BYTES
    compact_native._FLAT_ENTRIES, compact_native._FLAT_BYTES = entries, nbytes
    try:
        framed = framed and compact_native.can_frame_spill()
        runs = compact_native.flush_spilling_native(mem, block_size, ri, number, min_blob, framed)
        sink.add_compacted(runs, framed)
    finally:
        compact_native._FLAT_ENTRIES, compact_native._FLAT_BYTES = saved
    got = sink.finish()
    assert _metas(got.files) == _metas(want.files)
    assert [repr(b) for b in got.blobs] == [repr(b) for b in want.blobs]
    for f in want.files:
        assert fs2.read_file(f"db/{f.number:06d}.sst") == fs.read_file(f"db/{f.number:06d}.sst")
    for b in want.blobs:
        assert fs2.read_file(f"db/{b.number:06d}.blob") == fs.read_file(f"db/{b.number:06d}.blob")


@pytest.mark.skipif(not native.BUILT, reason="the flush's spilling path needs the C memtable")
def test_flat_feed_rejects_malformed_entries() -> None:
    # lsm_cmp_feed_flat's checks: ends out of order, an internal key shorter than its trailer, past the
    # buffer, an unknown kind.
    lib, ffi = native._lib, native._ffi
    good = b"k" + (1 << 8 | 1).to_bytes(8, "little") + b"v"
    cases = [
        (good, [9, 10]),  # well formed
        (good, [9, 11]),  # value past the buffer
        (good, [9, 8]),  # value end before key end
        (good, [5, 10]),  # internal key of 5 bytes
        (b"k" + (1 << 8 | 7).to_bytes(8, "little") + b"v", [9, 10]),  # kind 7
    ]
    got = []
    for buf, ends in cases:
        m = ffi.gc(lib.lsm_cmp_new(1, ffi.NULL, 0, 0, 4096, 16, ffi.NULL, ffi.NULL, ffi.NULL, 0, ffi.NULL, 0,
                                   5, 0), lib.lsm_cmp_free)
        cbuf = ffi.new("uint8_t[]", buf)
        cends = ffi.new("uint64_t[]", ends)
        got.append(lib.lsm_cmp_feed_flat(m, 0, cbuf, len(buf), cends, 1))
    assert got == [0, -3, -3, -3, -3]


@pytest.mark.skipif(not native.BUILT, reason="needs native/compact.c")
def test_spill_framing_is_available() -> None:
    # The xxhash package ships XXH3_64bits, so the flush frames blob records in C here (the check in
    # can_frame_spill compares one record with BlobFileWriter.add's).
    from lsmmail.engine import compact_native

    assert compact_native.can_frame_spill()
