"""native/blockframe.c (NativeFramer) frames data blocks byte for byte as the per-block Python path
(compress_block, compression byte, checksum) does, for any blocks: compressible or not, near the 7/8
rule, empty, large; and a table reader reads every framed block back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine import block_frame
from lsmmail.engine.block import decompress_block
from lsmmail.engine.block_frame import NativeFramer, frame_blocks_py
from lsmmail.engine.coding import checksum, u32

pytestmark = pytest.mark.skipif(not block_frame.READY, reason="C extension or its codecs not available")


def _block() -> st.SearchStrategy[bytes]:
    # Repeats of a random piece compress by about the repeat count; random bytes do not compress; a
    # piece repeated twice lands near the 7/8 rule.
    piece = st.binary(min_size=1, max_size=300)
    repeated = st.builds(lambda p, k: p * k, piece, st.integers(1, 120))
    return st.one_of(repeated, st.binary(max_size=5000), st.builds(lambda p, q: p + p + q, piece, piece))


@settings(max_examples=150, deadline=None)
@given(st.lists(_block(), min_size=1, max_size=12), st.booleans())
def test_native_framing_equals_the_twin(blocks: list[bytes], compress: bool) -> None:
    framer = NativeFramer()
    framed, sizes = framer.frame(blocks, compress)
    want = frame_blocks_py(blocks, compress)
    assert (bytes(framed), sizes) == want
    # Each framed block: stored payload, compression byte, checksum of both; decodes to the raw block.
    pos = 0
    for raw, size in zip(blocks, sizes, strict=True):
        payload = bytes(framed[pos : pos + size + 1])
        assert u32.unpack_from(framed, pos + size + 1)[0] == checksum(payload)
        assert decompress_block(payload[:-1], payload[-1]) == raw
        pos += size + 5
    assert pos == len(framed)
    # The buffer is reused by the next call: a second framing through the same framer is right too.
    again, sizes2 = framer.frame(blocks[::-1], compress)
    assert (bytes(again), sizes2) == frame_blocks_py(blocks[::-1], compress)


def test_a_memoryview_block_and_a_large_one() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: the buffer grows
    data = b"abc" * 1000 + big
    view = memoryview(data)
    blocks = [view[:3000], view[3000:]]
    framed, sizes = NativeFramer().frame(blocks, True)
    assert (bytes(framed), sizes) == frame_blocks_py([bytes(b) for b in blocks], True)


@settings(max_examples=50, deadline=None)
@given(st.lists(_block(), min_size=1, max_size=8), st.booleans())
def test_blocks_framed_from_a_c_buffer(blocks: list[bytes], compress: bool) -> None:
    """RawBlocks (blocks back to back in a C buffer, as flush_blocks yields them) frame as the same
    blocks given one by one, and read back block by block."""
    from lsmmail import native_lib
    from lsmmail.engine.block_frame import RawBlocks

    ends = []
    total = 0
    for b in blocks:
        total += len(b)
        ends.append(total)
    buf = native_lib._ffi.new("uint8_t[]", b"".join(blocks) or b"\0")
    raw = RawBlocks(buf, ends)
    assert list(raw) == blocks and raw[-1] == blocks[-1]
    framed, sizes = NativeFramer().frame(raw, compress)
    assert (bytes(framed), sizes) == frame_blocks_py(blocks, compress)


@settings(max_examples=60, deadline=None)
@given(st.lists(_block(), min_size=1, max_size=10), st.booleans(), st.integers(1, 12_000))
def test_pieces_concatenate_to_the_whole_run(blocks: list[bytes], compress: bool, piece: int) -> None:
    """Framing piece by piece (each piece at least one block, about ``PIECE`` raw bytes) gives the
    same bytes and sizes as the whole run, from separate blocks and from a C buffer alike."""
    from lsmmail import native_lib
    from lsmmail.engine.block_frame import RawBlocks

    want = frame_blocks_py(blocks, compress)
    ends = []
    total = 0
    for b in blocks:
        total += len(b)
        ends.append(total)
    raw = RawBlocks(native_lib._ffi.new("uint8_t[]", b"".join(blocks) or b"\0"), ends)
    saved = block_frame.PIECE
    block_frame.PIECE = piece
    try:
        for source in (blocks, raw):
            framed = b""
            sizes: list[int] = []
            for part, part_sizes in NativeFramer().pieces(source, compress):
                assert part_sizes
                framed += bytes(part)
                sizes += part_sizes
            assert (framed, sizes) == want
    finally:
        block_frame.PIECE = saved
