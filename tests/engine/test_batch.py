"""Tests of WriteBatch and the WAL payload encoding (docs/format.md, "WAL record payload")."""

from __future__ import annotations

import mmap
import struct
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.batch import WriteBatch, decode_batch, encode_batch
from lsmmail.engine.errors import Corruption, InvalidArgument
from lsmmail.engine.keys import KIND_BLOB, KIND_DELETE, KIND_PUT, KIND_RANGE_DEL, MAX_KEY_SIZE, MAX_SEQUENCE

_keys = st.binary(min_size=1, max_size=24)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _keys, st.binary(max_size=300)),
        st.tuples(st.just("delete"), _keys, st.just(b"")),
        st.tuples(st.just("range"), _keys, _keys).filter(lambda t: t[1] != t[2]),
    ),
    max_size=30,
)


def _build(ops: list[tuple[str, bytes, bytes]]) -> tuple[WriteBatch, list[tuple[int, bytes, bytes]]]:
    """Apply ``ops`` to a WriteBatch and to a plain model list of expected entries."""
    b = WriteBatch()
    model = []
    for op, k, v in ops:
        if op == "put":
            b.put(k, v)
            model.append((KIND_PUT, k, v))
        elif op == "delete":
            b.delete(k)
            model.append((KIND_DELETE, k, b""))
        else:
            s, e = min(k, v), max(k, v)
            b.delete_range(s, e)
            model.append((KIND_RANGE_DEL, s, e))
    return b, model


@settings(max_examples=200, deadline=None)
@given(ops=_ops, seq=st.integers(0, MAX_SEQUENCE - 64))
def test_round_trip(ops: list[tuple[str, bytes, bytes]], seq: int) -> None:
    b, model = _build(ops)
    assert b.entries == model
    assert len(b) == len(model)
    payload = encode_batch(seq, b.entries)
    assert b.encode(seq) == payload
    assert b.byte_size == len(payload)
    assert decode_batch(payload) == (seq, model)


def test_exact_encoding() -> None:
    b = WriteBatch()
    b.put(b"k", b"vv")
    b.delete(b"d")
    b.delete_range(b"a", b"b")
    expected = (
        struct.pack("<QI", 7, 3)
        + b"\x01" + b"\x01k" + b"\x02vv"
        + b"\x00" + b"\x01d"
        + b"\x03" + b"\x01a" + b"\x01b"
    )
    assert encode_batch(7, b.entries) == expected


def test_long_lengths_use_multi_byte_varints() -> None:
    b = WriteBatch()
    b.put(b"k" * 200, b"v" * 20000)
    payload = b.encode(1)
    assert payload[12:15] == b"\x01\xc8\x01"  # kind, varint 200
    assert b.byte_size == len(payload) == 12 + 1 + 2 + 200 + 3 + 20000
    assert decode_batch(payload) == (1, [(KIND_PUT, b"k" * 200, b"v" * 20000)])


def test_empty_batch() -> None:
    b = WriteBatch()
    assert len(b) == 0 and b.byte_size == 12
    assert decode_batch(b.encode(5)) == (5, [])


def test_clear() -> None:
    b = WriteBatch()
    b.put(b"a", b"1")
    b.delete_range(b"a", b"z")
    b.clear()
    assert len(b) == 0 and b.entries == [] and b.byte_size == 12
    b.delete(b"x")
    assert decode_batch(b.encode(1)) == (1, [(KIND_DELETE, b"x", b"")])


def test_buffers_are_copied_to_bytes() -> None:
    key = bytearray(b"key")
    value = bytearray(b"value")
    b = WriteBatch()
    b.put(key, memoryview(value))
    b.delete_range(memoryview(b"a"), bytearray(b"b"))
    key[0] = ord("X")
    value[0] = ord("X")
    assert b.entries == [(KIND_PUT, b"key", b"value"), (KIND_RANGE_DEL, b"a", b"b")]
    assert all(type(k) is bytes and type(v) is bytes for _, k, v in b.entries)


def test_largest_key_is_accepted() -> None:
    b = WriteBatch()
    b.put(b"k" * MAX_KEY_SIZE, b"")
    assert decode_batch(b.encode(0))[1] == [(KIND_PUT, b"k" * MAX_KEY_SIZE, b"")]


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.put("text", b"v"),
        lambda b: b.put(b"k", "text"),
        lambda b: b.put(None, b"v"),
        lambda b: b.put(b"k", None),
        lambda b: b.put(123, b"v"),
        lambda b: b.put(b"", b"v"),
        lambda b: b.put(b"k" * (MAX_KEY_SIZE + 1), b"v"),
        lambda b: b.put(memoryview(b""), b"v"),
        lambda b: b.delete(b""),
        lambda b: b.delete("k"),
        lambda b: b.delete_range(b"b", b"a"),
        lambda b: b.delete_range(b"a", b"a"),
        lambda b: b.delete_range(b"", b"a"),
        lambda b: b.delete_range(b"a", b""),
        lambda b: b.delete_range("a", "b"),
        lambda b: b.delete_range(b"a", b"z" * (MAX_KEY_SIZE + 1)),
    ],
)
def test_bad_arguments_raise_invalid_argument(call) -> None:  # type: ignore[no-untyped-def]
    b = WriteBatch()
    b.put(b"keep", b"1")
    with pytest.raises(InvalidArgument) as info:
        call(b)
    assert str(info.value)
    assert isinstance(info.value, ValueError)
    assert b.entries == [(KIND_PUT, b"keep", b"1")] and b.byte_size == len(b.encode(1))


def test_value_of_4_gib_is_refused_without_copying() -> None:
    # A read-only anonymous mapping: 4 GiB of address space, no memory used or committed (Linux does not
    # charge read-only private mappings against the overcommit limit).
    m = mmap.mmap(-1, 1 << 32, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
    view = memoryview(m)
    try:
        b = WriteBatch()
        with pytest.raises(InvalidArgument, match="at most"):
            b.put(b"k", view)
        assert len(b) == 0
    finally:
        view.release()
        m.close()


def test_encode_refuses_bad_kind_and_sequence() -> None:
    with pytest.raises(InvalidArgument):
        encode_batch(1, [(KIND_BLOB, b"k", b"ref")])
    with pytest.raises(InvalidArgument):
        encode_batch(MAX_SEQUENCE, [(KIND_PUT, b"a", b""), (KIND_PUT, b"b", b"")])
    with pytest.raises(InvalidArgument):
        encode_batch(-1, [])
    assert decode_batch(encode_batch(MAX_SEQUENCE, [(KIND_PUT, b"a", b"")]))[0] == MAX_SEQUENCE


# --------------------------------------------------------------------------------------------------
# Malformed payloads


def _valid_payload() -> bytes:
    b = WriteBatch()
    b.put(b"alpha", b"one" * 50)
    b.delete(b"beta")
    b.delete_range(b"c", b"d")
    b.put(b"e" * 130, b"")
    return b.encode(42)


def test_every_truncation_is_corruption() -> None:
    payload = _valid_payload()
    for cut in range(len(payload)):
        with pytest.raises(Corruption):
            decode_batch(payload[:cut])


def test_trailing_bytes_are_corruption() -> None:
    with pytest.raises(Corruption, match="after"):
        decode_batch(_valid_payload() + b"\x00")


def _hdr(seq: int, count: int) -> bytes:
    return struct.pack("<QI", seq, count)


@pytest.mark.parametrize(
    "payload",
    [
        _hdr(1, 1) + b"\x02\x01k\x01v",  # BLOB never appears in the WAL
        _hdr(1, 1) + b"\x04\x01k\x01v",
        _hdr(1, 1) + b"\xff\x01k\x01v",
        _hdr(1, 2) + b"\x01\x01k\x01v",  # count says 2, holds 1
        _hdr(1, 0) + b"\x01\x01k\x01v",  # count says 0, holds 1
        _hdr(1, 1) + b"\x01\x00\x01v",  # empty key
        _hdr(1, 1) + b"\x00\x00",  # empty key (DELETE)
        _hdr(1, 1) + b"\x01\x05key\x01v",  # key runs past the end
        _hdr(1, 1) + b"\x01\x01k\x09v",  # value runs past the end
        _hdr(1, 1) + b"\x01" + b"\xff" * 11,  # over-long varint
        _hdr(1, 1) + b"\x01\x01k\x80",  # varint cut short
        _hdr(1, 1) + b"\x03\x01b\x01a",  # range end before start
        _hdr(1, 1) + b"\x03\x01a\x01a",  # empty range
        _hdr(1, 1) + b"\x03\x01a\x00",  # empty range end
        _hdr(1, 1) + b"\x00\x80\x80\x04" + b"k" * 65536,  # key of 65,536 bytes
        _hdr(MAX_SEQUENCE, 2) + b"\x00\x01a\x00\x01b",  # sequence numbers beyond 56 bits
        _hdr(1, 0xFFFFFFFF) + b"\x00\x01a",  # absurd count
        b"",
        b"\x00" * 11,
    ],
)
def test_malformed_payloads_are_corruption(payload: bytes) -> None:
    with pytest.raises(Corruption):
        decode_batch(payload)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=80),
        st.tuples(st.integers(0, 300), st.integers(1, 255)).map(
            lambda t: bytes(
                b ^ (t[1] if i == t[0] % len(_valid_payload()) else 0) for i, b in enumerate(_valid_payload())
            )
        ),
    )
)
def test_fuzzed_payloads_decode_validly_or_raise_corruption(data: bytes) -> None:
    """Only Corruption escapes, and whatever decodes is well formed and re-encodes to a valid batch."""
    try:
        seq, entries = decode_batch(data)
    except Corruption:
        return
    for kind, key, value in entries:
        assert kind in (KIND_DELETE, KIND_PUT, KIND_RANGE_DEL)
        assert 1 <= len(key) <= MAX_KEY_SIZE
        if kind == KIND_DELETE:
            assert value == b""
        if kind == KIND_RANGE_DEL:
            assert key < value
    assert decode_batch(encode_batch(seq, entries)) == (seq, entries)


_op = st.one_of(
    st.tuples(st.just("put"), st.binary(min_size=1, max_size=200), st.binary(max_size=300)),
    st.tuples(st.just("put_view"), st.binary(min_size=1, max_size=20), st.binary(max_size=20)),
    st.tuples(st.just("delete"), st.binary(min_size=1, max_size=200), st.just(b"")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=30), st.integers(0, 1 << 40))
def test_incremental_encoding_matches_encode_batch(ops, seq) -> None:  # type: ignore[no-untyped-def]
    # WriteBatch encodes entries as they are added (fast path for bytes, slow path for views); the
    # result must be exactly what encode_batch builds from the entry list.
    b = WriteBatch()
    for name, k, v in ops:
        if name == "put":
            b.put(k, v)
        elif name == "put_view":
            b.put(bytearray(k), memoryview(v))
        else:
            b.delete(k)
    assert b.encode(seq) == encode_batch(seq, b.entries)
    assert b.byte_size == len(b.encode(seq))
    assert decode_batch(b.encode(seq)) == (seq, b.entries)


# Values on both sides of the size from which a put's value becomes a piece of its own (batch._PIECE_MIN),
# bytearray and memoryview values (the slow path), and packed puts, mixed with the other kinds.
_big_value = st.sampled_from([0, 1, 127, 128, 2047, 2048, 2049, 9000]).map(b"v".__mul__)
_mixed_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _keys, st.one_of(st.binary(max_size=300), _big_value)),
        st.tuples(st.just("put_view"), _keys, _big_value),
        st.tuples(st.just("packed"), st.lists(st.tuples(_keys, st.one_of(st.binary(max_size=40), _big_value)),
                                             max_size=5)),
        st.tuples(st.just("delete"), _keys),
        st.tuples(st.just("range"), _keys, _keys).filter(lambda t: t[1] != t[2]),
        st.tuples(st.just("clear")),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(ops=_mixed_ops, seq=st.integers(0, MAX_SEQUENCE - 200))
def test_pieces_and_packed_puts_encode_as_single_puts(ops: list[tuple], seq: int) -> None:
    """Whatever mix of puts (large values, views, packed) builds a batch, its entries, size and encoding
    are those of the plain model: the WAL format does not depend on how the batch was built."""
    b = WriteBatch()
    model: list[tuple[int, bytes, bytes]] = []
    for op in ops:
        if op[0] == "put":
            b.put(op[1], op[2])
            model.append((KIND_PUT, op[1], op[2]))
        elif op[0] == "put_view":
            b.put(op[1], memoryview(bytearray(op[2])))
            model.append((KIND_PUT, op[1], op[2]))
        elif op[0] == "packed":
            pairs = op[1]
            ks, vs = [k for k, _ in pairs], [v for _, v in pairs]
            b.put_packed(b"".join(ks), list(accumulate(map(len, ks))), b"".join(vs),
                         list(accumulate(map(len, vs))))
            model += [(KIND_PUT, k, v) for k, v in pairs]
        elif op[0] == "delete":
            b.delete(op[1])
            model.append((KIND_DELETE, op[1], b""))
        elif op[0] == "range":
            s, e = min(op[1], op[2]), max(op[1], op[2])
            b.delete_range(s, e)
            model.append((KIND_RANGE_DEL, s, e))
        else:
            b.clear()
            model.clear()
        # Read the entries between operations too: they are decoded on demand and cached, and the cache
        # must follow every change (a clear followed by as many new entries included).
        if len(model) % 2:
            assert b.entries == model and len(b) == len(model)
    assert b.entries == model
    assert all(type(k) is bytes and type(v) is bytes for _, k, v in b.entries)
    committed = b.committed_entries()
    assert len(committed) == len(model) and list(committed) == model and committed.rep == b.encoded_entries()
    payload = encode_batch(seq, model)
    assert b.encode(seq) == payload
    assert b.encoded_entries() == payload[12:]
    assert b.byte_size == len(payload)
    assert decode_batch(payload) == (seq, model)


def test_put_packed_refuses_malformed_input_and_adds_nothing() -> None:
    b = WriteBatch()
    b.put(b"a", b"1")
    before = (list(b.entries), b.encoded_entries())
    for args in [
        (b"ab", [1, 1], b"", [0, 0]),  # empty key
        (b"ab", [1, 2], b"", [0]),  # lengths differ
        (b"ab", [1, 3], b"", [0, 0]),  # past the buffer
        (bytearray(b"a"), [1], b"", [0]),  # not bytes
        (b"a", [1], memoryview(b"x"), [1]),  # not bytes
        (b"", [], b"x", []),  # bytes without ends
    ]:
        with pytest.raises(InvalidArgument):
            b.put_packed(*args)
        assert (b.entries, b.encoded_entries()) == before


def test_put_packed_empty_is_a_no_op() -> None:
    b = WriteBatch()
    b.put_packed(b"", [], b"", [])
    assert len(b) == 0 and b.byte_size == 12


def test_committed_entries_are_a_snapshot_and_entries_follow_a_clear() -> None:
    """The write path's view of a batch does not change when the caller reuses the batch, and a batch
    cleared and refilled with as many entries reports the new ones (its decoded entries are cached)."""
    b = WriteBatch()
    b.put(b"a", b"1")
    b.delete(b"b")
    committed = b.committed_entries()
    assert b.entries == [(KIND_PUT, b"a", b"1"), (KIND_DELETE, b"b", b"")]
    b.clear()
    assert not b and b.entries == []
    b.put(b"c", b"3")
    b.delete_range(b"d", b"e")
    assert b.entries == [(KIND_PUT, b"c", b"3"), (KIND_RANGE_DEL, b"d", b"e")]
    assert list(committed) == [(KIND_PUT, b"a", b"1"), (KIND_DELETE, b"b", b"")] and len(committed) == 2
    assert committed[1] == (KIND_DELETE, b"b", b"")
