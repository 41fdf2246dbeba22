"""Differential tests: every C kernel in lsmmail._native against its pure-Python twin.

Each property feeds both sides the same input -- random valid data, and adversarial bytes (flips,
truncations, random buffers, hand-made restart arrays) -- and requires the same result or the same
``Corruption``. A crash in C would kill the test process, so these also fuzz the kernels' bounds checks.
"""

from __future__ import annotations

import struct

import pytest
import xxhash
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.block import BlockBuilder
from lsmmail.engine.block import decode_block_py as decode_block
from lsmmail.engine.block import decode_data_block_py as decode_data_block
from lsmmail.engine.bloom import BloomBuilder
from lsmmail.engine.bloom import bloom_may_contain_py as bloom_may_contain
from lsmmail.engine.errors import Corruption, InvalidArgument
from lsmmail.engine.wal import BLOCK_SIZE, LogWriter, read_log

if not native.BUILT:  # pragma: no cover
    raise RuntimeError("lsmmail._native is not built: run `pip install -e .` (needs a C compiler)")

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    """The result of ``fn(*args)``, or the class of the typed error it raised."""
    try:
        return ("ok", fn(*args))
    except (Corruption, InvalidArgument) as e:
        return ("err", type(e))


# ------------------------------------------------------------------------------------------ varints

u64s = st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 300), max_size=200)


@FAST
@given(u64s)
def test_varint_encode_matches_twin_and_roundtrips(values: list[int]) -> None:
    enc = native.encode_varints_native(values)
    assert enc == native.encode_varints_pure(values)
    assert native.decode_varints_native(enc) == (values, len(enc))


@FAST
@given(st.binary(max_size=64), st.integers(-1, 20))
@example(b"\xff" * 9 + b"\x02", -1)  # 10 bytes, beyond 64 bits
@example(b"\xff" * 9 + b"\x01", -1)  # exactly 2**64 - 1
@example(b"\x80" * 11, -1)
@example(b"\x81", -1)  # runs past the buffer
def test_varint_decode_matches_twin_on_any_bytes(buf: bytes, max_n: int) -> None:
    expect = outcome(native.decode_varints_pure, buf, max_n)
    assert outcome(native.decode_varints_native, buf, max_n) == expect


def test_varint_out_of_range_is_invalid_argument() -> None:
    for fn in (native.encode_varints_native, native.encode_varints_pure):
        with pytest.raises(InvalidArgument):
            fn([2**64])
        with pytest.raises(InvalidArgument):
            fn([-1])


# ------------------------------------------------------------------------------------------ bloom


@FAST
@given(st.lists(st.binary(min_size=1, max_size=20), unique=True, max_size=300), st.integers(0, 40))
def test_bloom_build_matches_builder(keys: list[bytes], bits_per_key: int) -> None:
    builder = BloomBuilder(bits_per_key)
    for k in keys:
        builder.add_key(k)
    hashes = [xxhash.xxh3_64_intdigest(k) for k in keys]
    filt = native.bloom_build_native(hashes, bits_per_key)
    assert filt == builder.finish_py()
    assert all(native.bloom_probe_native(filt, hashes))  # no false negatives


@FAST
@given(
    st.binary(max_size=80) | st.builds(lambda b, k: b + bytes([k]), st.binary(min_size=1, max_size=64),
                                       st.integers(0, 255)),
    st.lists(st.binary(max_size=12), max_size=40),
)
@example(b"", [b"a"])
@example(b"\x07", [b"a"])
@example(b"\x00" * 8 + b"\x1f", [b"a"])  # k = 31: matches everything
def test_bloom_probe_matches_twin_on_any_filter(filt: bytes, keys: list[bytes]) -> None:
    hashes = [xxhash.xxh3_64_intdigest(k) for k in keys]
    expect = [bloom_may_contain(filt, k) for k in keys]
    assert native.bloom_probe_native(filt, hashes) == expect
    assert [native.bloom_may_contain_native(filt, h) for h in hashes] == expect


# ------------------------------------------------------------------------------------------ blocks


def _ikey(user: bytes, seq: int, kind: int) -> bytes:
    return user + struct.pack("<Q", (seq << 8) | kind)


sorted_entries = st.lists(
    st.tuples(st.binary(min_size=0, max_size=24), st.binary(max_size=40)), max_size=120
).map(lambda kv: sorted(dict(kv).items()))

internal_entries = st.lists(
    st.tuples(st.binary(min_size=1, max_size=12), st.integers(0, 2**56 - 1), st.integers(0, 3),
              st.binary(max_size=30)),
    max_size=80,
).map(lambda es: sorted(es, key=lambda e: (e[0], -e[1])))


def _build(keys: list[bytes], values: list[bytes], interval: int) -> bytes:
    b = BlockBuilder(interval)
    for k, v in zip(keys, values, strict=True):
        b.add(k, v)
    return b.finish()


@FAST
@given(sorted_entries, st.integers(1, 20))
def test_block_encode_and_decode_match_twins(entries: list[tuple[bytes, bytes]], interval: int) -> None:
    keys = [k for k, _ in entries]
    values = [v for _, v in entries]
    blk = native.encode_block_native(keys, values, interval)
    assert blk == _build(keys, values, interval)
    assert native.decode_block_native(blk) == decode_block(blk) == (keys, values)


@st.composite
def mangled_blocks(draw: st.DrawFn) -> bytes:
    """A valid block with one adversarial change: a flipped byte, a truncation, an overwritten restart
    array or count, a spliced tail, or plain random bytes."""
    entries = draw(sorted_entries)
    blk = bytearray(_build([k for k, _ in entries], [v for _, v in entries], draw(st.integers(1, 8))))
    how = draw(st.sampled_from(["flip", "truncate", "restart", "count", "random", "splice"]))
    if how == "flip" and blk:
        i = draw(st.integers(0, len(blk) - 1))
        blk[i] ^= draw(st.integers(1, 255))
    elif how == "truncate":
        del blk[draw(st.integers(0, len(blk))) :]
    elif how == "restart" and len(blk) >= 8:
        nr = struct.unpack_from("<I", blk, len(blk) - 4)[0]
        if nr:
            j = draw(st.integers(0, nr - 1))
            at = len(blk) - 4 - 4 * nr + 4 * j
            struct.pack_into("<I", blk, at, draw(st.integers(0, len(blk) + 4)))
    elif how == "count" and len(blk) >= 4:
        struct.pack_into("<I", blk, len(blk) - 4, draw(st.integers(0, 2**32 - 1) | st.integers(0, 40)))
    elif how == "random":
        return draw(st.binary(max_size=200))
    elif how == "splice":
        cut = draw(st.integers(0, len(blk)))
        blk[cut:cut] = draw(st.binary(min_size=1, max_size=12))
    return bytes(blk)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_blocks())
@example(b"")
@example(b"\x00\x00\x00")
@example(b"\x00\x00\x00\x00")  # empty block
@example(b"\x00\x00\x00\x00\x01\x00\x00\x00")  # a restart but no entries
@example(b"\x00\x01\x00a\x00\x00\x00\x00\x01\x00\x00\x00")
@example(b"\x01\x01\x00a\x00\x00\x00\x00\x01\x00\x00\x00")  # first entry shares with nothing
@example(b"\x00\x81\x80\x80\x80\x80\x80\x80\x80\x80\x02\x00\x00\x00\x00\x01\x00\x00\x00")
def test_block_decode_same_outcome_on_malformed(blk: bytes) -> None:
    assert outcome(native.decode_block_native, blk) == outcome(decode_block, blk)


@FAST
@given(internal_entries, st.integers(1, 16), st.sampled_from(["none", "flip", "truncate"]), st.data())
def test_data_block_decode_matches_twin(entries, interval: int, how: str, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    keys = [_ikey(u, s, k) for u, s, k, _ in entries]
    blk = bytearray(_build(keys, [v for *_, v in entries], interval))
    if how == "flip" and blk:
        blk[data.draw(st.integers(0, len(blk) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del blk[data.draw(st.integers(0, len(blk))) :]
    blk = bytes(blk)
    assert outcome(native.decode_data_block_native, blk) == outcome(decode_data_block, blk)


def _spans_outcome(fn, blk: bytes):  # type: ignore[no-untyped-def]
    """``fn``'s spans decode of ``blk`` with the values sliced out, or the typed error's class."""
    got = outcome(fn, blk)
    if got[0] == "ok":
        ukeys, seqs, kinds, offs, lens = got[1]
        return "ok", (ukeys, seqs, kinds, [blk[a : a + b] for a, b in zip(offs, lens, strict=True)])
    return got


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(internal_entries, st.integers(1, 16),
       st.sampled_from(["none", "flip", "truncate", "splice", "random"]), st.data())
@example([], 1, "none", None)
def test_data_block_spans_match_pure_decode(entries, interval: int, how: str, data) -> None:  # type: ignore[no-untyped-def]
    # The lazy (offset/length) decode, native and pure, against the eager pure decode: same entries and
    # values, or the same Corruption, on valid, damaged and random blocks.
    from lsmmail.engine.block import DataBlock, decode_data_block_spans_py

    keys = [_ikey(u, s, k) for u, s, k, _ in entries]
    blk = bytearray(_build(keys, [v for *_, v in entries], interval))
    if how == "flip" and blk:
        blk[data.draw(st.integers(0, len(blk) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del blk[data.draw(st.integers(0, len(blk))) :]
    elif how == "splice":
        cut = data.draw(st.integers(0, len(blk)))
        blk[cut:cut] = data.draw(st.binary(min_size=1, max_size=12))
    elif how == "random":
        blk = bytearray(data.draw(st.binary(max_size=200)))
    blk = bytes(blk)
    want = outcome(decode_data_block, blk)
    assert _spans_outcome(native.decode_data_block_spans_native, blk) == want
    assert _spans_outcome(decode_data_block_spans_py, blk) == want
    if want[0] == "err":
        with pytest.raises(Corruption):
            DataBlock(blk)
        return
    ukeys, seqs, kinds, values = want[1]
    # A DataBlock yields the same values whichever way they are read, and as often as they are read.
    db = DataBlock(blk)
    assert (db.user_keys, list(db.seqs), list(db.kinds)) == (ukeys, seqs, kinds)
    assert [db.value(i) for i in range(len(db))] == values
    assert db.values == values == db.values
    assert [db.value(i) for i in range(len(db))] == values


def test_data_block_rejects_short_keys_and_bad_kinds() -> None:
    for keys in ([b"\x01" * 8], [_ikey(b"a", 1, 3)], [_ikey(b"a", 1, 1), _ikey(b"b", 1, 200)]):
        blk = _build(keys, [b"v"] * len(keys), 16)
        with pytest.raises(Corruption):
            native.decode_data_block_native(blk)
        with pytest.raises(Corruption):
            decode_data_block(blk)


def test_block_decode_grows_its_buffers() -> None:
    # Many entries sharing long prefixes: the keys expand far beyond 4x the block, and > 1024 entries.
    keys = [b"k" * 300 + b"%06d" % i for i in range(3000)]
    blk = native.encode_block_native(keys, [b""] * len(keys), 16)
    assert native.decode_block_native(blk) == decode_block(blk) == (keys, [b""] * len(keys))


@FAST
@given(internal_entries, st.binary(min_size=1, max_size=12), st.integers(0, 2**56 - 1), st.integers(1, 16))
def test_block_seek_matches_twin(entries, user: bytes, seq: int, interval: int) -> None:  # type: ignore[no-untyped-def]
    keys = [_ikey(u, s, k) for u, s, k, _ in entries]
    values = [v for *_, v in entries]
    blk = native.encode_block_native(keys, values, interval)
    target = _ikey(user, seq, 1)
    got = native.block_seek_native(blk, target)
    assert got == native.block_seek_pure(blk, target)
    # Model: the first key not ordered before the target.
    order = [(k[:-8], -struct.unpack("<Q", k[-8:])[0]) for k in keys]
    t = (user, -((seq << 8) | 1))
    idx = next((i for i, o in enumerate(order) if o >= t), len(keys))
    assert got.index == idx and got.count == len(keys)
    if idx < len(keys):
        assert (got.key, got.value) == (keys[idx], values[idx])
    raw = native.block_seek_native(blk, user, False)
    assert raw == native.block_seek_pure(blk, user, False)


@settings(max_examples=300, deadline=None)
@given(mangled_blocks(), st.binary(min_size=8, max_size=16), st.booleans())
def test_block_seek_same_outcome_on_malformed(blk: bytes, target: bytes, internal: bool) -> None:
    nat = outcome(native.block_seek_native, blk, target, internal)
    assert nat == outcome(native.block_seek_pure, blk, target, internal)
    if not internal:  # bytewise seek validates exactly as decode does
        assert (nat[0] == "ok") == (outcome(decode_block, blk)[0] == "ok")


@FAST
@given(internal_entries, st.binary(min_size=1, max_size=12), st.integers(0, 2**56 - 1), st.integers(1, 16),
       st.sampled_from(["none", "flip", "truncate"]), st.data())
def test_block_get_matches_twin_and_find(entries, user: bytes, seq: int, interval: int, how: str,  # type: ignore[no-untyped-def]
                                         data: st.DataObject) -> None:
    # Distinct internal keys (the engine never writes one twice), kinds a table holds.
    unique = {(u, s): (u, s, k % 3, v) for u, s, k, v in entries}
    entries = sorted(unique.values(), key=lambda e: (e[0], -e[1]))
    if entries and data.draw(st.booleans()):
        user = data.draw(st.sampled_from([e[0] for e in entries]))  # often a key the block holds
    keys = [_ikey(u, s, k) for u, s, k, _ in entries]
    blk = bytearray(native.encode_block_native(keys, [v for *_, v in entries], interval))
    if how == "flip" and blk:
        blk[data.draw(st.integers(0, len(blk) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del blk[data.draw(st.integers(0, len(blk))) :]
    blk = bytes(blk)
    got = outcome(native.block_get_native, blk, user, seq)
    assert got == outcome(native.block_get_pure, blk, user, seq)
    if how == "none":
        # Model: DataBlock.find over the decoded block (the engine's pure-Python path).
        from lsmmail.engine.block import DataBlock

        db = DataBlock(blk)
        i = db.find(user, seq)
        assert got == ("ok", (db.seqs[i], db.kinds[i], db.values[i]) if i >= 0 else i)


def test_block_get_reports_a_bad_kind_or_a_short_key() -> None:
    for keys in ([_ikey(b"a", 1, 3)], [b"\x01" * 5]):  # kind 3 (RANGE_DEL); a key without a trailer
        blk = _build(keys, [b"v"], 16)
        for fn in (native.block_get_native, native.block_get_pure):
            with pytest.raises(Corruption):
                fn(blk, b"a", 5)


# ------------------------------------------------------------------------------------------ merge

runs_strategy = st.lists(
    st.lists(
        st.tuples(st.binary(max_size=6), st.integers(0, 2**64 - 1) | st.integers(0, 5)), max_size=60
    ).map(lambda r: sorted(r, key=lambda e: (e[0], -e[1]))),
    max_size=8,
)


@FAST
@given(runs_strategy)
def test_merge_runs_matches_twin_and_model(runs: list[list[tuple[bytes, int]]]) -> None:
    args = [([k for k, _ in r], [s for _, s in r]) for r in runs]
    got = native.merge_runs_native(args)
    assert got == native.merge_runs_pure(args)
    flat = [(k, s, ri) for ri, r in enumerate(runs) for k, s in r]
    order, flags = got
    assert sorted(order) == list(range(len(flat)))
    model = sorted(range(len(flat)), key=lambda i: (flat[i][0], -flat[i][1], flat[i][2]))
    assert [flat[i] for i in order] == [flat[i] for i in model]
    keys = [flat[i][0] for i in order]
    assert list(flags) == [int(j == 0 or keys[j] != keys[j - 1]) for j in range(len(keys))]


def test_merge_runs_rejects_mismatched_runs() -> None:
    for fn in (native.merge_runs_native, native.merge_runs_pure):
        with pytest.raises(InvalidArgument):
            fn([([b"a"], [])])


# ------------------------------------------------------------------------------------------ WAL


class _NoFile:
    def append(self, data: bytes) -> None:  # encode_record never appends
        raise AssertionError


@FAST
@given(
    st.lists(st.binary(max_size=50) | st.integers(0, 70000).map(lambda n: b"\xab" * n), max_size=6),
    st.integers(0, BLOCK_SIZE - 1) | st.sampled_from([BLOCK_SIZE - 7, BLOCK_SIZE - 6, BLOCK_SIZE - 1, 0]),
)
def test_frame_records_matches_log_writer(payloads: list[bytes], offset: int) -> None:
    writer = LogWriter(_NoFile(), offset)  # type: ignore[arg-type]
    expect = b"".join(writer.encode_record(p) for p in payloads)
    assert native.frame_records_native(payloads, offset) == expect
    assert native.frame_records_pure(payloads, offset) == expect


def test_framed_records_read_back() -> None:
    payloads = [b"x" * n for n in (0, 1, 32761, 32762, 100000, 7)]
    data = native.frame_records_native(payloads, 0)
    assert read_log(data) == (payloads, len(data))
