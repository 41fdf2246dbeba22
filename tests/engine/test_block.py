"""Blocks: prefix compression, restart points, compression rule and corruption handling."""

from __future__ import annotations

import os
import random
import struct

import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.block import (
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    BlockBuilder,
    DataBlock,
    compress_block,
    decode_block,
    decode_data_block,
    decode_data_block_py,
    decompress_block,
)
from lsmmail.engine.coding import get_varint
from lsmmail.engine.errors import Corruption, InvalidArgument
from lsmmail.engine.keys import pack_internal

# Keys from a small alphabet so that prefixes are shared often and some keys are prefixes of others.
keys_st = st.lists(
    st.binary(min_size=0, max_size=40).map(lambda b: bytes(x % 3 + 97 for x in b)), max_size=120
)
values_st = st.binary(max_size=300)


def build(entries: list[tuple[bytes, bytes]], interval: int) -> bytes:
    b = BlockBuilder(interval)
    for k, v in entries:
        b.add(k, v)
    return b.finish()


@settings(max_examples=150, deadline=None)
@given(keys_st, st.data(), st.integers(1, 20))
def test_round_trip_and_size(keys: list[bytes], data: st.DataObject, interval: int) -> None:
    keys = sorted(set(keys))
    values = [data.draw(values_st) for _ in keys]
    b = BlockBuilder(interval)
    assert b.empty
    for k, v in zip(keys, values, strict=True):
        b.add(k, v)
    payload = b.finish()
    assert b.estimated_size() == len(payload)
    assert b.empty == (not keys) and b.count == len(keys)
    assert decode_block(payload) == (keys, values)


def test_layout_of_restarts_and_prefixes() -> None:
    keys = [b"apple", b"applesauce", b"apply", b"applz", b"band"]
    payload = build([(k, b"v") for k in keys], interval=2)
    (n,) = struct.unpack_from("<I", payload, len(payload) - 4)
    assert n == 3  # entries 0, 2, 4
    restarts = struct.unpack_from(f"<{n}I", payload, len(payload) - 4 - 4 * n)
    pos, shared_seen = 0, []
    offsets = []
    while pos < len(payload) - 4 - 4 * n:
        offsets.append(pos)
        shared, pos = get_varint(payload, pos)
        non_shared, pos = get_varint(payload, pos)
        vlen, pos = get_varint(payload, pos)
        pos += non_shared + vlen
        shared_seen.append(shared)
    assert shared_seen == [0, 5, 0, 4, 0]  # "apply" and "band" are restarts
    assert list(restarts) == [offsets[0], offsets[2], offsets[4]]


def test_empty_block_and_bad_interval() -> None:
    payload = BlockBuilder(16).finish()
    assert payload == b"\x00\x00\x00\x00"
    assert decode_block(payload) == ([], [])
    with pytest.raises(InvalidArgument):
        BlockBuilder(0)


def test_long_keys_and_values_use_multibyte_varints() -> None:
    entries = [(b"k" * 300 + b"a", b"x" * 70000), (b"k" * 300 + b"b", b""), (b"k" * 301, b"y" * 200)]
    assert decode_block(build(entries, 16)) == ([k for k, _ in entries], [v for _, v in entries])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_corruption(garbage: bytes) -> None:
    try:
        decode_block(garbage)
        decode_data_block(garbage)
    except Corruption:
        pass


def test_mutated_blocks_raise_only_corruption() -> None:
    rng = random.Random(7)
    entries = [(b"key%04d" % i + bytes(8), os.urandom(rng.randrange(0, 30))) for i in range(60)]
    payload = build(entries, 4)
    for _ in range(3000):
        buf = bytearray(payload)
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        if rng.random() < 0.2:
            del buf[rng.randrange(len(buf)) :]
        try:
            decode_block(bytes(buf))
        except Corruption:
            pass


@pytest.mark.parametrize(
    "payload",
    [
        b"\x01\x00",  # too short for the restart count
        b"\xff\xff\xff\x7f",  # restart count runs past the block
        b"\x00\x01\x00a" + b"\x00\x00\x00\x00",  # entries but no restart point
        b"\x00\x01\x00a" + struct.pack("<II", 1, 1),  # first restart not at 0
        b"\x00\x01\x00a\x01\x01\x00b" + struct.pack("<III", 0, 4, 2),  # restart entry shares bytes
        b"\x00\x01\x00a\x02\x01\x00b" + struct.pack("<II", 0, 1),  # shares more than the previous key
        b"\x00\x01\x00a\x00\x01\x00b" + struct.pack("<III", 0, 2, 2),  # restart inside an entry
        b"\x00\x01\x00a" + struct.pack("<III", 0, 9, 2),  # restart past the entries
        b"\x00\x05\x00a" + struct.pack("<II", 0, 1),  # key runs past the entries
        b"\x00\x01\x80" + struct.pack("<II", 0, 1),  # varint runs into the restart array
    ],
)
def test_malformed_blocks(payload: bytes) -> None:
    with pytest.raises(Corruption):
        decode_block(payload)


def test_data_block_parallel_lists_and_checks() -> None:
    entries = [
        (pack_internal(b"a", 9, 1), b"a9"),
        (pack_internal(b"a", 4, 0), b""),
        (pack_internal(b"b", 7, 2), b"ref"),
        (pack_internal(b"c", 1, 1), b"c1"),
    ]
    block = DataBlock(build(entries, 2))
    assert block.user_keys == [b"a", b"a", b"b", b"c"]
    assert list(block.seqs) == [9, 4, 7, 1]
    assert list(block.kinds) == [1, 0, 2, 1]
    assert block.values == [b"a9", b"", b"ref", b"c1"]
    assert len(block) == 4 and block.charge > 0
    with pytest.raises(Corruption, match="kind"):
        decode_data_block_py(build([(pack_internal(b"a", 1, 3), b"x")], 16))
    with pytest.raises(Corruption, match="shorter"):
        decode_data_block_py(build([(b"short", b"x")], 16))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"a", b"ab", b"b", b"ba", b"c"]), st.integers(0, 50))), st.data())
def test_seek_find_against_model(raw: list[tuple[bytes, int]], data: st.DataObject) -> None:
    items = sorted(set(raw), key=lambda e: (e[0], -e[1]))
    block = DataBlock(build([(pack_internal(k, s, 1), b"%d" % s) for k, s in items], 3))
    probe = data.draw(st.sampled_from([b"", b"a", b"aa", b"ab", b"b", b"bb", b"c", b"d"]))
    snap = data.draw(st.integers(0, 55))
    assert block.seek(probe) == sum(1 for k, _ in items if k < probe)
    assert block.seek_reverse(probe) == sum(1 for k, _ in items if k < probe) - 1
    visible = [i for i, (k, s) in enumerate(items) if k == probe and s <= snap]
    found = block.find(probe, snap)
    if visible:
        assert found == visible[0]
    elif all(k == probe for k, _ in items if k >= probe):
        assert found == -2  # no visible version here, but the next block may hold one
    else:
        assert found == -1


def test_compression_rule() -> None:
    compressible = b"hello mail " * 500
    stored, comp = compress_block(compressible, True)
    assert comp == COMPRESSION_LZ4
    assert stored == lz4.block.compress(compressible, store_size=True)
    assert stored[:4] == struct.pack("<I", len(compressible))
    assert decompress_block(stored, comp) == compressible
    random_bytes = random.Random(1).randbytes(4000)
    assert compress_block(random_bytes, True) == (random_bytes, COMPRESSION_NONE)
    assert compress_block(compressible, False) == (compressible, COMPRESSION_NONE)
    assert compress_block(b"", True) == (b"", COMPRESSION_NONE)


def test_compression_threshold_is_seven_eighths() -> None:
    # Mix random and repeated bytes in varying proportions and check the rule at each point.
    rng = random.Random(3)
    chosen = set()
    for repeated in range(0, 2000, 50):
        raw = rng.randbytes(2000 - repeated) + b"z" * repeated
        packed = lz4.block.compress(raw, store_size=True)
        stored, comp = compress_block(raw, True)
        expect = COMPRESSION_LZ4 if len(packed) * 8 <= len(raw) * 7 else COMPRESSION_NONE
        assert comp == expect
        chosen.add(comp)
        assert decompress_block(stored, comp) == raw
    assert chosen == {COMPRESSION_NONE, COMPRESSION_LZ4}


@pytest.mark.parametrize(
    "stored, comp",
    [
        (b"abc", 2),  # unknown compression
        (b"\x05\x00", COMPRESSION_LZ4),  # too short
        (struct.pack("<I", 0) + b"\x00", COMPRESSION_LZ4),  # zero length
        (struct.pack("<I", 0xFFFFFFFF) + b"\x00" * 8, COMPRESSION_LZ4),  # impossible expansion
        (struct.pack("<I", 100) + b"\xff" * 20, COMPRESSION_LZ4),  # not LZ4 data
        (
            lz4.block.compress(b"q" * 500, store_size=False)
            and struct.pack("<I", 400) + lz4.block.compress(b"q" * 500, store_size=False),
            COMPRESSION_LZ4,
        ),  # wrong declared length
    ],
)
def test_bad_stored_blocks(stored: bytes, comp: int) -> None:
    with pytest.raises(Corruption):
        decompress_block(stored, comp)
