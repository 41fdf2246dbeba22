"""SSTables: round trips against a model, snapshot reads, lazy bounded scans, corruption, format v1 pin."""

from __future__ import annotations

import os
import random
import struct
import threading
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from lsmmail.engine.block import BlockBuilder, decode_block
from lsmmail.engine.bloom import BloomBuilder, bloom_may_contain
from lsmmail.engine.cache import BlockCache
from lsmmail.engine.coding import checksum, get_varint, u32
from lsmmail.engine.errors import Corruption, InvalidArgument
from lsmmail.engine.fs import MemFileSystem, OsFileSystem, ReadableFile
from lsmmail.engine.keys import KIND_BLOB, KIND_DELETE, KIND_PUT, MAX_SEQUENCE, pack_internal
from lsmmail.engine.sstable import (
    FOOTER_SIZE,
    TableBuilder,
    TableOptions,
    TableProperties,
    TableReader,
    encode_footer,
    encode_handle,
    encode_properties,
)

Entry = tuple[bytes, int, int, bytes]  # (user_key, seq, kind, value)
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v1.sst"


def internal_order(e: Entry) -> tuple[bytes, int]:
    return e[0], -((e[1] << 8) | e[2])


def normalise(raw: list[Entry]) -> list[Entry]:
    """Sort into internal order, one entry per (user key, seq), empty values for deletes."""
    seen: dict[tuple[bytes, int], Entry] = {}
    for uk, seq, kind, value in raw:
        seen[(uk, seq)] = (uk, seq, kind, b"" if kind == KIND_DELETE else value)
    return sorted(seen.values(), key=internal_order)


class CountingFile:
    """A real readable file that counts its reads (to observe laziness and the bloom-first rule)."""

    def __init__(self, inner: ReadableFile) -> None:
        self.inner = inner
        self.reads = 0

    def read_at(self, offset: int, n: int) -> bytes:
        self.reads += 1
        return self.inner.read_at(offset, n)

    def size(self) -> int:
        return self.inner.size()

    def close(self) -> None:
        self.inner.close()


def write_table(
    fs: MemFileSystem,
    entries: list[Entry],
    opts: TableOptions | None = None,
    blob_files: tuple[int, ...] = (),
) -> tuple[str, TableProperties]:
    fs.makedirs("/db")
    path = "/db/000001.sst"
    f = fs.create(path)
    builder = TableBuilder(f, opts or TableOptions())
    for uk, seq, kind, value in entries:
        builder.add(pack_internal(uk, seq, kind), value)
    props = builder.finish(blob_files)
    f.close()
    return path, props


def model_get(entries: list[Entry], key: bytes, snap: int) -> tuple[int, int, bytes] | None:
    for uk, seq, kind, value in entries:  # internal order: the first visible one is the newest
        if uk == key and seq <= snap:
            return seq, kind, value
    return None


def model_range(entries: list[Entry], start: bytes | None, end: bytes | None) -> list[Entry]:
    return [e for e in entries if (start is None or e[0] >= start) and (end is None or e[0] < end)]


# -------------------------------------------------------------------------------------------------
# Strategies

user_key_st = st.one_of(
    st.binary(min_size=1, max_size=5).map(lambda b: bytes(97 + x % 3 for x in b)),  # prefixes of each other
    st.binary(min_size=1, max_size=300),  # long and arbitrary keys
)
value_st = st.one_of(
    st.just(b""),
    st.binary(max_size=120),  # does not compress
    st.integers(1, 400).map(lambda n: b"Subject: re: re: lunch\n" * (n // 20 + 1)),  # compresses
)
seq_st = st.one_of(st.integers(0, 12), st.just(MAX_SEQUENCE))
entries_st = st.lists(
    st.tuples(user_key_st, seq_st, st.sampled_from([KIND_DELETE, KIND_PUT, KIND_BLOB]), value_st),
    max_size=250,
).map(normalise)
opts_st = st.builds(
    TableOptions,
    block_size=st.sampled_from([1, 64, 300, 2048, 16 * 1024]),
    restart_interval=st.integers(1, 20),
    bloom_bits_per_key=st.sampled_from([0, 1, 10]),
    compression=st.booleans(),
)


@settings(max_examples=120, deadline=None)
@given(entries_st, opts_st, st.data())
def test_round_trip_against_model(entries: list[Entry], opts: TableOptions, data: st.DataObject) -> None:
    fs = MemFileSystem()
    path, props = write_table(fs, entries, opts, blob_files=(5, 2, 5))
    reader = TableReader.open(
        fs.open_read(path), 1, cache=data.draw(st.sampled_from([None, BlockCache(4096)]))
    )
    reader.verify()
    got = reader.properties
    assert got == props
    assert props.file_size == fs.file_size(path)
    assert props.blob_files == [2, 5]
    assert props.num_entries == len(entries)
    assert props.num_deletions == sum(e[2] == KIND_DELETE for e in entries)
    assert props.raw_key_bytes == sum(len(e[0]) + 8 for e in entries)
    assert props.raw_value_bytes == sum(len(e[3]) for e in entries)
    if entries:
        assert props.smallest_key == pack_internal(*entries[0][:3])
        assert props.largest_key == pack_internal(*entries[-1][:3])
        assert props.smallest_seq == min(e[1] for e in entries)
        assert props.largest_seq == max(e[1] for e in entries)
    assert list(reader.entries()) == entries
    assert list(reader.entries_reverse()) == entries[::-1]

    present = sorted({e[0] for e in entries})
    probes = present + [k + b"\x00" for k in present[:20]] + [k[:-1] for k in present[:20]] + [b"zz\xff"]
    for key in probes:
        assert reader.may_contain(key) or key not in present
        for snap in (0, 3, 7, 12, MAX_SEQUENCE):
            assert reader.get(key, snap) == model_get(entries, key, snap)

    bound = st.one_of(st.none(), st.sampled_from(probes or [b"a"]))
    for _ in range(5):
        start, end = data.draw(bound), data.draw(bound)
        expect = model_range(entries, start, end)
        assert list(reader.entries(start, end)) == expect
        assert list(reader.entries_reverse(start, end)) == expect[::-1]


def test_many_versions_of_one_key_across_blocks() -> None:
    entries = [(b"hot", seq, KIND_PUT, b"v%d" % seq) for seq in range(500, 0, -1)]
    entries = [(b"a", 1, KIND_PUT, b"x")] + entries + [(b"z", 1, KIND_PUT, b"y")]
    fs = MemFileSystem()
    path, props = write_table(fs, entries, TableOptions(block_size=200))
    assert props.num_data_blocks > 20
    f = CountingFile(fs.open_read(path))
    reader = TableReader.open(f, 1)
    for snap in (0, 1, 77, 250, 499, 500, 10**6):
        assert reader.get(b"hot", snap) == model_get(entries, b"hot", snap)
    # Blocks that only hold versions too new for the snapshot are skipped via the index, unread.
    before = f.reads
    assert reader.get(b"hot", 3) == (3, KIND_PUT, b"v3")
    assert f.reads - before <= 2


def test_scans_are_lazy_and_get_checks_bloom_first() -> None:
    entries = [(b"key%06d" % i, 1, KIND_PUT, b"value %d" % i) for i in range(5000)]
    fs = MemFileSystem()
    path, props = write_table(fs, entries, TableOptions(block_size=1024))
    assert props.num_data_blocks > 50
    f = CountingFile(fs.open_read(path))
    reader = TableReader.open(f, 1)
    before = f.reads
    it = reader.entries(b"key002000")
    got = [next(it) for _ in range(50)]
    assert got == entries[2000:2050]
    assert f.reads - before <= 3
    before = f.reads
    rit = reader.entries_reverse(None, b"key003000")
    assert [next(rit) for _ in range(50)] == entries[2950:3000][::-1]
    assert f.reads - before <= 3
    absent = [b"nokey%d" % i for i in range(2000)]
    filtered = [k for k in absent if not reader.may_contain(k)]
    assert len(filtered) > 1900
    before = f.reads
    assert all(reader.get(k, 10) is None for k in filtered)
    assert f.reads == before


def test_concurrent_readers_share_one_table() -> None:
    rng = random.Random(11)
    raw = [
        (b"k%04d" % rng.randrange(3000), rng.randrange(1, 50), KIND_PUT, rng.randbytes(rng.randrange(60)))
        for _ in range(4000)
    ]
    entries = normalise(raw)
    fs = MemFileSystem()
    path, _ = write_table(fs, entries, TableOptions(block_size=512))
    reader = TableReader.open(fs.open_read(path), 1, cache=BlockCache(8 * 1024))  # forces evictions
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(150):
                key = b"k%04d" % r.randrange(3000)
                snap = r.randrange(60)
                assert reader.get(key, snap) == model_get(entries, key, snap)
                end = b"k%04d" % (int(key[1:]) + r.randrange(40))
                expect = model_range(entries, key, end)
                assert list(reader.entries(key, end)) == expect
                assert list(reader.entries_reverse(key, end)) == expect[::-1]
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_builder_rejects_bad_input() -> None:
    fs = MemFileSystem()
    fs.makedirs("/db")
    b = TableBuilder(fs.create("/db/x.sst"), TableOptions())
    b.add(pack_internal(b"b", 5, KIND_PUT), b"v")
    for bad in (
        pack_internal(b"a", 9, KIND_PUT),  # user key decreased
        pack_internal(b"b", 5, KIND_PUT),  # duplicate
        pack_internal(b"b", 6, KIND_PUT),  # same user key, newer after older
        pack_internal(b"c", 1, 3),  # RANGE_DEL never goes into a table
        pack_internal(b"", 1, KIND_PUT),  # empty user key
        pack_internal(b"k" * 65536, 1, KIND_PUT),  # user key too long
    ):
        with pytest.raises(InvalidArgument):
            b.add(bad, b"")
    b.add(pack_internal(b"b", 5, KIND_DELETE), b"")  # same seq, smaller trailer: allowed
    assert b.num_entries == 2
    b.finish()
    with pytest.raises(InvalidArgument):
        b.add(pack_internal(b"z", 1, KIND_PUT), b"")
    with pytest.raises(InvalidArgument):
        b.finish()
    with pytest.raises(InvalidArgument):
        TableBuilder(fs.create("/db/y.sst"), TableOptions(restart_interval=0))


def test_empty_table() -> None:
    fs = MemFileSystem()
    path, props = write_table(fs, [])
    assert props.num_entries == 0 and props.num_data_blocks == 0 and props.smallest_key == b""
    reader = TableReader.open(fs.open_read(path), 1)
    reader.verify()
    assert reader.get(b"a", 10) is None
    assert list(reader.entries()) == [] and list(reader.entries_reverse(b"a", b"b")) == []


def test_estimated_file_size_and_os_file_system(tmp_path: Path) -> None:
    fs = OsFileSystem()
    path = str(tmp_path / "000007.sst")
    f = fs.create(path)
    b = TableBuilder(f, TableOptions(block_size=4096, compression=False))
    sizes = []
    for i in range(3000):
        b.add(pack_internal(b"key%06d" % i, i + 1, KIND_PUT), b"v" * 20)
        sizes.append(b.estimated_file_size())
    assert sizes == sorted(sizes) and sizes[-1] > 3000 * 20
    props = b.finish()
    f.close()
    assert props.file_size == os.path.getsize(path)
    assert abs(props.file_size - sizes[-1]) < 0.2 * props.file_size  # the rest is filter, index, footer
    reader = TableReader.open(fs.open_read(path), 7)
    reader.verify()
    assert reader.get(b"key001234", 10**9) == (1235, KIND_PUT, b"v" * 20)
    reader.close()


# -------------------------------------------------------------------------------------------------
# Corruption


def small_table() -> tuple[bytes, list[Entry]]:
    rng = random.Random(99)
    raw = []
    for i in range(70):
        uk = b"m%03d" % i
        for seq in range(rng.randrange(1, 3)):
            kind = rng.choice([KIND_PUT, KIND_PUT, KIND_DELETE, KIND_BLOB])
            value = rng.choice([b"", rng.randbytes(12), b"text " * rng.randrange(1, 9)])
            raw.append((uk, seq + 1, kind, value))
    entries = normalise(raw)
    fs = MemFileSystem()
    path, props = write_table(fs, entries, TableOptions(block_size=256, restart_interval=4))
    assert props.num_data_blocks >= 4
    return fs.read_file(path), entries


def open_bytes(data: bytes, number: int = 42, verify_checksums: bool = True) -> TableReader:
    fs = MemFileSystem()
    fs.makedirs("/t")
    f = fs.create("/t/t.sst")
    f.append(data)
    return TableReader.open(fs.open_read("/t/t.sst"), number, verify_checksums=verify_checksums)


def test_every_byte_flip_is_caught_or_harmless() -> None:
    data, entries = small_table()
    keys = sorted({e[0] for e in entries})
    rng = random.Random(1)
    detected = 0
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= rng.randrange(1, 256)
        caught = False
        try:
            reader = open_bytes(bytes(bad))
            # Reads must return exactly the right answer or raise: never a wrong value.
            assert list(reader.entries()) == entries
            for key in keys[::7] + [b"m999"]:
                assert reader.get(key, 2) == model_get(entries, key, 2)
            reader.verify()
        except Corruption:
            caught = True
        detected += caught
        # Every byte is covered by a checksum, is a checksum, or is the magic: each flip is noticed.
        assert caught, f"flip at {pos} went unnoticed"
    assert detected == len(data)


def test_byte_flips_without_checksums_raise_only_corruption() -> None:
    data, entries = small_table()
    rng = random.Random(2)
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= rng.randrange(1, 256)
        try:
            reader = open_bytes(bytes(bad), verify_checksums=False)
            list(reader.entries())
            list(reader.entries_reverse(b"m010", b"m050"))
            reader.get(b"m033", 5)
        except Corruption:
            pass  # values may be wrong without checksums, but nothing else may escape


def test_truncated_or_extended_files_are_corrupt() -> None:
    data, _ = small_table()
    for n in list(range(0, 80)) + list(range(80, len(data), 7)):
        with pytest.raises(Corruption):
            open_bytes(data[:n])
    with pytest.raises(Corruption, match="magic"):
        open_bytes(data + b"\x00" * 10)


def test_corruption_names_file_and_offset() -> None:
    data, _ = small_table()
    bad = bytearray(data)
    bad[3] ^= 0x40  # inside data block 0, which open reads for the smallest key
    with pytest.raises(Corruption, match=r"001234\.sst: block checksum mismatch at offset 0"):
        open_bytes(bytes(bad), number=1234)
    reader = open_bytes(data, number=1234)
    last = len(data) - FOOTER_SIZE - 1
    bad = bytearray(data)
    bad[last] ^= 1  # the index block's checksum
    with pytest.raises(Corruption, match=r"001234\.sst: block checksum mismatch at offset \d+"):
        open_bytes(bytes(bad), number=1234)
    # Later data blocks are read lazily: the error surfaces on the read, naming the block's offset.
    second = reader._offsets[-1]
    bad = bytearray(data)
    bad[second + 2] ^= 1
    lazy = open_bytes(bytes(bad), number=1234)
    with pytest.raises(Corruption, match=rf"001234\.sst: block checksum mismatch at offset {second}"):
        list(lazy.entries())
    with pytest.raises(Corruption, match=rf"001234\.sst: block checksum mismatch at offset {second}"):
        lazy.verify()


def assemble(
    blocks: list[list[tuple[bytes, bytes]]],
    *,
    index_keys: list[bytes] | None = None,
    props: TableProperties | None = None,
    filter_keys: list[bytes] | None = None,
    version: int = 1,
) -> bytes:
    """Hand-build a table whose checksums are all valid, to reach checks behind them."""
    out = bytearray()

    def put(raw: bytes) -> tuple[int, int]:
        offset = len(out)
        out.extend(raw + b"\x00")
        out.extend(u32.pack(checksum(raw + b"\x00")))
        return offset, len(raw)

    index = BlockBuilder(1)
    all_entries = [e for b in blocks for e in b]
    for i, b in enumerate(blocks):
        builder = BlockBuilder(16)
        for k, v in b:
            builder.add(k, v)
        handle = put(builder.finish())
        index.add(index_keys[i] if index_keys else b[-1][0], encode_handle(*handle))
    bloom = BloomBuilder(10)
    for k in filter_keys if filter_keys is not None else sorted({k[:-8] for k, _ in all_entries}):
        bloom.add_key(k)
    if props is None:
        props = TableProperties(num_entries=len(all_entries), num_data_blocks=len(blocks))
        props.raw_key_bytes = sum(len(k) for k, _ in all_entries)
        props.raw_value_bytes = sum(len(v) for _, v in all_entries)
        seqs = [int.from_bytes(k[-8:], "little") >> 8 for k, _ in all_entries] or [0]
        props.smallest_seq, props.largest_seq = min(seqs), max(seqs)
    fh = put(bloom.finish())
    ph = put(encode_properties(props))
    ih = put(index.finish())
    footer = bytearray(encode_footer(fh, ph, ih))
    if version != 1:
        footer[36:40] = u32.pack(version)
        footer[40:44] = u32.pack(checksum(bytes(footer[:40])))
    return bytes(out + footer)


def ik(uk: bytes, seq: int, kind: int = KIND_PUT) -> bytes:
    return pack_internal(uk, seq, kind)


def test_hand_built_table_is_accepted() -> None:
    reader = open_bytes(assemble([[(ik(b"a", 2), b"x"), (ik(b"b", 1), b"y")], [(ik(b"c", 3), b"z")]]))
    reader.verify()
    assert list(reader.entries()) == [(b"a", 2, 1, b"x"), (b"b", 1, 1, b"y"), (b"c", 3, 1, b"z")]


@pytest.mark.parametrize(
    "case, at_open",
    [
        ("keys out of order in a block", False),
        ("keys out of order across blocks", False),
        ("block does not end with its index key", False),
        ("filter misses a key", False),
        ("wrong entry count", False),
        ("unknown kind", False),
        ("index keys out of order", True),
        ("block count disagrees", True),
        ("format version 2", True),
    ],
)
def test_checks_behind_valid_checksums(case: str, at_open: bool) -> None:
    b1 = [(ik(b"a", 2), b"x"), (ik(b"b", 1), b"y")]
    b2 = [(ik(b"c", 3), b"z")]
    kwargs: dict = {}
    blocks = [b1, b2]
    if case == "keys out of order in a block":
        blocks = [[b1[1], b1[0]], b2]
        kwargs["index_keys"] = [b1[0][0], b2[0][0]]
    elif case == "keys out of order across blocks":
        blocks = [b2, b1]
        kwargs["index_keys"] = [b1[-1][0], b2[0][0]]  # keep the index itself ordered
    elif case == "block does not end with its index key":
        kwargs["index_keys"] = [ik(b"b", 0), b2[0][0]]
    elif case == "filter misses a key":
        kwargs["filter_keys"] = [b"a", b"b"]
        # A filter of 2 keys must still say "no" for c, or the case proves nothing.
        bloom = BloomBuilder(10)
        bloom.add_key(b"a")
        bloom.add_key(b"b")
        assert not bloom_may_contain(bloom.finish(), b"c")
    elif case == "wrong entry count":
        kwargs["props"] = TableProperties(
            num_entries=4,
            num_data_blocks=2,
            raw_key_bytes=27,
            raw_value_bytes=3,
            smallest_seq=1,
            largest_seq=3,
        )
    elif case == "unknown kind":
        blocks = [b1, [(ik(b"c", 3, 3), b"z")]]
    elif case == "index keys out of order":
        kwargs["index_keys"] = [b2[0][0], b1[-1][0]]
    elif case == "block count disagrees":
        kwargs["props"] = TableProperties(num_entries=3, num_data_blocks=3)
    elif case == "format version 2":
        kwargs["version"] = 2
    data = assemble(blocks, **kwargs)
    if at_open:
        with pytest.raises(Corruption):
            open_bytes(data)
        return
    reader = open_bytes(data)
    with pytest.raises(Corruption):
        reader.verify()


# -------------------------------------------------------------------------------------------------
# Format v1, pinned by a golden file


def golden_entries() -> list[Entry]:
    """A fixed input touching every feature: versions, deletes, blobs, empty values, prefixes, long keys,
    values that compress and values that do not."""
    raw: list[Entry] = []
    for i in range(90):
        uk = b"user:%d/msg:%04d" % (i % 3, i * 7)
        # Mostly-random blocks (a 3 KiB random value) are stored raw; the rest compress.
        noise = b"".join(
            xxhash.xxh64_digest(b"%d:%d" % (i, j)) for j in range(400 if i % 30 == 15 else i % 6)
        )
        if i % 9 == 0:
            raw.append((uk, 1000 + i, KIND_DELETE, b""))
        elif i % 10 == 1:
            raw.append((uk, 1000 + i, KIND_BLOB, bytes([9, i, 40])))
        elif i % 4 == 0 or i % 30 == 15:
            raw.append((uk, 1000 + i, KIND_PUT, noise))
        else:
            raw.append((uk, 1000 + i, KIND_PUT, b"Subject: weekly report %d\r\n" % i * (i % 5)))
        if i % 13 == 0:
            raw.append((uk, 10 + i, KIND_PUT, b"older version"))
            raw.append((uk, 5, KIND_PUT, b""))
    raw += [(b"a", 1, KIND_PUT, b"1"), (b"ab", 2, KIND_PUT, b"2"), (b"abc", 3, KIND_PUT, b"3")]
    raw.append((b"z" * 300, 77, KIND_PUT, b"long key"))
    return normalise(raw)


GOLDEN_OPTS = TableOptions(block_size=512, restart_interval=4, bloom_bits_per_key=10, compression=True)
GOLDEN_BLOBS = (9, 4, 4)


def build_golden() -> bytes:
    fs = MemFileSystem()
    path, _ = write_table(fs, golden_entries(), GOLDEN_OPTS, GOLDEN_BLOBS)
    return fs.read_file(path)


def test_golden_file_pins_format_v1() -> None:
    built = build_golden()
    if os.environ.get("LSMMAIL_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(built)
    golden = GOLDEN.read_bytes()
    assert built == golden, "format v1 changed: a byte of docs/format.md is no longer what the code writes"


def test_golden_file_reads_back() -> None:
    golden = GOLDEN.read_bytes()
    entries = golden_entries()
    reader = open_bytes(golden, number=1)
    reader.verify()
    assert list(reader.entries()) == entries
    props = reader.properties
    assert props.blob_files == [4, 9] and props.num_entries == len(entries) == 90 + 7 * 2 + 4
    assert props.num_deletions == 10 and props.smallest_seq == 1 and props.largest_seq == 1089
    assert reader.get(b"user:0/msg:0000", 9) == (5, KIND_PUT, b"")
    assert reader.get(b"user:0/msg:0000", 999) == (10, KIND_PUT, b"older version")
    assert reader.get(b"user:0/msg:0000", 1000) == (1000, KIND_DELETE, b"")

    # Parse the footer and index independently of the reader, and check both block encodings occur.
    assert golden[-8:] == b"lsmmSST\x01"
    head = golden[-FOOTER_SIZE:-12]
    f_off, f_size, p_off, p_size, i_off, i_size, version = struct.unpack("<QIQIQII", head)
    assert version == 1 and u32.unpack(golden[-12:-8])[0] == xxhash.xxh3_64_intdigest(head) & 0xFFFFFFFF
    assert i_off + i_size + 5 == len(golden) - FOOTER_SIZE
    assert golden[f_off + f_size] == 0 and golden[i_off + i_size] == 0  # never compressed
    _, handles = decode_block(golden[i_off : i_off + i_size])
    compressions = []
    for h in handles:
        offset, pos = get_varint(h, 0)
        size, _ = get_varint(h, pos)
        compressions.append(golden[offset + size])
    assert len(handles) == props.num_data_blocks >= 5
    assert set(compressions) == {0, 1}, "the golden file must pin both raw and LZ4 data blocks"
    assert bloom_may_contain(golden[f_off : f_off + f_size], b"ab")


@pytest.mark.parametrize("rounds", [3000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_multi_byte_flips_on_a_larger_table(rounds: int) -> None:
    fs = MemFileSystem()
    entries = golden_entries()
    path, _ = write_table(fs, entries, GOLDEN_OPTS)
    data = fs.read_file(path)
    keys = sorted({e[0] for e in entries})
    rng = random.Random(3)
    for _ in range(rounds):
        bad = bytearray(data)
        for _ in range(rng.randrange(1, 5)):
            bad[rng.randrange(len(bad))] ^= rng.randrange(1, 256)
        try:
            reader = open_bytes(bytes(bad))
            assert list(reader.entries()) == entries
            expect = model_range(entries, b"b", b"user:2")[::-1]
            assert list(reader.entries_reverse(b"b", b"user:2")) == expect
            for key in rng.sample(keys, 10):
                snap = rng.randrange(1100)
                assert reader.get(key, snap) == model_get(entries, key, snap)
            reader.verify()
        except Corruption:
            continue
        assert bytes(bad) == data  # only a flip that cancelled itself out may pass unnoticed
