"""native/compact.c (compact_blocks_native) against its pure twin (compact_blocks_pure): random runs of
versions with snapshots, deletions, range tombstones and blob references (garbage, relocation), random
input block sizes; malformed blocks and malformed blob references."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail import native
from lsmmail.engine.blob import encode_blob_ref
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
def _case(draw: st.DrawFn) -> tuple:
    nkeys = draw(st.integers(1, 40))
    keys = sorted({draw(st.binary(min_size=1, max_size=12)) for _ in range(nkeys)})
    seqs = draw(st.lists(st.integers(1, 2**56 - 1), min_size=1, max_size=120, unique=True))
    k = draw(st.integers(1, 5))
    runs: list[list[Version]] = [[] for _ in range(k)]
    for seq in seqs:
        uk = draw(st.sampled_from(keys))
        kind = draw(st.sampled_from([0, 1, 1, 2, 2]))
        if kind == 2:
            value = encode_blob_ref(draw(st.sampled_from([1, 2, 3, 300, 2**63 + 5])),
                                    draw(st.integers(16, 2**40)), draw(st.integers(0, 2**32 - 1)))
        else:
            value = b"" if kind == 0 else draw(st.binary(max_size=300))
        runs[draw(st.integers(0, k - 1))].append((uk, seq, kind, value))
    for r in runs:
        r.sort(key=lambda e: (e[0], -e[1]))
    snaps = sorted(set(draw(st.lists(st.sampled_from(seqs + [0, 2**56]), max_size=4))))
    tombs = []
    for _ in range(draw(st.integers(0, 3))):
        a, b = sorted([draw(st.sampled_from(keys + [b"", b"\xff"])), draw(st.binary(max_size=12))])
        tombs.append((draw(st.sampled_from(seqs + [2**56 - 1])), a, b))
    relocate = frozenset(draw(st.lists(st.sampled_from([1, 3, 300, 2**63 + 5]), max_size=2)))
    spill = draw(st.sampled_from([0, 0, 1, 50, 200]))
    bottom = draw(st.booleans())
    block_size = draw(st.sampled_from([64, 100, 512, 4096]))
    ri = draw(st.sampled_from([1, 2, 16]))
    cuts = [draw(st.sampled_from([1, 64, 700, 5000])) for _ in range(k)]
    return runs, snaps, bottom, block_size, ri, cuts, tombs, relocate, spill


def _flatten(chunks: list) -> tuple:
    blocks, nents, ukeys, trailers, vbytes, nblobs, bnums, relocs = [], [], [], [], [], [], [], []
    max_put = 0
    spill = b""
    for b, n, u, t, v, mp, nb, bn, rl, sp in chunks:
        # A spilled value's record points into its chunk's spill bytes: rebase it on the whole stream.
        rl = list(rl)
        for i in range(0, len(rl), 4):
            if rl[i + 1] == 0:
                assert rl[i] + rl[i + 2] <= len(sp)
                rl[i] += len(spill)
        spill += sp
        blocks += b
        nents += n
        ukeys += u
        trailers += t
        vbytes += v
        max_put = max(max_put, mp)
        nblobs += nb
        bnums += bn
        relocs += rl
    return blocks, nents, ukeys, trailers, vbytes, max_put, nblobs, bnums, relocs, spill


def _run(fn, inputs, snaps, bottom, block_size, ri, tombs=(), relocate=frozenset(), spill=0):  # type: ignore[no-untyped-def]
    garbage: dict[int, list[int]] = {}
    out = _flatten(list(fn([iter(b) for b in inputs], snaps, bottom, block_size, ri, tombs, relocate, 77,
                           garbage, spill)))
    return out, garbage


@settings(max_examples=300, deadline=None)
@given(_case())
def test_native_matches_pure(case: tuple) -> None:
    runs, snaps, bottom, block_size, ri, cuts, tombs, relocate, spill = case
    inputs = [_blocks(r, c, ri) for r, c in zip(runs, cuts, strict=True)]
    # An empty input block (no restart, no entry) must be skipped the same way by both.
    inputs[0].insert(0, b"\x00\x00\x00\x00")
    pure, pure_garbage = _run(compact_blocks_pure, inputs, snaps, bottom, block_size, ri, tombs, relocate,
                              spill)
    nat, nat_garbage = _run(compact_blocks_native, inputs, snaps, bottom, block_size, ri, tombs, relocate,
                            spill)
    assert nat == pure
    assert nat_garbage == pure_garbage
    # Every output block decodes to its share of the entries; its blob list names exactly the blob
    # files its references point at.
    blocks, nents, ukeys, trailers = nat[:4]
    nblobs, bnums = nat[6], nat[7]
    i = bi = 0
    for blk, n, nb in zip(blocks, nents, nblobs, strict=True):
        uks, seqs, kinds, values = decode_data_block_py(blk)
        assert uks == ukeys[i : i + n]
        assert [s << 8 | k for s, k in zip(seqs, kinds, strict=True)] == trailers[i : i + n]
        refs = {v for k, v in zip(kinds, values, strict=True) if k == 2}
        from lsmmail.engine.blob import decode_blob_ref
        assert sorted(bnums[bi : bi + nb]) == sorted({decode_blob_ref(r)[0] for r in refs})
        assert not relocate & set(bnums[bi : bi + nb])
        i += n
        bi += nb
    assert i == len(ukeys)
    # Garbage: every input reference is either kept (unrelocated) or counted as garbage exactly once.
    refs_in = [e[3] for r in runs for e in r if e[2] == 2]
    kept = sum(1 for blk in blocks for k, v in zip(*[decode_data_block_py(blk)[j] for j in (2, 3)],
                                                      strict=True) if k == 2)
    relocs, spilled = nat[8], nat[9]
    moved = [relocs[i:i + 4] for i in range(0, len(relocs), 4)]
    relocated = sum(1 for r in moved if r[1] != 0)
    spills = [r for r in moved if r[1] == 0]
    assert len(refs_in) == kept - len(spills) - relocated + sum(g[0] for g in nat_garbage.values())
    # Spilled values: every one of at least `spill` bytes, in order in the spill bytes, and the records
    # of the blob file contiguous from offset 16.
    assert sum(r[2] for r in spills) == len(spilled)
    assert all(spill and r[2] >= spill for r in spills)
    assert nat[5] < spill or not spill  # no PUT value that should have moved stayed
    off = 16
    for r in moved:
        assert r[3] == off
        off += 8 + r[2]


def test_small_output_buffers_grow() -> None:
    big = [(b"k%05d" % i, 100 + i, 1, bytes([i % 251]) * 3000) for i in range(800)]
    inputs = [_blocks(big, 4096, 16)]
    pure = _run(compact_blocks_pure, inputs, [], True, 2 << 20, 16)
    nat = _run(compact_blocks_native, inputs, [], True, 2 << 20, 16)
    assert nat == pure and len(nat[0][0]) == 2


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


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=24), st.builds(
    lambda a, b, c: encode_blob_ref(a, b, c), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
    st.integers(0, 2**33))), min_size=1, max_size=4), st.sampled_from([frozenset(), frozenset({0, 7})]),
    st.lists(st.integers(0, 2**56), max_size=2))
def test_malformed_blob_reference_is_corruption_in_both(values: list[bytes], relocate: frozenset[int],
                                                          snaps: list[int]) -> None:
    # Versions of one key (dropped or kept, by the snapshots) and of others, each a BLOB with a random
    # value: a reference either twin may reject (a bad varint, trailing bytes, an offset inside the
    # header, a length over 2**32 - 1, a 10-byte varint over 64 bits).
    entries = [(b"k" if i % 2 else b"k%d" % i, 100 - i, 2, v) for i, v in enumerate(values)]
    entries.sort(key=lambda e: (e[0], -e[1]))
    results = []
    for fn in (compact_blocks_native, compact_blocks_pure):
        try:
            results.append(_run(fn, [_blocks(entries, 1 << 20, 16)], sorted(set(snaps)), False, 4096, 16,
                                (), relocate))
        except Corruption:
            results.append("corrupt")
    assert results[0] == results[1]


def test_overlong_varint_in_blob_reference_is_corruption() -> None:
    # 10 varint bytes whose last carries more than bit 63: a file number of 2**64 or more.
    ref = b"\xff" * 9 + b"\x02" + encode_blob_ref(1, 16, 3)[1:]
    for fn in (compact_blocks_native, compact_blocks_pure):
        with pytest.raises(Corruption):
            _run(fn, [_blocks([(b"a", 5, 2, ref)], 1 << 20, 16)], [], False, 4096, 16)


@settings(max_examples=60, deadline=None)
@given(_case())
def test_views_hold_the_same_chunks_while_they_are_current(case: tuple) -> None:
    """``views=True`` (the compaction's streaming consumer): each chunk's blocks and spill are views of
    the kernel's buffers; read before the next chunk is asked for, they are the copies' bytes."""
    runs, snaps, bottom, block_size, ri, cuts, tombs, relocate, spill = case
    inputs = [_blocks(r, c, ri) for r, c in zip(runs, cuts, strict=True)]

    def chunks(views: bool) -> list:
        out = []
        for b, *rest, sp in compact_blocks_native([iter(x) for x in inputs], snaps, bottom, block_size, ri,
                                                  tombs, relocate, 77, {}, spill, views=views):
            out.append(([bytes(x) for x in b], *rest, bytes(sp)))
        return out

    assert chunks(True) == chunks(False)
