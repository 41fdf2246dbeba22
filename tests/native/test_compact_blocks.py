"""native/compact.c (compact_blocks_native) against its pure twin (compact_blocks_pure): random runs of
versions with snapshots, deletions and blob references, random input block sizes; malformed blocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.block import BlockBuilder, decode_data_block_py
from lsmmail.engine.compact_native import compact_blocks_native, compact_blocks_pure
from lsmmail.engine.errors import Corruption

pytestmark = pytest.mark.skipif(not native.BUILT, reason="C extension not built")

Version = tuple[bytes, int, int, bytes]


def _blocks(entries: list[Version], cut: int, ri: int) -> list[bytes]:
    out = []
    b = BlockBuilder(ri)
    for uk, seq, kind, value in entries:
        b.add(uk + (seq << 8 | kind).to_bytes(8, "little"), value)
        if b.estimated_size() >= cut:
            out.append(b.finish())
            b = BlockBuilder(ri)
    if not b.empty:
        out.append(b.finish())
    return out


@st.composite
def _case(draw: st.DrawFn) -> tuple[list[list[Version]], list[int], bool, int, int, list[int]]:
    nkeys = draw(st.integers(1, 40))
    keys = sorted({draw(st.binary(min_size=1, max_size=12)) for _ in range(nkeys)})
    seqs = draw(st.lists(st.integers(1, 2**56 - 1), min_size=1, max_size=120, unique=True))
    k = draw(st.integers(1, 5))
    runs: list[list[Version]] = [[] for _ in range(k)]
    for seq in seqs:
        uk = draw(st.sampled_from(keys))
        kind = draw(st.sampled_from([0, 1, 1, 2]))
        value = b"" if kind == 0 else draw(st.binary(max_size=300))
        runs[draw(st.integers(0, k - 1))].append((uk, seq, kind, value))
    for r in runs:
        r.sort(key=lambda e: (e[0], -e[1]))
    snaps = sorted(set(draw(st.lists(st.sampled_from(seqs + [0, 2**56]), max_size=4))))
    bottom = draw(st.booleans())
    block_size = draw(st.sampled_from([64, 100, 512, 4096]))
    ri = draw(st.sampled_from([1, 2, 16]))
    cuts = [draw(st.sampled_from([1, 64, 700, 5000])) for _ in range(k)]
    return runs, snaps, bottom, block_size, ri, cuts


def _flatten(chunks: list) -> tuple:
    blocks, nents, ukeys, trailers, vbytes = [], [], [], [], []
    max_put = 0
    for b, n, u, t, v, mp in chunks:
        blocks += b
        nents += n
        ukeys += u
        trailers += t
        vbytes += v
        max_put = max(max_put, mp)
    return blocks, nents, ukeys, trailers, vbytes, max_put


@settings(max_examples=300, deadline=None)
@given(_case())
def test_native_matches_pure(case: tuple) -> None:
    runs, snaps, bottom, block_size, ri, cuts = case
    inputs = [_blocks(r, c, ri) for r, c in zip(runs, cuts, strict=True)]
    # An empty input block (no restart, no entry) must be skipped the same way by both.
    inputs[0].insert(0, b"\x00\x00\x00\x00")
    pure = _flatten(list(compact_blocks_pure([iter(b) for b in inputs], snaps, bottom, block_size, ri)))
    nat = _flatten(list(compact_blocks_native([iter(b) for b in inputs], snaps, bottom, block_size, ri)))
    assert nat == pure
    # Every output block decodes to its share of the entries.
    blocks, nents, ukeys, trailers = nat[:4]
    i = 0
    for blk, n in zip(blocks, nents, strict=True):
        uks, seqs, kinds, _ = decode_data_block_py(blk)
        assert uks == ukeys[i : i + n]
        assert [s << 8 | k for s, k in zip(seqs, kinds, strict=True)] == trailers[i : i + n]
        i += n
    assert i == len(ukeys)


def test_small_output_buffers_grow() -> None:
    big = [(b"k%05d" % i, 100 + i, 1, bytes([i % 251]) * 3000) for i in range(800)]
    inputs = [_blocks(big, 4096, 16)]
    pure = _flatten(list(compact_blocks_pure([iter(b) for b in inputs], [], True, 2 << 20, 16)))
    nat = _flatten(list(compact_blocks_native([iter(b) for b in inputs], [], True, 2 << 20, 16)))
    assert nat == pure and len(nat[0]) == 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 100))
def test_malformed_block_is_corruption_in_both(junk: bytes, at: int) -> None:
    good = _blocks([(b"a", 5, 1, b"x" * 20), (b"b", 4, 1, b"y" * 20)], 1 << 20, 16)[0]
    bad = good[: at % len(good)] + junk + good[at % len(good) + len(junk):]
    results = []
    for fn in (compact_blocks_native, compact_blocks_pure):
        try:
            results.append(_flatten(list(fn([iter([bad])], [], False, 4096, 16))))
        except Corruption:
            results.append("corrupt")
    # Both reject it, or both decode the same entries from it.
    assert results[0] == results[1]
