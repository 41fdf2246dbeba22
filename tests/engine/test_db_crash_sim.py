"""Simulated power loss: hundreds of crash/recover cycles through ``MemFileSystem.crash()``.

Each cycle opens the database, applies random write batches (some ``sync=True``) and maintenance, then
cuts the power without closing. The oracle is the list of acknowledged batches: the recovered state must
equal the model after the first *k* of them for some *k* at least the index of the last batch that was
made durable (a ``sync=True`` write, or a ``flush()``, which persists the memtable). So every synced
write survives and nothing later survives without everything before it (a prefix).

Variants:

* clean crash: unsynced bytes vanish whole (``MemFileSystem``'s model);
* torn crash: before the cut each file keeps a random part of its unsynced tail, as a disk that wrote back
  some dirty pages would (the WAL then ends in a torn record);
* crash mid-work: a ``FaultInjectingFileSystem`` fails the N-th operation (random N: inside a WAL write,
  a flush, a compaction, a manifest append, a CURRENT switch or recovery itself), and the power is cut
  right after. The write that failed was not acknowledged: it may be present (as the last batch) or not.
"""

from __future__ import annotations

import random

import pytest
from _helpers import MEM_DIR, Entry, db_state, prefix_states, tiny_options, to_batch

from lsmmail.engine.db import DB
from lsmmail.engine.errors import LsmError
from lsmmail.engine.fs import FaultInjectingFileSystem, MemFileSystem
from lsmmail.engine.keys import KIND_DELETE, KIND_PUT, KIND_RANGE_DEL

KEYS = [b"key%02d" % i for i in range(40)]


def random_batch(rng: random.Random) -> list[Entry]:
    out: list[Entry] = []
    for _ in range(rng.choice((1, 1, 1, 2, 5))):
        r = rng.random()
        k = rng.choice(KEYS)
        if r < 0.75:
            # ~1/3 of values reach min_blob_size (40) and go to blob files at flush.
            n = rng.choice((0, 5, 20, 60, 150))
            out.append((KIND_PUT, k, rng.randbytes(n)))
        elif r < 0.95:
            out.append((KIND_DELETE, k, b""))
        else:
            k2 = rng.choice(KEYS)
            if k != k2:
                out.append((KIND_RANGE_DEL, min(k, k2), max(k, k2)))
    return out or [(KIND_DELETE, KEYS[0], b"")]




def tear_unsynced(fs: MemFileSystem, rng: random.Random) -> None:
    """Let each file keep a random part of its unsynced bytes through the coming crash (reaches into the
    MemFileSystem's nodes: its public model only ever drops the whole unsynced tail)."""
    with fs._mu:
        for entries in fs._live.values():
            for node in entries.values():
                if len(node.data) > node.synced and rng.random() < 0.7:
                    node.synced = rng.randint(node.synced, len(node.data))


class Cycle:
    """The acknowledged batches of one open, and how many of them are known durable."""

    def __init__(self) -> None:
        self.batches: list[list[Entry]] = []
        self.durable = 0
        self.maybe: list[Entry] | None = None  # the batch whose write raised


def workload(db: DB, rng: random.Random, cyc: Cycle, steps: int) -> None:
    """Random writes and maintenance; records each acknowledged batch in ``cyc``. Raises what the DB
    raises (the caller decides whether that was expected)."""
    for _ in range(steps):
        r = rng.random()
        if r < 0.04:
            db.flush()
            cyc.durable = len(cyc.batches)
            continue
        if r < 0.06:
            db.compact_range()
            cyc.durable = len(cyc.batches)
            continue
        entries = random_batch(rng)
        sync = rng.random() < 0.25
        cyc.maybe = entries
        db.write(to_batch(entries), sync=sync)
        cyc.maybe = None
        cyc.batches.append(entries)
        if sync:
            cyc.durable = len(cyc.batches)


def check_recovered(got: dict[bytes, bytes], base: dict[bytes, bytes], cyc: Cycle, where: str) -> None:
    batches = cyc.batches + ([cyc.maybe] if cyc.maybe is not None else [])
    states = prefix_states(base, batches)
    ok = [k for k in range(cyc.durable, len(states)) if states[k] == got]
    if not ok:
        lost = [k for k in range(len(states)) if states[k] == got]
        raise AssertionError(
            f"{where}: recovered state is no prefix of the acknowledged writes at or after the last durable "
            f"one (durable={cyc.durable}, acked={len(cyc.batches)}, maybe={cyc.maybe is not None}, "
            f"matches a prefix of length {lost}); recovered {len(got)} keys, model has "
            f"{len(states[-1])}")


def run_crash_cycles(cycles: int, seed: int, *, torn: bool) -> None:
    rng = random.Random(seed)
    fs = MemFileSystem()
    opts = tiny_options(fs)
    state: dict[bytes, bytes] = {}
    db = DB.open(MEM_DIR, opts)
    for i in range(cycles):
        cyc = Cycle()
        workload(db, rng, cyc, rng.randint(1, 30))
        if torn:
            tear_unsynced(fs, rng)
        fs.crash()  # ``db`` is abandoned, as a process that lost power
        db = DB.open(MEM_DIR, opts)
        got = db_state(db)
        check_recovered(got, state, cyc, f"seed {seed} cycle {i}")
        state = got
    db.close()


def run_fault_crash_cycles(cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    base = MemFileSystem()
    fs = FaultInjectingFileSystem(base)
    opts = tiny_options(fs)
    state: dict[bytes, bytes] = {}
    faults = 0
    for i in range(cycles):
        cyc = Cycle()
        db = None
        # One cycle in five fails inside open (recovery flush, new manifest, CURRENT switch).
        fs.fail_at(rng.randint(1, 40) if rng.random() < 0.2 else rng.randint(1, 400))
        try:
            db = DB.open(MEM_DIR, opts)
            workload(db, rng, cyc, 40)
        except LsmError:
            faults += 1
        fs.heal()
        base.crash()
        db = DB.open(MEM_DIR, opts)
        got = db_state(db)
        db.verify()
        db.close()
        check_recovered(got, state, cyc, f"seed {seed} cycle {i}")
        state = got
    # The faults must have fired in most cycles, or this test tests little.
    assert faults > cycles // 2


@pytest.mark.parametrize("seed", range(4))
def test_power_loss_clean(seed: int) -> None:
    run_crash_cycles(150, seed, torn=False)


@pytest.mark.parametrize("seed", range(2))
def test_power_loss_torn_tail(seed: int) -> None:
    run_crash_cycles(150, 100 + seed, torn=True)


@pytest.mark.parametrize("seed", range(2))
def test_power_loss_mid_flush_or_compaction(seed: int) -> None:
    run_fault_crash_cycles(150, 200 + seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_power_loss_long(seed: int) -> None:
    run_crash_cycles(600, 1000 + seed, torn=seed % 2 == 1)
    run_fault_crash_cycles(300, 2000 + seed)
