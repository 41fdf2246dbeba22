"""Writer process for ``test_db_kill.py``: opens a DB on the real file system and writes a deterministic
stream of operations until it is killed.

Usage: ``python kill_writer.py DBDIR CYCLE``. Prints ``ready`` once the DB is open, then the index of each
operation right after the DB acknowledged it (stdout flushed each time), so the parent knows exactly which
writes were acknowledged when it sent SIGKILL. Operation *i* of cycle *c* is ``kill_op(c, i)``: the parent
recomputes the same stream to build its model, so any value in the DB can be checked byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: Values of 100+ bytes go to blob files; kill_op makes about half of them that large.
MIN_BLOB = 100
NUM_KEYS = 200


def kill_op(cycle: int, i: int) -> tuple[str, bytes, bytes, bool]:
    """``(kind, key, value_or_end, sync)`` for operation ``i`` of ``cycle``; kind is put/delete/range."""
    k = (i * 7 + cycle * 13) % NUM_KEYS
    key = b"k%03d" % k
    sync = i % 16 == 0
    if i % 97 == 96:
        return "range", key, b"k%03d" % min(k + 5, NUM_KEYS), sync
    if i % 11 == 10:
        return "delete", key, b"", sync
    # The value names its cycle, op and key, repeated to a length between 12 and ~300 bytes.
    unit = b"%d:%d:%s;" % (cycle, i, key)
    return "put", key, unit * (1 + (i * 31) % 24), sync


def options(dbdir: str):  # noqa: ANN201 - keeps the import of lsmmail inside the function
    from lsmmail.engine.options import Options

    # Tiny sizes so a run of ~0.1-0.5 s switches memtables, flushes, compacts and writes blob files.
    return Options(memtable_size=8 * 1024, block_size=256, target_file_size=4 * 1024,
                   max_bytes_for_level_base=16 * 1024, level_size_multiplier=4, num_levels=4,
                   l0_compaction_trigger=2, min_blob_size=MIN_BLOB, background_work=True)


def main() -> None:
    dbdir, cycle = sys.argv[1], int(sys.argv[2])
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from lsmmail.engine.db import DB

    db = DB.open(dbdir, options(dbdir))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for i in range(1_000_000):
        kind, key, val, sync = kill_op(cycle, i)
        if kind == "put":
            db.put(key, val, sync=sync)
        elif kind == "delete":
            db.delete(key, sync=sync)
        else:
            db.delete_range(key, val, sync=sync)
        out.write(f"{i}\n")
        out.flush()


if __name__ == "__main__":
    main()
