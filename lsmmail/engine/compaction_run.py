"""Running one compaction: the two execution paths that turn a picked :class:`Compaction` into output
files.

* :meth:`CompactionRunner._compact_blocks` merges whole raw data blocks in C (``compact_native``,
  ``native/compact.c``) with the GIL released: range tombstones, blob references (garbage accounting,
  relocation) and all. It returns None (outputs removed) when a PUT value reaches ``min_blob_size``, and
  the caller must then redo the compaction per entry.
* :meth:`CompactionRunner._compact_entries` is the per-entry path: ``drop_hidden`` over
  ``merge_entries`` into ``OutputSink.add``, which also moves large PUT values to a blob file.

Both read every input block once, past the block cache, and on any failure remove the output files they
wrote before re-raising. Neither installs anything: choosing the path and logging the resulting
``VersionEdit`` is :meth:`lsmmail.engine.maintenance.Maintenance._run_compaction`'s job.

This is a mixin of :class:`lsmmail.engine.maintenance.Maintenance` (and so of the DB); it uses the DB's
state directly and takes no lock (the caller holds ``_compaction_lock``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .compact_native import CompactRun, compact_blocks
from .compaction import Compaction, OutputFiles, OutputSink, applied_tombstone_seq, drop_hidden
from .iterators import concat, merge_entries
from .keys import KIND_BLOB

if TYPE_CHECKING:
    from .fs import FileSystem
    from .options import Options
    from .sstable import TableReader
    from .version import FileMeta, RangeTombstone


class _BlobSized(Exception):
    """A compaction over blocks met a PUT value of at least ``min_blob_size``: redo it per entry."""


class CompactionRunner:
    # State and helpers owned by DB / Maintenance (declared for type checkers).
    if TYPE_CHECKING:
        path: str
        options: Options
        _fs: FileSystem

        def _alloc_file_number(self) -> int: ...
        def _read_blob(self, ref: bytes) -> bytes: ...
        def _table(self, f: FileMeta) -> TableReader: ...
        def _try_remove(self, path: str) -> None: ...

    def _compact_entries(self, c: Compaction, snapshots: list[int],
                         tombs: list[RangeTombstone]) -> OutputFiles:
        """Compaction per entry: ``drop_hidden`` over ``merge_entries`` into ``OutputSink.add`` (range
        tombstones, blob references, blob relocation)."""
        # Compaction reads every input block once: keep them out of the block cache (readers' blocks stay).
        sources = []
        for f in c.inputs[0] if c.level == 0 else []:
            sources.append(self._table(f).entries(fill_cache=False))
        if c.level > 0 and c.inputs[0]:
            sources.append(concat(self._table(f).entries(fill_cache=False) for f in c.inputs[0]))
        if c.inputs[1]:
            sources.append(concat(self._table(f).entries(fill_cache=False) for f in c.inputs[1]))
        sink = OutputSink(self._fs, self.path, self.options, self._alloc_file_number, self._read_blob,
                          max_file_size=self.options.target_file_size, relocate=c.relocate_blobs,
                          tombstones_applied_seq=applied_tombstone_seq(tombs, snapshots))
        out = sink.out

        def on_drop(e: tuple[bytes, int, int, bytes]) -> None:
            if e[2] == KIND_BLOB:
                out.add_garbage(e[3])

        try:
            for e in drop_hidden(merge_entries(sources), snapshots, c.bottommost, tombs, on_drop):
                sink.add(e)
            sink.finish()
        except BaseException:
            for path in sink.abandon():
                self._try_remove(path)
            raise
        return out

    def _raw_blocks(self, files: list[FileMeta]) -> Iterator[bytes]:
        """The raw data block payloads of ``files`` in order, read past the block cache (compaction reads
        each block once) and checked as the table reader checks them."""
        for f in files:
            t = self._table(f)
            offsets, sizes, verify = t._offsets, t._sizes, t._verify
            for i in range(len(offsets)):
                yield t._read_block(offsets[i], sizes[i], verify)

    def _compact_blocks(self, c: Compaction, snapshots: list[int],
                        tombs: list[RangeTombstone]) -> OutputFiles | None:
        """Compaction over whole blocks (compact_native.compact_blocks, native/compact.c): every rule of
        the per-entry path (range tombstones, blob garbage, relocation) with no Python per entry. None
        (outputs removed) if a PUT value reaches ``min_blob_size``: that compaction must go per entry,
        moving the value to a blob."""
        runs = [self._raw_blocks([f]) for f in (c.inputs[0] if c.level == 0 else [])]
        if c.level > 0 and c.inputs[0]:
            runs.append(self._raw_blocks(c.inputs[0]))
        if c.inputs[1]:
            runs.append(self._raw_blocks(c.inputs[1]))
        sink = OutputSink(self._fs, self.path, self.options, self._alloc_file_number, self._read_blob,
                          max_file_size=self.options.target_file_size, relocate=c.relocate_blobs,
                          tombstones_applied_seq=applied_tombstone_seq(tombs, snapshots))
        # Only tombstones that reach the inputs' key range can cover an entry (the kernel tests each one
        # per entry, as drop_hidden does).
        files = c.all_inputs()
        lo = min(f.smallest_user for f in files)
        hi = max(f.largest_user for f in files)
        near = [t for t in tombs if t[1] <= hi and t[2] > lo]
        reloc_number = sink.reserve_blob_number() if c.relocate_blobs else 0
        min_blob = self.options.min_blob_size
        blob_sized = False

        def checked(chunks: Iterator[CompactRun]) -> Iterator[CompactRun]:
            nonlocal blob_sized
            for chunk in chunks:
                if min_blob is not None and chunk[5] >= min_blob:
                    blob_sized = True
                    return
                yield chunk

        try:
            sink.add_compacted(checked(compact_blocks(
                runs, snapshots, c.bottommost, self.options.block_size, self.options.block_restart_interval,
                near, c.relocate_blobs, reloc_number, sink.out.garbage)))
            if blob_sized:
                raise _BlobSized
            sink.finish()
        except BaseException as e:
            for path in sink.abandon():
                self._try_remove(path)
            if isinstance(e, _BlobSized):
                return None
            raise
        return sink.out
