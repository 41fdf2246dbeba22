"""Shared pieces of the DB-level tests: tiny options that make every path run, a dict model of the
database, and small utilities (directory size, whole-state reads).

The model is the oracle: a ``dict`` of user key -> value, changed by the same ``(kind, key, value)``
entries a :class:`~lsmmail.engine.batch.WriteBatch` holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hypothesis import strategies as st

from lsmmail.engine.batch import WriteBatch
from lsmmail.engine.db import DB
from lsmmail.engine.fs import FileSystem, MemFileSystem
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL
from lsmmail.engine.options import Options

Entry = tuple[int, bytes, bytes]

#: The DB directory inside a MemFileSystem.
MEM_DIR = "/db"

#: Keys of the random histories the point-read tests replay: prefixes of each other, a NUL and a 0xFF
#: byte, so a probe lands between, on and past stored keys.
HISTORY_KEYS = [b"a", b"ab", b"b", b"b\x00", b"c", b"c\xff", b"d"] + [b"k%02d" % i for i in range(10)]
#: Values: short ones stay inline; 40+ bytes go to blob files (tiny_options' min_blob_size).
history_values = st.one_of(st.binary(max_size=12), st.binary(min_size=40, max_size=90))
#: One batch entry: a put, a delete or a range delete over HISTORY_KEYS.
history_entries = st.one_of(
    st.tuples(st.just(KIND_PUT), st.sampled_from(HISTORY_KEYS), history_values),
    st.tuples(st.just(KIND_DELETE), st.sampled_from(HISTORY_KEYS), st.just(b"")),
    st.tuples(st.sampled_from(HISTORY_KEYS), st.sampled_from(HISTORY_KEYS))
    .filter(lambda p: p[0] < p[1])
    .map(lambda p: (KIND_RANGE_DEL, p[0], p[1])),
)


def tiny_options(fs: FileSystem | None = None, *, background: bool = False, **over: object) -> Options:
    """Options so small that a few dozen writes flush memtables, cut blocks and files, fill L1 and push
    values into blob files: a memtable of 1 KiB is ~8 entries (100 bytes of overhead each), 64-byte
    blocks hold a couple of entries, and values of 40+ bytes go to blob files."""
    kw: dict[str, object] = dict(
        fs=fs if fs is not None else MemFileSystem(),
        memtable_size=1024,
        block_size=64,
        target_file_size=300,
        max_bytes_for_level_base=600,
        level_size_multiplier=2,
        num_levels=4,
        l0_compaction_trigger=2,
        l0_slowdown_trigger=3,
        l0_stop_trigger=4,
        min_blob_size=40,
        block_cache_size=4096,
        background_work=background,
    )
    kw.update(over)
    return Options(**kw)  # type: ignore[arg-type]


def apply_entries(model: dict[bytes, bytes], entries: Iterable[Entry]) -> None:
    """Apply write-batch entries to the model, in order (a later entry for a key wins)."""
    for kind, key, value in entries:
        if kind == KIND_PUT:
            model[key] = value
        elif kind == KIND_DELETE:
            model.pop(key, None)
        elif kind == KIND_RANGE_DEL:
            for k in [k for k in model if key <= k < value]:
                del model[k]
        else:  # pragma: no cover - the tests only build these three kinds
            raise AssertionError(f"unknown kind {kind}")


def apply_step(db: DB, model: dict[bytes, bytes], op: str, arg: object) -> bool:
    """One step of a generated history: ``("write", entries)`` writes the batch to ``db`` and the model,
    ``("flush", _)`` flushes, ``("compact", _)`` compacts everything. False, having done nothing, for any
    other step (the test's own: snapshots, holding background work)."""
    if op == "write":
        db.write(to_batch(arg))  # type: ignore[arg-type]
        apply_entries(model, arg)  # type: ignore[arg-type]
    elif op == "flush":
        db.flush()
    elif op == "compact":
        db.compact_range()
    else:
        return False
    return True


def to_batch(entries: Iterable[Entry]) -> WriteBatch:
    """A WriteBatch of ``(kind, key, value)`` entries (value = end key for a range delete)."""
    b = WriteBatch()
    for kind, k, v in entries:
        if kind == KIND_PUT:
            b.put(k, v)
        elif kind == KIND_DELETE:
            b.delete(k)
        else:
            b.delete_range(k, v)
    return b


def prefix_states(base: dict[bytes, bytes], batches: list[list[Entry]]) -> list[dict[bytes, bytes]]:
    """``[state after the first k batches for k in 0..len(batches)]``, starting from ``base``."""
    states = [dict(base)]
    cur = dict(base)
    for b in batches:
        apply_entries(cur, b)
        states.append(dict(cur))
    return states


def db_state(db: DB) -> dict[bytes, bytes]:
    """The whole database as a dict (one forward scan)."""
    return dict(db.scan())


def model_scan(model: dict[bytes, bytes], start: bytes | None, end: bytes | None, prefix: bytes | None,
               reverse: bool) -> list[tuple[bytes, bytes]]:
    items = sorted((k, v) for k, v in model.items()
                   if (start is None or k >= start) and (end is None or k < end)
                   and (prefix is None or k.startswith(prefix)))
    return items[::-1] if reverse else items


def dir_bytes(path: str | os.PathLike[str]) -> int:
    """Sum of the sizes of the regular files in ``path`` (not recursive)."""
    total = 0
    with os.scandir(path) as it:
        for e in it:
            if e.is_file():
                total += e.stat().st_size
    return total


def mem_dir_bytes(fs: MemFileSystem, path: str = MEM_DIR) -> int:
    return sum(fs.file_size(os.path.join(path, n)) for n in fs.listdir(path))
