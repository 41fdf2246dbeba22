"""``native_pointget``: the one-call block load of a point read (pread, checksum, LZ4, lookup) and the
whole-version table probe, each against its pure twin on random stored blocks and random versions, with
corrupt blocks (a flipped byte or a truncated file must raise ``Corruption`` on both sides, never give a
different answer) and reads through a real file descriptor as well as ``read_at``."""

from __future__ import annotations

import os
import struct
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail import native, native_pointget
from lsmmail.engine.block import COMPRESSION_LZ4, COMPRESSION_NONE, BlockBuilder, compress_block
from lsmmail.engine.bloom import BloomBuilder
from lsmmail.engine.coding import checksum
from lsmmail.engine.errors import Corruption

pytestmark = pytest.mark.skipif(not native_pointget.READY, reason="the C extension or its codecs are missing")

FAST = settings(max_examples=150, deadline=None)


def _ikey(user: bytes, seq: int, kind: int) -> bytes:
    return user + struct.pack("<Q", (seq << 8) | kind)


@st.composite
def data_blocks(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A raw data block of distinct internal keys in internal order (values often repetitive, so LZ4
    pays off), and its user keys."""
    users = sorted(draw(st.sets(st.binary(min_size=1, max_size=6), max_size=30)))
    b = BlockBuilder(draw(st.integers(1, 16)))
    for u in users:
        for s in sorted(draw(st.sets(st.integers(0, 1000), min_size=1, max_size=3)), reverse=True):
            v = draw(st.binary(max_size=8)) * draw(st.integers(0, 40))
            b.add(_ikey(u, s, draw(st.integers(0, 2))), v)
    return b.finish(), users


def stored_form(raw: bytes, compress: bool) -> bytes:
    payload, comp = compress_block(raw, compress)
    body = payload + bytes([comp])
    return body + struct.pack("<I", checksum(body))


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(*args))
    except Corruption:
        return ("corrupt", None)


@FAST
@given(data_blocks(), st.booleans(), st.booleans(), st.sampled_from(["none", "flip", "truncate", "comp"]),
       st.binary(min_size=1, max_size=6), st.integers(0, 1100), st.booleans(), st.data())
def test_block_load_get_matches_twin(block, compress: bool, verify: bool, how: str, user: bytes, snap: int,  # type: ignore[no-untyped-def]
                                     want_raw: bool, data: st.DataObject) -> None:
    raw, users = block
    if users and data.draw(st.booleans()):
        user = data.draw(st.sampled_from(users))
    stored = bytearray(stored_form(raw, compress))
    size = len(stored) - 5
    pad = data.draw(st.integers(0, 7))  # the block at a non-zero offset in the "file"
    if how == "flip":
        stored[data.draw(st.integers(0, len(stored) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "comp":
        stored[size] = data.draw(st.integers(2, 255))  # an unknown compression byte
    file = b"\xaa" * pad + bytes(stored)
    if how == "truncate":
        file = file[: data.draw(st.integers(pad, len(file) - 1))]

    def read_at(offset: int, n: int) -> bytes:
        return file[offset : offset + n]

    args = (read_at, pad, size, verify, user, snap, want_raw)
    nat = outcome(native_pointget.block_load_get_native, -1, *args)
    assert nat == outcome(native_pointget.block_load_get_pure, -1, *args)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t")
        with open(path, "wb") as f:
            f.write(file)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert outcome(native_pointget.block_load_get_native, fd, None, *args[1:]) == nat
        finally:
            os.close(fd)
    if how in ("truncate", "comp") or (how == "flip" and verify):
        assert nat[0] == "corrupt"  # a flip changes XXH3; truncation and unknown bytes are always caught
    if how == "none":
        assert nat[0] == "ok"
        got_raw, r = nat[1]
        assert got_raw == (raw if want_raw else None)
        assert r == native.block_get_pure(raw, user, snap)


def test_block_load_only_and_growing_buffers() -> None:
    # A block larger than the initial 64 KiB scratch, stored raw and LZ4'd, with user_key None (load only).
    b = BlockBuilder(16)
    for i in range(3000):
        b.add(_ikey(b"k%06d" % i, 1, 1), b"value-%d" % i * 4)
    raw = b.finish()
    assert len(raw) > 1 << 16
    for compress in (False, True):
        stored = stored_form(raw, compress)
        assert (stored[-5] == COMPRESSION_LZ4) == compress or stored[-5] == COMPRESSION_NONE
        got = native_pointget.block_load_get_native(-1, lambda o, n, s=stored: s[o : o + n], 0,
                                                    len(stored) - 5, True, None, 0, True)
        assert got == (raw, native.GET_NEXT)
        hit = native_pointget.block_load_get_native(-1, lambda o, n, s=stored: s[o : o + n], 0,
                                                    len(stored) - 5, True, b"k002999", 5, False)
        assert hit == (None, (1, 1, b"value-2999" * 4))


def test_read_errors_are_oserror() -> None:
    with pytest.raises(OSError):
        native_pointget.block_load_get_native(10**6, None, 0, 10, True, b"k", 1, False)  # not an fd


# ------------------------------------------------------------------------------- version probe

@st.composite
def versions(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    """Groups of tables as a version holds them: an overlapping L0 group, then disjoint sorted levels.
    Each table: (filter, index user keys, index seqs, smallest, largest)."""
    def table(keys: list[bytes]) -> tuple[bytes, list[bytes], list[int], bytes, bytes]:
        bb = BloomBuilder(draw(st.sampled_from([0, 2, 10])))
        for k in keys:
            bb.add_key(k)
        # Index: every few keys ends a block (possibly the same user key twice, seqs descending).
        ikeys = sorted(set(draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4)) + [keys[-1]]))
        seqs = [draw(st.integers(0, 50)) for _ in ikeys]
        return bb.finish_py(), ikeys, seqs, keys[0], keys[-1]

    key = st.binary(min_size=1, max_size=3)
    groups = []
    l0 = [table(sorted(draw(st.sets(key, min_size=1, max_size=8)))) for _ in range(draw(st.integers(0, 3)))]
    groups.append((False, l0))
    for _ in range(draw(st.integers(0, 3))):
        keys = sorted(draw(st.sets(key, min_size=1, max_size=20)))
        cuts = sorted(draw(st.sets(st.integers(1, max(len(keys) - 1, 1)), max_size=4)))
        parts = [keys[a:b] for a, b in zip([0, *cuts], [*cuts, len(keys)], strict=True) if keys[a:b]]
        groups.append((True, [table(p) for p in parts]))
    return groups


@settings(max_examples=200, deadline=None)
@given(versions(), st.binary(min_size=1, max_size=3), st.integers(0, 60), st.integers(0, 12))
def test_version_find_matches_twin(groups, key: bytes, snap: int, start: int) -> None:  # type: ignore[no-untyped-def]
    probe = native_pointget.VersionProbe([
        (srt, [(f, native.TableIndex(k, s), lo, hi) for f, k, s, lo, hi in tables]) for srt, tables in groups
    ])
    got = probe.find(key, snap, start)
    assert got == native_pointget.version_find_pure(groups, key, snap, start)
    # Following the answers visits, in order, every table a per-table probe (newest first) accepts.
    seen, ti = [], 0
    while True:
        ti, bi = probe.find(key, snap, ti)
        if ti < 0:
            break
        seen.append((ti, bi))
        ti += 1
    expect = []
    base = 0
    for _, tables in groups:
        for j, (f, k, s, lo, hi) in enumerate(tables):
            if lo <= key <= hi:
                bi = native.table_find_pure(f, key, k, s, snap)
                if 0 <= bi < len(k):
                    expect.append((base + j, bi))
        base += len(tables)
    assert seen == expect
