"""Differential test of the posting-list read kernels (native/postings_read.c) against their pure twins
(search/_postings_read.py): block ordinals to ranks (valid, damaged and random blocks: equal ranks or the
same error) and the newest-first AND with negations (random sorted lists, bounds and page sizes: equal
ranks; unsorted input: the kernel stays in bounds)."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.errors import Corruption, InvalidArgument
from lsmmail.search import _postings_read as R
from lsmmail.search import postings as P

if not native.BUILT:  # pragma: no cover
    raise RuntimeError("lsmmail._native is not built: run `pip install -e .` (needs a C compiler)")
if not R.NATIVE:  # pragma: no cover
    raise RuntimeError("lsmmail._native predates lsm_post_and: run python native/build_native.py")

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(fn: object, *args: object) -> object:
    try:
        return list(fn(*args))  # type: ignore[operator]
    except Corruption:
        return "Corruption"
    except InvalidArgument:
        return "InvalidArgument"


def _same_ranks(block: bytes, table_len: int, base: int) -> object:
    got = _outcome(R.post_ranks_native, block, table_len, base)
    assert got == _outcome(R.post_ranks_pure, block, table_len, base)
    return got


@st.composite
def _blocks(draw: st.DrawFn) -> tuple[bytes, list[int], int]:
    # small gaps give the one-byte delta mode, a large gap the varint mode
    gaps = draw(st.lists(st.one_of(st.integers(1, 5), st.integers(1, 70_000)), min_size=0, max_size=60))
    first = draw(st.integers(0, 300))
    ords = [first]
    for g in gaps:
        ords.append(ords[-1] + g)
    table_len = ords[-1] + 1 + draw(st.integers(0, 5))
    if draw(st.booleans()):
        block = P.encode_ordinals(ords)
    else:
        positions = [sorted(set(draw(st.lists(st.integers(0, 500), max_size=3)))) for _ in ords]
        block = P.encode_block(list(zip(ords, positions, strict=True)))
    return block, ords, table_len


@FAST
@given(_blocks(), st.integers(0, 1 << 31))
def test_valid_blocks_give_the_ranks(b: tuple[bytes, list[int], int], base: int) -> None:
    block, ords, table_len = b
    assert _same_ranks(block, table_len, base) == [base + o for o in ords]


@FAST
@given(_blocks(), st.data())
def test_damaged_blocks_give_the_same_verdict(b: tuple[bytes, list[int], int], data: st.DataObject) -> None:
    block, ords, table_len = b
    raw = bytearray(block)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "cut", "byte"]))
        if kind == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        elif raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            flip = 1 << data.draw(st.integers(0, 7))
            raw[i] = data.draw(st.integers(0, 255)) if kind == "byte" else raw[i] ^ flip
    short_table = data.draw(st.sampled_from([table_len, ords[-1], 0, 1]))
    _same_ranks(bytes(raw), short_table, data.draw(st.integers(0, 1000)))


@FAST
@given(st.binary(max_size=40), st.integers(0, 1 << 40), st.integers(0, 1 << 32))
def test_random_bytes_give_the_same_verdict(raw: bytes, table_len: int, base: int) -> None:
    _same_ranks(raw, table_len, base)


def test_edge_blocks() -> None:
    ten = b"\xff" * 9 + b"\x7f"  # a 10-byte varint beyond 64 bits
    for raw in [b"", b"\x01\x00\x01", b"\x03\x00\x01\x00", b"\x01\x02\x01\x00", b"\x01\x00\x00\x00",
                b"\x01\x00" + ten + b"\x00", b"\x01\x01\x02\x00" + ten, b"\x02\x00\x02\x05\x00",
                b"\x02\x01\x03\x00\x01", b"\x02\x00\x01\x05\x99"]:
        for table_len in (0, 1, 6, 1 << 40):
            _same_ranks(raw, table_len, 0)
    assert _same_ranks(b"\x02\x00\x01\x05", 6, (1 << 32) - 6) == [(1 << 32) - 1]
    assert _same_ranks(b"\x02\x00\x01\x05", 6, (1 << 32) - 5) == "InvalidArgument"


_lists = st.lists(st.integers(0, 400), max_size=120).map(lambda xs: array("I", sorted(set(xs))))


@FAST
@given(st.lists(_lists, max_size=4), st.lists(_lists, max_size=3), st.integers(-5, 420), st.integers(-5, 420),
       st.integers(0, 60))
def test_and_equals_the_twin(pos: list[array], neg: list[array], lo: int, hi: int, want: int) -> None:
    p = [R.RankList(a) for a in pos]
    n = [R.RankList(a) for a in neg]
    got = list(R.post_and_native(p, n, lo, hi, want))
    assert got == R.post_and_pure(p, n, lo, hi, want)
    # the definition, by sets
    universe = set(range(max(lo, 0), max(hi, 0)))
    for a in pos:
        universe &= set(a)
    for a in neg:
        universe -= set(a)
    assert got == sorted(universe, reverse=True)[: max(want, 0)]


def test_and_skips_long_runs_and_many_lists() -> None:
    big = R.RankList(array("I", range(0, 1_000_000, 3)))
    rare = R.RankList(array("I", [5, 300_003, 600_000, 999_999]))
    assert list(R.post_and_native([big, rare], [], 0, 1 << 20, 10)) == [999_999, 600_000, 300_003]
    assert list(R.post_and_native([rare, big], [rare], 0, 1 << 20, 10)) == []
    many = [R.RankList(array("I", [1, 2, 3]))] * (R.MAX_LISTS + 1)
    assert list(R.post_and_native(many, [], 0, 10, 5)) == [3, 2, 1]


@FAST
@given(st.lists(st.lists(st.integers(0, 300), max_size=50), min_size=0, max_size=3),
       st.lists(st.lists(st.integers(0, 300), max_size=50), max_size=2), st.integers(0, 310),
       st.integers(0, 310), st.integers(0, 40))
def test_unsorted_input_stays_in_bounds(pos: list[list[int]], neg: list[list[int]], lo: int, hi: int,
                                        want: int) -> None:
    got = list(R.post_and_native([R.RankList(array("I", a)) for a in pos],
                                 [R.RankList(array("I", a)) for a in neg], lo, hi, want))
    assert len(got) <= want and all(lo <= r < hi for r in got)


def test_dispatch_follows_pure_mode() -> None:
    assert (R.post_and is R.post_and_native) == (R.NATIVE and not native.PURE_FORCED)
    assert (R.post_ranks is R.post_ranks_native) == (R.NATIVE and not native.PURE_FORCED)


@pytest.mark.parametrize("want", [1, 50, 200])
def test_scratch_grows(want: int) -> None:
    a = R.RankList(array("I", range(300)))
    assert list(R.post_and_native([a], [], 0, 300, want)) == list(range(299, 299 - want, -1))


@st.composite
def _phrase_case(draw: st.DrawFn) -> tuple[list[bytes], int, list[int], list[dict[int, list[int]]]]:
    table_len = draw(st.integers(1, 40))
    k = draw(st.integers(1, 4))
    docs = []
    for _ in range(k):
        ords = sorted(draw(st.sets(st.integers(0, table_len - 1), min_size=1, max_size=table_len)))
        # small positions so adjacent ones are common; some docs without positions (specials)
        docs.append({o: sorted(draw(st.sets(st.integers(0, 12), max_size=5))) for o in ords})
    blocks = [P.encode_block(sorted(d.items())) for d in docs]
    if k > 1 and draw(st.booleans()):
        blocks[1], docs[1] = blocks[0], docs[0]  # a repeated token ("a a") reads one block twice
    cand = draw(st.lists(st.integers(0, table_len - 1), max_size=20))
    return blocks, table_len, cand, docs


@FAST
@given(_phrase_case())
def test_phrase_equals_the_twin_and_the_definition(case: tuple) -> None:
    blocks, table_len, cand, docs = case
    got = R.post_phrase_native(blocks, table_len, cand)
    assert got == R.post_phrase_pure(blocks, table_len, cand)
    want = [o for o in sorted(set(cand)) if all(o in d for d in docs)
            and any(all(p + i in docs[i][o] for i in range(1, len(docs))) for p in docs[0][o])]
    assert got == want


@FAST
@given(_phrase_case(), st.data())
def test_phrase_on_damaged_blocks_gives_the_same_verdict(case: tuple, data: st.DataObject) -> None:
    blocks, table_len, cand, _ = case
    i = data.draw(st.integers(0, len(blocks) - 1))
    raw = bytearray(blocks[i])
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    else:
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw += data.draw(st.binary(min_size=1, max_size=3))
    blocks = [*blocks[:i], bytes(raw), *blocks[i + 1 :]]
    assert _outcome(R.post_phrase_native, blocks, table_len, cand) == _outcome(
        R.post_phrase_pure, blocks, table_len, cand)


def test_phrase_edges() -> None:
    ords_only = P.encode_ordinals([0, 2])
    block = P.encode_block([(0, [3]), (2, [0, 7])])
    assert R.post_phrase_native([ords_only, block], 3, [0, 2]) == []  # no positions: no phrase
    assert R.post_phrase_native([block], 3, [2, 0, 2, 1]) == [0, 2]
    assert R.post_phrase_native([block, block], 3, [0, 2]) == []
    huge = bytes([1, 0, 1, 0, 2]) + b"\xff" * 9 + b"\x01" + b"\xff" * 9 + b"\x01"  # positions past 64 bits
    assert _outcome(R.post_phrase_native, [huge], 1, [0]) == _outcome(R.post_phrase_pure, [huge], 1, [0])
    assert R.post_phrase_native([block], 3, []) == []


def test_large_result_gets_its_own_buffer() -> None:
    a = R.RankList(array("I", range(0, 30_000, 2)))
    b = R.RankList(array("I", range(0, 30_000, 3)))
    got = R.post_and_native([a, b], [], 0, 30_000, 20_000)
    assert list(got) == list(range(29_994, -1, -6))
    got2 = R.post_and_native([a], [b], 0, 30_000, 10)
    assert list(got2) == R.post_and_pure([a], [b], 0, 30_000, 10)
