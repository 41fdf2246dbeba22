"""Leveled compaction: what to compact next, which versions to drop, and writing the output files.

Picking (LevelDB's scheme, with RocksDB's blob garbage collection):

* L0 is compacted into L1 when it holds ``l0_compaction_trigger`` files (default 4). Its files overlap,
  so all of them go together, with every L1 file they overlap.
* Level *n* ≥ 1 is compacted when its size exceeds ``max_bytes_for_level_base · multiplier^(n−1)``; one
  file is chosen round-robin (the compact pointer) and merged with the files it overlaps in level *n+1*.
  A file that overlaps nothing below is moved down without rewriting ("trivial move").
* When no level needs work, a blob file whose garbage reaches ``blob_gc_garbage_ratio`` has the tables
  that still reference it rewritten, relocating its live values; once no table references it, the file
  is deleted. Blob garbage is collected by compaction, never by a separate manual step.

Dropping (:func:`drop_hidden`): snapshots cut the sequence space into *stripes*; within one stripe only
the newest version of a key can ever be read, so older ones are dropped. A point tombstone is dropped
only when the compaction writes the bottommost data for its keys and no live snapshot predates it.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .blob import RECORD_HEADER_SIZE, BlobFileWriter, decode_blob_ref, encode_blob_ref
from .block_frame import RawBlocks
from .compact_native import CompactRun
from .flush_table import BlockTableWriter
from .fs import FileSystem
from .keys import KIND_BLOB, KIND_DELETE, KIND_PUT, pack_internal
from .options import Options
from .sstable import TableBuilder, TableOptions
from .version import BlobMeta, FileMeta, RangeTombstone, Version

Entry = tuple[bytes, int, int, bytes]
#: (data blocks, last internal key of each, user keys, trailers, value bytes): see flush_table.py.
BlockRun = tuple[list[bytes], list[bytes], list[bytes], list[int], int]


@dataclass
class Compaction:
    """Input files of one compaction: ``inputs[0]`` from ``level``, ``inputs[1]`` from ``output_level``."""

    level: int
    output_level: int
    inputs: tuple[list[FileMeta], list[FileMeta]]
    reason: str
    bottommost: bool = False
    relocate_blobs: frozenset[int] = frozenset()
    trivial_move: bool = False

    def all_inputs(self) -> list[FileMeta]:
        return self.inputs[0] + self.inputs[1]


def max_bytes_for_level(opts: Options, level: int) -> float:
    return opts.max_bytes_for_level_base * (opts.level_size_multiplier ** (level - 1))


def level_scores(version: Version, opts: Options) -> list[float]:
    """Compaction scores per level (≥ 1 means the level needs compacting). The last level has none."""
    scores = [len(version.levels[0]) / opts.l0_compaction_trigger]
    for level in range(1, len(version.levels) - 1):
        scores.append(version.level_bytes(level) / max_bytes_for_level(opts, level))
    return scores


def _key_range(files: list[FileMeta]) -> tuple[bytes, bytes]:
    return min(f.smallest_user for f in files), max(f.largest_user for f in files)


def is_bottommost(version: Version, output_level: int, lo: bytes, hi: bytes) -> bool:
    """No level below ``output_level`` holds keys in ``[lo, hi]``."""
    return all(not version.overlapping_inclusive(level, lo, hi)
               for level in range(output_level + 1, len(version.levels)))


def setup_compaction(version: Version, level: int, first: list[FileMeta], reason: str,
                     output_level: int | None = None,
                     relocate: frozenset[int] = frozenset()) -> Compaction:
    """Complete a compaction from its first input files: add overlapping output-level files."""
    out = level + 1 if output_level is None else output_level
    if level == 0:
        # L0 files overlap each other: take every L0 file the chosen ones overlap (transitively).
        lo, hi = _key_range(first)
        while True:
            more = version.overlapping_inclusive(0, lo, hi)
            nlo, nhi = _key_range(more)
            first = more
            if (nlo, nhi) == (lo, hi):
                break
            lo, hi = nlo, nhi
    lo, hi = _key_range(first)
    below = [] if out == level else version.overlapping_inclusive(out, lo, hi)
    all_files = first + below
    lo, hi = _key_range(all_files)
    c = Compaction(level, out, (first, below), reason, relocate_blobs=relocate)
    c.bottommost = is_bottommost(version, out, lo, hi)
    c.trivial_move = (level != out and level > 0 and len(first) == 1 and not below
                      and not first[0].blob_files and not relocate)
    return c


def pick_compaction(version: Version, opts: Options, pointers: dict[int, bytes]) -> Compaction | None:
    """The most urgent compaction, or None when the tree is in shape."""
    scores = level_scores(version, opts)
    best = max(range(len(scores)), key=lambda i: scores[i])
    if scores[best] >= 1.0:
        if best == 0:
            return setup_compaction(version, 0, list(version.levels[0]), "l0")
        files = version.levels[best]
        ptr = pointers.get(best)
        chosen = files[0]
        if ptr is not None:
            for f in files:
                if f.largest_user > ptr:
                    chosen = f
                    break
        return setup_compaction(version, best, [chosen], f"size L{best}")
    return pick_blob_gc(version, opts)


def pick_blob_gc(version: Version, opts: Options) -> Compaction | None:
    """Rewrite one table that references the blob file with the most garbage over the threshold."""
    over = sorted((b for b in version.blobs.values() if b.garbage_ratio >= opts.blob_gc_garbage_ratio),
                  key=lambda b: -b.garbage_ratio)
    if not over:
        return None
    relocate = frozenset(b.number for b in over)
    target = over[0].number
    for level, files in enumerate(version.levels):
        for f in files:
            if target in f.blob_files:
                if level == 0:
                    return setup_compaction(version, 0, [f], "blob gc", relocate=relocate)
                return setup_compaction(version, level, [f], "blob gc", output_level=level,
                                        relocate=relocate)
    return None


def drop_hidden(
    entries: Iterator[Entry],
    snapshots: list[int],
    bottommost: bool,
    tombs: list[RangeTombstone],
    on_drop: Callable[[Entry], None],
) -> Iterator[Entry]:
    """Keep only versions some reader can still see (``snapshots`` sorted ascending).

    ``stripe(seq)`` = the number of snapshots older than ``seq``; two versions of a key in one stripe are
    seen by exactly the same readers, so only the newer matters. A version covered by a range tombstone
    of the same stripe is hidden too.
    """
    last_key: bytes | None = None
    last_stripe = -1
    nsnap = len(snapshots)
    for e in entries:
        uk, seq, kind, _ = e
        stripe = bisect_left(snapshots, seq) if nsnap else 0
        if uk != last_key:
            last_key = uk
            last_stripe = -1
        if stripe == last_stripe:
            on_drop(e)
            continue
        if tombs and _covered(tombs, uk, seq, stripe, snapshots):
            on_drop(e)
            continue
        last_stripe = stripe
        if kind == KIND_DELETE and bottommost and stripe == 0:
            continue  # nothing older remains to hide, and every reader sees the deletion
        yield e


def _covered(tombs: list[RangeTombstone], uk: bytes, seq: int, stripe: int, snapshots: list[int]) -> bool:
    for tseq, start, end in tombs:
        if tseq > seq and start <= uk < end:
            if (bisect_left(snapshots, tseq) if snapshots else 0) == stripe:
                return True
    return False


def applied_tombstone_seq(tombs: list[RangeTombstone], snapshots: list[int]) -> int:
    """The largest tombstone sequence whose covered versions an output fully dropped: every tombstone no
    snapshot predates (with a snapshot older than it, covered versions may have to stay)."""
    limit = snapshots[0] if snapshots else None
    best = 0
    for seq, _, _ in tombs:
        if (limit is None or seq <= limit) and seq > best:
            best = seq
    return best


@dataclass
class OutputFiles:
    files: list[FileMeta] = field(default_factory=list)
    blobs: list[BlobMeta] = field(default_factory=list)
    garbage: dict[int, list[int]] = field(default_factory=dict)  # blob number -> [count, bytes]
    bytes_written: int = 0

    def add_garbage(self, value_ref: bytes) -> None:
        number, _, length = decode_blob_ref(value_ref)
        g = self.garbage.setdefault(number, [0, 0])
        g[0] += 1
        g[1] += length


def _raw_size(blocks: Sequence[bytes]) -> int:
    """Raw bytes of a chunk's blocks (a ``RawBlocks`` knows them without copying a block out)."""
    return blocks.ends[-1] if isinstance(blocks, RawBlocks) else sum(map(len, blocks))


class OutputSink:
    """Writes the output of a flush or compaction: SSTables cut at ``max_file_size`` (never between two
    versions of one user key, so files of a level stay disjoint), and at most one new blob file.

    Values of at least ``min_blob_size`` bytes go to the blob file; references to blob files in
    ``relocate`` are rewritten into it. Every file is fsynced, and the directory too, by :meth:`finish`,
    before the caller records them in the manifest.
    """

    def __init__(self, fs: FileSystem, dbdir: str, opts: Options, new_file_number: Callable[[], int],
                 read_blob: Callable[[bytes], bytes], max_file_size: float,
                 relocate: frozenset[int] = frozenset(), tombstones_applied_seq: int = 0) -> None:
        self.fs = fs
        self.dbdir = dbdir
        self.opts = opts
        self.new_file_number = new_file_number
        self.read_blob = read_blob
        self.max_file_size = max_file_size
        self.relocate = relocate
        self.tombstones_applied_seq = tombstones_applied_seq
        self.table_opts = TableOptions(
            block_size=opts.block_size, restart_interval=opts.block_restart_interval,
            bloom_bits_per_key=opts.bloom_bits_per_key, compression=opts.compression)
        self.out = OutputFiles()
        self._builder: TableBuilder | None = None
        self._file = None
        self._number = 0
        self._blob_refs: set[int] = set()
        self._last_key: bytes | None = None
        self._blob: BlobFileWriter | None = None
        self._blob_file = None
        self._blob_number: int | None = None
        self._next_table: int | None = None

    def _blob_writer(self) -> BlobFileWriter:
        if self._blob is None:
            number = self.reserve_blob_number()
            self._blob_file = self.fs.create(os.path.join(self.dbdir, f"{number:06d}.blob"))
            self._blob = BlobFileWriter(self._blob_file, number)
        return self._blob

    def add(self, e: Entry) -> None:
        uk, seq, kind, value = e
        b = self._builder
        if b is not None and uk != self._last_key and b.estimated_file_size() >= self.max_file_size:
            self._finish_table()
            b = None
        if b is None:
            self._number = self.new_file_number()
            self._file = self.fs.create(os.path.join(self.dbdir, f"{self._number:06d}.sst"))
            b = self._builder = TableBuilder(self._file, self.table_opts)
            self._blob_refs = set()
        min_blob = self.opts.min_blob_size
        if kind == KIND_PUT and min_blob is not None and len(value) >= min_blob:
            value = self._blob_writer().add(value)
            kind = KIND_BLOB
        elif kind == KIND_BLOB:
            number = decode_blob_ref(value)[0]
            if number in self.relocate:
                self.out.add_garbage(value)
                value = self._blob_writer().add(self.read_blob(value))
        if kind == KIND_BLOB:
            self._blob_refs.add(decode_blob_ref(value)[0])
        b.add(pack_internal(uk, seq, kind), value)
        self._last_key = uk

    def add_run(self, ikeys: list[bytes], values: list[bytes]) -> None:
        """Add entries given as internal keys (with their values), in order: the same result as
        :meth:`add` per entry, without splitting and re-packing each key. Only for a single-table output
        (a flush: ``max_file_size`` infinite), whose file is never cut between entries."""
        if not ikeys:
            return
        assert self.max_file_size == float("inf")
        min_blob = self.opts.min_blob_size
        if min_blob is not None and max(map(len, values)) >= min_blob:
            # Values that go to the blob file: the per-entry path decides each one.
            for ikey, value in zip(ikeys, values, strict=True):
                t = int.from_bytes(ikey[-8:], "little")
                self.add((ikey[:-8], t >> 8, t & 0xFF, value))
            return
        b = self._builder
        if b is None:
            self._number = self.new_file_number()
            self._file = self.fs.create(os.path.join(self.dbdir, f"{self._number:06d}.sst"))
            b = self._builder = TableBuilder(self._file, self.table_opts)
            self._blob_refs = set()
        add = b.add
        for ikey, value in zip(ikeys, values, strict=True):
            add(ikey, value)
        self._last_key = ikeys[-1][:-8]

    def add_block_runs(self, runs: Iterable[BlockRun]) -> None:
        """Write one table from encoded data blocks (``NativeMemTable.flush_blocks``), for a flush whose
        values all stay in the table: the same file as :meth:`add_run` would write, without Python per
        entry (see flush_table.py). Only on a fresh sink with an infinite ``max_file_size``."""
        assert self._builder is None and self.max_file_size == float("inf")
        w: BlockTableWriter | None = None
        for run in runs:
            if w is None:
                self._number = self.new_file_number()
                self._file = self.fs.create(os.path.join(self.dbdir, f"{self._number:06d}.sst"))
                w = BlockTableWriter(self._file, self.table_opts)
                self._builder = w  # type: ignore[assignment]
                self._blob_refs = set()
            w.add_blocks(*run)

    def add_compacted(self, runs: Iterable[CompactRun], framed: bool = False) -> None:
        """Write the data blocks of :func:`~lsmmail.engine.compact_native.compact_blocks` through
        :class:`BlockTableWriter`, on a fresh sink, copying the values of relocated blob references and
        the spilled large PUT values into the blob file whose number :meth:`reserve_blob_number` gave the
        kernel. ``framed``: the chunks' spilled values come as whole blob records (see
        ``compact_native.flush_spilling_native``), appended to the blob file as they are.

        Files are cut at block boundaries: a new table starts before the first block, once the table's
        written data reaches ``max_file_size``, whose first user key differs from the last one written
        (versions of one user key never straddle two tables). ``add`` cuts at the entry instead, so the
        two paths write the same blocks but may start tables at different entries."""
        assert self._builder is None
        w: BlockTableWriter | None = None
        last_uk = self._last_key
        limit = self.max_file_size
        for blocks, nents, ukeys, trailers, vbytes, _, nblobs, bnums, relocs, spill in runs:
            if relocs:
                if framed:
                    self._append_records(relocs, spill)
                else:
                    self._relocate(relocs, spill)
            if w is not None and w.data_size + _raw_size(blocks) + 5 * len(blocks) < limit:
                # No cut can fall in this chunk (a stored block is at most its raw size plus the 5-byte
                # trailer): one call for all of its blocks instead of one per block.
                lasts = []
                i = 0
                for n in nents:
                    i += n
                    lasts.append(ukeys[i - 1] + trailers[i - 1].to_bytes(8, "little"))
                w.add_blocks(blocks, lasts, ukeys, trailers, sum(vbytes), False)
                if bnums:
                    self._blob_refs.update(bnums)
                last_uk = ukeys[-1]
                continue
            i = 0
            bi = 0
            for raw, n, nv, nb in zip(blocks, nents, vbytes, nblobs, strict=True):
                j = i + n
                if w is not None and w.data_size >= limit and ukeys[i] != last_uk:
                    self._finish_table()
                    w = None
                if w is None:
                    self._number = self._table_number()
                    self._file = self.fs.create(os.path.join(self.dbdir, f"{self._number:06d}.sst"))
                    w = BlockTableWriter(self._file, self.table_opts)
                    self._builder = w  # type: ignore[assignment]
                    self._blob_refs = set()
                uks = ukeys[i:j]
                trs = trailers[i:j]
                last_uk = uks[-1]
                w.add_blocks([raw], [last_uk + trs[-1].to_bytes(8, "little")], uks, trs, nv, False)
                if nb:
                    self._blob_refs.update(bnums[bi:bi + nb])
                    bi += nb
                i = j
        self._last_key = last_uk

    def reserve_table_number(self) -> int:
        """Allocate the number of the next table now (a flush takes its table's number before its blob
        file's, as the per-entry path does)."""
        if self._next_table is None:
            self._next_table = self.new_file_number()
        return self._next_table

    def _table_number(self) -> int:
        n = self._next_table
        if n is None:
            return self.new_file_number()
        self._next_table = None
        return n

    def reserve_blob_number(self) -> int:
        """Allocate the number of the blob file this sink will write (created on first use): the block
        path needs it before the first relocated reference is rewritten."""
        if self._blob_number is None:
            self._blob_number = self.new_file_number()
        return self._blob_number

    def _relocate(self, relocs: list[int], spill: bytes) -> None:
        """Copy values into the blob file, in order (4 ints each: file, offset, length, new offset for a
        relocated reference; offset in ``spill``, 0, length, new offset for a spilled PUT value); each
        lands where the kernel's reference says (records are contiguous, and ``read_blob`` checks each
        relocated value's length against its reference)."""
        w = self._blob_writer()
        read = self.read_blob
        view = memoryview(spill)
        for k in range(0, len(relocs), 4):
            a, offset, length, new_offset = relocs[k:k + 4]
            if w.size != new_offset:
                raise RuntimeError(f"blob records out of step: record at {w.size}, expected {new_offset}")
            w.add(view[a:a + length] if offset == 0 else read(encode_blob_ref(a, offset, length)))

    def _append_records(self, relocs: list[int], records: bytes | memoryview) -> None:
        """Append a chunk's framed spill (blob records, in order) to the blob file in one write, after
        checking it against the kernel's rows (each a spill: record offset in ``records``, 0, value
        length, offset in the blob file; contiguous from the file's current end)."""
        w = self._blob_writer()
        pos = 0
        at = w.size
        nbytes = 0
        for k in range(0, len(relocs), 4):
            a, old, length, new_offset = relocs[k:k + 4]
            if a != pos or old != 0 or new_offset != at:
                raise RuntimeError(f"blob records out of step: record at {at}, expected {new_offset}")
            pos += RECORD_HEADER_SIZE + length
            at += RECORD_HEADER_SIZE + length
            nbytes += length
        if pos != len(records):
            raise RuntimeError(f"framed spill of {len(records)} bytes, records of {pos}")
        w.add_records(records, len(relocs) // 4, nbytes)

    def _finish_table(self) -> None:
        assert self._builder is not None and self._file is not None
        props = self._builder.finish(sorted(self._blob_refs))
        self._file.sync()
        size = self._file.size()
        self._file.close()
        self.out.bytes_written += size
        self.out.files.append(FileMeta(
            self._number, size, props.smallest_key, props.largest_key, props.smallest_seq,
            props.largest_seq, props.num_entries, self.tombstones_applied_seq,
            tuple(sorted(self._blob_refs))))
        self._builder = None
        self._file = None

    def finish(self) -> OutputFiles:
        if self._builder is not None:
            self._finish_table()
        if self._blob is not None:
            assert self._blob_file is not None
            count, nbytes, size = self._blob.finish()
            self._blob_file.sync()
            self._blob_file.close()
            self.out.bytes_written += size
            self.out.blobs.append(BlobMeta(self._blob_number, count, nbytes, size))
            self._blob = None
        if self.out.files or self.out.blobs:
            self.fs.sync_dir(self.dbdir)
        return self.out

    def abandon(self) -> list[str]:
        """Close what is open after a failure; return the paths written (the caller removes them)."""
        paths = [os.path.join(self.dbdir, f"{f.number:06d}.sst") for f in self.out.files]
        if self._file is not None:
            self._file.close()
            paths.append(os.path.join(self.dbdir, f"{self._number:06d}.sst"))
        if self._blob_file is not None:
            self._blob_file.close()
            paths.append(os.path.join(self.dbdir, f"{self._blob_number:06d}.blob"))
        paths += [os.path.join(self.dbdir, f"{b.number:06d}.blob") for b in self.out.blobs]
        return paths
