"""Block cache: LRU eviction by bytes, statistics, thread safety."""

from __future__ import annotations

import random
import threading

import pytest

from lsmmail.engine.cache import BlockCache


def test_evicts_least_recently_used_by_bytes() -> None:
    c = BlockCache(100)
    c.put("a", "A", 40)
    c.put("b", "B", 40)
    assert c.get("a") == "A"  # now b is the least recently used
    c.put("c", "C", 40)
    assert c.get("b") is None
    assert c.get("a") == "A" and c.get("c") == "C"
    assert c.usage == 80 and len(c) == 2
    c.put("d", "D", 90)  # evicts both others
    assert c.usage == 90 and c.get("a") is None and c.get("c") is None and c.get("d") == "D"


def test_replace_oversized_erase_clear() -> None:
    c = BlockCache(100)
    c.put("a", 1, 30)
    c.put("a", 2, 50)
    assert c.get("a") == 2 and c.usage == 50
    c.put("a", 3, 101)  # larger than the whole cache: not stored, old entry dropped
    assert c.get("a") is None and c.usage == 0
    c.put("x", 1, 10)
    c.put("y", 2, 10)
    c.erase("x")
    c.erase("missing")
    assert c.usage == 10 and c.get("x") is None
    c.clear()
    assert c.usage == 0 and len(c) == 0
    with pytest.raises(ValueError):
        c.put("z", 1, -1)
    with pytest.raises(ValueError):
        BlockCache(-1)


def test_stats_and_disabled_cache() -> None:
    c = BlockCache(10)
    c.get(1)
    c.put(1, "one", 4)
    c.get(1)
    c.get(1)
    s = c.stats
    assert (s.hits, s.misses, s.usage, s.capacity, s.entries) == (2, 1, 4, 10, 1)
    off = BlockCache(0)
    off.put(1, "one", 1)
    assert off.get(1) is None and off.usage == 0


def test_against_model() -> None:
    rng = random.Random(5)
    c = BlockCache(500)
    model: dict[int, tuple[int, int]] = {}  # key -> (value, charge), insertion order = recency
    for step in range(5000):
        key = rng.randrange(40)
        if rng.random() < 0.5:
            got = c.get(key)
            if key in model:
                assert got == model[key][0]
                model[key] = model.pop(key)
            else:
                assert got is None
        else:
            charge = rng.randrange(0, 120)
            model.pop(key, None)
            model[key] = (step, charge)
            c.put(key, step, charge)
            while sum(ch for _, ch in model.values()) > 500:
                del model[next(iter(model))]
        assert c.usage == sum(ch for _, ch in model.values())


def test_thread_safety() -> None:
    c = BlockCache(2000)
    errors: list[BaseException] = []
    gets = [0] * 8

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(5000):
                key = rng.randrange(100)
                if rng.random() < 0.5:
                    c.put(key, ("v", key), rng.randrange(1, 100))
                else:
                    gets[seed] += 1
                    got = c.get(key)
                    assert got is None or got == ("v", key)
                if rng.random() < 0.01:
                    c.erase(rng.randrange(100))
        except BaseException as e:  # surfaced in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = c.stats
    assert s.usage <= 2000
    assert s.hits + s.misses == sum(gets)  # no counter update was lost
    # Usage equals the sum of the charges of what is held: no update was lost.
    held = sum(charge for _, charge in c._map.values())
    assert held == s.usage and len(c) == s.entries
