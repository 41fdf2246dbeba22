"""Bloom filter: layout and probe formula of docs/format.md, no false negatives, measured FP rate."""

from __future__ import annotations

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.bloom import BloomBuilder, bloom_may_contain, num_probes
from lsmmail.engine.errors import InvalidArgument


def build(keys: list[bytes], bits: int = 10) -> bytes:
    b = BloomBuilder(bits)
    for k in keys:
        b.add_key(k)
    return b.finish()


def spec_filter(keys: list[bytes], bits_per_key: int) -> bytes:
    """An independent transcription of the spec's formula, to pin the format."""
    k = min(30, max(1, round(bits_per_key * 0.6931471805599453)))
    m = max(64, bits_per_key * len(keys))
    m += -m % 8
    bits = [0] * m
    for key in keys:
        h = xxhash.xxh3_64_intdigest(key)
        for i in range(k):
            bits[(h % 2**32 + i * ((h >> 32) | 1)) % m] = 1
    out = bytearray(m // 8)
    for b, set_ in enumerate(bits):
        if set_:
            out[b // 8] |= 1 << (b % 8)
    return bytes(out) + bytes([k])


@pytest.mark.parametrize("bits, n", [(10, 0), (10, 3), (10, 100), (10, 1001), (3, 50), (1, 7), (20, 40)])
def test_layout_matches_spec(bits: int, n: int) -> None:
    keys = [b"user:%d" % i for i in range(n)]
    assert build(keys, bits) == spec_filter(keys, bits)


def test_sizes_and_probes() -> None:
    assert num_probes(10) == 7 and num_probes(1) == 1 and num_probes(2) == 1 and num_probes(100) == 30
    assert len(build([], 10)) == 8 + 1  # at least 64 bits
    assert len(build([b"x"] * 3, 10)) == 8 + 1
    assert len(build([b"%d" % i for i in range(100)], 10)) == 125 + 1
    assert len(build([b"%d" % i for i in range(101)], 10)) == 127 + 1  # 1010 bits round up to 1016
    assert build([b"a"], 10)[-1] == 7
    with pytest.raises(InvalidArgument):
        BloomBuilder(-1)


def test_disabled_and_unknown_filters_match_everything() -> None:
    off = build([b"a", b"b"], 0)
    assert off == b"\x00"
    assert bloom_may_contain(off, b"zzz")
    assert bloom_may_contain(b"", b"zzz")
    assert bloom_may_contain(b"\x00" * 9 + bytes([31]), b"zzz")  # k > 30: a future kind
    assert not bloom_may_contain(b"\x00" * 9 + bytes([7]), b"zzz")  # an empty 64-bit filter


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=30), max_size=300), st.integers(1, 24))
def test_no_false_negatives(keys: list[bytes], bits: int) -> None:
    f = build(keys, bits)
    assert all(bloom_may_contain(f, k) for k in keys)


def test_false_positive_rate_default_bits() -> None:
    present = [b"msg:%08d" % i for i in range(20_000)]
    f = build(present, 10)
    assert all(bloom_may_contain(f, k) for k in present)
    absent = [b"absent:%08d" % i for i in range(100_000)]
    false_positives = sum(bloom_may_contain(f, k) for k in absent)
    # Theory for 10 bits/key and k = 7: 0.82%. Allow measurement noise up to 1.5%.
    assert false_positives / len(absent) <= 0.015
    assert false_positives > 0  # the filter is not trivially exact: 0 would mean a broken measurement
