"""Options of :class:`lsmmail.DB`, documented the RocksDB way: meaning, default, whether it can change
at run time. "Fixed at open" options take effect when the database is opened; files already written keep
what they were written with (every file records what a reader needs), so changing them between opens is
always safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidArgument
from .fs import FileSystem, OsFileSystem

KiB = 1024
MiB = 1024 * KiB


@dataclass
class Options:
    #: File system every byte goes through (tests pass a MemFileSystem or FaultInjectingFileSystem).
    #: Default: the OS. Fixed at open.
    fs: FileSystem = field(default_factory=OsFileSystem)

    #: Create the database if the directory holds none. Default True.
    create_if_missing: bool = True

    #: Raise ``InvalidArgument`` if a database already exists. Default False.
    error_if_exists: bool = False

    #: Default durability of writes whose ``sync`` argument is None. False: a write returns once the OS
    #: has its bytes (survives a process crash, not power loss). True: it returns after fdatasync
    #: (survives power loss). Default False. Can change at run time (attribute).
    sync_writes: bool = False

    #: Bytes of user data a memtable takes before it is frozen and flushed to an SSTable (keys + values
    #: + 100 bytes per entry). Larger means fewer, larger L0 files and less write amplification, at the
    #: cost of memory and recovery time (open replays the WALs of every memtable not yet flushed, up to
    #: ``1 + max_immutable_memtables`` of them). Memory: the C arena of a full memtable of 1 KiB values
    #: holds ~0.96x this (30.7 MiB at the default; ~35 bytes of node per entry); its 1 MiB chunks are
    #: mapped directly and go back to the OS when the memtable is dropped, except those the next memtables
    #: will take: pooled chunks plus live ones stay within two memtables' worth (one filling, one being
    #: flushed; see native/memtable.c). Default 32 MiB. Can change at run time.
    memtable_size: int = 32 * MiB

    #: Full memtables allowed to wait for their flush beside the one taking writes; a writer that fills
    #: the current memtable while this many wait stalls until a flush ends. At most
    #: ``1 + max_immutable_memtables`` memtables are in memory at once: the engine's largest use of
    #: memory. Only a writer that outruns its flushes fills the third: while flushes keep up, one
    #: memtable fills while the last one is flushed, and the memtables' freed chunks are kept for reuse
    #: only up to those two (~62 MiB at the default, beside the 32 MiB block cache; 92 MiB at every
    #: flush before that rule). RocksDB's default ``max_write_buffer_number`` = 2 is 1 here. Default 2:
    #: with 1, peak RSS of the engine-bench chain was 159 vs 168 MiB (medians of 3 interleaved runs;
    #: RocksDB 200 in the same runs, fourth session), but writers stalled 4-10 times per 400k batched
    #: 1 KiB puts (0.4-0.9 s of waiting on the loaded 2-core machine), never with 2. Must be >= 1. Can
    #: change at run time.
    max_immutable_memtables: int = 2

    #: Target size of a data block before compression. Default 8 KiB (see docs/format.md); tables
    #: written with another size stay readable. A point read that misses the block cache reads,
    #: checksums and decompresses one whole block, so smaller blocks make such reads cheaper while scans
    #: and writes pay per block. Engine bench, 200k x 1 KiB, two interleaved runs each (fifth session):
    #: readrandom 182-197k/s at 16 KiB, 235-243k/s at 8 KiB, 272-277k/s at 4 KiB; seek+50 23.0-24.7k /
    #: 25.6-25.8k / 22.1-23.4k scans/s; overwrite 325-333k / 303-318k / 274-278k puts/s; disk +1% at
    #: 8 KiB, +2% at 4 KiB. Fixed at open.
    block_size: int = 8 * KiB

    #: Entries between restart points in data blocks. Default 16. Fixed at open.
    block_restart_interval: int = 16

    #: Bloom filter bits per key; 0 disables filters. 10 gives ~0.8% false positives. Default 10.
    bloom_bits_per_key: int = 10

    #: Compress data blocks with LZ4 when that saves at least 12.5%. Default True.
    compression: bool = True

    #: Values of at least this many bytes go to blob files at flush; None keeps every value inline.
    #: Default 4 KiB: mail bodies and attachments move out of the LSM tree, so compaction rewrites
    #: small references instead of megabytes. Fixed at open.
    min_blob_size: int | None = 4 * KiB

    #: A blob file whose garbage (bytes of values no longer referenced) reaches this fraction of its
    #: size has its live values moved to a new file by the next compaction that reads a reference to it,
    #: and compactions are scheduled for the tables that still reference it. Default 0.5.
    blob_gc_garbage_ratio: float = 0.5

    #: Number of L0 files that triggers an L0 → L1 compaction. Default 4.
    l0_compaction_trigger: int = 4

    #: Number of L0 files at which each write is delayed by 1 ms to let compaction catch up. Default 12.
    l0_slowdown_trigger: int = 12

    #: Number of L0 files at which writes wait until compaction brings the count down. Default 20.
    l0_stop_trigger: int = 20

    #: Target total size of L1; each deeper level is ``level_size_multiplier`` times larger.
    #: Default 64 MiB.
    max_bytes_for_level_base: int = 64 * MiB

    #: Fan-out between levels. Default 10.
    level_size_multiplier: int = 10

    #: Number of levels. Default 7.
    num_levels: int = 7

    #: Size at which a compaction starts a new output SSTable. Default 8 MiB.
    target_file_size: int = 8 * MiB

    #: Bytes of data blocks kept in the LRU block cache (raw payloads read by point reads, decoded blocks
    #: read by scans); 0 disables it. Default 32 MiB, RocksDB's default cache size too: with the C point
    #: read a cache miss costs ~4.5 µs against ~1.5 µs for a hit, so on the bench's ~200 MB of data
    #: 64 MiB (hit rate 0.32 vs 0.16) gave readrandom only ~2% more and ~50 MiB more peak RSS. The bytes
    #: counted are the payloads (plus a fixed overhead each); with the extension an entry's allocation is
    #: rounded up to a 1 KiB size class, so the memory held is up to ~12% more. Fixed at open.
    block_cache_size: int = 32 * MiB

    #: Run flushes and compactions on a background thread. False runs them inline in the writer
    #: (deterministic; for tests). Default True. Fixed at open.
    background_work: bool = True

    #: Verify every data block's checksum when it is read from the file (footer, filter, properties and
    #: index blocks are always verified). Default True: XXH3 of a stored 16 KiB block costs ~0.1-0.2 µs,
    #: against ~4 µs to read and decompress it. Fixed at open.
    verify_checksums: bool = True

    #: Microseconds a writer waiting in the group-commit queue (for its group's fdatasync, or as the
    #: head, for its group to fill) may spend giving the CPU away with ``sched_yield`` before it sleeps
    #: on a condition variable; 0 always sleeps at once. Yielding keeps the CPU awake, so the wake-up at
    #: the end of a group is seen at the next yield instead of costing a sleeping thread's wake (~10-15 µs
    #: on a virtual machine whose idle CPUs halt, per follower). It burns CPU only while it pays: writers
    #: stop yielding when most yields run out of time (a slow device) and try again every 8th wait
    #: (native/commit.c). With yields on, a group's followers also go back to Python in turns, each once
    #: the one before it is back inside a C call, so none sleeps on the GIL. Only the C queue yields
    #: (real file system, C extension present). Default 500 µs: 8 synced threads, 16,000 puts, here:
    #: 22-30k puts/s at 0, 31-35k at 300 (5% of yields ran out), 44-47k at 500, 40-44k at 1,000
    #: (docs/benchmarks.md, seventh session). Fixed at open.
    group_commit_yield_us: int = 500

    #: A manifest larger than this is rewritten as one snapshot edit into a new manifest. Default 64 MiB.
    max_manifest_size: int = 64 * MiB

    def validate(self) -> None:
        if self.memtable_size < 1:
            raise InvalidArgument("memtable_size must be positive")
        if self.max_immutable_memtables < 1:
            # 0 would stall the first writer that fills a memtable forever: no switch could ever happen.
            raise InvalidArgument("max_immutable_memtables must be at least 1")
        if self.block_size < 64:
            raise InvalidArgument("block_size must be at least 64 bytes")
        if self.block_restart_interval < 1:
            raise InvalidArgument("block_restart_interval must be at least 1")
        if self.group_commit_yield_us < 0:
            raise InvalidArgument("group_commit_yield_us must be >= 0")
        if self.bloom_bits_per_key < 0:
            raise InvalidArgument("bloom_bits_per_key must be >= 0")
        if self.min_blob_size is not None and self.min_blob_size < 1:
            raise InvalidArgument("min_blob_size must be positive or None")
        if not 0.0 < self.blob_gc_garbage_ratio <= 1.0:
            raise InvalidArgument("blob_gc_garbage_ratio must be in (0, 1]")
        if not (1 <= self.l0_compaction_trigger <= self.l0_slowdown_trigger <= self.l0_stop_trigger):
            raise InvalidArgument("need 1 <= l0_compaction_trigger <= l0_slowdown_trigger <= l0_stop_trigger")
        if self.level_size_multiplier < 2:
            raise InvalidArgument("level_size_multiplier must be at least 2")
        if not 2 <= self.num_levels <= 12:
            raise InvalidArgument("num_levels must be between 2 and 12")
        if self.target_file_size < 1 or self.max_bytes_for_level_base < 1:
            raise InvalidArgument("sizes must be positive")
