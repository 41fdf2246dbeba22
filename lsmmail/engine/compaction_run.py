"""Running one compaction: turning a picked :class:`Compaction` into output files.

* :meth:`CompactionRunner._compact_blocks` merges whole raw data blocks in C (``compact_native``,
  ``native/compact.c``) with the GIL released: snapshots, range tombstones, blob references (garbage
  accounting, relocation) and large PUT values moved to a blob file, all without Python per entry.

It reads every input block once, past the block cache, and on any failure removes the output files it
wrote before re-raising. It installs nothing: logging the resulting
``VersionEdit`` is :meth:`lsmmail.engine.maintenance.Maintenance._run_compaction`'s job.

This is a mixin of :class:`lsmmail.engine.maintenance.Maintenance` (and so of the DB); it uses the DB's
state directly and takes no lock (the caller holds ``_compaction_lock``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .compact_native import compact_blocks
from .compaction import Compaction, OutputFiles, OutputSink, applied_tombstone_seq

if TYPE_CHECKING:
    from .fs import FileSystem
    from .options import Options
    from .sstable import TableReader
    from .version import FileMeta, RangeTombstone


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

    def _raw_blocks(self, files: list[FileMeta]) -> Iterator[bytes]:
        """The raw data block payloads of ``files`` in order, read past the block cache (compaction reads
        each block once) and checked as the table reader checks them."""
        for f in files:
            t = self._table(f)
            offsets, sizes, verify = t._offsets, t._sizes, t._verify
            for i in range(len(offsets)):
                yield t._read_block(offsets[i], sizes[i], verify)

    def _compact_blocks(self, c: Compaction, snapshots: list[int],
                        tombs: list[RangeTombstone]) -> OutputFiles:
        """Run ``c`` over whole blocks (compact_native.compact_blocks, native/compact.c): every rule of
        the per-entry path (snapshots, range tombstones, blob garbage, relocation, large PUT values moved
        to a blob file) with no Python per entry."""
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
        min_blob = self.options.min_blob_size or 0
        # The blob file's number is in the references the kernel writes: take it up front whenever the
        # compaction may write one (unused if no value moves after all).
        reloc_number = sink.reserve_blob_number() if c.relocate_blobs or min_blob else 0
        try:
            sink.add_compacted(compact_blocks(
                runs, snapshots, c.bottommost, self.options.block_size, self.options.block_restart_interval,
                near, c.relocate_blobs, reloc_number, sink.out.garbage, min_blob, views=True))
            sink.finish()
        except BaseException:
            for path in sink.abandon():
                self._try_remove(path)
            raise
        return sink.out
