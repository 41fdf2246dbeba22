"""The C block cache (native/blockcache.c via ``engine.cache.NativeBlockCache``) against its pure twin
(``engine.cache.BlockCache``): with one shard the same LRU order, charges, statistics and results for any
sequence of operations; with several shards the capacity invariants; and the reference counts that keep a
block valid under the reader holding it through eviction, erasure, clearing and the cache's own free."""

from __future__ import annotations

import gc
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail import native_lib
from lsmmail.engine.cache import BlockCache

pytestmark = pytest.mark.skipif(not native_lib.BUILT, reason="the C extension is not built")

if native_lib.BUILT:
    from lsmmail.engine.cache import NativeBlockCache

    lib, ffi = native_lib._lib, native_lib._ffi

KEYS = st.tuples(st.integers(0, 3), st.sampled_from([0, 1, 4096, 1 << 40]))
OPS = st.one_of(
    st.tuples(st.just("get"), KEYS),
    st.tuples(st.just("put"), KEYS, st.binary(max_size=40), st.integers(0, 120)),
    st.tuples(st.just("erase"), KEYS),
    st.tuples(st.just("erase_table"), st.integers(0, 3)),
    st.tuples(st.just("clear")),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 300), st.lists(OPS, max_size=60))
def test_one_shard_matches_twin(capacity: int, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    c, py = NativeBlockCache(capacity, shards=1), BlockCache(capacity)
    for op in ops:
        if op[0] == "put":
            c.put(op[1], op[2], op[3])
            py.put(op[1], op[2], op[3])
        elif op[0] == "get":
            assert c.get(op[1]) == py.get(op[1])
        elif op[0] == "erase":
            c.erase(op[1])
            py.erase(op[1])
        elif op[0] == "erase_table":
            assert c.erase_table(op[1]) == py.erase_table(op[1])
        else:
            c.clear()
            py.clear()
        assert c.stats == py.stats
        assert c.usage == py.usage <= capacity and len(c) == len(py)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 16), st.integers(0, 5000), st.lists(OPS, max_size=80))
def test_sharded_invariants(shards: int, capacity: int, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """Each shard is an LRU of capacity / shards: the total never exceeds the capacity, what a get
    returns is the last value put under the key, and an entry small enough is there right after its put."""
    c = NativeBlockCache(capacity, shards=shards)
    last: dict[tuple[int, int], bytes] = {}
    for op in ops:
        if op[0] == "put":
            c.put(op[1], op[2], op[3])
            last[op[1]] = op[2]
            if op[3] <= capacity // shards:
                assert c.get(op[1]) == op[2]
        elif op[0] == "get":
            got = c.get(op[1])
            assert got is None or got == last.get(op[1])
        elif op[0] == "erase":
            c.erase(op[1])
            assert c.get(op[1]) is None
        elif op[0] == "erase_table":
            c.erase_table(op[1])
            assert all(c.get(k) is None for k in last if k[0] == op[1])
        else:
            c.clear()
            assert len(c) == 0
        s = c.stats
        assert 0 <= s.usage <= capacity and s.capacity == capacity


def test_put_of_a_decoded_block_stores_its_payload_and_bad_arguments() -> None:
    class Decoded:
        payload = b"raw payload"

    c = NativeBlockCache(1 << 20)
    c.put((1, 0), Decoded(), 500)
    assert c.get((1, 0)) == b"raw payload"
    with pytest.raises(ValueError):
        c.put((1, 0), b"x", -1)
    with pytest.raises(ValueError):
        NativeBlockCache(-1)


def _held(c: NativeBlockCache, key: tuple[int, int]):  # type: ignore[no-untyped-def]
    e = lib.lsm_bc_lookup(c.ptr, *key)
    assert e != ffi.NULL
    return e


def test_a_held_entry_outlives_eviction_erase_clear_and_the_cache() -> None:
    c = NativeBlockCache(1000, shards=1)
    c.put((1, 0), b"a" * 100, 400)
    c.put((1, 1), b"b" * 100, 400)
    held = [_held(c, (1, 0)), _held(c, (1, 1))]
    c.put((2, 0), b"c" * 100, 400)  # evicts (1, 0)
    assert c.get((1, 0)) is None and c.usage == 800
    c.erase((1, 1))
    c.clear()
    assert c.usage == 0 and len(c) == 0
    # A scan's reference to the cache (lsm_bc_ref) keeps it alive after its owner frees it.
    lib.lsm_bc_ref(c.ptr)
    raw = ffi.cast("lsm_block_cache *", c.ptr)  # not owning: no destructor
    del c  # the owner's reference goes (NativeBlockCache's ffi.gc destructor calls lsm_bc_free)
    gc.collect()
    for e, want in zip(held, (b"a" * 100, b"b" * 100), strict=True):
        assert ffi.buffer(lib.lsm_bc_data(e), lib.lsm_bc_len(e))[:] == want
        lib.lsm_bc_release(raw, e)
    lib.lsm_bc_free(raw)  # the last reference


def _hammer(c: NativeBlockCache, values: dict[tuple[int, int], list[bytes]], ops: int,
            erases: bool) -> list[str]:
    """Four threads of ``ops`` random operations each on ``c`` (cffi releases the GIL): half gets, the rest
    puts of one of a key's ``values``, and with ``erases`` some erases and table erases. Returns the gets
    that found a value never put under their key."""
    errors: list[str] = []

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        keys = list(values)
        for _ in range(ops):
            k = rnd.choice(keys)
            r = rnd.random()
            if r < 0.5:
                got = c.get(k)
                if got is not None and got not in values[k]:
                    errors.append(f"{k}: {got[:16]!r}")
            elif r < 0.9 or not erases:
                v = rnd.choice(values[k])
                c.put(k, v, len(v) + 128)
            elif r < 0.97:
                c.erase(k)
            else:
                c.erase_table(k[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_threads_hammering_one_cache() -> None:
    """Gets, puts and erases from several threads: every get returns one of the values ever put under that
    key, and the charges add up afterwards."""
    c = NativeBlockCache(64 * 1024, shards=4)
    values = {(t, o): [bytes([t, o % 251]) * (50 + o % 7), bytes([o % 251, t]) * 70]
              for t in range(4) for o in range(64)}
    assert not _hammer(c, values, 3000, erases=True)
    s = c.stats
    held = [k for k in values if c.get(k) is not None]
    assert s.usage <= 64 * 1024 and s.entries == len(held)


# Block-sized values: the sizes native/blockcache.c recycles (2-64 KiB), around its 1 KiB size classes, and
# two it does not. Built from a byte and a size so hypothesis need not draw kilobytes.
BLOCK_SIZES = [100, 2048, 2049, 3000, 8192, 8197, 9215, 9216, 9300, 65536, 70000]
BIG_OPS = st.one_of(
    st.tuples(st.just("get"), KEYS),
    st.tuples(st.just("put"), KEYS, st.tuples(st.integers(0, 255), st.sampled_from(BLOCK_SIZES)),
              st.sampled_from([2000, 9000, 20000])),
    st.tuples(st.just("erase"), KEYS),
    st.tuples(st.just("clear")),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([0, 10_000, 30_000, 200_000]), st.lists(BIG_OPS, max_size=60))
def test_recycled_block_sized_entries_match_twin(capacity: int, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """Freed block-sized entries are reused for later ones (an allocator pool): every get still returns the
    bytes last put under its key, whatever entry of whatever size held them before."""
    c, py = NativeBlockCache(capacity, shards=1), BlockCache(capacity)
    for op in ops:
        if op[0] == "put":
            value = bytes([op[2][0]]) * op[2][1]
            c.put(op[1], value, op[3])
            py.put(op[1], value, op[3])
        elif op[0] == "get":
            assert c.get(op[1]) == py.get(op[1])
        elif op[0] == "erase":
            c.erase(op[1])
            py.erase(op[1])
        else:
            c.clear()
            py.clear()
        assert c.stats == py.stats


def test_a_held_block_sized_entry_is_not_recycled() -> None:
    """An entry evicted while a reader holds it keeps its bytes while dozens of entries of its size are
    freed and allocated again around it; once released, its memory may be reused."""
    c = NativeBlockCache(40_000, shards=1)
    c.put((1, 0), b"h" * 8197, 9000)
    held = _held(c, (1, 0))
    for i in range(200):
        c.put((2, i), bytes([i % 251]) * 8197, 9000)  # evicts (1, 0), then each other in turn
        assert c.get((2, i)) == bytes([i % 251]) * 8197
    assert c.get((1, 0)) is None
    assert ffi.buffer(lib.lsm_bc_data(held), lib.lsm_bc_len(held))[:] == b"h" * 8197
    lib.lsm_bc_release(c.ptr, held)
    for i in range(200, 260):
        c.put((2, i), bytes([i % 251]) * 8197, 9000)
    assert [c.get((2, i)) for i in range(256, 260)] == [bytes([i % 251]) * 8197 for i in range(256, 260)]


def test_threads_hammering_block_sized_entries() -> None:
    """As test_threads_hammering_one_cache, with 8 KiB blocks that the pool recycles across threads."""
    c = NativeBlockCache(200_000, shards=2)
    values = {(t, o): [bytes([t, o]) * (4096 + o), bytes([o, t]) * 4100] for t in range(4) for o in range(32)}
    assert not _hammer(c, values, 2000, erases=False)
    assert c.stats.usage <= 200_000


@pytest.mark.parametrize("seed", range(6))
def test_thousands_of_keys_through_the_slot_map_match_twin(seed: int) -> None:
    """The slot map under load: probe runs that collide and wrap around the end of the slot array (a
    small cache keeps <= 30 entries in its first 64 slots, nearly half full), maps that grow several
    times (thousands of keys), erasures and evictions in the middle of runs (the entries after a hole
    must stay reachable from their home slots) and whole tables dropped at once. Every lookup, count
    and charge matches the twin, checked over all keys as it goes."""
    rng = random.Random(seed)
    small, medium, large = (3_000, 12, 60_000, 20), (50_000, 150, 20_000, 2_000), (10**9, 600, 20_000, 5_000)
    capacity, offsets, steps, sweep = [small, small, small, small, medium, large][seed]
    every = [(t, o * 4096) for t in range(8) for o in range(offsets)]
    c, py = NativeBlockCache(capacity, shards=1), BlockCache(capacity)
    for step in range(steps):
        key = (rng.randrange(8), rng.randrange(offsets) * 4096)
        r = rng.random()
        if r < 0.45:
            value = key[1].to_bytes(8, "little") + bytes([key[0]])
            charge = rng.randrange(100, 120)
            c.put(key, value, charge)
            py.put(key, value, charge)
        elif r < 0.85:
            assert c.get(key) == py.get(key)
        elif r < 0.995:
            c.erase(key)
            py.erase(key)
        else:
            assert c.erase_table(key[0]) == py.erase_table(key[0])
        if step % sweep == 0:
            assert [c.get(k) for k in every] == [py.get(k) for k in every]
            assert c.stats == py.stats and len(c) == len(py)
    assert [c.get(k) for k in every] == [py.get(k) for k in every]
    assert c.stats == py.stats and len(c) == len(py)


M64 = (1 << 64) - 1


def _home(table: int, offset: int, nslots: int) -> int:
    """The home slot of (table, offset) in a shard map of nslots slots: native/blockcache.c's mix()."""
    h = ((table * 0x9E3779B97F4A7C15) & M64) ^ (((offset + 0x632BE59BD9B4E019) * 0xC2B2AE3D27D4EB4F) & M64)
    h ^= h >> 31
    h = (h * 0xBF58476D1CE4E5B9) & M64
    h ^= h >> 29
    return h & (nslots - 1)


# 24 keys whose home slots are the last four or the first two of the first 64-slot map, so that every
# probe run crosses the end of the array: erasing any of them must move the rest back across the wrap.
WRAP_HOMES = (60, 61, 62, 63, 0, 1)
WRAP_KEYS = [(t, o * 4096) for t in range(64) for o in range(99) if _home(t, o * 4096, 64) in WRAP_HOMES][:24]


def test_probe_runs_that_wrap_around_the_slot_array_match_twin() -> None:
    """Keys chosen so that all of them collide around the end of the slot array (24 entries fit its first
    64 slots): after puts and erasures in any order every key is found exactly when the twin has it.
    400 seeded runs of 100 operations (a wrong wrap rule fails ~15% of them)."""
    assert {_home(*k, 64) for k in WRAP_KEYS} == set(WRAP_HOMES)
    for seed in range(400):
        rng = random.Random(seed)
        c, py = NativeBlockCache(10**6, shards=1), BlockCache(10**6)
        for _ in range(100):
            op, key = rng.choice("pge"), rng.choice(WRAP_KEYS)
            if op == "p":
                c.put(key, repr(key).encode(), 10)
                py.put(key, repr(key).encode(), 10)
            elif op == "g":
                assert c.get(key) == py.get(key), (seed, key)
            else:
                c.erase(key)
                py.erase(key)
        assert [c.get(k) for k in WRAP_KEYS] == [py.get(k) for k in WRAP_KEYS], seed
        assert len(c) == len(py)
